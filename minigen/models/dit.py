"""Diffusion Transformer (DiT): a plain transformer on patches of a (latent) image, conditioned by adaLN-Zero.

Peebles & Xie, "Scalable Diffusion Models with Transformers", ICCV 2023, arXiv 2212.09748; this file follows the
shape of their reference `models.py` (embedders, blocks, final layer, one init function), on `minigen.nn` blocks.

    x (B, C, h, w) --patchify p--> (B, N, p*p*C)   N = (h/p)(w/p) tokens, row-major (minigen.patches)
                   --Linear-->     (B, N, dim)   + fixed 2-D sine-cosine positions
    c = TimestepEmbedder(t) [+ LabelEmbedder(y)]   (B, dim): the conditioning vector of every block
    depth x TransformerBlock(dim, heads, cond_dim=dim)     adaLN-Zero: each block starts as the identity
    final layer: LN modulated by c -> Linear(dim, p*p*C)   zero at init: the untrained model predicts 0
    unpatchify -> (B, C, h, w)                     the prediction (noise for DDPM/DDIM, velocity for flow matching)

The model is any denoiser `model(x_t, t, y=None)` that `minigen.diffusion` trains and samples, like the U-Net.
t is a (B,) tensor of timesteps: integer steps 0..num_steps-1, or continuous times scaled the same way (flow
matching passes 1000 t). Labels y use `num_classes` as the null label (classifier-free guidance).

Text (notebook 11; `text_dim` set): y is caption token ids (B, L), 0 the padding. A text encoder given at
construction (CLIP's text tower: any module whose `states(tokens)` returns word states (B, L, text_dim) and the
mask of real words) reads them; every block cross-attends to the words, and their mean joins t in c, as Imagen and
SD3 add pooled text to the timestep embedding. A learned null token leads the context, so an all-padding caption,
the null caption of classifier-free guidance, leaves the blocks one token to attend to.

    model = DiT(DIT_PRESETS["DiT-S/2"])        # 4 x 8 x 8 latents, 16 tokens of 2x2 patches
    eps = model(x_t, t, y)                     # (B, 4, 8, 8)
    model = DiT(TEXT_DIT_PRESETS["DiT-Text-S/4"], text_encoder=clip.text)   # 3 x 32 x 32 scenes, captions
    v = model(x_t, t, tokens)                  # (B, 3, 32, 32)
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import (FinalLayer, LabelEmbedder, TimestepEmbedder, TransformerBlock, init_transformer, num_parameters,
                  sincos_positions)
from ..patches import patchify, unpatchify

CONDITIONINGS = ("adaln-zero", "in-context", "cross-attention")


@dataclass
class DiTConfig:
    in_channels: int = 4            # a KL autoencoder's latent channels (latent diffusion's 4)
    input_size: int = 8             # latent side: 28x28 digits padded to 32x32 and encoded 4x smaller
    patch_size: int = 2             # DiT's best trade-off: /2 doubles the tokens of /4, and FID improves with them
    dim: int = 192                  # token width
    depth: int = 6                  # blocks
    heads: int = 3                  # 64-d heads, as every DiT preset
    mlp_ratio: float = 4.0          # the usual transformer MLP width
    num_classes: int | None = 10    # digits; label num_classes is the null label; None: unconditional
    conditioning: str = "adaln-zero"  # how t and y reach the tokens (DiT's Figure 5): "adaln-zero", the paper's
                                      # best; "in-context" (two extra tokens); "cross-attention" (to those two)
    text_dim: int | None = None     # captions instead of labels: the text encoder's width (y: token ids (B, L))
    train_text: bool = False        # False: the text encoder stays frozen (Imagen's finding: a frozen text encoder
                                    # trained elsewhere serves well); True: it trains with the DiT

    def __post_init__(self):
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"DiTConfig.conditioning {self.conditioning!r}: choose one of {CONDITIONINGS}")
        if self.input_size % self.patch_size:
            raise ValueError(f"DiTConfig: patch_size {self.patch_size} must divide input_size {self.input_size}")
        if self.dim % self.heads:
            raise ValueError(f"DiTConfig: dim {self.dim} is not divisible by {self.heads} heads")
        if self.dim % 4:
            raise ValueError(f"DiTConfig: dim {self.dim} must be divisible by 4 (2-D sine-cosine positions)")
        if self.text_dim is not None and (self.num_classes is not None or self.conditioning != "adaln-zero"):
            raise ValueError("DiTConfig: text_dim (captions) takes num_classes=None and conditioning='adaln-zero' "
                             "(t through adaLN, the words through cross-attention)")

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2


# Presets by size, named as DiT names its own (S, B, ... / patch size), scaled to the course: the paper's DiT-S is
# 384 wide and 12 deep, trained for days; these train on MNIST-sized latents in minutes (T, S) to an hour (B).
DIT_PRESETS = {
    "DiT-T/2": DiTConfig(dim=96, depth=4, heads=3),     # tiny: the ci profile and the notebook's from-scratch check
    "DiT-S/2": DiTConfig(dim=192, depth=6, heads=3),    # small: minutes on a laptop CPU
    "DiT-S/4": DiTConfig(dim=192, depth=6, heads=3, patch_size=4),  # 4x fewer tokens: the cheaper, blurrier twin
    "DiT-B/2": DiTConfig(dim=384, depth=8, heads=6),    # base: the gpu profile
}

# Text to image on 32 x 32 x 3 scenes in pixel space (notebook 11), each built with a CLIP's text tower: /4 patches
# give 64 tokens (a scene's five positions several tokens each); text_dim is the paired CLIP preset's width
TEXT_DIT_PRESETS = {
    "DiT-Text-T/4": DiTConfig(in_channels=3, input_size=32, patch_size=4, dim=64, depth=2, heads=2,
                              num_classes=None, text_dim=64),     # ci, beside CLIP-T: seconds
    "DiT-Text-S/4": DiTConfig(in_channels=3, input_size=32, patch_size=4, dim=128, depth=4, heads=4,
                              num_classes=None, text_dim=128),    # cpu, beside CLIP-S: minutes on 2 cores
    "DiT-Text-B/4": DiTConfig(in_channels=3, input_size=32, patch_size=4, dim=384, depth=8, heads=6,
                              num_classes=None, text_dim=256),    # gpu, beside CLIP-B
}


class DiT(nn.Module):
    """prediction = DiT(x_t, t, y): patchify, embed, adaLN-Zero transformer blocks, final layer, unpatchify."""

    def __init__(self, config: DiTConfig = DiTConfig(), text_encoder: nn.Module | None = None):
        super().__init__()
        self.config = c = config
        if (c.text_dim is None) != (text_encoder is None):
            raise ValueError("DiT: a text encoder goes with text_dim and only with it: build a caption DiT as "
                             "DiT(config_with_text_dim, text_encoder=clip.text)")
        if text_encoder is not None and not callable(getattr(text_encoder, "states", None)):
            raise ValueError(f"DiT: the text encoder must have states(tokens) -> (word states, mask), like CLIP's "
                             f"text tower; got {type(text_encoder).__name__}")
        p, side = c.patch_size, c.input_size // c.patch_size
        self.embed = nn.Linear(p * p * c.in_channels, c.dim)                               # a patch -> a token
        self.register_buffer("pos", sincos_positions(c.dim, side, side)[None], persistent=False)  # (1, N, dim)
        self.t_embed = TimestepEmbedder(c.dim)
        self.y_embed = LabelEmbedder(c.num_classes, c.dim) if c.num_classes else None
        self.text = text_encoder
        if text_encoder is not None:
            self.null_word = nn.Parameter(torch.zeros(1, 1, c.text_dim))                    # leads every context
            self.text_pool = nn.Linear(c.text_dim, c.dim)                                   # mean of the words -> c
            text_encoder.requires_grad_(c.train_text)
        adaln = c.conditioning == "adaln-zero"
        context_dim = c.dim if c.conditioning == "cross-attention" else c.text_dim
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads, c.mlp_ratio, cond_dim=c.dim if adaln else None,
                                                     context_dim=context_dim) for _ in range(c.depth))
        self.final = FinalLayer(c.dim, p * p * c.in_channels, modulated=adaln)
        init_weights(self)

    def _check(self, x: torch.Tensor, t: torch.Tensor) -> None:
        c = self.config
        want = (c.in_channels, c.input_size, c.input_size)
        if not torch.is_tensor(x) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"DiT expects inputs of shape (B, {', '.join(map(str, want))}), got {shape}")
        if not torch.is_tensor(t) or t.shape != (x.shape[0],):
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"DiT expects timesteps of shape (B,) = ({x.shape[0]},), got {shape}")

    def text_context(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Caption token ids (B, L) -> the context (B, 1 + L, text_dim) behind the null token, its mask (B, 1 + L)
        (True: attend), and the pooled words (B, text_dim): the mean over the null token and the real words. An
        all-padding row, the null caption, never reaches the encoder (it cannot read zero words): its context is the
        null token alone."""
        if not torch.is_tensor(tokens) or tokens.ndim != 2 or tokens.dtype != torch.long:
            what = f"{tuple(tokens.shape)} {tokens.dtype}" if torch.is_tensor(tokens) else type(tokens).__name__
            raise ValueError(f"this DiT reads captions: y must be (B, L) int64 token ids, got {what}")
        B, L = tokens.shape
        words = tokens != 0                                                                 # (B, L)
        said = words.any(dim=1)                                                             # (B,) not the null one
        states = self.null_word.new_zeros(B, L, self.config.text_dim)                       # (B, L, text_dim)
        with torch.set_grad_enabled(self.config.train_text and torch.is_grad_enabled()):
            if said.any():
                states[said] = self.text.states(tokens[said])[0].to(states.dtype)
        context = torch.cat([self.null_word.expand(B, 1, -1), states], dim=1)               # (B, 1 + L, text_dim)
        mask = torch.cat([words.new_ones(B, 1), words], dim=1)                              # (B, 1 + L)
        pooled = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)             # (B, text_dim)
        return context, mask, pooled

    def embeddings(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The condition as tokens (B, 1 or 2, dim): the timestep's embedding, then the label's (the null label's
        if y is None) when the model has labels."""
        tokens = [self.t_embed(t)]                                                          # (B, dim)
        if self.y_embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.y_embed.null, dtype=torch.long, device=t.device)
            tokens.append(self.y_embed(y))                                                  # (B, dim)
        elif y is not None:
            raise ValueError("this DiT was built with num_classes=None; it takes no labels")
        return torch.stack(tokens, dim=1)                                                   # (B, 1 or 2, dim)

    def condition(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The conditioning vector c (B, dim): timestep embedding plus label embedding (null label if y is None),
        or plus the pooled caption's projection for a caption DiT."""
        if self.text is not None:
            return self.t_embed(t) + self.text_pool(self.text_context(self._caption(t, y))[2])
        return self.embeddings(t, y).sum(dim=1)                                             # (B, dim)

    def _caption(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        # y None -> the null caption (one padding word per row), as a label model's None is the null label
        return torch.zeros(t.shape[0], 1, dtype=torch.long, device=t.device) if y is None else y

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, t)
        cfg = self.config
        h = self.embed(patchify(x, cfg.patch_size)) + self.pos                             # (B, N, dim)
        if self.text is not None:                     # captions: adaLN from t and the pooled words, cross-attention
            y = self._caption(t, y)
            if y.shape[0] != x.shape[0]:
                raise ValueError(f"DiT: {y.shape[0]} captions for {x.shape[0]} images")
            context, mask, pooled = self.text_context(y)                                    # (B, 1 + L, text_dim)
            c = self.t_embed(t) + self.text_pool(pooled)                                    # (B, dim)
            for block in self.blocks:
                h = block(h, c, context=context, context_mask=mask)                         # (B, N, dim)
        else:
            cond = self.embeddings(t, y)                                                    # (B, M, dim), M = 1 or 2
            c = cond.sum(dim=1)                                                             # (B, dim)
            if cfg.conditioning == "adaln-zero":      # every block reads c through its shift, scale and gate
                for block in self.blocks:
                    h = block(h, c)                                                         # (B, N, dim)
            elif cfg.conditioning == "in-context":    # the condition rides along as extra tokens, dropped at the end
                h = torch.cat([cond, h], dim=1)                                             # (B, M + N, dim)
                for block in self.blocks:
                    h = block(h)
                h = h[:, cond.shape[1]:]                                                    # (B, N, dim)
            else:                                     # cross-attention: every token queries the condition tokens
                for block in self.blocks:
                    h = block(h, context=cond)                                              # (B, N, dim)
        out = self.final(h, c)                                                              # (B, N, p*p*C)
        return unpatchify(out, cfg.patch_size, cfg.in_channels, cfg.input_size, cfg.input_size)  # (B, C, h, w)


def init_weights(model: DiT) -> None:
    """As DiT's `initialize_weights`: the transformer init of minigen.nn for every linear layer (Xavier-uniform,
    zero biases; every block's adaLN modulation at zero, so each block starts as the identity: adaLN-Zero, the
    best of the paper's conditioning schemes); the patch embedding Xavier-uniform like a linear layer; label and
    timestep embeddings N(0, 0.02^2), small beside the tokens; and the final layer's modulation and output at zero,
    so the untrained model predicts exactly 0 (the mean of the noise it must predict) and training starts from a
    loss of 1 per element instead of a random function's. A caption DiT's text encoder keeps its own (trained)
    weights; its null token starts small, N(0, 0.02^2), like the label table."""
    for name, child in model.named_children():
        if name != "text":                               # a caption DiT's text encoder: CLIP trained it
            init_transformer(child)
    if model.text is not None:
        nn.init.normal_(model.null_word, std=0.02)
    if model.y_embed is not None:
        nn.init.normal_(model.y_embed.table.weight, std=0.02)
    for layer in (model.t_embed.mlp[0], model.t_embed.mlp[2]):
        nn.init.normal_(layer.weight, std=0.02)
    for layer in (model.final.linear, *([model.final.adaln[-1]] if model.final.adaln is not None else [])):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)



def flops_per_forward(config: DiTConfig, context: int = 26) -> float:
    """FLOPs of one forward on one sample, 2 per multiply-add as PyTorch's FlopCounter counts them (DiT's Gflops
    column counts one per multiply-add, so its figures are half of these), over the layers DiT counts: linear layers
    and the two attention products; norms and activations ignored. Per block: qkv + output projection 4 dim^2 and the
    MLP 2 ratio dim^2 per token, QK^T and PV 2 N dim per token, the adaLN vector 6 dim^2 per sample.
    The variants of DiT's Figure 5 change the count: in-context conditioning runs the blocks on N + M tokens (M = 2
    condition tokens, 1 without labels) and has no adaLN; cross-attention adds, per block, the query and output
    projections of every token (4 dim^2), the key and value projections of the M condition tokens, and the two
    products against them (4 N M dim).
    A caption DiT adds the same cross-attention cost per block against its M = 1 + context words (key and value
    projections from text_dim), and the pooling projection; its text encoder's own FLOPs are not counted."""
    c, n = config, config.num_tokens
    m = 2 if c.num_classes else 1                                                # condition tokens: t [and y]
    io = 2 * 2 * n * c.dim * c.patch_size ** 2 * c.in_channels                  # patch embedding + final linear

    def self_block(tokens):                                                      # projections, MLP, QK^T, PV
        return 2 * tokens * (4 + 2 * c.mlp_ratio) * c.dim ** 2 + 4 * tokens * tokens * c.dim

    if c.text_dim is not None:
        m = 1 + context
        per_block = (self_block(n) + 2 * 6 * c.dim ** 2 + 2 * 2 * n * c.dim ** 2 + 2 * 2 * m * c.text_dim * c.dim
                     + 4 * n * m * c.dim)
        return float(c.depth * per_block + io + 2 * c.text_dim * c.dim)
    if c.conditioning == "adaln-zero":
        per_block = self_block(n) + 2 * 6 * c.dim ** 2                           # + one modulation vector per sample
    elif c.conditioning == "in-context":
        per_block = self_block(n + m)
    else:
        per_block = self_block(n) + 2 * (2 * n + 2 * m) * c.dim ** 2 + 4 * n * m * c.dim
    return float(c.depth * per_block + io)


__all__ = ["DiT", "DiTConfig", "DIT_PRESETS", "TEXT_DIT_PRESETS", "CONDITIONINGS", "FinalLayer", "sincos_positions",
           "init_weights", "num_parameters", "flops_per_forward"]
