"""ONE training loop for every model in the course.

A model plays one of two ways (docs/architecture.md, "the training-step protocol"):

- **One player** (autoencoder, VAE, flow, diffusion, DiT): it supplies `loss(batch) -> dict` whose "loss" entry
  is the scalar to minimise; the other entries are logged (a VAE returns its reconstruction and KL terms).
- **Several players** (a GAN's generator and discriminator): it supplies `optimizers(config) -> {name: optimizer}`
  and `train_step(batch, trainer) -> dict`, and inside its step calls `trainer.update(name, terms)` once per
  player; `update` does what a one-player step does, for that optimizer's parameters only.

Everything else lives here, once: AdamW with parameter groups (no weight decay on biases, norm gains, embeddings),
warmup and an optional cosine decay, gradient clipping, an exponential moving average of the weights (EMA, what
diffusion models sample from), bf16 autocast and `torch.compile` on request, data-parallel training under
`torchrun`, a tqdm bar, a history for plots, a NaN guard, and checkpoints that resume exactly: a run split in two
gives the same weights, bit for bit, as a run in one go.

    trainer = Trainer(model, data, TrainConfig(steps=2000, lr=2e-3, ema_decay=0.999))
    trainer.fit()
    plot_history(trainer.history)

`data` is a tensor, a tuple of tensors indexed together (images, labels), or a callable
`sample(batch_size, generator) -> batch` for data made on the fly.

The hot path never waits for the GPU: loss terms stay tensors until a logged step, and the NaN guard keeps a
flag on the device that is read at logged steps and before every checkpoint (every step on the CPU, where reading
it costs nothing, or with `TrainConfig(debug=True)`).
"""
import contextlib
import copy
import math
import os
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

import minigen

from . import threads

CHECKPOINT_FORMAT = "minigen-checkpoint-v1"
MAIN = "main"  # the name of a one-player model's only optimizer


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, incomplete, or belongs to a different model or configuration."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainConfig:
    steps: int = 1000                 # optimizer steps; notebooks take this from their profile
    batch_size: int = 128             # the GLOBAL batch: under torchrun each of W ranks takes batch_size / W
    lr: float = 1e-3                  # Adam's classic default; models override where they need
    weight_decay: float = 0.0         # off by default: most course models are small and under-fit
    betas: tuple = (0.9, 0.999)       # Adam defaults; GANs use (0.5, 0.999) (Radford et al. 2015)
    warmup: int = 0                   # linear warmup steps; transformers want a few hundred
    cosine: bool = False              # decay lr to 0 over the run (helps short budgets end sharp)
    grad_clip: float | None = 1.0     # clip the global grad norm: cheap insurance against a bad batch
    ema_decay: float | None = None    # e.g. 0.999 for diffusion; None keeps no EMA copy
    log_every: int = 10               # history resolution (steps between logged points, GPU syncs)
    checkpoint_every: int | None = None  # save every N steps to checkpoint_path
    checkpoint_path: str | None = None
    seed: int = 0                     # seeds the data order (and the global RNG at the first step)
    progress: bool = True             # show the tqdm bar
    amp: str | None = None            # "bf16": autocast the loss on CUDA (a no-op with a notice on the CPU)
    compile: bool = False             # run the loss through torch.compile (small GPU models are launch-bound)
    debug: bool = False               # check the loss for NaN every step, even on a GPU (one sync a step)


def adamw(params, config: TrainConfig, *, lr: float | None = None, betas: tuple | None = None,
          no_decay: set | None = None) -> torch.optim.AdamW:
    """AdamW over `params` (a module, or (name, parameter) pairs) with the course's two parameter groups.

    Weight decay pulls a weight matrix toward small norms, which regularises it; on a bias, a norm's gain or an
    embedding it only drags the value toward 0 (a LayerNorm gain decayed to 0 switches the layer off). So those
    get no decay, as in nanoGPT's `configure_optimizers` and the MAE reference: every parameter with ndim < 2,
    every `nn.Embedding` weight, and the names in `no_decay` (a module may list its own, e.g. position
    embeddings and mask tokens, in a `no_weight_decay()` method).
    """
    named, skip = _named_parameters(params, no_decay)
    decay = [p for n, p in named if p.ndim >= 2 and n not in skip]
    rest = [p for n, p in named if p.ndim < 2 or n in skip]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr if lr is None else lr, betas=betas or config.betas)


def _named_parameters(params, no_decay: set | None) -> tuple[list, set]:
    skip = set(no_decay or ())
    if isinstance(params, torch.nn.Module):
        if callable(getattr(params, "no_weight_decay", None)):
            skip |= set(params.no_weight_decay())
        for module_name, module in params.named_modules():
            if isinstance(module, torch.nn.Embedding):
                skip.add(f"{module_name}.weight" if module_name else "weight")
        params = params.named_parameters()
    named = [(n, p) for n, p in params if p.requires_grad]
    return named, skip


class Trainer:
    def __init__(self, model: torch.nn.Module, data, config: TrainConfig, *, device=None,
                 callbacks: tuple[Callable, ...] = (), optimizer: torch.optim.Optimizer | None = None):
        self.players = callable(getattr(model, "train_step", None))
        if not self.players and not callable(getattr(model, "loss", None)):
            raise TypeError(f"{type(model).__name__} has no loss(batch) method (nor optimizers() and "
                            "train_step(batch, trainer)); the training loop needs one that returns a dict "
                            "with a 'loss' entry")
        self.rank, self.world = _init_distributed()
        if device is None:
            device = next(model.parameters()).device
            if self.world > 1 and torch.cuda.is_available():
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        self.device = torch.device(device)
        if config.batch_size % self.world:
            raise ValueError(f"batch_size {config.batch_size} does not split over {self.world} processes; "
                             f"make it a multiple of {self.world}")
        self.model, self.config, self.callbacks = model.to(self.device), config, callbacks
        self.sample = _as_sampler(data, config.seed)
        self.optimizers = self._make_optimizers(optimizer)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("base_lr", group["lr"])
        self.ema = _make_ema(model) if config.ema_decay else None
        self.data_rng = torch.Generator().manual_seed(config.seed)
        self.step, self.history = 0, {"step": []}
        self._seeded, self._update_terms = False, {}
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)  # the NaN guard's device-side flag
        self._autocast = _autocast_for(config.amp, self.device, verbose=self.rank == 0)
        self._loss = self.compile(model.loss) if not self.players else None

    def _make_optimizers(self, optimizer) -> dict:
        if self.players:
            if optimizer is not None:
                raise TypeError("a model with train_step() builds its own optimizers in optimizers(config)")
            optimizers = self.model.optimizers(self.config)
            if not isinstance(optimizers, dict) or not optimizers:
                raise TypeError(f"{type(self.model).__name__}.optimizers(config) must return a non-empty dict "
                                f"{{name: optimizer}}, got {type(optimizers).__name__}")
            return optimizers
        return {MAIN: optimizer or adamw(self.model, self.config)}

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """A one-player model's optimizer (several players: `trainer.optimizers[name]`)."""
        if len(self.optimizers) != 1:
            raise AttributeError(f"this model has several optimizers {list(self.optimizers)}; "
                                 "use trainer.optimizers[name]")
        return next(iter(self.optimizers.values()))

    def compile(self, fn: Callable) -> Callable:
        """`fn` through torch.compile when the config asks for it (a several-players model compiles its losses)."""
        return torch.compile(fn) if self.config.compile else fn

    # ----------------------------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """The learning rate of the config's `lr` at `step` (each parameter group scales its own the same way)."""
        return self.config.lr * self._lr_scale(step)

    def _lr_scale(self, step: int) -> float:
        c = self.config
        scale = min(1.0, (step + 1) / c.warmup) if c.warmup else 1.0
        if c.cosine:
            scale *= 0.5 * (1.0 + math.cos(math.pi * min(step / max(c.steps, 1), 1.0)))
        return scale

    def autocast(self):
        """The context a loss is computed in: bf16 autocast when asked for on CUDA, else nothing."""
        return self._autocast()

    def train_step(self, batch) -> dict:
        """One optimizer step (one per player) on `batch`; returns the loss terms as detached tensors."""
        self.model.train()
        scale = self._lr_scale(self.step)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        self._update_terms = {}
        with self.autocast():
            terms = self.model.train_step(batch, self) if self.players else self._loss(batch)
        if not self.players:
            self.update(MAIN, terms)
        terms = {**terms, **self._update_terms}
        if self.ema is not None:
            _update_ema(self.ema, self.model, self.config.ema_decay)
        self.step += 1
        return {k: v.detach() if torch.is_tensor(v) else v for k, v in terms.items()}

    def update(self, name: str, terms: dict) -> None:
        """Backward `terms["loss"]` and step the optimizer `name`: NaN guard, all-reduce, clipping, step.

        A several-players model calls this once per player inside its `train_step`; gradients are zeroed for
        that optimizer's parameters first, so one player's loss never leaks into another's step.
        """
        if name not in self.optimizers:
            raise KeyError(f"no optimizer named {name!r}; the model's optimizers are {list(self.optimizers)}")
        loss, opt = terms["loss"], self.optimizers[name]
        self._guard(name, loss, terms)
        opt.zero_grad(set_to_none=True)
        with _no_autocast(self.device):
            loss.backward()
        params = [p for group in opt.param_groups for p in group["params"]]
        if self.world > 1:
            _all_reduce_grads(params, self.world)
        if self.config.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
            self._update_terms["grad_norm" if name == MAIN else f"{name}_grad_norm"] = norm  # logged
        opt.step()

    def _guard(self, name: str, loss: torch.Tensor, terms: dict) -> None:
        self._bad |= ~torch.isfinite(loss.detach())
        if (self.config.debug or self.device.type == "cpu") and bool(self._bad):  # the message only when bad
            self._raise_non_finite(f"at step {self.step} (optimizer {name!r}, terms: {_floats(terms)})")

    def _check_finite(self, where: str) -> None:
        if bool(self._bad):  # reads the device: at logged steps and before checkpoints only
            self._raise_non_finite(where)

    def _raise_non_finite(self, where: str) -> None:
        raise NonFiniteLossError(
            f"loss became NaN or infinite {where}; lower the learning rate "
            f"(now {self.lr_at(self.step):.2e}), tighten grad_clip, or check the data for NaNs")

    def fit(self, steps: int | None = None) -> "Trainer":
        """Train until `steps` (default: config.steps) optimizer steps have been taken in total."""
        target = self.config.steps if steps is None else steps
        if not self._seeded and self.step == 0:
            # the model's own randomness (noise, dropout) repeats too; ranks draw different noise
            torch.manual_seed(self.config.seed + self.rank)
            self._seeded = True
        bar = tqdm(total=target, initial=self.step, disable=not self.config.progress or self.rank > 0, leave=False)
        adapt_threads = self.device.type == "cpu"
        while self.step < target:
            if adapt_threads:
                threads.adapt()  # a clock read; every INTERVAL s a look at the machine (minigen/threads.py)
            batch = self.sample(self.config.batch_size, self.data_rng)
            terms = self.train_step(_to_device(_shard(batch, self.rank, self.world), self.device))
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                self._check_finite(f"in the {self.config.log_every} steps before step {self.step} (the weights "
                                   "are now bad: resume from the last checkpoint, or set debug=True to stop at "
                                   "the first bad step)")
                terms = self._log(terms)
                bar.set_postfix(loss=f"{terms['loss']:.4f}" if "loss" in terms else "")
            for callback in self.callbacks:
                callback(self, terms)
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self._check_finite(f"before the checkpoint at step {self.step}")
                self.save(self.config.checkpoint_path)
            bar.update(1)
        bar.close()
        return self

    def _log(self, terms: dict) -> dict:
        """Floats of the terms (averaged over ranks under torchrun) appended to the history."""
        terms = _floats(terms)
        if self.world > 1:
            values = torch.tensor(list(terms.values()), dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(values)
            terms = dict(zip(terms, (values / self.world).tolist()))
        self.history["step"].append(self.step)
        for key, value in terms.items():
            self.history.setdefault(key, []).append(value)
        return terms

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
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "rng": {"data": self.data_rng.get_state(), "torch": torch.get_rng_state()},
            "sampler": self.sample.state_dict() if hasattr(self.sample, "state_dict") else None,
            "history": self.history,
        }

    def save(self, path) -> Path:
        """Write a checkpoint (rank 0 only under torchrun; the other ranks hold the same weights)."""
        if path is None:
            raise ValueError("checkpoint_every is set but checkpoint_path is None; give a file to save to")
        path = Path(path)
        if self.rank > 0:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: a crash mid-save never leaves a half-written checkpoint
        return path

    def load(self, path) -> "Trainer":
        """Resume from a checkpoint written by `save`: weights, EMA, optimizers, RNG streams, step, history."""
        state = read_checkpoint(path, self.model)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        saved = state.get("optimizers") or {MAIN: state["optimizer"]}  # v1 files before several players
        if set(saved) != set(self.optimizers):
            raise CheckpointError(f"checkpoint {path} has optimizers {sorted(saved)}, the model has "
                                  f"{sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])
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
    diff = {} if ours is None or state["config"] is None else _config_diff(state["config"], ours)
    if diff:
        raise CheckpointError(f"checkpoint {path} was made with another config; (checkpoint, model): {diff}")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    found = {k: v.shape for k, v in state["model"].items()}
    if expected != found:
        bad = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise CheckpointError(f"checkpoint {path} weights do not fit the model: {bad[:5]}")


def _config_diff(saved: dict, ours: dict, prefix: str = "") -> dict:
    """{field: (checkpoint's, model's)} for every field that differs, nested configs as "denoiser.width" (tuples
    and lists compare equal: a saved tuple may come back as a list)."""
    out = {}
    for k in sorted(set(saved) | set(ours)):
        a, b = saved.get(k), ours.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_config_diff(a, b, f"{prefix}{k}."))
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out[f"{prefix}{k}"] = (a, b)
    return out


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


def _shard(batch, rank: int, world: int):
    """This rank's slice of a global batch: rows [rank * b, (rank + 1) * b) of every tensor, b = B / world."""
    if world == 1:
        return batch
    return _map_tensors(lambda t: t[rank * (len(t) // world):(rank + 1) * (len(t) // world)], batch)


def _init_distributed() -> tuple[int, int]:
    """(rank, world size): (0, 1) alone; under torchrun, joins the process group (nccl on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _all_reduce_grads(params: list, world: int) -> None:
    """Average the gradients over ranks in one flat buffer: the sum DDP computes, for any method we call."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of sizes,): one collective instead of one a tensor
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _autocast_for(amp: str | None, device: torch.device, verbose: bool) -> Callable:
    if amp is None:
        return contextlib.nullcontext
    if amp != "bf16":
        raise ValueError(f"amp={amp!r} is not supported; use 'bf16' or None")
    if device.type != "cuda":
        if verbose:
            print(f"amp='bf16' is a no-op on {device.type}: training in fp32")
        return contextlib.nullcontext
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)


def _no_autocast(device: torch.device):
    """Backward outside autocast (PyTorch's advice); the ops replay in the dtypes the forward chose."""
    if device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.autocast("cuda", enabled=False)
    return contextlib.nullcontext()


def _to_device(batch, device):
    return _map_tensors(lambda t: t.to(device, non_blocking=True), batch)


def _map_tensors(fn: Callable, batch):
    """`fn` applied to every tensor of a batch: a tensor, a tuple/list or a dict of them; anything else as is."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_tensors(fn, b) for b in batch)
    if isinstance(batch, dict):
        return {k: _map_tensors(fn, v) for k, v in batch.items()}
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
