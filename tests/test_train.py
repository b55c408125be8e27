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
    with pytest.raises(NonFiniteLossError, match="NaN or infinite at step 0"):
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


# ---- several players ---------------------------------------------------------------------------------------
class TwoPlayers(nn.Module):
    """A toy adversarial pair: `g` maps noise to a point, `d` scores points; each has its own optimizer.

    The step follows a GAN's shape (critic first, then generator against the updated critic) so the test
    exercises everything a GAN needs: two optimizers, gradients kept apart, EMA, noise from the global RNG.
    """

    def __init__(self):
        super().__init__()
        self.config = TinyConfig()
        self.g = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
        self.d = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))

    def optimizers(self, config):
        from minigen.train import adamw
        return {"d": adamw(self.d, config), "g": adamw(self.g, config, lr=config.lr / 2, betas=(0.5, 0.999))}

    def train_step(self, batch, trainer):
        real = batch
        fake = self.g(torch.randn_like(real))
        d_loss = nn.functional.softplus(-self.d(real)).mean() + nn.functional.softplus(self.d(fake.detach())).mean()
        trainer.update("d", {"loss": d_loss})
        g_loss = nn.functional.softplus(-self.d(fake)).mean()
        trainer.update("g", {"loss": g_loss})
        return {"d_loss": d_loss, "g_loss": g_loss}


def ring(n=256):
    angle = torch.linspace(0, 6.28, n)
    return torch.stack([angle.cos(), angle.sin()], 1)


def test_two_players_train_and_resume_bit_identical(tmp_path):
    straight = Trainer(seeded(TwoPlayers), ring(), config(steps=40)).fit()
    assert set(straight.optimizers) == {"d", "g"}
    assert {"d_loss", "g_loss", "d_grad_norm", "g_grad_norm"} <= set(straight.history)

    first = Trainer(seeded(TwoPlayers), ring(), config(steps=40))
    first.fit(17).save(tmp_path / "half.pt")
    torch.randn(100)
    second = Trainer(seeded(TwoPlayers, 1), ring(), config(steps=40)).load(tmp_path / "half.pt").fit()
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.parameters(), second.ema.parameters()):
        assert torch.equal(a, b)
    for name in ("d", "g"):
        sa, sb = straight.optimizers[name].state_dict()["state"], second.optimizers[name].state_dict()["state"]
        assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert straight.history == second.history


def test_each_player_steps_only_its_own_parameters():
    model = TwoPlayers()
    trainer = Trainer(model, ring(), config(steps=1, lr=1e-2))
    g0 = [p.clone() for p in model.g.parameters()]
    terms = {"loss": model.d(ring()).mean()}
    trainer.update("d", terms)
    assert all(torch.equal(a, b) for a, b in zip(g0, model.g.parameters()))
    with pytest.raises(KeyError, match="no optimizer named 'x'"):
        trainer.update("x", terms)


def test_nan_guard_names_the_player():
    x = ring()
    x[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="optimizer 'd'"):
        Trainer(TwoPlayers(), x, config(batch_size=256)).fit()


def test_checkpoint_with_other_optimizers_is_refused(tmp_path):
    Trainer(TwoPlayers(), ring(), config(steps=2)).fit().save(tmp_path / "two.pt")
    model = TwoPlayers()
    model.optimizers = lambda c: {"only": torch.optim.AdamW(model.parameters())}
    with pytest.raises(CheckpointError, match="optimizers"):
        Trainer(model, ring(), config()).load(tmp_path / "two.pt")


# ---- parameter groups, amp, compile -------------------------------------------------------------------------
class WithNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.pos = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def no_weight_decay(self):
        return {"pos"}


def test_no_weight_decay_on_biases_norms_embeddings():
    from minigen.train import adamw
    model = WithNorms()
    opt = adamw(model, TrainConfig(weight_decay=0.1))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decay}
    assert names == {"proj.weight"}, names
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_weight_decay_skips_gains_in_training():
    """Trained with a zero loss gradient, decayed weights shrink and a LayerNorm gain stays at 1."""
    class Zero(WithNorms):
        def loss(self, batch):
            return {"loss": 0.0 * self.proj(self.norm(self.embed(batch))).sum()}
    trainer = Trainer(Zero(), torch.arange(10), config(steps=5, weight_decay=0.5, ema_decay=None))
    before = trainer.model.proj.weight.detach().clone()
    trainer.fit()
    assert torch.equal(trainer.model.norm.weight, torch.ones(8))
    assert trainer.model.proj.weight.abs().sum() < before.abs().sum()


def seeded(model_class, seed=0):
    torch.manual_seed(seed)
    return model_class()


def test_amp_is_a_noop_with_notice_on_cpu(capsys):
    plain = Trainer(seeded(Tiny), data(), config(steps=10)).fit()
    amp = Trainer(seeded(Tiny), data(), config(steps=10, amp="bf16")).fit()
    assert "no-op on cpu" in capsys.readouterr().out
    assert plain.history == amp.history
    with pytest.raises(ValueError, match="fp8"):
        Trainer(Tiny(), data(), config(amp="fp8"))


class NoiseFree(Tiny):
    """Compiled code draws random numbers from its own generator, so compare on a loss without noise."""

    def loss(self, batch):
        x, y = batch
        mse = (self.net(x) - y).pow(2).mean()
        return {"loss": mse}


def test_compile_gives_the_same_loss_curve():
    eager = Trainer(seeded(NoiseFree), data(), config(steps=20, log_every=5)).fit()
    compiled = Trainer(seeded(NoiseFree), data(), config(steps=20, log_every=5, compile=True)).fit()
    assert compiled._loss is not compiled.model.loss and eager._loss == eager.model.loss
    assert compiled.history["loss"] == pytest.approx(eager.history["loss"], rel=1e-4, abs=1e-6)


# ---- data parallel under torchrun ---------------------------------------------------------------------------
DDP_SCRIPT = """
import sys, torch
from minigen.train import Trainer, TrainConfig
sys.path.insert(0, {tests!r})
from test_train import NoiseFree, data, config
torch.manual_seed(0)
trainer = Trainer(NoiseFree(), data(), config(steps=30, log_every=10)).fit()
trainer.save({out!r})
"""


def test_two_gloo_processes_equal_one_with_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU ranks with gloo, each taking half of every global batch of 32, matches one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "ddp.pt")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = read_checkpoint(tmp_path / "ddp.pt")

    single = Trainer(seeded(NoiseFree), data(), config(steps=30, log_every=10)).fit()
    assert ddp["step"] == 30
    for name, value in single.model.state_dict().items():
        diff = (ddp["model"][name] - value).abs().max().item()
        print(f"{name}: max |ddp - single| = {diff:.2e}")
        assert diff < 1e-5
    assert ddp["history"]["loss"] == pytest.approx(single.history["loss"], rel=1e-5)
