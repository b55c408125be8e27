"""minigen.threads: torch's pool is left alone by default (same seed, same numbers), MINIGEN_THREADS=adapt gives
cores back to other programs and takes them again, and a user's own setting always wins."""
import os
import subprocess
import sys

import pytest
import torch

from minigen import bench_cpu, threads

HAS_PROC = os.path.exists("/proc/stat")


@pytest.fixture
def fresh(monkeypatch):
    """A clean threads state and torch's thread count restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_state", {"next": 0.0, "last": None, "ours": None, "max": None, "off": None})
    for key in ("MINIGEN_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    torch.set_num_threads(before)


def test_threads_for_gives_back_whole_busy_cores():
    assert threads.threads_for(2, 0.0) == 2
    assert threads.threads_for(2, 0.4) == 2      # a browser's idle tab is not a busy core
    assert threads.threads_for(2, 0.6) == 1
    assert threads.threads_for(2, 3.0) == 1      # never below one
    assert threads.threads_for(8, 1.2) == 7


def test_default_leaves_torchs_pool_alone(fresh):
    torch.set_num_threads(2)
    fresh.setattr(threads, "_cpu_seconds", lambda: pytest.fail("the default mode must not look at the machine"))
    assert threads.adapt(now=1e9) == 2 and torch.get_num_threads() == 2
    fresh.setattr(threads, "others_busy", lambda: 1.3)
    line = threads.describe()
    assert "torch's default pool" in line and "keeping 1.3 cores busy" in line


@pytest.mark.skipif(not HAS_PROC, reason="adapt reads /proc/stat")
def test_adapt_shrinks_beside_a_busy_program_and_grows_back(fresh):
    fresh.setenv("MINIGEN_THREADS", "adapt")
    torch.set_num_threads(2)
    readings = iter([(0.0, 100.0, 10.0), (2.0, 103.0, 10.0), (4.0, 105.0, 11.0), (6.0, 106.0, 12.0)])
    fresh.setattr(threads, "_cpu_seconds", lambda: next(readings))
    assert threads.adapt(now=0.0) == 2           # the first look only takes a reading
    assert threads.adapt(now=1.0) == 2           # within INTERVAL: no look
    assert threads.adapt(now=2.0) == 1           # others used 3 CPU-s in 2 s: 1.5 cores -> give one back
    assert torch.get_num_threads() == 1
    assert threads.adapt(now=4.0) == 1           # others 1 CPU-s in 2 s (2 busy, 1 ours): 0.5 -> still one busy
    assert threads.adapt(now=6.0) == 2           # others 0 CPU-s: every core back
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(not HAS_PROC, reason="adapt reads /proc/stat")
def test_a_users_own_thread_setting_wins(fresh):
    fresh.setenv("MINIGEN_THREADS", "adapt")
    torch.set_num_threads(2)
    fresh.setattr(threads, "_cpu_seconds", lambda: (0.0, 0.0, 0.0))
    threads.adapt(now=0.0)
    torch.set_num_threads(1)                     # the user's call
    fresh.setattr(threads, "_cpu_seconds", lambda: pytest.fail("adapt must stop once the user chose"))
    fresh.setattr(threads, "others_busy", lambda: 0.0)
    assert threads.adapt(now=10.0) == 1 and "torch.set_num_threads(1)" in threads.describe()
    fresh.setattr(threads, "_state", {**threads._state, "off": None, "ours": None, "max": None})
    fresh.setenv("OMP_NUM_THREADS", "1")
    assert threads.adapt(now=20.0) == 1 and "yours (OMP_NUM_THREADS=1)" in threads.describe()


def test_setup_line_names_the_pool():
    out = subprocess.run([sys.executable, "-c", "import minigen; minigen.setup()"], capture_output=True, text=True,
                         check=True, env={**os.environ, "MINIGEN_DEVICE": "cpu"}).stdout
    assert "CPU: " in out and " thread" in out and "torch's default pool" in out


def test_bench_table_reads_ratios_against_torchs_quiet_time():
    rows = [dict(model="autoencoder", setting=s, condition=c, ms=ms)
            for s, base in (("torch defaults", 10.0), ("MINIGEN_THREADS=adapt", 10.0)) for c, ms in
            zip(bench_cpu.CONDITIONS, (base, 13 * base if s == "torch defaults" else 3 * base, 2 * base))]
    text = bench_cpu.table(rows)
    assert "130.0 ms 13.0x" in text and "30.0 ms  3.0x" in text
