"""Masked autoencoder (MAE): hide most of the image, make a transformer rebuild what it cannot see.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, arXiv 2111.06377.
The vision transformer (ViT) is Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv 2010.11929.

    image (B, 1, 28, 28) --patchify--> (B, N, P) with N = 49 patches of P = 4*4 pixels
    random masking: each image keeps its own random 25 % of the patches (12 of 49)
    encoder: a ViT on the visible patches only (the encoder never sees a mask token: cheap and the point)
    decoder: a light ViT on all N positions, visible tokens plus a shared learned mask token, predicts pixels
    (both are stacks of minigen.nn.TransformerBlock: pre-LN self-attention and MLP, attention through the kernels)
    loss: mean squared error on the masked patches only

The target is the raw pixels, not He et al.'s per-patch normalised pixels (their `norm_pix_loss`): that
option helps the encoder's features for downstream tasks, but the course wants reconstructions that are
images, whose masked-patch error compares directly with the mean-patch baseline.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import LN_EPS, TransformerBlock, check_images, init_transformer
from ..patches import patchify
from ..patches import unpatchify as unpatchify_image


@dataclass
class MAEConfig:
    image_size: int = 28       # MNIST
    patch_size: int = 4        # 7x7 = 49 patches of 16 pixels; 7-pixel patches (16 of them) leave 4 visible: too few
    mask_ratio: float = 0.75   # He et al.'s sweet spot: hiding 75 % makes the task hard enough to need the content
    dim: int = 128             # encoder width
    depth: int = 4             # encoder blocks
    heads: int = 4             # 32-d heads
    decoder_dim: int = 64      # the decoder is light (He et al.: narrower and shallower than the encoder)
    decoder_depth: int = 2
    decoder_heads: int = 4     # 16-d heads
    mlp_ratio: int = 4         # the usual transformer MLP width, 4x

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        for dim, heads in ((self.dim, self.heads), (self.decoder_dim, self.decoder_heads)):
            if dim % heads:
                raise ValueError(f"width {dim} is not divisible by {heads} heads")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# Presets by size (the recipe in minigen.recipes picks one per profile).
MAE_PRESETS = {
    "MAE-S": MAEConfig(dim=64, depth=2, heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=4),   # 0.2M: seconds
    "MAE-B": MAEConfig(dim=64, depth=3, heads=4, decoder_dim=64, decoder_depth=2, decoder_heads=4),   # 0.3M: minutes
    "MAE-L": MAEConfig(dim=192, depth=6, heads=6, decoder_dim=128, decoder_depth=4, decoder_heads=4),  # 3.5M: a GPU
}


# ----------------------------------------------------------------------------------------------------
# Patches and masks
# ----------------------------------------------------------------------------------------------------

def unpatchify(patches: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """(B, N, P) -> (B, C, h*p, w*p) for an h x w grid of p x p patches: minigen.patches.unpatchify, with the
    channel count read off the token width P = p*p*C."""
    if patches.ndim != 3 or patches.shape[-1] % (p * p):
        raise ValueError(f"cannot unpatchify {tuple(patches.shape)} into a {h}x{w} grid of {p}x{p} patches")
    return unpatchify_image(patches, p, patches.shape[-1] // (p * p), h * p, w * p)


def num_kept(n: int, mask_ratio: float) -> int:
    """Patches left visible: round(n (1 - mask_ratio)), the closest whole number (12 of 49 at 0.75)."""
    return int(round(n * (1.0 - mask_ratio)))


def random_masking(B: int, N: int, mask_ratio: float, generator: torch.Generator | None = None, device=None):
    """A fresh random mask per sample, by sorting uniform noise (He et al.'s trick: no loops, exact count).

    Returns ids_keep (B, K) the visible patch indices, mask (B, N) with 1 = hidden, and ids_restore (B, N)
    which puts [visible, hidden] back into patch order.
    """
    keep = num_kept(N, mask_ratio)
    noise = torch.rand(B, N, generator=generator, device=device)     # (B, N)
    ids_shuffle = noise.argsort(dim=1)                                # (B, N) ascending: first K are kept
    ids_restore = ids_shuffle.argsort(dim=1)                          # (B, N) inverse permutation
    mask = torch.ones(B, N, device=device)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)                                # (B, N) back in patch order
    return ids_shuffle[:, :keep], mask, ids_restore


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------

class MAE(nn.Module):
    def __init__(self, config: MAEConfig = MAEConfig()):
        super().__init__()
        self.config = c = config
        n, pixels = c.num_patches, c.patch_size ** 2
        self.embed = nn.Linear(pixels, c.dim)
        self.pos = nn.Parameter(torch.zeros(1, n, c.dim))                     # learned positions (1, N, dim)
        self.encoder = nn.ModuleList(TransformerBlock(c.dim, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.encoder_norm = nn.LayerNorm(c.dim, eps=LN_EPS)
        self.to_decoder = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, n, c.decoder_dim))     # (1, N, Cd)
        self.decoder = nn.ModuleList(TransformerBlock(c.decoder_dim, c.decoder_heads, c.mlp_ratio)
                                     for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(c.decoder_dim, eps=LN_EPS)
        self.head = nn.Linear(c.decoder_dim, pixels)
        init_weights(self)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) -> (B, N, P)."""
        check_images(x, "MAE")
        return patchify(x, self.config.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, P) -> (B, 1, 28, 28)."""
        side = self.config.image_size // self.config.patch_size
        return unpatchify(patches, self.config.patch_size, side, side)

    def encode(self, patches: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Visible patches only: (B, N, P) and (B, K) indices -> (B, K, dim) features."""
        x = self.embed(patches) + self.pos                                    # (B, N, dim)
        x = x.gather(1, ids_keep[..., None].expand(-1, -1, x.shape[-1]))      # (B, K, dim)
        for block in self.encoder:
            x = block(x)
        return self.encoder_norm(x)

    def decode(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, K, dim) visible features -> (B, N, P) predicted pixels of every patch."""
        x = self.to_decoder(latent)                                           # (B, K, Cd)
        B, K, C = x.shape                                                     # C = decoder_dim
        N = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.expand(B, N - K, C)], dim=1)        # (B, N, Cd) [visible, hidden]
        x = x.gather(1, ids_restore[..., None].expand(-1, -1, C))             # (B, N, Cd) patch order
        x = x + self.decoder_pos
        for block in self.decoder:
            x = block(x)
        return self.head(self.decoder_norm(x))                                # (B, N, P)

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None):
        """(B, 1, 28, 28) -> (pred (B, N, P) pixels of every patch, mask (B, N) with 1 = hidden)."""
        patches = self.patchify(x)
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        ids_keep, mask, ids_restore = random_masking(x.shape[0], patches.shape[1], ratio, generator, x.device)
        return self.decode(self.encode(patches, ids_keep), ids_restore), mask

    def loss(self, batch, generator: torch.Generator | None = None) -> dict:
        """MSE on the hidden patches only; batch is images or (images, labels)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        pred, mask = self(x, generator=generator)
        return {"loss": masked_mse(pred, self.patchify(x), mask).mean()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """(masked input, reconstruction, mask): visible patches copied from x, hidden ones predicted.

        The masked input shows hidden patches as mid-grey 0 (the background is -1, black); both images are
        (B, 1, 28, 28).
        """
        self.eval()
        pred, mask = self(x, generator=generator)
        patches, hidden = self.patchify(x), mask[..., None].bool()            # (B, N, P), (B, N, 1)
        masked = self.unpatchify(patches.masked_fill(hidden, 0.0))
        filled = self.unpatchify(torch.where(hidden, pred.clamp(-1, 1), patches))
        return masked, filled, mask

    def compression(self) -> float:
        """Image numbers / encoder output numbers (K visible tokens x dim): about 1 or below, no compression."""
        c = self.config
        return c.image_size ** 2 / (num_kept(c.num_patches, c.mask_ratio) * c.dim)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error per image over its hidden patches only (pred, target (B, N, P); mask (B, N))."""
    per_patch = (pred - target).square().mean(dim=-1)                        # (B, N)
    return (per_patch * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def init_weights(model: MAE) -> None:
    """As He et al.'s code: the transformer init of minigen.nn (Xavier-uniform linear layers, which keep token scale
    through attention and MLPs, zero biases, LayerNorm at identity) for every layer, the patch embedding and the
    pixel head included; then positions and the mask token N(0, 0.02^2): small beside the patch embeddings but
    distinct from each other (zeros would make all positions alike). He et al. fix the positions to 2-D sine-cosine
    codes; at MNIST scale learned ones trained a little faster in our runs."""
    init_transformer(model)
    for p in (model.pos, model.decoder_pos, model.mask_token):
        nn.init.normal_(p, std=0.02)


@torch.no_grad()
def mean_patch_baseline(train_images: torch.Tensor, p: int) -> torch.Tensor:
    """(N, P) the average patch at each position over the training images: the no-learning predictor."""
    return patchify(train_images, p).mean(dim=0)


@torch.no_grad()
def evaluate_masked_mse(model: MAE, images: torch.Tensor, mean_patch: torch.Tensor, seed: int = 0,
                        mask_ratio: float | None = None, batch_size: int = 500) -> dict:
    """Masked-patch MSE of the MAE and of the mean-patch baseline on the same random masks (seeded), at the
    model's own mask ratio or another one (the model is not retrained)."""
    model.eval()
    ratio = model.config.mask_ratio if mask_ratio is None else mask_ratio
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    ours, base = [], []
    for x in images.split(batch_size):
        x = x.to(device)
        pred, mask = model(x, ratio, generator)
        target = model.patchify(x)
        ours.append(masked_mse(pred, target, mask).cpu())
        base.append(masked_mse(mean_patch.to(device).expand_as(target), target, mask).cpu())
    return {"MAE": torch.cat(ours).mean().item(), "mean patch": torch.cat(base).mean().item(),
            "kept patches": num_kept(model.config.num_patches, ratio),
            "patches": model.config.num_patches}

