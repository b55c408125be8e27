"""Text to image: draw scenes from prompts with a caption flow-matching model, and read back what they show.

Notebook 11. A prompt is tokenized with the scenes' tokenizer (an unknown word is a ValueError that names it and
lists the vocabulary), every image starts from its own seeded noise, and the model's velocity is integrated from
t = 1 to 0 with classifier-free guidance against the null caption (all padding, id 0):

    v = v(x, t, null) + guidance * (v(x, t, prompt) - v(x, t, null))      guidance 0: unconditional, 1: conditional

    images = draw(model, ["a small red circle in the top left"] * 8, guidance=4.0)     # (8, 3, 32, 32) in [-1, 1]

`model` is a `minigen.diffusion.FlowMatching` built with `captions=True` (recipe("t2i"), or its EMA copy). The
noise is drawn on the CPU for all prompts at once, so the same seed gives the same images (to float rounding)
whatever the batch size or the device.
"""
from typing import Sequence

import torch

from .data.scenes import tokenize_scenes
from .diffusion import fm_sample


def draw(model, prompts: str | Sequence[str], *, guidance: float = 4.0, steps: int = 20, seed: int = 0,
         batch_size: int = 250, method: str = "euler") -> torch.Tensor:
    """One image per prompt: (N, 3, s, s) in [-1, 1] on the CPU. An empty prompt ("") is the null caption, so its
    image is an unconditional sample at any guidance."""
    config = getattr(model, "config", None)
    if not getattr(config, "captions", False):
        raise ValueError(f"draw needs a caption model (a FlowMatching built with captions=True, as recipe('t2i') "
                         f"builds), got {type(model).__name__}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("draw: no prompts given")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("draw: every prompt must be a string")
    if not isinstance(guidance, (int, float)) or guidance < 0:
        raise ValueError(f"guidance must be a number >= 0 (0: unconditional, 1: conditional), got {guidance!r}")
    tokens = tokenize_scenes(prompts)                                                     # (N, L); names bad words
    net = config.denoiser                                                                 # the DiT's config
    noise = torch.randn(len(prompts), net.in_channels, net.input_size, net.input_size,   # (N, C, s, s)
                        generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = [fm_sample(model, x_T=x.to(device), y=y.to(device), steps=steps, method=method,
                             guidance=float(guidance), null_label=0).clamp(-1, 1).cpu()
                   for x, y in zip(noise.split(batch_size), tokens.split(batch_size))]
    finally:
        model.train(was_training)
    return torch.cat(out)


__all__ = ["draw"]
