"""Shared building blocks for the model files (DESIGN §1): every model family is written from these.

    check_images, check_videos, check_values  input checks that name the problem; num_parameters
    in_eval_batches                         a readout over many images in batches, in eval mode (the judges)
    timestep_embedding, TimestepEmbedder    t -> sinusoids (-> MLP): DDPM's and DiT's time input
    LabelEmbedder                           class -> vector, with a null class for classifier-free guidance
    modulate                                x * (1 + scale) + shift: adaptive LayerNorm's last step
    Attention                               multi-head self- or cross-attention through `minigen.kernels.attention`
    Mlp                                     Linear -> GELU -> Linear, the transformer's feed-forward branch
    TransformerBlock                        pre-LN block; optional adaLN-Zero conditioning and cross-attention
    sincos_positions, FinalLayer            DiT's fixed 2-D positions and its modulated output layer
    SpaceTimeBlock                          a video block: attention across frames, then within a frame (divided)
    init_transformer                        the one initialisation for stacks of these blocks
    ConvResBlock, conv_encoder, conv_decoder  the two stride-2 conv stacks of the autoencoder and the VAE
    group_norm_silu                         SiLU(GroupNorm(x)) of a GroupNorm module, through the fused kernel

References: Vaswani et al. 2017 (arXiv 1706.03762) for attention; the pre-LN block of GPT-2 and ViT (Dosovitskiy et
al., arXiv 2010.11929); adaLN-Zero from the Diffusion Transformer (Peebles & Xie, arXiv 2212.09748), whose reference
`models.py` these blocks follow.

Attention and the fused norms live in `minigen.kernels`, each with its PyTorch reference and a dispatcher that
picks the backend per call (SDPA for attention and the references for the norms on the CPU; see
`minigen.kernels._dispatch`). The parameters stay in ordinary PyTorch modules here, so a checkpoint does not
depend on which backend ran. Shapes use the course's letters: B batch, N tokens (M for a context's), C channels,
H heads, D head dim.
"""
import math
import os

import torch
from torch import nn

from .kernels import attention, gated_residual, groupnorm_silu, layernorm_modulate, temporal_attention
from .patches import patchify, tubeletify, unpatchify, untubeletify

__all__ = ["check_images", "check_videos", "num_parameters", "check_token_ids", "check_values", "in_eval_batches",
           "timestep_embedding", "TimestepEmbedder", "LabelEmbedder", "modulate", "Attention", "Mlp",
           "TransformerBlock", "SpaceTimeBlock", "FinalLayer", "sincos_positions", "PatchEncoder", "init_transformer",
           "ConvResBlock", "conv_encoder", "conv_decoder", "group_norm_silu", "patchify", "unpatchify", "tubeletify",
           "untubeletify"]

LN_EPS = 1e-6  # DiT's LayerNorm epsilon, also the fused layernorm_modulate kernel's default


# ----------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------

def check_values(x: torch.Tensor) -> bool:
    """Whether to check x's values (ranges, labels): always on the CPU, where it is free; on a GPU only with
    MINIGEN_DEBUG=1, since reading a value back makes the host wait for the GPU, every step. Shape, dtype and
    device checks never read values and always run."""
    return x.device.type == "cpu" or os.environ.get("MINIGEN_DEBUG", "0") not in ("", "0")


@torch.no_grad()
def in_eval_batches(module: nn.Module, fn, x: torch.Tensor, batch_size: int, empty: torch.Tensor) -> torch.Tensor:
    """fn over x in batches of batch_size (bounded memory), with `module` in eval mode -> the outputs concatenated
    along the batch, or `empty` when x has no rows; the module's mode is restored afterwards."""
    was_training = module.training
    module.eval()
    try:
        return torch.cat([fn(xb) for xb in x.split(batch_size)]) if len(x) else empty
    finally:
        module.train(was_training)


def check_images(x, who: str, shape: tuple = (1, 28, 28)) -> torch.Tensor:
    """Raise a clear error unless x is a float batch of images (B, *shape); return x.

    `who` names the caller in the message, e.g. "Autoencoder.encode expects images of shape (B, 1, 28, 28)".
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{who} expects a torch.Tensor of images, got {type(x).__name__}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        hint = " (add a channel dimension: x.unsqueeze(1))" if x.ndim == len(shape) else ""
        raise ValueError(f"{who} expects images of shape (B, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(f"{who} expects float images, got dtype {x.dtype}")
    return x


def check_videos(x, who: str, shape: tuple) -> torch.Tensor:
    """Raise a clear error unless x is a float batch of clips (B, T, C, h, w) with (T, C, h, w) == shape; return x."""
    if not torch.is_tensor(x) or x.ndim != 5 or tuple(x.shape[1:]) != tuple(shape):
        got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{who} expects videos of shape (B, T, C, h, w) = (B, {', '.join(map(str, shape))}), "
                         f"got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{who} expects float videos in [-1, 1], got dtype {x.dtype}")
    return x


def num_parameters(model: nn.Module) -> int:
    """Every parameter of the model, trained or frozen."""
    return sum(p.numel() for p in model.parameters())


def _check_tokens(x, who: str, dim: int, name: str = "x") -> None:
    if not torch.is_tensor(x) or x.ndim != 3 or x.shape[-1] != dim:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{who} expects {name} of shape (B, N, {dim}), got {shape}")


# ----------------------------------------------------------------------------------------------------
# Conditioning: time, labels, modulation
# ----------------------------------------------------------------------------------------------------

def check_token_ids(tokens, who: str, vocab_size: int, context: int) -> torch.Tensor:
    """Raise a clear error unless tokens is an int64 batch of word ids (B, L <= context) in 0..vocab_size-1
    (0: padding); return it. Values are read only where check_values allows (always on the CPU)."""
    if not torch.is_tensor(tokens) or tokens.dtype != torch.long or tokens.ndim != 2 or tokens.shape[1] > context:
        got = f"{tokens.dtype} {tuple(tokens.shape)}" if torch.is_tensor(tokens) else type(tokens).__name__
        raise ValueError(f"{who} expects token ids as int64 (B, L <= {context}), got {got}")
    if check_values(tokens) and tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"{who}: token ids must lie in 0..{vocab_size - 1} (0: padding), got "
                         f"{int(tokens.min())}..{int(tokens.max())}")
    return tokens


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoids at geometric frequencies (the Transformer's positions, DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None, :]                                     # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)                 # (B, dim)


class TimestepEmbedder(nn.Module):
    """(B,) timesteps -> (B, dim): sinusoids of `freq_dim` frequencies, then a two-layer MLP (DiT's embedder).

    Integer steps 0..num_steps-1 and continuous times both work; a flow-matching t in [0, 1] should be scaled up
    (e.g. by 1000) first, or every sinusoid but the slowest few barely moves."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t) or t.ndim != 1:
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"TimestepEmbedder expects timesteps of shape (B,), got {shape}")
        return self.mlp(timestep_embedding(t, self.freq_dim))                       # (B, dim)


class LabelEmbedder(nn.Module):
    """(B,) class labels -> (B, dim), with one extra row for the null label `num_classes` ("no class"), which a
    model trained with label dropout uses for its unconditional prediction in classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    @property
    def null(self) -> int:
        return self.num_classes

    def drop(self, y: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """y with each label replaced by the null label with probability p (label dropout for guidance)."""
        keep = torch.rand(y.shape, generator=generator, device=y.device) >= p
        return torch.where(keep, y, torch.full_like(y, self.null))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(y) or y.ndim != 1 or y.dtype not in (torch.int32, torch.int64):
            what = f"{tuple(y.shape)} {y.dtype}" if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"LabelEmbedder expects integer labels of shape (B,), got {what}")
        if y.numel() and check_values(y) and (y.min() < 0 or y.max() > self.null):
            raise ValueError(f"labels must be in 0..{self.num_classes} ({self.null} = null, for guidance), "
                             f"got values in [{y.min().item()}, {y.max().item()}]")
        return self.table(y)                                                         # (B, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift per sample and channel: x (B, N, C), shift and scale (B, C). After a LayerNorm
    without its own gain and bias this is adaptive LayerNorm; the "1 +" makes scale = 0 the plain norm."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)                         # (B, N, C) * (B, 1, C)


# ----------------------------------------------------------------------------------------------------
# Transformer blocks
# ----------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head attention: queries from x (B, N, C); keys and values from x itself, or from a context (B, M, Cc)
    when built with `context_dim` (cross-attention, e.g. to text tokens).

    The product runs in `minigen.kernels.attention`, whose dispatcher picks PyTorch SDPA on the CPU and (by the
    recorded measurements) on GPUs, the Triton kernel with `backend="triton"` or MINIGEN_KERNELS=triton, and the
    full-matrix reference with `backend="reference"`. `key_padding_mask` (B, M) bool marks keys to keep; `causal`
    lets token n see keys m <= n.
    """

    def __init__(self, dim: int, heads: int, *, context_dim: int | None = None, qkv_bias: bool = True,
                 backend: str | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"Attention: width {dim} is not divisible by {heads} heads")
        self.dim, self.heads, self.context_dim, self.backend = dim, heads, context_dim, backend
        if context_dim is None:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(context_dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *, causal: bool = False,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, "Attention", self.dim)
        B, N, C = x.shape
        H, D = self.heads, C // self.heads
        if self.context_dim is None:
            if context is not None:
                raise ValueError("Attention was built for self-attention; pass context_dim= to attend to a context")
            q, k, v = self.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)     # 3 x (B, H, N, D)
        else:
            if context is None:
                raise ValueError("Attention was built for cross-attention (context_dim set): pass a context")
            _check_tokens(context, "Attention", self.context_dim, "a context")
            M = context.shape[1]
            q = self.q(x).reshape(B, N, H, D).transpose(1, 2)                        # (B, H, N, D)
            k, v = self.kv(context).reshape(B, M, 2, H, D).permute(2, 0, 3, 1, 4)   # 2 x (B, H, M, D)
        y = attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask, backend=self.backend)  # (B, H, N, D)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))                         # (B, N, C)


class Mlp(nn.Module):
    """The feed-forward branch: Linear(C, ratio*C) -> GELU (tanh form, as DiT) -> Linear(ratio*C, C)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))                                       # (B, N, C)


class TransformerBlock(nn.Module):
    """A pre-LN transformer block on tokens x (B, N, C):

        x = x + attn(LN(x));  [x = x + cross(LN(x), context)];  x = x + mlp(LN(x))

    With `cond_dim`, adaLN-Zero (Peebles & Xie): a conditioning vector c (B, cond_dim), e.g. timestep + class
    embedding, sets a shift, scale and gate per channel for each branch,

        x = x + gate1 * attn(LN(x) * (1 + scale1) + shift1);  x = x + gate2 * mlp(LN(x) * (1 + scale2) + shift2)

    and the layer making them starts at zero, so the block starts as the identity. The norms then have no gain or
    bias of their own (c supplies them). LN + modulate and the gated residual run through `minigen.kernels`
    (`layernorm_modulate`, `gated_residual`: their references on the CPU are exactly `modulate(LN(x))` and
    `x + gate * y`). With `context_dim`, a cross-attention branch to a context (B, M, context_dim) sits between the
    two, unmodulated; in a conditioned block its output projection also starts at zero.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *, cond_dim: int | None = None,
                 context_dim: int | None = None, backend: str | None = None):
        super().__init__()
        affine = cond_dim is None
        self.dim, self.cond_dim = dim, cond_dim
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
        self.attn = Attention(dim, heads, backend=backend)
        self.norm_cross = self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=LN_EPS)
            self.cross = Attention(dim, heads, context_dim=context_dim, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim)) if cond_dim is not None else None
        self.zero_init()

    def zero_init(self) -> None:
        """adaLN-Zero: the modulation layer (and a conditioned block's cross-attention output) start at zero."""
        if self.adaln is None:
            return
        for layer in [self.adaln[-1]] + ([self.cross.proj] if self.cross is not None else []):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _cross(self, x, context, context_mask):
        if self.cross is None:
            if context is not None:
                raise ValueError("TransformerBlock was built without context_dim; it cannot take a context")
            return x
        return x + self.cross(self.norm_cross(x), context, key_padding_mask=context_mask)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None, context: torch.Tensor | None = None, *,
                causal: bool = False, key_padding_mask: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, "TransformerBlock", self.dim)
        masks = dict(causal=causal, key_padding_mask=key_padding_mask)
        if self.adaln is None:
            if c is not None:
                raise ValueError("TransformerBlock was built without cond_dim; it takes no conditioning vector c")
            x = x + self.attn(self.norm1(x), **masks)
            x = self._cross(x, context, context_mask)
            return x + self.mlp(self.norm2(x))                                       # (B, N, C)
        if not torch.is_tensor(c) or c.shape != (x.shape[0], self.cond_dim):
            shape = tuple(c.shape) if torch.is_tensor(c) else type(c).__name__
            raise ValueError(f"TransformerBlock expects a conditioning vector c of shape ({x.shape[0]}, "
                             f"{self.cond_dim}), got {shape}")
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c).chunk(6, dim=1)  # 6 x (B, C)
        x = gated_residual(x, self.attn(layernorm_modulate(x, shift1, scale1, eps=LN_EPS), **masks), gate1)
        x = self._cross(x, context, context_mask)
        return gated_residual(x, self.mlp(layernorm_modulate(x, shift2, scale2, eps=LN_EPS)), gate2)


def sincos_positions(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions (MAE's and DiT's `get_2d_sincos_pos_embed`): (h*w, dim), row-major like the
    tokens; the first half of the channels encodes the column, the second half the row (the reference's order),
    each as sin then cos at geometric frequencies (the Transformer's 1-D code)."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)          # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")                                            # (h, w) each

    def code(pos):                                                                         # (h*w,) -> (h*w, dim/2)
        angles = pos.reshape(-1, 1) * freqs[None]                                          # (h*w, dim/4)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([code(cols), code(rows)], dim=1).float()                              # (h*w, dim)


class FinalLayer(nn.Module):
    """LN(x) * (1 + scale(c)) + shift(c), then a linear map to each patch's pixels (DiT's final layer). Unmodulated
    (`modulated=False`, the in-context and cross-attention variants): a plain LayerNorm, then the linear map."""

    def __init__(self, dim: int, out_features: int, modulated: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=not modulated)
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim)) if modulated else None
        self.linear = nn.Linear(dim, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.adaln is None:
            return self.linear(self.norm(x))                                               # (B, N, p*p*C)
        shift, scale = self.adaln(c).chunk(2, dim=1)                                       # 2 x (B, dim)
        return self.linear(modulate(self.norm(x), shift, scale))                           # (B, N, p*p*C)


class SpaceTimeBlock(nn.Module):
    """Divided space-time attention (TimeSformer, Bertasius et al., arXiv 2102.05095; ViViT's factorized
    self-attention, Arnab et al., arXiv 2103.15691) on video tokens x (B, T, S, C): S tokens per frame, T frames.

        x = x + gate_t * temporal(LN(x))     every token attends to the T tokens at its own position, one per frame
        x = x + gate_s * spatial(LN(x))      every token attends to the S tokens of its own frame
        x = x + gate_m * mlp(LN(x))

    Full 3-D attention (one TransformerBlock on all T*S tokens) costs (T S)^2 pairs; these two cost T S^2 + S T^2,
    (T S) / (T + S) times fewer: about 15x at T = 16, S = 256. With `cond_dim`, adaLN-Zero as in TransformerBlock,
    with a shift, scale and gate per branch (9 vectors) starting at zero, so the block starts as the identity; c may
    be one vector per clip (B, cond_dim) or one per frame (B, T, cond_dim), e.g. the timestep plus what the frame's
    actions have done. `attention="full"` makes the same block with one attention over all T*S tokens instead of the
    temporal + spatial pair (the baseline the factorization is measured against; 6 modulation vectors).

    The temporal branch reads q, k, v in place from its (B, T, S, 3, H, D) projection by strides, through
    `minigen.kernels.temporal_attention` (no permute to (B, S, H, T, D) and back); the spatial branch is an
    ordinary `Attention` on the (B*T, S, C) view. With T = 1 the temporal softmax has one key, so that branch is
    the linear map proj(v(LN(x))) and the block is a spatial transformer block plus it.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, *, cond_dim: int | None = None,
                 backend: str | None = None, attention: str = "factorized"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"SpaceTimeBlock: width {dim} is not divisible by {heads} heads")
        if attention not in ("factorized", "full"):
            raise ValueError(f"SpaceTimeBlock: attention {attention!r}: choose 'factorized' or 'full'")
        affine = cond_dim is None
        self.dim, self.heads, self.cond_dim, self.backend = dim, heads, cond_dim, backend
        self.factorized = attention == "factorized"
        if self.factorized:
            self.norm_t = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
            self.qkv_t = nn.Linear(dim, 3 * dim)
            self.proj_t = nn.Linear(dim, dim)
        self.norm_s = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
        self.attn_s = Attention(dim, heads, backend=backend)                    # within a frame, or (full) the clip
        self.norm_m = nn.LayerNorm(dim, eps=LN_EPS, elementwise_affine=affine)
        self.mlp = Mlp(dim, mlp_ratio)
        self.branches = 3 if self.factorized else 2
        self.adaln = (nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 3 * self.branches * dim))
                      if cond_dim is not None else None)
        self.zero_init()

    def zero_init(self) -> None:
        """adaLN-Zero: the modulation layer starts at zero (every gate 0: the block is the identity)."""
        if self.adaln is not None:
            nn.init.zeros_(self.adaln[-1].weight)
            nn.init.zeros_(self.adaln[-1].bias)

    def temporal(self, h: torch.Tensor) -> torch.Tensor:
        """Attention across frames at each position: normed tokens (B, T, S, C) -> (B, T, S, C)."""
        B, T, S, C = h.shape
        H, D = self.heads, C // self.heads
        qkv = self.qkv_t(h).view(B, T, S, 3, H, D)                                   # (B, T, S, 3, H, D)
        q, k, v = qkv.unbind(dim=3)                                                  # 3 x (B, T, S, H, D) views
        y = temporal_attention(q, k, v, backend=self.backend)                        # (B, T, S, H, D)
        return self.proj_t(y.reshape(B, T, S, C))                                    # (B, T, S, C)

    def spatial(self, h: torch.Tensor) -> torch.Tensor:
        """Attention within each frame (full: over the whole clip): normed tokens (B, T, S, C) -> (B, T, S, C)."""
        B, T, S, C = h.shape
        if not self.factorized:
            return self.attn_s(h.reshape(B, T * S, C)).view(B, T, S, C)             # (B, T*S, C): every pair
        return self.attn_s(h.reshape(B * T, S, C)).view(B, T, S, C)                 # (B*T, S, C) per frame

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.is_tensor(x) or x.ndim != 4 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"SpaceTimeBlock expects video tokens of shape (B, T, S, {self.dim}), got {shape}")
        B, T, S, C = x.shape
        branches = (self.temporal, self.spatial, self.mlp) if self.factorized else (self.spatial, self.mlp)
        if self.adaln is None:
            if c is not None:
                raise ValueError("SpaceTimeBlock was built without cond_dim; it takes no conditioning vector c")
            norms = (self.norm_t, self.norm_s, self.norm_m) if self.factorized else (self.norm_s, self.norm_m)
            for norm, branch in zip(norms, branches):
                x = x + branch(norm(x))
            return x                                                                 # (B, T, S, C)
        if not torch.is_tensor(c) or c.shape not in ((B, self.cond_dim), (B, T, self.cond_dim)):
            shape = tuple(c.shape) if torch.is_tensor(c) else type(c).__name__
            raise ValueError(f"SpaceTimeBlock expects a conditioning vector c of shape ({B}, {self.cond_dim}) or one "
                             f"per frame ({B}, {T}, {self.cond_dim}), got {shape}")
        mods = self.adaln(c)                                                         # (B, [T,] 3 * branches * C)
        if c.ndim == 2:                                                              # one c for the whole clip
            mods = mods[:, None].expand(B, T, mods.shape[-1])
        mods = mods.reshape(B * T, -1).chunk(3 * self.branches, dim=1)               # (B*T, C) each: per frame
        x = x.reshape(B * T, S, C)                                                   # the fused ops take (B, N, C)
        for i, branch in enumerate(branches):
            shift, scale, gate = mods[3 * i:3 * i + 3]                               # this frame's, per branch
            h = layernorm_modulate(x, shift, scale, eps=LN_EPS).view(B, T, S, C)    # (B, T, S, C)
            x = gated_residual(x, branch(h).reshape(B * T, S, C), gate)              # (B*T, S, C)
        return x.view(B, T, S, C)


class PatchEncoder(nn.Module):
    """A small ViT body: (B, C, H, W) images in [-1, 1] -> patch tokens (B, N, dim), N = (H/p)(W/p), row-major.

        patchify p -> Linear(p*p*C, dim) + learned positions -> depth x TransformerBlock -> LayerNorm

    The image side of notebook 10's CLIP and captioner. Positions start at std 0.02 (ViT); call
    `init_transformer` on the owner first, then `reset_positions()`, as CLIP and the captioner do. `who` names
    the owner in input errors."""

    def __init__(self, image_size: int, in_channels: int, patch_size: int, dim: int, depth: int, heads: int,
                 who: str = "PatchEncoder"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"PatchEncoder: patch_size {patch_size} must divide image_size {image_size}")
        self.image_shape = (in_channels, image_size, image_size)
        self.patch_size, self.who = patch_size, who
        self.embed = nn.Linear(patch_size * patch_size * in_channels, dim)
        self.pos = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.reset_positions()

    def reset_positions(self) -> None:
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.who, self.image_shape)
        x = self.embed(patchify(images, self.patch_size)) + self.pos        # (B, N, dim)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)                                                 # (B, N, dim)


def init_transformer(module: nn.Module) -> None:
    """The one initialisation for a stack of these blocks, as in DiT's and MAE's reference code: Xavier-uniform
    linear layers (the variance of tokens stays put through attention and MLPs), zero biases, LayerNorms at the
    identity; then every adaLN modulation layer back to zero (adaLN-Zero: each block starts as the identity, so a
    deep stack trains like a shallow one at first; DiT's ablation found it the best of its conditioning schemes).
    Embeddings, positions and output heads are the model's own business (its init function, after this one)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, (TransformerBlock, SpaceTimeBlock)):
            m.zero_init()


# ----------------------------------------------------------------------------------------------------
# Convolutional stacks (autoencoder, VAE): s x s -> s/2 -> s/4 and back
# ----------------------------------------------------------------------------------------------------

class ConvResBlock(nn.Module):
    """x + conv3x3(silu(conv3x3(silu(x)))): depth at a fixed resolution, (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _quarter(image_size: int) -> int:
    if image_size % 4:
        raise ValueError(f"the conv stacks halve the image twice: image_size {image_size} must be divisible by 4")
    return image_size // 4


def conv_encoder(out_dim: int, *, in_channels: int = 1, width: int = 32, hidden: int = 256, blocks: int = 0,
                 image_size: int = 28) -> nn.Sequential:
    """Images (B, in_channels, s, s) -> vectors (B, out_dim): two stride-2 4x4 convs (s -> s/2 -> s/4, width then
    2 x width channels, each with `blocks` residual blocks after it), a hidden layer, and a linear output."""
    w, q = width, _quarter(image_size)
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 4, stride=2, padding=1), nn.SiLU(),     # (B, W, s/2, s/2)
        *[ConvResBlock(w) for _ in range(blocks)],
        nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.SiLU(),           # (B, 2W, s/4, s/4)
        *[ConvResBlock(2 * w) for _ in range(blocks)],
        nn.Flatten(),                                                     # (B, 2W * (s/4)^2)
        nn.Linear(2 * w * q * q, hidden), nn.SiLU(),                      # (B, hidden)
        nn.Linear(hidden, out_dim),                                       # (B, out_dim)
    )


def conv_decoder(in_dim: int, *, out_channels: int = 1, width: int = 32, hidden: int = 256, blocks: int = 0,
                 image_size: int = 28, final: nn.Module | None = None) -> nn.Sequential:
    """Vectors (B, in_dim) -> images (B, out_channels, s, s): the mirror of `conv_encoder`, ending in a stride-2
    transposed conv to raw outputs, or through `final` (e.g. nn.Tanh() for images in [-1, 1])."""
    w, q = width, _quarter(image_size)
    layers = [
        nn.Linear(in_dim, hidden), nn.SiLU(),                                         # (B, hidden)
        nn.Linear(hidden, 2 * w * q * q), nn.SiLU(),                                  # (B, 2W * (s/4)^2)
        nn.Unflatten(1, (2 * w, q, q)),                                               # (B, 2W, s/4, s/4)
        *[ConvResBlock(2 * w) for _ in range(blocks)],
        nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),              # (B, W, s/2, s/2)
        *[ConvResBlock(w) for _ in range(blocks)],
        nn.ConvTranspose2d(w, out_channels, 4, stride=2, padding=1),                  # (B, C_out, s, s)
    ]
    return nn.Sequential(*layers, *([final] if final is not None else []))


# ----------------------------------------------------------------------------------------------------
# Fused GroupNorm + SiLU (the U-Net)
# ----------------------------------------------------------------------------------------------------

def group_norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """SiLU(norm(x)) with `norm`'s groups, eps and affine parameters, through `minigen.kernels.groupnorm_silu`: the
    fused Triton kernel where the dispatcher picks it (a GPU, calls autograd does not record: where the recorded
    measurement shows it winning), the same two PyTorch ops (`F.group_norm`, `F.silu`) elsewhere, so on the CPU the
    numbers are those of `F.silu(norm(x))` exactly. The parameters follow x's dtype (under autocast x may be bf16
    while they stay fp32)."""
    weight = None if norm.weight is None else norm.weight.to(x.dtype)
    bias = None if norm.bias is None else norm.bias.to(x.dtype)
    return groupnorm_silu(x, norm.num_groups, weight, bias, eps=norm.eps)
