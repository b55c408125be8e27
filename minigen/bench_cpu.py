"""The CPU-threads benchmark: `python -m minigen.bench cpu` (the measurements behind minigen/threads.py).

A training step of the course autoencoder and of the course U-Net (their cpu presets, AdamW), timed in a fresh
process per measurement, under three conditions:

    quiet       nothing else running
    torch job   beside a second process training the same model with the same setting (a second notebook)
    busy core   beside one single-threaded busy loop (a browser tab's worth of work)

for each setting: torch's own pool (MINIGEN_THREADS=off, what torch does without minigen), minigen's default (the
pool gives cores back while other programs keep them busy, minigen/threads.py), and any candidates given with
--also (e.g. --also MINIGEN_THREADS=off,OMP_WAIT_POLICY=PASSIVE --also OMP_NUM_THREADS=1). Figures are median
milliseconds per step (the median of --repeat measurements, the settings taking turns) and ratios to torch's own quiet time in the same run;
`--record` stores them in docs/results.md ("cpu_threads"). Nothing else should run on the machine meanwhile.
"""
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {"autoencoder": dict(batch=64, warmup=5, steps=40), "unet": dict(batch=32, warmup=3, steps=12)}
CONDITIONS = ("quiet", "torch job", "busy core")
BUSY = "while True: pass"
WARM_SECONDS = 3.0  # untimed steps first: torch's first calls, and minigen's first look at the machine
BASELINE = "torch's pool (MINIGEN_THREADS=off)"
DEFAULT = "minigen's default"


def worker(model: str, batch: int, warmup: int, steps: int, forever: bool = False) -> None:
    """Time `steps` training steps after `warmup` ones; print {"ms": median, "threads": n} as JSON. With
    `forever`, train until killed (the background torch job)."""
    import torch

    from minigen import threads
    from minigen.recipes import recipe

    torch.manual_seed(0)
    net = recipe("autoencoder" if model == "autoencoder" else "diffusion", "cpu").build()
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    data = x if model == "autoencoder" else (x, torch.arange(batch) % 10)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    times, step = [], 0
    warm_until = time.perf_counter() + WARM_SECONDS  # past threads.INTERVAL: minigen has looked at the machine
    while forever or len(times) < steps:
        threads.adapt()  # as minigen.train does
        start = time.perf_counter()
        loss = net.loss(data)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step > warmup and start >= warm_until:
            times.append(time.perf_counter() - start)
    print(json.dumps({"ms": 1000 * statistics.median(times), "threads": torch.get_num_threads()}))


def _env(setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
                                                            "OMP_NUM_THREADS", "MINIGEN_THREADS")}
    return {**env, **setting}


def _worker_cmd(model: str, forever: bool = False) -> list[str]:
    m = MODELS[model]
    return [sys.executable, "-m", "minigen.bench", "cpu", "--worker", model, str(m["batch"]), str(m["warmup"]),
            str(m["steps"])] + (["--forever"] if forever else [])


def measure(model: str, setting: dict, condition: str) -> float:
    """Median ms per training step of `model` under `setting` (environment variables) and `condition`."""
    background = None
    if condition == "torch job":
        background = subprocess.Popen(_worker_cmd(model, forever=True), env=_env(setting),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif condition == "busy core":
        background = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.DEVNULL)
    try:
        if background is not None:
            time.sleep(3.0)  # let it import torch and reach its loop
        out = subprocess.run(_worker_cmd(model), env=_env(setting), capture_output=True, text=True, check=True)
    finally:
        if background is not None:
            background.kill()
            background.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def settings(also: list[str]) -> dict[str, dict]:
    out = {BASELINE: {"MINIGEN_THREADS": "off"}, DEFAULT: {}}
    for item in also:
        pairs = dict(p.split("=", 1) for p in item.split(","))
        out[item] = pairs
    return out


def run(models=None, also=(), record=False, repeat=1) -> list[dict]:
    """Time every (model, setting, condition). The settings take turns within each condition and each round of
    `repeat`, so a machine that drifts (a shared VM's neighbours) shifts every setting alike, not one of them."""
    models = list(models or MODELS)
    chosen = settings(list(also))
    print(f"minigen.bench cpu: {os.cpu_count()} cores; median ms per training step (batch: "
          + ", ".join(f"{m} {MODELS[m]['batch']}" for m in models) + "); x = slowdown vs the same model's quiet time "
          f"with torch's own pool; median of {repeat} measurement{'s' if repeat > 1 else ''} each, settings in turn")
    rows = []
    for model in models:
        for condition in CONDITIONS:
            times = {name: [] for name in chosen}
            for _ in range(repeat):
                for name, setting in chosen.items():
                    times[name].append(measure(model, setting, condition))
            for name in chosen:
                rows.append(dict(model=model, setting=name, condition=condition, ms=statistics.median(times[name])))
                print(f"  {model:<12} {name:<44} {condition:<10} {rows[-1]['ms']:9.1f} ms  "
                      f"({', '.join(f'{t:.1f}' for t in times[name])})", flush=True)
    print()
    print(table(rows))
    if record:
        _record(rows)
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<12} {'setting':<44}" + "".join(f"{c:>20}" for c in CONDITIONS)]
    for model in dict.fromkeys(r["model"] for r in rows):
        base = next(r["ms"] for r in rows if r["model"] == model and r["setting"] == BASELINE
                    and r["condition"] == "quiet")
        for name in dict.fromkeys(r["setting"] for r in rows):
            cells = [next(r["ms"] for r in rows if (r["model"], r["setting"], r["condition"]) == (model, name, c))
                     for c in CONDITIONS]
            lines.append(f"{model:<12} {name:<44}" + "".join(f"{ms:>11.1f} ms {ms / base:>4.1f}x" for ms in cells))
    return "\n".join(lines)


def _record(rows: list[dict]) -> None:
    from minigen import results

    for r in rows:
        if r["setting"] == BASELINE:
            continue
        base = next(b["ms"] for b in rows if (b["model"], b["condition"], b["setting"])
                    == (r["model"], r["condition"], BASELINE))
        results.record("cpu_threads", f"{r['model']} training step, {r['condition']}, {r['setting']}", r["ms"],
                       baseline=base, baseline_label="torch's pool", unit="ms", profile="cpu")


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m minigen.bench cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("MODEL", "BATCH", "WARMUP", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="*", choices=list(MODELS), default=None)
    parser.add_argument("--also", action="append", default=[],
                        help="another setting to time, as VAR=VALUE[,VAR=VALUE]; repeatable")
    parser.add_argument("--repeat", type=int, default=1, help="measure each cell this many times, keep the median")
    parser.add_argument("--record", action="store_true", help="store the figures in docs/results.md")
    args = parser.parse_args(argv)
    if args.worker:
        model, batch, warmup, steps = args.worker
        worker(model, int(batch), int(warmup), int(steps), forever=args.forever)
        return
    run(args.models, args.also, args.record, args.repeat)
