"""The training loop: it learns, resumes bit for bit, stops on NaN, and refuses bad checkpoints."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from minigen.train import CheckpointError, EpochSampler, NonFiniteLossError, TrainConfig, Trainer, read_checkpoint


@dataclass
class TinyConfig:
    width: int = 16


class Tiny(nn.Module):
    """Regression y = 3x - 1 plus noise inside the loss, so resume must also restore the global RNG."""

    def __init__(self, config=TinyConfig()):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(1, config.width), nn.Tanh(), nn.Linear(config.width, 1))

    def loss(self, batch):
        x, y = batch
        noisy = x + 0.01 * torch.randn_like(x)
        mse = (self.net(noisy) - y).pow(2).mean()
        return {"loss": mse, "mse": mse.detach()}


def data(n=256):
    x = torch.linspace(-1, 1, n).unsqueeze(1)
    return x, 3 * x - 1


def config(**kw):
    return TrainConfig(**{"steps": 60, "batch_size": 32, "lr": 1e-2, "ema_decay": 0.9, "progress": False, **kw})


def test_loss_decreases():
    trainer = Trainer(Tiny(), data(), config()).fit()
    losses = trainer.history["loss"]
    assert losses[-1] < 0.1 * losses[0], losses


def test_resume_is_bit_identical(tmp_path):
    torch.manual_seed(0)
    straight = Trainer(Tiny(), data(), config()).fit()

    torch.manual_seed(0)
    first = Trainer(Tiny(), data(), config())
    torch.randn(1000)  # a different global RNG state before fitting must not matter: fit seeds it
    first.fit(25).save(tmp_path / "half.pt")
    torch.randn(1000)  # nor between save and resume: the checkpoint restores it
    second = Trainer(Tiny(), data(), config()).load(tmp_path / "half.pt").fit()

    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.parameters(), second.ema.parameters()):
        assert torch.equal(a, b)
    assert straight.history == second.history


def test_checkpoint_every_writes_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    Trainer(Tiny(), data(), config(steps=20, checkpoint_every=10, checkpoint_path=str(path))).fit()
    state = read_checkpoint(path, Tiny())
    assert state["step"] == 20 and state["config"] == {"width": 16}


def test_nan_guard_stops_with_clear_message():
    x, y = data()
    y[5] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss became nan at step"):
        Trainer(Tiny(), (x, y), config(batch_size=256)).fit()


def test_corrupt_checkpoint_is_named(tmp_path):
    path = tmp_path / "ckpt.pt"
    Trainer(Tiny(), data(), config(steps=2)).fit().save(path)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(Tiny(), data(), config()).load(path)


def test_mismatched_checkpoint_names_the_field(tmp_path):
    path = tmp_path / "ckpt.pt"
    Trainer(Tiny(), data(), config(steps=2)).fit().save(path)
    with pytest.raises(CheckpointError, match="width"):
        Trainer(Tiny(TinyConfig(width=8)), data(), config()).load(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a minigen checkpoint"):
        read_checkpoint(path)


def test_model_without_loss_is_rejected():
    with pytest.raises(TypeError, match="loss"):
        Trainer(nn.Linear(1, 1), data(), config())


def test_epoch_sampler_visits_each_example_once_per_epoch():
    sampler = EpochSampler((torch.arange(10),), seed=0)
    seen = torch.cat([sampler(3) for _ in range(10)])  # 30 draws = 3 epochs
    for epoch in range(3):
        assert sorted(seen[10 * epoch:10 * (epoch + 1)].tolist()) == list(range(10))
