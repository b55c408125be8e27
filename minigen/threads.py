"""CPU threads on a shared laptop: torch's pool shrinks while other programs keep a core busy, and grows back.

torch runs its CPU ops on an OpenMP pool with one thread per core, and every parallel region ends at a barrier
that waits for the slowest thread. When another program wants a core too (a second notebook, `make test`, a
browser tab), the pool has more runnable threads than the machine has free cores, the OS deschedules one, and
every barrier waits for it. minigen therefore sizes the pool to the cores the other programs leave free:

    - at `import minigen` (before torch has run an op, so its pool starts at that size) it looks at the machine
      for FIRST_LOOK seconds; `minigen.setup()` looks again, and `adapt()`, which the training loop, the
      samplers and the metric classifier call as they go, looks every INTERVAL seconds. Each look reads how
      many cores the *other* processes kept busy (Linux: /proc/stat minus this process's own CPU time) and sets
      `torch.set_num_threads(cores - busy cores, at least 1)`;
    - your own OMP_NUM_THREADS or MKL_NUM_THREADS, or a call to torch.set_num_threads, always wins: minigen then
      never touches the pool. OMP_WAIT_POLICY is left as you set it (minigen sets no OpenMP variable);
    - MINIGEN_THREADS=off keeps torch's pool as it is.

Measured on the course's 2-core machine (Intel Xeon, 2026-12-05; `python -m minigen.bench cpu --repeat 3 --record`,
docs/results.md "cpu_threads"), ms per training step of the autoencoder / U-Net (cpu presets), and x against the
same model's quiet time with torch's own pool:

    setting                              quiet           beside a torch job           beside a busy core
    torch's pool (MINIGEN_THREADS=off)   23.7 / 50.0     47.6 / 208.2 (2.0x / 4.2x)   46.6 / 168.0 (2.0x / 3.4x)
    minigen's default                    22.7 / 51.0     33.3 / 80.5  (1.4x / 1.6x)   34.0 / 80.5  (1.4x / 1.6x)
    OMP_WAIT_POLICY=PASSIVE (pool off)   31.5 / 86.0     44.3 / 111.9 (1.9x / 2.2x)   44.7 / 125.9 (1.9x / 2.5x)
    OMP_NUM_THREADS=1                    34.2 / 81.7     34.8 / 78.7  (1.5x / 1.6x)   32.0 / 82.2  (1.3x / 1.6x)

Why the pool size and not OpenMP's passive wait policy, which the issue that asked for this suggested: passive
waiting costs the quiet machine 1.3-1.7x (a thread that sleeps at every barrier must be woken at the next), and
an earlier run (AMD EPYC, 2026-12-02) found a short GOMP_SPINCOUNT worse than the default under contention. One
thread per job is as good under load but 1.4-1.6x slower when quiet; a pool that follows the load is both. On 4-8
core laptops the same rule gives back only the cores that are busy (a browser tab: one of eight), so most of the
pool keeps working, and torch's own pool would suffer the same barrier stalls there.

The price, said where it is paid: the thread count changes how parallel sums are split, so the same seed gives
other last digits with 1 thread than with 2, and training then drifts a little. On a quiet machine the pool never
changes and every run repeats number for number; when minigen does shrink it, it prints one line saying so.
Machines without /proc/stat (macOS, Windows) keep torch's pool: the setup line says so, and README
"Troubleshooting" says what to do there.
"""
import os
import time
from contextlib import contextmanager

ENV = "MINIGEN_THREADS"
MODES = ("adapt", "off")
INTERVAL = 2.0     # seconds between looks: a look costs ~50 us; a change of load is followed within 2 s
FIRST_LOOK = 0.1   # seconds the import-time look watches the machine (10 clock ticks of a busy core)
SETUP_LOOK = 0.25  # the setup line's look: long enough that a blip while Jupyter starts the kernel averages out
MIN_SHARE = 0.5    # another process counts as a busy core from half a core's use (a browser's idle tab does not)


def _fresh_state() -> dict:
    # next: when adapt() looks again; last: the reading it compares with; ours: the pool size minigen set;
    # max: the pool torch started with; off: why minigen leaves the pool alone (None: it adapts); told: the
    # one-line notice about a shrunk pool was printed; others: the other programs' cores at the last look
    return {"next": 0.0, "last": None, "ours": None, "max": None, "off": None, "told": False, "others": 0.0}


_state = _fresh_state()


def mode() -> str:
    """MINIGEN_THREADS: 'adapt' (the default) or 'off'; anything else is a clear error."""
    raw = os.environ.get(ENV, "")
    value = raw.strip().lower() or "adapt"
    if value not in MODES:
        raise ValueError(f"{ENV}={raw!r} is not a setting minigen knows: use 'adapt' (the default: the pool "
                         "shrinks while other programs keep a core busy) or 'off' (torch's pool as it is)")
    return value


def _disabled_reason() -> str | None:
    """Why minigen leaves torch's pool alone, or None when it adapts it."""
    if mode() == "off":
        return f"torch's pool as it is ({ENV}=off)"
    yours = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if os.environ.get(k, "").strip()]
    if yours:
        return f"yours ({', '.join(yours)})"
    if not os.path.exists("/proc/stat"):
        return "torch's pool as it is (no /proc/stat here to see other programs' load: README, Troubleshooting)"
    return None


def _cpu_seconds() -> tuple[float, float, float]:
    """(wall clock, CPU seconds all processes spent busy, CPU seconds this process spent), now."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)           # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")          # user nice system irq softirq steal
    return time.monotonic(), busy, time.process_time()


def _others(first: tuple, last: tuple) -> float:
    """Cores' worth of CPU the other processes used between two readings."""
    return max(0.0, (last[1] - first[1]) - (last[2] - first[2])) / (last[0] - first[0])


def threads_for(max_threads: int, others_busy: float) -> int:
    """The pool size beside `others_busy` cores' worth of other programs: every core they leave, at least one."""
    busy_cores = int(others_busy + (1.0 - MIN_SHARE))                   # 0.5 -> 1 busy core, 0.4 -> 0
    return max(1, min(max_threads, max_threads - busy_cores))


def _begin() -> bool:
    """Decide, once per process, who owns the pool; True when minigen adapts it."""
    import torch

    if _state["max"] is None:
        _state["off"] = _disabled_reason()
        _state["max"] = _state["ours"] = torch.get_num_threads()
    elif _state["off"] is None and torch.get_num_threads() != _state["ours"]:   # the user called set_num_threads
        _state["off"] = f"yours (torch.set_num_threads({torch.get_num_threads()}))"
    return _state["off"] is None


def _apply(others: float, announce: bool) -> int:
    """Size the pool beside `others` busy cores; the first time it is below torch's own size, say so once."""
    import torch

    _state["others"] = others
    wanted = threads_for(_state["max"], others)
    if wanted != _state["ours"]:
        torch.set_num_threads(wanted)
        _state["ours"] = wanted
    if announce and wanted < _state["max"] and not _state["told"]:
        _state["told"] = True
        print(f"minigen: other programs are keeping {others:.1f} cores busy, so torch now uses {wanted} of "
              f"{_state['max']} threads until they stop (faster beside them; the last digits of results may "
              f"differ from a quiet run's; {ENV}=off keeps the pool)", flush=True)
    return wanted


def start(seconds: float = FIRST_LOOK) -> None:
    """At `import minigen`: size the pool for what the machine is doing now, before torch runs an op (its
    OpenMP pool starts at the first parallel op, at the size set by then). Silent: setup() prints the line."""
    if not _begin():
        return
    first = _cpu_seconds()
    time.sleep(seconds)
    _state["last"] = _cpu_seconds()
    _state["next"] = _state["last"][0] + INTERVAL
    _apply(_others(first, _state["last"]), announce=False)


def adapt(now: float | None = None, force: bool = False, announce: bool = True) -> int:
    """Look at the machine at most every INTERVAL seconds (`force`: now) and resize torch's pool; return the
    thread count. Cheap between looks (a clock read), so loops call it every step. The first shrink in a process
    prints one line saying so (`announce`)."""
    import torch

    if not _begin():
        return torch.get_num_threads()
    now = time.monotonic() if now is None else now
    if now < _state["next"] and not force:
        return _state["ours"]
    _state["next"] = now + INTERVAL
    sample, last = _cpu_seconds(), _state["last"]
    _state["last"] = sample
    if last is not None and sample[0] > last[0]:
        _apply(_others(last, sample), announce)
    return _state["ours"]


@contextmanager
def fixed():
    """Hold torch's pool at its present size inside the block: the block's numbers repeat exactly, whatever else
    the machine does meanwhile (the tests compare two runs this way)."""
    held = _begin()
    if held:
        _state["off"] = "held (minigen.threads.fixed())"
    try:
        yield
    finally:
        if held and _state["off"] == "held (minigen.threads.fixed())":
            _state["off"] = None


def others_busy(seconds: float = SETUP_LOOK) -> float | None:
    """Cores' worth of CPU the other programs used over the next `seconds` (None without /proc/stat)."""
    if not os.path.exists("/proc/stat"):
        return None
    first = _cpu_seconds()
    time.sleep(seconds)
    return _others(first, _cpu_seconds())


def describe() -> str:
    """One line for the notebook's setup cell: torch's thread count and who decides it; when other programs are
    keeping a core busy, what minigen did about it (or, where it does not decide, that steps will be slower)."""
    import torch

    adapting = _begin()
    if adapting:
        since = time.monotonic() - _state["last"][0] if _state["last"] is not None else 0.0
        if since < SETUP_LOOK:                     # look over at least SETUP_LOOK seconds
            time.sleep(SETUP_LOOK - since)
        adapt(force=True, announce=False)          # the line below says what it did
        busy = _state["others"]
    else:
        busy = others_busy()
    n, most = torch.get_num_threads(), _state["max"]
    if adapting and n < most:
        _state["told"] = True
        return (f"{n} of {most} threads: other programs are keeping {busy:.1f} cores busy, so minigen gave "
                f"{most - n} back until they stop (steps slower than a quiet machine's, README Troubleshooting; the "
                f"last digits of results may differ from a quiet run's; {ENV}=off keeps {most})")
    if adapting:
        return (f"{n} thread{'s' if n != 1 else ''}; minigen gives cores back while other programs keep them busy "
                f"({ENV}=off: never)")
    line = f"{n} thread{'s' if n != 1 else ''}, {_state['off']}"
    if busy is not None and busy >= MIN_SHARE:
        line += (f" | other programs are keeping {busy:.1f} cores busy: steps may run 2-4x slower "
                 "(README, Troubleshooting)")
    return line
