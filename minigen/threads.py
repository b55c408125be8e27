"""CPU threads on a shared laptop: what torch does, what it costs beside other programs, and the opt-in fix.

torch runs its CPU ops on an OpenMP pool with one thread per core, and every parallel region ends at a barrier
that waits for the slowest thread. When another program wants a core too (a second notebook, `make test`, a
browser tab), the pool has more runnable threads than the machine has cores, the OS deschedules one, and every
barrier waits for it. Measured on the course's 2-core machine (`python -m minigen.bench cpu --record`,
docs/results.md "cpu_threads", 2026-12-02), ms per training step, autoencoder / U-Net (cpu presets):

    setting                   quiet           beside a torch job    beside a busy core
    torch's defaults          20.1 / 33.5     55.0 / 99.6 (2.7x / 3.0x)   40.6 / 68.7 (2.0x / 2.0x)
    MINIGEN_THREADS=adapt     20.8 / 34.7     32.1 / 56.9 (1.6x / 1.7x)   29.0 / 53.5 (1.4x / 1.6x)
    OMP_NUM_THREADS=1         31.1 / 52.2     32.1 / 53.6                 29.0 / 51.8
    OMP_WAIT_POLICY=PASSIVE   23.9 / 60.2     40.6 / 76.5                 42.0 / 88.3
    GOMP_SPINCOUNT=10000      18.9 / 33.9     94.6 / 361.5                60.1 / 263.1

(x: against the same model's quiet time with torch's defaults.) OpenMP's wait policy is not the lever: passive
waiting costs the quiet machine 1.2-1.8x and a short spin makes contention worse. One thread per job is the fix
under load and 1.5x slower when quiet.

The fix is a smaller pool while something else runs, but the thread count changes the rounding of parallel sums:
the same seed then gives other numbers in the last digits (checked: weights after 10 steps differ at 1 and 2
threads). The course promises the same numbers for the same seed, so minigen keeps torch's pool by default and
offers the rest:

    - the setup line (`describe()`) says how many threads torch uses and warns when other programs are keeping
      a core busy right now (README, "Troubleshooting");
    - MINIGEN_THREADS=adapt: `adapt()`, which `minigen.train` calls every step (it does real work every
      `INTERVAL` seconds), reads how many cores the *other* processes kept busy since its last look (Linux:
      /proc/stat minus this process's own CPU time) and sets `torch.set_num_threads(cores - busy cores, at
      least 1)`: fast beside other jobs, not bit-reproducible;
    - OMP_NUM_THREADS, MKL_NUM_THREADS or your own torch.set_num_threads always win (adapt stops at once).
"""
import os
import time

INTERVAL = 2.0    # seconds between looks: a look costs ~50 us; a change of load is followed within 2 s
MIN_SHARE = 0.5   # another process counts as a busy core from half a core's use (a browser's idle tab does not)

_state = {"next": 0.0, "last": None, "ours": None, "max": None, "off": None}


def _disabled_reason() -> str | None:
    if os.environ.get("MINIGEN_THREADS", "").strip().lower() != "adapt":
        return "torch's default pool (one per core; MINIGEN_THREADS=adapt shrinks it beside other programs)"
    yours = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k, "").strip()]
    if yours:
        return f"yours ({', '.join(yours)})"
    if not os.path.exists("/proc/stat"):
        return "torch's defaults (no /proc/stat to see other programs' load)"
    return None


def _cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU seconds all processes spent busy, CPU seconds this process spent), now."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)           # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")          # user nice system irq softirq steal
    return time.monotonic(), busy, time.process_time()


def threads_for(max_threads: int, others_busy: float) -> int:
    """The pool size beside `others_busy` cores' worth of other programs: every core they leave, at least one."""
    busy_cores = int(others_busy + (1.0 - MIN_SHARE))                   # 0.5 -> 1 busy core, 0.4 -> 0
    return max(1, min(max_threads, max_threads - busy_cores))


def adapt(now: float | None = None) -> int:
    """Look at the machine at most every INTERVAL seconds and resize torch's pool; return the thread count."""
    import torch

    if _state["max"] is None:                                          # the first call: who decides, and the pool
        _state["off"] = _disabled_reason()
        _state["max"] = _state["ours"] = torch.get_num_threads()
    if _state["off"] is not None:
        return torch.get_num_threads()
    if torch.get_num_threads() != _state["ours"]:                       # the user called torch.set_num_threads
        _state["off"] = f"yours (torch.set_num_threads({torch.get_num_threads()}))"
        return torch.get_num_threads()
    now = time.monotonic() if now is None else now
    if now < _state["next"]:
        return _state["ours"]
    _state["next"] = now + INTERVAL
    sample, last = _cpu_seconds(), _state["last"]
    _state["last"] = sample
    if last is not None and sample[0] > last[0]:
        others = max(0.0, (sample[1] - last[1]) - (sample[2] - last[2])) / (sample[0] - last[0])
        wanted = threads_for(_state["max"], others)
        if wanted != _state["ours"]:
            torch.set_num_threads(wanted)
            _state["ours"] = wanted
    return _state["ours"]


def others_busy(seconds: float = 0.25) -> float | None:
    """Cores' worth of CPU the other programs used over the next `seconds` (None without /proc/stat)."""
    if not os.path.exists("/proc/stat"):
        return None
    first = _cpu_seconds()
    time.sleep(seconds)
    last = _cpu_seconds()
    return max(0.0, (last[1] - first[1]) - (last[2] - first[2])) / (last[0] - first[0])


def describe() -> str:
    """One line for the notebook's setup cell: torch's thread count, who decides it, and a warning when other
    programs are keeping a core busy now (training will be slower than the README's table)."""
    import torch

    off = _state["off"] if _state["off"] is not None else _disabled_reason()
    n = torch.get_num_threads()
    line = f"{n} thread{'s' if n != 1 else ''}, " + (off if off is not None else
                                                     "minigen.train shrinks the pool beside other programs "
                                                     "(MINIGEN_THREADS=adapt)")
    busy = others_busy()
    if busy is not None and busy >= MIN_SHARE:
        line += (f" | other programs are keeping {busy:.1f} cores busy: steps may run 2-4x slower "
                 "(README, Troubleshooting)")
    return line
