"""An attribute judge: a small CNN that reads every binary attribute of a face at once.

Notebook 08 edits faces in a model's latent space ("add the smiling vector") and needs an impartial reader to say
whether the edit did what it claims. This is it: a multi-label classifier trained on real faces from
`minigen.data.make_faces`, one logit per attribute, a sigmoid and a threshold at 0.5. It never sees a generated face
while training, so the rates it reports are how a model of the real data reads the edits (as FD's classifier reads
samples; notebook 04's classifier score).

    x (B, 3, 32, 32) in [-1, 1] --conv_encoder--> logits (B, A)    loss = mean binary cross-entropy over A

    judge = AttributeJudge(JUDGE_PRESETS["Judge-B"])
    labels = judge.predict(faces.images)          # (B, 5) in {0., 1.}, columns in minigen.data.faces.ATTRIBUTES
    judge.accuracy(faces.images, faces.attributes)  # (5,) held-out accuracy per attribute
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import check_images, conv_encoder, in_eval_batches


@dataclass
class JudgeConfig:
    num_attributes: int = 5  # minigen.data.faces.ATTRIBUTES: smiling, eyes open, glasses, dark hair, hat
    channels: int = 3        # RGB faces
    image_size: int = 32     # the faces' default size; any multiple of 4 works (two stride-2 convs)
    width: int = 32          # channels after the first conv: every attribute is a large, high-contrast shape
    hidden: int = 128        # one hidden layer between the 8x8 feature map and the logits
    blocks: int = 1          # a residual block per resolution: glasses' thin rims need a wider receptive field

    def __post_init__(self):
        for name in ("num_attributes", "channels", "image_size", "width", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"JudgeConfig.{name} must be a positive int, got {value!r}")
        if self.image_size % 4:
            raise ValueError(f"JudgeConfig.image_size must be divisible by 4 (two stride-2 convs), "
                             f"got {self.image_size}")


JUDGE_PRESETS = {
    "Judge-S": JudgeConfig(width=16, hidden=64, blocks=0),   # smoke test: a second per hundred steps
    "Judge-B": JudgeConfig(),                                 # the course's judge: >= 98 % per attribute in ~1 min
}


class AttributeJudge(nn.Module):
    """conv_encoder's two stride-2 convs to an (s/4) x (s/4) map, a hidden layer, one logit per attribute."""

    def __init__(self, config: JudgeConfig = JudgeConfig()):
        super().__init__()
        self.config = config
        c = config
        self.net = conv_encoder(c.num_attributes, in_channels=c.channels, width=c.width, hidden=c.hidden,
                                blocks=c.blocks, image_size=c.image_size)   # (B, C, s, s) -> (B, A)

    @property
    def image_shape(self) -> tuple:
        return (self.config.channels, self.config.image_size, self.config.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, s, s) images in [-1, 1] -> (B, A) logits, one per attribute."""
        return self.net(check_images(x, "AttributeJudge", self.image_shape))

    def loss(self, batch) -> dict:
        """batch = (images (B, C, s, s), attributes (B, A) in {0, 1}): mean binary cross-entropy."""
        x, y = batch
        if y.shape != (len(x), self.config.num_attributes):
            raise ValueError(f"AttributeJudge.loss expects attributes of shape (B, {self.config.num_attributes}) "
                             f"for B = {len(x)} images, got {tuple(y.shape)}")
        return {"loss": F.binary_cross_entropy_with_logits(self(x), y.float())}

    def predict(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, C, s, s) -> (N, A) in {0., 1.}: attribute present where the logit is positive (p > 0.5)."""
        return in_eval_batches(self, lambda xb: (self(xb) > 0).float(), x, batch_size,
                               torch.zeros(0, self.config.num_attributes))

    def features(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """(N, C, s, s) -> (N, hidden): the activations before the last layer, the face set's FD features (what
        the MNIST classifier's 128-d features are to digits: FD to real faces beside the real-vs-real floor)."""
        body = self.net[:-1]                                   # everything but the final Linear(hidden, A)
        return in_eval_batches(self, lambda xb: body(check_images(xb, "AttributeJudge.features", self.image_shape)),
                               x, batch_size, torch.zeros(0, self.config.hidden))

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """(A,) fraction of the N faces whose attribute the judge reads right, per attribute."""
        return (self.predict(x) == attributes.to(x.device).float()).float().mean(0)
