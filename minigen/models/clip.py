"""A tiny CLIP: an image encoder and a text encoder trained so that matching pairs point the same way.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021, arXiv 2103.00020.
Both towers are small transformers on `minigen.nn` blocks; notebook 10 builds them from scratch first.

    image (B, 3, 32, 32) --minigen.nn.PatchEncoder (patchify, Linear, positions, depth x block, LN)--> (B, N, dim)
                         mean over tokens --> Linear(dim, embed_dim) --normalize--> (B, E)
    tokens (B, L) int64  --Embedding--> + learned positions --depth x block (padding masked)-->
                         mean over the words --LN--> Linear(dim, embed_dim) --normalize--> (B, E)
    logits = exp(logit_scale) * image_emb @ text_emb.T                      (B, B): the diagonal are the pairs
    loss = (CE(logits, arange B) + CE(logits.T, arange B)) / 2              symmetric: images pick texts and back

The temperature is learned (as log 1 / 0.07 at the start, clamped at log 100 as in the paper). Token 0 is
padding; the vocabulary is the scenes' (minigen.data.scenes.SCENE_VOCAB, 22 words with padding).

    model = CLIP(CLIP_PRESETS["CLIP-S"])
    out = model.loss((images, tokens))          # {"loss", "accuracy", "temperature"}
    sims = model.similarity(images, tokens)     # (B_img, B_txt) cosine similarities
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import LN_EPS, PatchEncoder, TransformerBlock, check_token_ids, check_values, init_transformer


@dataclass
class CLIPConfig:
    image_size: int = 32         # the scenes' side
    in_channels: int = 3         # RGB
    patch_size: int = 4          # 64 tokens of 4 x 4 x 3: a small shape (radius ~3 px) spans a few patches
    vocab_size: int = 22         # len(SCENE_VOCAB): padding, 20 attribute and glue words, "and"
    context: int = 26            # SCENE_CONTEXT: three 8-word objects joined by "and"
    dim: int = 128               # both towers' width: enough for 4 attributes x 3 objects at this size
    image_depth: int = 4         # blocks in the image tower
    text_depth: int = 2          # the captions are short and regular: a shallow text tower suffices
    heads: int = 4               # 32-d heads
    embed_dim: int = 64          # the shared space
    init_temperature: float = 0.07  # the paper's start; learned from there
    max_logit_scale: float = 100.0  # the paper's clamp: the softmax may not get sharper than this

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPConfig: patch_size {self.patch_size} must divide image_size {self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"CLIPConfig: dim {self.dim} is not divisible by {self.heads} heads")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


CLIP_PRESETS = {
    "CLIP-T": CLIPConfig(dim=64, image_depth=2, text_depth=1, heads=2, embed_dim=32),  # ci: seconds
    "CLIP-S": CLIPConfig(),                                                           # cpu: minutes
    "CLIP-B": CLIPConfig(dim=256, image_depth=6, text_depth=3, heads=8, embed_dim=128),  # gpu
}


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float) -> dict:
    """CLIP's symmetric loss for B matching pairs of unit vectors (B, E) each: cross-entropy of every image over
    the B texts and of every text over the B images, the i-th of each being the pair. Returns loss, the logits
    (B, B) and the mean of the two top-1 accuracies."""
    if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"contrastive_loss expects two (B, E) embeddings of one shape, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    scale = logit_scale.exp() if torch.is_tensor(logit_scale) else math.exp(logit_scale)
    logits = scale * image_emb @ text_emb.T                                  # (B, B)
    target = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    accuracy = ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean()) / 2
    return {"loss": loss, "logits": logits, "accuracy": accuracy}


class ImageTower(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> a unit embedding (B, embed_dim); `.encoder(images)` gives the patch tokens."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.config = c
        self.encoder = PatchEncoder(c.image_size, c.in_channels, c.patch_size, c.dim, c.image_depth, c.heads,
                                    who="CLIP")
        self.head = nn.Linear(c.dim, c.embed_dim, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(images).mean(dim=1)), dim=-1)  # (B, E)


class TextTower(nn.Module):
    """(B, L) int64 token ids (0: padding) -> word states (B, L, dim) and a unit embedding (B, embed_dim)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.pos = nn.Parameter(torch.zeros(1, c.context, c.dim))
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads) for _ in range(c.text_depth))
        self.norm = nn.LayerNorm(c.dim, eps=LN_EPS)
        self.head = nn.Linear(c.dim, c.embed_dim, bias=False)

    def states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word states (B, L, dim) and the mask of real words (B, L) bool."""
        c = self.config
        check_token_ids(tokens, "CLIP", c.vocab_size, c.context)
        words = tokens != 0                                                  # (B, L)
        if check_values(tokens) and not words.any(dim=1).all():
            raise ValueError("every caption needs at least one word (a row of token ids is all padding)")
        x = self.embed(tokens) + self.pos[:, :tokens.shape[1]]               # (B, L, dim)
        for block in self.blocks:
            x = block(x, key_padding_mask=words)
        return self.norm(x), words

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x, words = self.states(tokens)
        pooled = (x * words[..., None]).sum(1) / words.sum(1, keepdim=True)   # (B, dim): mean over real words
        return F.normalize(self.head(pooled), dim=-1)                        # (B, E)


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.image = ImageTower(config)
        self.text = TextTower(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Transformer layers as every minigen transformer (init_transformer); positions and word embeddings small
        (std 0.02, as GPT-2 and ViT), so the patches' and words' own content dominates at the start."""
        init_transformer(self)
        self.image.encoder.reset_positions()
        nn.init.normal_(self.text.pos, std=0.02)
        nn.init.normal_(self.text.embed.weight, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Positions stay out of weight decay (minigen.train.adamw), as word embeddings and the temperature do."""
        return {"image.encoder.pos", "text.pos"}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image(images)                                            # (B, E) unit vectors

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)                                             # (B, E) unit vectors

    def similarity(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every image with every text: (B_img, B_txt)."""
        return self.encode_image(images) @ self.encode_text(tokens).T

    def loss(self, batch) -> dict:
        images, tokens = batch
        with torch.no_grad():
            self.logit_scale.clamp_(max=math.log(self.config.max_logit_scale))
        out = contrastive_loss(self.encode_image(images), self.encode_text(tokens), self.logit_scale)
        return {"loss": out["loss"], "accuracy": out["accuracy"].detach(),
                "temperature": (1 / self.logit_scale.exp()).detach()}
