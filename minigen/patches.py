"""Patches and tubelets: how a transformer reads an image or a video as a sequence of tokens.

An image (B, C, H, W) is cut into non-overlapping p x p squares; each square, flattened, is one token:

    patchify    (B, C, H, W)        -> (B, N, p*p*C)          N = (H/p) * (W/p)
    unpatchify  (B, N, p*p*C)       -> (B, C, H, W)           the exact inverse

This is the Vision Transformer's input ("An Image is Worth 16x16 Words", Dosovitskiy et al. 2020,
arXiv 2010.11929) and the output head of the Diffusion Transformer (Peebles & Xie 2022, arXiv 2212.09748).
A video (B, T, C, H, W) is cut into pt x p x p blocks of space-time, "tubelets" (ViViT, Arnab et al. 2021,
arXiv 2103.15691), the "spacetime patches" that video generators such as Sora train on:

    tubeletify    (B, T, C, H, W)           -> (B, N, pt*p*p*C)   N = (T/pt) * (H/p) * (W/p)
    untubeletify  (B, N, pt*p*p*C)          -> (B, T, C, H, W)

Conventions, shared by every model in the package: tokens are numbered row-major over the grid, (row, col)
for images and (frame, row, col) for videos, which `patch_grid_positions` lists; inside a token the values
run over (dy, dx, c) for a patch and (dt, dy, dx, c) for a tubelet, channels fastest, as in DiT's code.
Every function is a view-and-permute (no arithmetic), so a round trip is exact, bit for bit.

Letters (DESIGN section 9): B batch, T frames, C channels, H x W pixels (no attention heads live in this file),
N tokens; nt x nh x nw is the grid of patches (nt = T/pt along time, nh = H/p rows, nw = W/p columns) and
dt, dy, dx the offsets inside one patch or tubelet. Lower-case t is kept for diffusion time elsewhere.
"""
import torch

__all__ = ["patchify", "unpatchify", "tubeletify", "untubeletify", "patch_grid_positions", "num_tokens"]


def _check_size(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_divides(size: int, what: str, step: int, step_name: str) -> int:
    """size // step, or a ValueError naming both when the step does not divide the size."""
    if size % step:
        raise ValueError(f"{what} = {size} is not divisible by {step_name} = {step}; crop or pad it to a "
                         f"multiple of {step} (e.g. {size - size % step} or {size + step - size % step})")
    return size // step


def _check_tensor(x, name: str, dims: int, layout: str) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D {layout}, got shape {tuple(x.shape)}")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Images (B, C, H, W) -> tokens (B, N, p*p*C), N = (H/p)(W/p), row-major over the patch grid."""
    _check_tensor(x, "x", 4, "(B, C, H, W)")
    _check_size(p, "patch size p")
    B, C, H, W = x.shape
    nh = _check_divides(H, "image height H", p, "patch size p")
    nw = _check_divides(W, "image width W", p, "patch size p")
    x = x.reshape(B, C, nh, p, nw, p)                 # (B, C, nh, dy, nw, dx): split each axis into grid x patch
    x = x.permute(0, 2, 4, 3, 5, 1)                   # (B, nh, nw, dy, dx, C): grid first, channels last
    return x.reshape(B, nh * nw, p * p * C)           # (B, N, p*p*C)


def unpatchify(tokens: torch.Tensor, p: int, C: int, H: int, W: int) -> torch.Tensor:
    """Tokens (B, N, p*p*C) -> images (B, C, H, W): the inverse of `patchify`."""
    _check_tensor(tokens, "tokens", 3, "(B, N, p*p*C)")
    for value, name in ((p, "patch size p"), (C, "channels C"), (H, "height H"), (W, "width W")):
        _check_size(value, name)
    nh = _check_divides(H, "image height H", p, "patch size p")
    nw = _check_divides(W, "image width W", p, "patch size p")
    B, N, dim = tokens.shape
    if (N, dim) != (nh * nw, p * p * C):
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit p={p}, C={C}, H={H}, W={W}: "
                         f"expected (B, {nh * nw}, {p * p * C})")
    x = tokens.reshape(B, nh, nw, p, p, C)            # (B, nh, nw, dy, dx, C)
    x = x.permute(0, 5, 1, 3, 2, 4)                   # (B, C, nh, dy, nw, dx)
    return x.reshape(B, C, H, W)                      # (B, C, H, W)


def tubeletify(video: torch.Tensor, pt: int, p: int) -> torch.Tensor:
    """Videos (B, T, C, H, W) -> tokens (B, N, pt*p*p*C), N = (T/pt)(H/p)(W/p), ordered (frame, row, col)."""
    _check_tensor(video, "video", 5, "(B, T, C, H, W)")
    _check_size(pt, "tubelet length pt")
    _check_size(p, "patch size p")
    B, T, C, H, W = video.shape
    nt = _check_divides(T, "number of frames T", pt, "tubelet length pt")
    nh = _check_divides(H, "frame height H", p, "patch size p")
    nw = _check_divides(W, "frame width W", p, "patch size p")
    x = video.reshape(B, nt, pt, C, nh, p, nw, p)     # (B, nt, dt, C, nh, dy, nw, dx)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)             # (B, nt, nh, nw, dt, dy, dx, C)
    return x.reshape(B, nt * nh * nw, pt * p * p * C)  # (B, N, pt*p*p*C)


def untubeletify(tokens: torch.Tensor, pt: int, p: int, C: int, T: int, H: int, W: int) -> torch.Tensor:
    """Tokens (B, N, pt*p*p*C) -> videos (B, T, C, H, W): the inverse of `tubeletify`."""
    _check_tensor(tokens, "tokens", 3, "(B, N, pt*p*p*C)")
    for value, name in ((pt, "tubelet length pt"), (p, "patch size p"), (C, "channels C"), (T, "frames T"),
                        (H, "height H"), (W, "width W")):
        _check_size(value, name)
    nt = _check_divides(T, "number of frames T", pt, "tubelet length pt")
    nh = _check_divides(H, "frame height H", p, "patch size p")
    nw = _check_divides(W, "frame width W", p, "patch size p")
    B, N, dim = tokens.shape
    if (N, dim) != (nt * nh * nw, pt * p * p * C):
        raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit pt={pt}, p={p}, C={C}, T={T}, "
                         f"H={H}, W={W}: expected (B, {nt * nh * nw}, {pt * p * p * C})")
    x = tokens.reshape(B, nt, nh, nw, pt, p, p, C)    # (B, nt, nh, nw, dt, dy, dx, C)
    x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)             # (B, nt, dt, C, nh, dy, nw, dx)
    return x.reshape(B, T, C, H, W)                   # (B, T, C, H, W)


def patch_grid_positions(*grid: int) -> torch.Tensor:
    """Integer coordinates (N, len(grid)) of every token, in token order.

    `patch_grid_positions(nh, nw)` gives (row, col) of the patches of an nh x nw grid; `(nt, nh, nw)` gives
    (frame, row, col) of tubelets. Positional embeddings (sin-cos or learned) are functions of these.
    """
    if not grid:
        raise ValueError("give the grid's sizes, e.g. patch_grid_positions(7, 7) or (4, 8, 8)")
    for i, size in enumerate(grid):
        _check_size(size, f"grid size {i}")
    axes = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")  # len(grid) x (*grid)
    return torch.stack(axes, dim=-1).reshape(-1, len(grid))                # (N, len(grid))


def num_tokens(T: int, H: int, W: int, pt: int = 1, p: int = 1) -> int:
    """Tokens of a T-frame H x W video cut into pt x p x p tubelets (T = 1, pt = 1 for an image)."""
    for value, name in ((T, "frames T"), (H, "height H"), (W, "width W"), (pt, "tubelet length pt"),
                        (p, "patch size p")):
        _check_size(value, name)
    return (_check_divides(T, "number of frames T", pt, "tubelet length pt")
            * _check_divides(H, "frame height H", p, "patch size p")
            * _check_divides(W, "frame width W", p, "patch size p"))
