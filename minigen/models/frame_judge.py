"""A frame judge: a small CNN that reads a moving-shapes frame's shape, colour and the object's centre, to score
generated video clip by clip and frame by frame (notebook 09).

A video generator can fail in ways a per-frame image metric cannot see: the object changes shape halfway, its colour
drifts, or it moves the wrong way. The judge reads every frame on its own, trained on real frames only (as notebook
08's face judge and 11's scene judge), and `score` turns its readings into the clip-level numbers:

    x (B, 3, 32, 32) in [-1, 1] --conv_encoder--> (B, Ks + Kc + 2)
        [:, :Ks]         shape logits        Ks = 4 (minigen.data.shapes.SHAPES)
        [:, Ks:Ks+Kc]    colour logits       Kc = 6 (COLORS)
        [:, Ks+Kc:]      centre (row, col), as (pixel - (size - 1) / 2) / (size / 2): about [-1, 1]

    judge = FrameJudge(FRAME_JUDGE_PRESETS["FrameJudge-B"])
    judge.loss((frames, shape, color, centre))          # training on real frames (minigen.data.make_moving_shapes)
    shape, color, centre = judge.read(frames)            # (N,), (N,), (N, 2) pixels
    judge.score(clips, shape, color, positions)          # kept shape / colour, centre and velocity errors
    judge.features(frames)                               # (N, hidden): per-frame FD features

The true motion law lives in `minigen.data.video.apply_action`; `score` takes the true positions it produced, so this
file knows nothing of the data (model files import only minigen.nn, patches, kernels, diffusion).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images, check_videos, conv_encoder, in_eval_batches


@dataclass
class FrameJudgeConfig:
    shapes: int = 4          # len(minigen.data.shapes.SHAPES)
    colors: int = 6          # len(COLORS)
    channels: int = 3        # coloured frames
    image_size: int = 32     # the moving shapes' frame; any multiple of 4 (two stride-2 convs)
    width: int = 32          # channels after the first conv
    hidden: int = 128        # one hidden layer from the flattened 8 x 8 map to the heads (and the FD features)
    blocks: int = 1          # a residual block per resolution: a wider receptive field for the centre

    def __post_init__(self):
        for name in ("shapes", "colors", "channels", "image_size", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FrameJudgeConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % 4:
            raise ValueError(f"FrameJudgeConfig.image_size must be divisible by 4 (two stride-2 convs), "
                             f"got {self.image_size}")


FRAME_JUDGE_PRESETS = {
    "FrameJudge-S": FrameJudgeConfig(width=16, hidden=64, blocks=0),   # ci: seconds
    "FrameJudge-B": FrameJudgeConfig(),                                 # cpu and gpu
}


class FrameJudge(nn.Module):
    """conv_encoder's two stride-2 convs, a hidden layer, then shape logits, colour logits and the centre (Ks, Kc
    are the numbers of shapes and colours: S and C are the course's letters for tokens and channels)."""

    def __init__(self, config: FrameJudgeConfig = FrameJudgeConfig()):
        super().__init__()
        self.config = c = config
        self.net = conv_encoder(c.shapes + c.colors + 2, in_channels=c.channels, width=c.width, hidden=c.hidden,
                                blocks=c.blocks, image_size=c.image_size)   # (B, 3, s, s) -> (B, Ks + Kc + 2)

    @property
    def image_shape(self) -> tuple:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    def _to_unit(self, centre: torch.Tensor) -> torch.Tensor:
        half = self.config.image_size / 2
        return (centre.float() - (self.config.image_size - 1) / 2) / half          # pixels -> about [-1, 1]

    def _to_pixels(self, unit: torch.Tensor) -> torch.Tensor:
        half = self.config.image_size / 2
        return unit * half + (self.config.image_size - 1) / 2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, s, s) frames in [-1, 1] -> shape logits (B, Ks), colour logits (B, Kc), centre (B, 2) in unit
        coordinates."""
        out = self.net(check_images(x, "FrameJudge", self.image_shape))                 # (B, Ks + Kc + 2)
        Ks, Kc = self.config.shapes, self.config.colors
        return out[:, :Ks], out[:, Ks:Ks + Kc], out[:, Ks + Kc:]

    def loss(self, batch) -> dict:
        """batch = (frames (B, C, s, s), shape (B,), color (B,), centre (B, 2) pixels): cross-entropy on shape and
        colour plus the mean squared centre error in unit coordinates (one pixel is 1/16 of a unit at s = 32)."""
        x, shape, color, centre = batch
        B = len(x)
        if shape.shape != (B,) or color.shape != (B,) or centre.shape != (B, 2):
            raise ValueError(f"FrameJudge.loss expects shape (B,), color (B,) and centre (B, 2) for B = {B} frames, "
                             f"got {tuple(shape.shape)}, {tuple(color.shape)}, {tuple(centre.shape)}")
        s_logits, c_logits, c_hat = self(x)
        terms = {"shape": F.cross_entropy(s_logits, shape), "color": F.cross_entropy(c_logits, color),
                 "centre": (c_hat - self._to_unit(centre)).square().mean()}
        return {"loss": terms["shape"] + terms["color"] + terms["centre"], **terms}

    def read(self, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C, s, s) frames -> shape (N,), colour (N,) indices and centre (N, 2) in pixels (row, col)."""
        def one(xb):
            s_logits, c_logits, c_hat = self(xb)
            return torch.cat([s_logits.argmax(1, keepdim=True).float(), c_logits.argmax(1, keepdim=True).float(),
                              self._to_pixels(c_hat)], dim=1)                              # (B, 4)
        out = in_eval_batches(self, one, x, batch_size, torch.zeros(0, 4))
        return out[:, 0].long(), out[:, 1].long(), out[:, 2:]

    def features(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, C, s, s) -> (N, hidden): the activations before the heads, the frames' FD features."""
        body = self.net[:-1]
        return in_eval_batches(self, lambda xb: body(check_images(xb, "FrameJudge.features", self.image_shape)),
                               x, batch_size, torch.zeros(0, self.config.hidden))

    @torch.no_grad()
    def score(self, clips: torch.Tensor, shape: torch.Tensor, color: torch.Tensor,
              positions: torch.Tensor) -> dict:
        """Clip-level numbers for clips (N, T, C, s, s) that should show shape (N,) in colour (N,) at the true
        positions (N, T, 2) (from minigen.data.video's motion law):

            shape_kept, color_kept   fraction of all N*T frames read as the clip's shape / colour
            centre_error             mean distance (pixels) of the read centre from the true one
            velocity_error           mean distance (pixels) of the read step c[t+1] - c[t] from the true step
        """
        T = clips.shape[1] if torch.is_tensor(clips) and clips.ndim == 5 else "T"
        check_videos(clips, "FrameJudge.score", (T, *self.image_shape))
        N = len(clips)
        if shape.shape != (N,) or color.shape != (N,) or positions.shape != (N, T, 2):
            raise ValueError(f"FrameJudge.score expects shape (N,), color (N,) and positions (N, T, 2) for "
                             f"{N} clips of {T} frames, got {tuple(shape.shape)}, {tuple(color.shape)}, "
                             f"{tuple(positions.shape)}")
        s, c, centre = self.read(clips.flatten(0, 1))
        s, c, centre = s.view(N, T), c.view(N, T), centre.view(N, T, 2)                  # per clip and frame
        positions = positions.to(centre)
        step, true_step = centre.diff(dim=1), positions.diff(dim=1)                     # (N, T - 1, 2)
        return {"shape_kept": (s == shape[:, None].to(s)).float().mean().item(),
                "color_kept": (c == color[:, None].to(c)).float().mean().item(),
                "centre_error": (centre - positions).norm(dim=-1).mean().item(),
                "velocity_error": (step - true_step).norm(dim=-1).mean().item()}


__all__ = ["FrameJudge", "FrameJudgeConfig", "FRAME_JUDGE_PRESETS"]
