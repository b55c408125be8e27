"""A tiny captioner: a transformer decoder that writes a caption, word by word, attending to an image's patches.

The image-to-text half of notebook 10 (the "show, attend and tell" idea of Xu et al. 2015 on transformers, as in
the decoders of CoCa and BLIP). Trained with teacher forcing on the scenes' full captions, it is what DALL-E 3
did at scale (Betker et al. 2023): recaption a training set whose human captions leave things out.

    image (B, 3, 32, 32) --minigen.nn.PatchEncoder--> patches (B, N, dim)
    words [BOS, w1 .. wn] --Embedding + positions--> (B, n+1, dim)
          --depth x TransformerBlock(causal self-attention, cross-attention to the patches)--> LN --Linear-->
    logits (B, n+1, vocab + 1) over the words and EOS; the targets are [w1 .. wn, EOS] (padding is ignored)

Token ids are the scenes' (minigen.data.scenes.SCENE_VOCAB; 0 is padding); BOS and EOS get the next two ids.
`generate` decodes greedily (beam=1) or by beam search and returns ids in the tokenizer's format: (B, context)
int64, padded with 0, ready for `detokenize_scenes`.

    model = Captioner(CAPTIONER_PRESETS["Cap-S"])
    model.loss((images, tokens))                 # {"loss", "accuracy"}: next-word cross-entropy and accuracy
    tokens = model.generate(images, beam=3)      # (B, 26) int64
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import LN_EPS, PatchEncoder, TransformerBlock, check_token_ids, init_transformer


@dataclass
class CaptionerConfig:
    image_size: int = 32         # the scenes' side
    in_channels: int = 3         # RGB
    patch_size: int = 4          # 64 patches, as the tiny CLIP
    vocab_size: int = 22         # len(SCENE_VOCAB), padding included; BOS = vocab_size, EOS = vocab_size + 1
    context: int = 26            # SCENE_CONTEXT: the longest caption, in words
    dim: int = 128               # width of both halves
    encoder_depth: int = 3       # blocks over the patches
    decoder_depth: int = 3       # blocks over the words, each with cross-attention to the patches
    heads: int = 4               # 32-d heads

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"CaptionerConfig: dim {self.dim} is not divisible by {self.heads} heads")

    @property
    def bos(self) -> int:
        return self.vocab_size

    @property
    def eos(self) -> int:
        return self.vocab_size + 1


CAPTIONER_PRESETS = {
    "Cap-T": CaptionerConfig(dim=64, encoder_depth=1, decoder_depth=1, heads=2),   # ci: seconds
    "Cap-S": CaptionerConfig(),                                                    # cpu: minutes
    "Cap-B": CaptionerConfig(dim=256, encoder_depth=4, decoder_depth=4, heads=8),  # gpu
}


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        c = self.config = config
        self.encoder = PatchEncoder(c.image_size, c.in_channels, c.patch_size, c.dim, c.encoder_depth, c.heads,
                                    who="Captioner")
        self.embed = nn.Embedding(c.vocab_size + 2, c.dim)                   # words, BOS, EOS
        self.pos = nn.Parameter(torch.zeros(1, c.context + 1, c.dim))       # BOS + up to `context` words
        self.blocks = nn.ModuleList(TransformerBlock(c.dim, c.heads, context_dim=c.dim)
                                    for _ in range(c.decoder_depth))
        self.norm = nn.LayerNorm(c.dim, eps=LN_EPS)
        self.head = nn.Linear(c.dim, c.vocab_size + 2)                       # over every id; see _mask_logits
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Transformer layers as every minigen transformer; positions and word embeddings at std 0.02 (GPT-2);
        the output layer at zero, so the first step predicts the uniform distribution over the allowed ids."""
        init_transformer(self)
        self.encoder.reset_positions()
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def no_weight_decay(self) -> set[str]:
        return {"pos", "encoder.pos"}

    def _mask_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Padding and BOS are never written: their logits are -inf."""
        logits[..., 0] = float("-inf")
        logits[..., self.config.bos] = float("-inf")
        return logits

    def decode(self, patches: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Next-id logits (B, L, vocab + 2) for input ids (B, L) beginning with BOS, given patches (B, N, dim)."""
        x = self.embed(inputs) + self.pos[:, :inputs.shape[1]]               # (B, L, dim)
        for block in self.blocks:
            x = block(x, context=patches, causal=True)
        return self._mask_logits(self.head(self.norm(x)))                   # (B, L, V + 2)

    def loss(self, batch) -> dict:
        images, tokens = batch
        c = self.config
        check_token_ids(tokens, "Captioner", c.vocab_size, c.context)
        B, L = tokens.shape
        bos = torch.full((B, 1), c.bos, dtype=torch.long, device=tokens.device)
        inputs = torch.cat([bos, tokens], dim=1)                             # (B, L + 1): BOS w1 .. wn pad ..
        lengths = (tokens != 0).sum(1)                                       # (B,) words per caption
        targets = torch.cat([tokens, torch.zeros_like(bos)], dim=1)          # (B, L + 1): w1 .. wn pad ..
        targets[torch.arange(B), lengths] = c.eos                            # ... wn EOS pad ..
        targets = targets.masked_fill(targets == 0, -100)                    # padding is not a target
        logits = self.decode(self.encoder(images), inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        kept = targets != -100
        accuracy = (logits.argmax(-1) == targets)[kept].float().mean()
        return {"loss": loss, "accuracy": accuracy.detach()}

    @torch.no_grad()
    def generate(self, images: torch.Tensor, beam: int = 1, max_words: int | None = None) -> torch.Tensor:
        """Captions for images (B, 3, H, W): (B, context) int64 word ids padded with 0. beam=1 is greedy decoding;
        beam=k keeps the k most probable partial captions (summed log-probabilities) until each has ended."""
        if not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be an integer >= 1, got {beam!r}")
        c = self.config
        max_words = c.context if max_words is None else min(max_words, c.context)
        patches = self.encoder(images)                                       # (B, N, dim)
        B, k = len(images), beam
        patches = patches.repeat_interleave(k, dim=0)                        # (B k, N, dim)
        seqs = torch.full((B * k, 1), c.bos, dtype=torch.long, device=images.device)
        score = torch.zeros(B, k, device=images.device)
        score[:, 1:] = float("-inf")                                         # k copies of one start: keep one
        done = torch.zeros(B * k, dtype=torch.bool, device=images.device)
        for _ in range(max_words + 1):                                       # the words, then EOS
            logp = self.decode(patches, seqs)[:, -1].float().log_softmax(-1)  # (B k, V + 2)
            ended = torch.full_like(logp, float("-inf"))
            ended[:, 0] = 0.0                                                # a finished caption only pads
            logp = torch.where(done[:, None], ended, logp)
            total = (score.view(-1, 1) + logp).view(B, -1)                   # (B, k (V + 2))
            score, index = total.topk(k, dim=1)                              # (B, k) each
            parent = (index // logp.shape[1] + torch.arange(B, device=images.device)[:, None] * k).flatten()
            word = (index % logp.shape[1]).flatten()                         # (B k,)
            seqs = torch.cat([seqs[parent], word[:, None]], dim=1)
            done = done[parent] | (word == c.eos) | (word == 0)
            if done.all():
                break
        best = seqs.view(B, k, -1)[:, 0, 1:]                                 # (B, steps) the top beam, no BOS
        best = best.masked_fill((best == c.eos).cumsum(1) > 0, 0)            # EOS and after -> padding
        out = torch.zeros(B, c.context, dtype=torch.long, device=images.device)
        n = min(best.shape[1], c.context)
        out[:, :n] = best[:, :n]
        return out
