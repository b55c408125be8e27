"""ONE training loop for every model in the course.

The model supplies `loss(batch) -> dict` whose "loss" entry is the scalar to minimise (other entries are
logged: a VAE returns its reconstruction and KL terms, a GAN its two players' losses). Everything else lives
here, once: AdamW with warmup and an optional cosine decay, gradient clipping, an exponential moving average
of the weights (EMA, what diffusion models sample from), a tqdm bar, a history for plots, a NaN guard, and
checkpoints that resume exactly: a run split in two gives the same weights, bit for bit, as a run in one go.

    trainer = Trainer(model, data, TrainConfig(steps=2000, lr=2e-3, ema_decay=0.999))
    trainer.fit()
    plot_history(trainer.history)

`data` is a tensor, a tuple of tensors indexed together (images, labels), or a callable
`sample(batch_size, generator) -> batch` for data made on the fly.
"""
import copy
import math
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

import minigen

CHECKPOINT_FORMAT = "minigen-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, incomplete, or belongs to a different model or configuration."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainConfig:
    steps: int = 1000                 # optimizer steps; notebooks take this from their profile
    batch_size: int = 128             # big enough for stable Adam statistics on 28x28 digits, small for CPU
    lr: float = 1e-3                  # Adam's classic default; models override where they need
    weight_decay: float = 0.0         # off by default: most course models are small and under-fit
    betas: tuple = (0.9, 0.999)       # Adam defaults; GANs use (0.5, 0.999), set in their notebook
    warmup: int = 0                   # linear warmup steps; transformers want a few hundred
    cosine: bool = False              # decay lr to 0 over the run (helps short budgets end sharp)
    grad_clip: float | None = 1.0     # clip the global grad norm: cheap insurance against a bad batch
    ema_decay: float | None = None    # e.g. 0.999 for diffusion; None keeps no EMA copy
    log_every: int = 10               # history resolution (steps between logged points)
    checkpoint_every: int | None = None  # save every N steps to checkpoint_path
    checkpoint_path: str | None = None
    seed: int = 0                     # seeds the data order (and the global RNG at the first step)
    progress: bool = True             # show the tqdm bar


class Trainer:
    def __init__(self, model: torch.nn.Module, data, config: TrainConfig, *, device=None,
                 callbacks: tuple[Callable, ...] = (), optimizer: torch.optim.Optimizer | None = None):
        if not callable(getattr(model, "loss", None)):
            raise TypeError(f"{type(model).__name__} has no loss(batch) method; the training loop needs one "
                            "that returns a dict with a 'loss' entry")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model, self.config, self.callbacks = model.to(self.device), config, callbacks
        self.sample = _as_sampler(data, config.seed)
        self.optimizer = optimizer or torch.optim.AdamW(
            model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        self.ema = _make_ema(model) if config.ema_decay else None
        self.data_rng = torch.Generator().manual_seed(config.seed)
        self.step, self.history = 0, {"step": []}
        self._seeded = False

    # ----------------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        scale = min(1.0, (step + 1) / c.warmup) if c.warmup else 1.0
        if c.cosine:
            scale *= 0.5 * (1.0 + math.cos(math.pi * min(step / max(c.steps, 1), 1.0)))
        return c.lr * scale

    def train_step(self, batch) -> dict:
        """One optimizer step on `batch`; returns the model's loss terms as floats."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        terms = self.model.loss(batch)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {self.step} (terms: "
                f"{_floats(terms)}); lower the learning rate "
                f"(now {self.lr_at(self.step):.2e}), tighten grad_clip, or check the data for NaNs")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            _update_ema(self.ema, self.model, self.config.ema_decay)
        self.step += 1
        return _floats(terms)

    def fit(self, steps: int | None = None) -> "Trainer":
        """Train until `steps` (default: config.steps) optimizer steps have been taken in total."""
        target = self.config.steps if steps is None else steps
        if not self._seeded and self.step == 0:
            torch.manual_seed(self.config.seed)  # the model's own randomness (noise, dropout) repeats too
            self._seeded = True
        bar = tqdm(total=target, initial=self.step, disable=not self.config.progress, leave=False)
        while self.step < target:
            terms = self.train_step(_to_device(self.sample(self.config.batch_size, self.data_rng), self.device))
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                self._log(terms)
                bar.set_postfix(loss=f"{terms['loss']:.4f}")
            for callback in self.callbacks:
                callback(self, terms)
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save(self.config.checkpoint_path)
            bar.update(1)
        bar.close()
        return self

    def _log(self, terms: dict) -> None:
        self.history["step"].append(self.step)
        for key, value in terms.items():
            self.history.setdefault(key, []).append(value)

    # ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "minigen_version": minigen.__version__,
            "model_class": type(self.model).__name__,
            "config": model_config(self.model),
            "train_config": asdict(self.config),
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"data": self.data_rng.get_state(), "torch": torch.get_rng_state()},
            "sampler": self.sample.state_dict() if hasattr(self.sample, "state_dict") else None,
            "history": self.history,
        }

    def save(self, path) -> Path:
        if path is None:
            raise ValueError("checkpoint_every is set but checkpoint_path is None; give a file to save to")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a half-written checkpoint
        return path

    def load(self, path) -> "Trainer":
        """Resume from a checkpoint written by `save`: weights, EMA, optimizer, RNG streams, step, history."""
        state = read_checkpoint(path, self.model)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_rng.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        if state.get("sampler") is not None:
            self.sample.load_state_dict(state["sampler"])
        self.step, self.history, self._seeded = state["step"], state["history"], True
        return self


# --------------------------------------------------------------------------------------------------------
def model_config(model: torch.nn.Module) -> dict | None:
    """The model's `config` dataclass as a plain dict (what a checkpoint stores to detect mismatches)."""
    config = getattr(model, "config", None)
    return asdict(config) if is_dataclass(config) else None


REQUIRED_KEYS = ("format", "minigen_version", "model_class", "config", "step", "model")


def read_checkpoint(path, model: torch.nn.Module | None = None) -> dict:
    """Load a checkpoint safely (`weights_only=True`) and check it belongs to `model`.

    Raises CheckpointError naming the file and the problem: missing, unreadable/corrupt, not a minigen
    checkpoint, another model class, another config (listing the differing fields), or mismatched weights.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or tampered files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200]})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a minigen checkpoint (format {CHECKPOINT_FORMAT} expected)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {missing}")
    if model is not None:
        _check_matches(path, state, model)
    return state


def _check_matches(path: Path, state: dict, model: torch.nn.Module) -> None:
    if state["model_class"] != type(model).__name__:
        raise CheckpointError(f"checkpoint {path} holds a {state['model_class']}, not a {type(model).__name__}")
    ours = model_config(model)
    if ours is not None and state["config"] is not None and _normalise(ours) != _normalise(state["config"]):
        diff = {k: (state["config"].get(k), v) for k, v in ours.items() if state["config"].get(k) != v}
        raise CheckpointError(f"checkpoint {path} was made with another config; (checkpoint, model): {diff}")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in state["model"].items()}
    if expected != found:
        bad = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise CheckpointError(f"checkpoint {path} weights do not fit the model: {bad[:5]}")


def _normalise(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _as_sampler(data, seed: int) -> Callable:
    if callable(data):
        return data
    tensors = data if isinstance(data, (tuple, list)) else (data,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("data must be a tensor, a tuple of tensors, or a callable(batch_size, generator)")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"data tensors have different lengths: {[len(t) for t in tensors]}")
    return EpochSampler(tuple(tensors), seed)


class EpochSampler:
    """Shuffled mini-batches that visit every example once per epoch.

    Epoch e's order is a permutation seeded by (seed, e), so the sampler's whole state is two integers
    that a checkpoint stores; resuming continues the same order mid-epoch.
    """

    def __init__(self, tensors: tuple, seed: int = 0):
        self.tensors, self.seed = tensors, seed
        self.epoch, self.pos, self._perm = 0, 0, None

    def _order(self) -> torch.Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = torch.randperm(len(self.tensors[0]), generator=g)
        return self._perm

    def __call__(self, batch_size: int, generator: torch.Generator | None = None):
        parts, need = [], batch_size
        while need > 0:
            take = self._order()[self.pos:self.pos + need]
            parts.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos == len(self._perm):
                self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        index = torch.cat(parts)
        batch = tuple(t[index] for t in self.tensors)
        return batch[0] if len(batch) == 1 else batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self._perm = state["epoch"], state["pos"], None


def _floats(terms: dict) -> dict:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _make_ema(model: torch.nn.Module) -> torch.nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)  # BatchNorm statistics and the like follow the live model


def train(model: torch.nn.Module, data, config: TrainConfig | None = None, **overrides) -> Trainer:
    """Shortcut: build a Trainer and fit it. `train(model, x, steps=500, lr=2e-3)`."""
    config = config or TrainConfig()
    config = TrainConfig(**{**asdict(config), **overrides})
    return Trainer(model, data, config).fit()
