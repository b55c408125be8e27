"""minigen.threads: torch's pool gives cores back while other programs keep them busy and takes them again, the
decision is made at `import minigen` before torch runs an op, and a user's own setting always wins."""
import os
import subprocess
import sys
import time

import pytest
import torch

from minigen import bench_cpu, threads

HAS_PROC = os.path.exists("/proc/stat")
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="minigen reads other programs' load from /proc/stat")


@pytest.fixture
def fresh(monkeypatch):
    """A clean threads state, no thread variables in the environment, and torch's thread count restored."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", threads._fresh_state())
    for key in ("MINIGEN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def readings(monkeypatch, *values):
    """Feed adapt() these /proc/stat readings: (wall seconds, all busy CPU seconds, our CPU seconds)."""
    it = iter(values)
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: next(it))


def test_threads_for_gives_back_whole_busy_cores():
    assert threads.threads_for(2, 0.0) == 2
    assert threads.threads_for(2, 0.4) == 2      # a browser's idle tab is not a busy core
    assert threads.threads_for(2, 0.6) == 1
    assert threads.threads_for(2, 3.0) == 1      # never below one
    assert threads.threads_for(8, 1.2) == 7


@needs_proc
def test_the_default_shrinks_beside_a_busy_program_says_so_once_and_grows_back(fresh, capsys):
    torch.set_num_threads(2)
    readings(fresh, (0.0, 100.0, 10.0), (2.0, 103.0, 10.0), (4.0, 105.0, 11.0), (6.0, 106.0, 12.0),
             (8.0, 109.0, 12.0))
    assert threads.adapt(now=0.0) == 2           # the first look only takes a reading
    assert threads.adapt(now=1.0) == 2           # within INTERVAL: no look
    assert threads.adapt(now=2.0) == 1           # others used 3 CPU-s in 2 s: 1.5 cores -> give one back
    assert torch.get_num_threads() == 1
    assert "keeping 1.5 cores busy, so torch now uses 1 of 2 threads" in capsys.readouterr().out
    assert threads.adapt(now=4.0) == 1           # others 1 CPU-s in 2 s (2 busy, 1 ours): 0.5 -> still one busy
    assert threads.adapt(now=6.0) == 2           # others 0 CPU-s: every core back
    assert torch.get_num_threads() == 2
    assert threads.adapt(now=8.0) == 1           # busy again: shrinks, and does not say it twice
    assert capsys.readouterr().out == ""


@needs_proc
def test_fixed_holds_the_pool_inside_the_block(fresh):
    torch.set_num_threads(2)
    readings(fresh, (0.0, 100.0, 10.0), (4.0, 108.0, 10.0))
    fresh.setattr(threads, "others_busy", lambda: 2.0)
    threads.adapt(now=0.0)
    with threads.fixed():
        assert threads.adapt(now=2.0) == 2       # busy, but held
        assert "held" in threads.describe()
    assert threads.adapt(now=4.0, announce=False) == 1


def test_off_leaves_torchs_pool_alone(fresh):
    fresh.setenv("MINIGEN_THREADS", "off")
    torch.set_num_threads(2)
    fresh.setattr(threads, "_cpu_seconds", lambda: pytest.fail("with MINIGEN_THREADS=off minigen must not look"))
    assert threads.adapt(now=1e9) == 2 and torch.get_num_threads() == 2
    fresh.setattr(threads, "others_busy", lambda: 1.3)
    line = threads.describe()
    assert "MINIGEN_THREADS=off" in line and "keeping 1.3 cores busy" in line


def test_an_unknown_setting_is_a_clear_error(fresh):
    fresh.setenv("MINIGEN_THREADS", "fast")
    with pytest.raises(ValueError, match="MINIGEN_THREADS='fast' is not a setting minigen knows.*'adapt'.*'off'"):
        threads.adapt()


@needs_proc
def test_a_users_own_thread_setting_wins(fresh):
    torch.set_num_threads(2)
    fresh.setattr(threads, "_cpu_seconds", lambda: (0.0, 0.0, 0.0))
    threads.adapt(now=0.0)
    torch.set_num_threads(1)                     # the user's call
    fresh.setattr(threads, "_cpu_seconds", lambda: pytest.fail("adapt must stop once the user chose"))
    fresh.setattr(threads, "others_busy", lambda: 0.0)
    assert threads.adapt(now=10.0) == 1 and "torch.set_num_threads(1)" in threads.describe()
    fresh.setattr(threads, "_state", threads._fresh_state())
    fresh.setenv("OMP_NUM_THREADS", "1")
    assert threads.adapt(now=20.0) == 1 and "yours (OMP_NUM_THREADS=1)" in threads.describe()


PROBE = ("import os; before = dict(os.environ); import minigen, torch; n = torch.get_num_threads(); "
         "added = sorted(k for k in os.environ if k not in before); "
         "print(n, os.environ.get('OMP_WAIT_POLICY'), added)")


def probe(**env) -> list[str]:
    """`import minigen` in a fresh process, then torch's thread count before any op, the wait policy, and any
    environment variable minigen added."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MINIGEN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return out.strip().splitlines()[-1].split(" ", 2)


@needs_proc
def test_import_sizes_the_pool_before_torch_starts_it_and_leaves_a_users_setting_alone():
    """The acceptance test of the busy-laptop issue, with a real busy program beside a fresh process."""
    full = int(probe(MINIGEN_THREADS="off")[0])
    if full < 2:
        pytest.skip("one core: nothing to give back")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        n, policy, added = probe()
        assert int(n) < full and added == "[]"                             # decided at import, by the count alone
        n, policy, added = probe(OMP_NUM_THREADS=str(full), OMP_WAIT_POLICY="PASSIVE")
        assert int(n) == full and policy == "PASSIVE" and added == "[]"    # the user's settings, untouched
        assert int(probe(MINIGEN_THREADS="off")[0]) == full
    finally:
        busy.kill()
        busy.wait()


def test_setup_line_names_the_pool():
    out = subprocess.run([sys.executable, "-c", "import minigen; minigen.setup()"], capture_output=True, text=True,
                         check=True, env={**os.environ, "MINIGEN_DEVICE": "cpu"}).stdout
    assert "CPU: " in out and " thread" in out and "MINIGEN_THREADS=off" in out


def test_bench_table_reads_ratios_against_torchs_quiet_time():
    base_name, ours = bench_cpu.BASELINE, bench_cpu.DEFAULT
    rows = [dict(model="autoencoder", setting=s, condition=c, ms=ms)
            for s in (base_name, ours) for c, ms in
            zip(bench_cpu.CONDITIONS, (10.0, 130.0 if s == base_name else 30.0, 20.0))]
    text = bench_cpu.table(rows)
    assert "130.0 ms 13.0x" in text and "30.0 ms  3.0x" in text
