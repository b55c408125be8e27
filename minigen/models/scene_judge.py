"""A scene judge: a small CNN that reads what is at each of a scene's five positions, for text-to-image scoring.

Notebook 11 draws scenes from captions and must say, object by object, whether the picture shows what the prompt
asked for (GenEval's idea, Ghosh et al. 2023, arXiv 2310.11513: detect the objects, then check each attribute).
Our scenes put objects only in the five cells of `minigen.data.shapes.POSITIONS`, so detection is classification:
for every cell, is it empty or which shape is there, and, where there is one, its colour and size. The judge is
trained on real scenes only (`minigen.data.make_scenes`), like notebook 08's face judge, so what it reports about a
generated scene is how a model of the real data reads it.

    x (B, 3, 32, 32) in [-1, 1] --conv_encoder--> (B, P * (S + 1 + C + Z)) --view--> (B, P, 13) logits per cell
        [:, :, :S+1]  shape or "empty" (class S)      P = 5 positions, S = 4 shapes, C = 6 colours, Z = 2 sizes
        [:, :, S+1:S+1+C]  colour                      (trained only where the cell holds an object)
        [:, :, S+1+C:]     size                        (likewise)

    judge = SceneJudge(SCENE_JUDGE_PRESETS["SceneJudge-B"])
    judge.loss((scenes.images, scene_cells(scenes)))   # training: targets from minigen.data.scene_cells
    captions = caption_cells(judge.read(images))       # full captions of what it sees (minigen.data.caption_cells)
    judge.features(images)                             # (N, hidden): FD and precision/recall features
    score_captions(captions, scenes)                   # per-attribute recall, precision, count, exact vs the truth

The sizes of the heads come from the config (the scenes' 5 positions, 4 shapes, 6 colours, 2 sizes); the scenes'
data module turns ground truth into targets and cells back into captions, so this file knows no words.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images, conv_encoder, in_eval_batches


@dataclass
class SceneJudgeConfig:
    positions: int = 5       # len(minigen.data.shapes.POSITIONS): the cells an object can occupy
    shapes: int = 4          # len(SHAPES); class `shapes` of the shape head means "no object in this cell"
    colors: int = 6          # len(COLORS)
    sizes: int = 2           # len(SIZES)
    image_size: int = 32     # the scenes' side; any multiple of 4 (two stride-2 convs)
    width: int = 32          # channels after the first conv: shapes are a few pixels across, colours are flat
    hidden: int = 256        # one hidden layer reads all five cells from the flattened 8x8 map
    blocks: int = 1          # a residual block per resolution: telling a small circle from a small square needs
                             # a receptive field wider than two 4x4 convs give

    def __post_init__(self):
        for name in ("positions", "shapes", "colors", "sizes", "image_size", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SceneJudgeConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % 4:
            raise ValueError(f"SceneJudgeConfig.image_size must be divisible by 4 (two stride-2 convs), "
                             f"got {self.image_size}")

    @property
    def split(self) -> tuple[int, int, int]:
        """Logits per cell: shape-or-empty, colour, size."""
        return (self.shapes + 1, self.colors, self.sizes)


SCENE_JUDGE_PRESETS = {
    "SceneJudge-S": SceneJudgeConfig(width=16, hidden=128, blocks=0),   # ci: a smoke test
    "SceneJudge-B": SceneJudgeConfig(),                                  # the course's judge
}


class SceneJudge(nn.Module):
    """conv_encoder to one vector, then shape-or-empty, colour and size logits for each cell (13 for each of 5)."""

    def __init__(self, config: SceneJudgeConfig = SceneJudgeConfig()):
        super().__init__()
        self.config = c = config
        self.net = conv_encoder(c.positions * sum(c.split), in_channels=3, width=c.width, hidden=c.hidden,
                                blocks=c.blocks, image_size=c.image_size)   # (B, 3, s, s) -> (B, P * 13)

    @property
    def image_shape(self) -> tuple:
        return (3, self.config.image_size, self.config.image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, s, s) in [-1, 1] -> logits (B, P, S + 1), (B, P, C), (B, P, Z): shape-or-empty, colour, size."""
        x = check_images(x, "SceneJudge", self.image_shape)
        c = self.config
        logits = self.net(x).view(len(x), c.positions, sum(c.split))          # (B, P, 13)
        return logits.split(c.split, dim=-1)

    def loss(self, batch) -> dict:
        """batch = (images (B, 3, s, s), targets (B, P, 3) int64 per cell: shape (`shapes` where empty), colour
        and size (-1 where empty), as `minigen.data.scene_cells` makes them): the mean of the three cross-entropies
        (colour and size only over cells that hold an object)."""
        x, y = batch
        P = self.config.positions
        if not torch.is_tensor(y) or y.shape != (len(x), P, 3):
            shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise ValueError(f"SceneJudge.loss expects targets of shape (B, {P}, 3) from minigen.data.scene_cells "
                             f"for B = {len(x)} images, got {shape}")
        shape, color, size = self(x)
        losses = [F.cross_entropy(logits.flatten(0, 1), y[..., k].flatten(), ignore_index=-1)
                  for k, logits in enumerate((shape, color, size))]
        cell_right = (shape.argmax(-1) == y[..., 0]).float().mean()
        return {"loss": sum(losses) / 3, "accuracy": cell_right.detach()}   # accuracy: shape-or-empty per cell

    def read(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, 3, s, s) -> (N, P, 3) int64 per cell, in `scene_cells`' layout: shape (`shapes` where it sees no
        object), colour, size (-1 where empty); in eval mode (restored after), on x's device."""
        def cells(xb):
            shape, color, size = (logits.argmax(-1) for logits in self(xb))  # (B, P) each
            empty = shape == self.config.shapes
            return torch.stack([shape, color.masked_fill(empty, -1), size.masked_fill(empty, -1)], dim=-1)
        return in_eval_batches(self, cells, x, batch_size, torch.zeros(0, self.config.positions, 3, dtype=torch.long))

    def features(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, 3, s, s) -> (N, hidden): the activations before the last layer, the scenes' FD and precision/recall
        features (what the MNIST classifier's 128-d features are to digits)."""
        body = self.net[:-1]                                   # everything but the final Linear(hidden, P * 13)
        return in_eval_batches(self, lambda xb: body(check_images(xb, "SceneJudge.features", self.image_shape)),
                               x, batch_size, torch.zeros(0, self.config.hidden))


__all__ = ["SceneJudge", "SceneJudgeConfig", "SCENE_JUDGE_PRESETS"]
