"""CPU threads on a shared machine: load arithmetic by hand, the wait policy, and the governor's decisions."""

from __future__ import annotations

import os

import pytest
import torch

from fcos_lab import threads
from fcos_lab.threads import CpuSample, ThreadGovernor, busy_seconds, others_busy, prefer_passive_wait, threads_for_load


@pytest.mark.parametrize(("available", "load", "ceiling", "expected"), [
    (2, 0.0, 2, 2),  # idle machine: every core
    (2, 0.3, 2, 2),  # our own data-loading worker, say: under half a core, kept
    (2, 0.67, 2, 1),  # one competitor sharing two cores with our two threads gets 2/3 of a core: yielded
    (2, 1.0, 2, 1),
    (2, 1.9, 2, 1),  # never below one thread
    (16, 3.4, 16, 13),  # 3.4 -> three cores taken
    (16, 3.5, 16, 12),  # half a core counts as taken
    (16, 0.0, 8, 8),  # never above what torch or the user configured
    (4, -0.2, 4, 4),  # clock noise below zero reads as idle
])
def test_threads_for_load(available, load, ceiling, expected):
    assert threads_for_load(available, load, ceiling) == expected


def test_busy_seconds_from_proc_stat():
    # user nice system idle iowait irq softirq steal guest guest_nice; busy = user+nice+system+irq+softirq+steal.
    # cpu0: 100 + 2 + 50 + 1 + 2 + 3 = 158 ticks; cpu1: 10 + 0 + 5 + 0 + 0 + 1 = 16 ticks; the "cpu" total line
    # and the other lines are not counted.
    text = ("cpu  110 2 55 2000 9 1 2 4 0 0\ncpu0 100 2 50 1000 5 1 2 3 0 0\ncpu1 10 0 5 1000 4 0 0 1 0 0\n"
            "intr 12345 0 0\nprocs_running 3\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert busy_seconds(text) == pytest.approx(174 / tick)
    assert busy_seconds(text, cpus={1}) == pytest.approx(16 / tick)


def test_others_busy_subtracts_our_own_cpu_time():
    # Over 2 s the CPUs were busy 3.0 CPU-seconds, 1.0 of them ours: others kept one core busy.
    before, after = CpuSample(wall=10.0, busy=100.0, own=5.0), CpuSample(wall=12.0, busy=103.0, own=6.0)
    assert others_busy(before, after) == pytest.approx(1.0)
    assert others_busy(before, before) == 0.0
    assert others_busy(before, CpuSample(wall=11.0, busy=100.5, own=5.9)) == 0.0  # tick rounding: not negative


def test_prefer_passive_wait_respects_the_user_and_a_loaded_runtime():
    environ: dict[str, str] = {}
    assert prefer_passive_wait(environ, torch_loaded=False) and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "10000"), ("KMP_BLOCKTIME", "0")):
        environ = {name: value}
        assert not prefer_passive_wait(environ, torch_loaded=False) and environ == {name: value}
    environ = {}
    assert not prefer_passive_wait(environ, torch_loaded=True) and environ == {}  # too late to matter


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    saved = dict(threads._state)
    yield
    torch.set_num_threads(before)
    threads._state.update(saved)


def test_governor_follows_the_load_within_the_ceiling(monkeypatch, restore_threads):
    # Four CPUs, ceiling four; samples every 2.5 s: others use 1.0, then 0.0, then 2.6 cores.
    samples = iter([
        CpuSample(0.0, 0.0, 0.0), CpuSample(0.1, 0.01, 0.0),  # constructor: others 0.1 core -> 4 threads
        CpuSample(2.6, 5.1, 2.5),  # (5.0 busy - 2.5 own) / 2.5 s = 1.0 -> 3 threads
        CpuSample(3.0, 5.1, 2.5),  # 0.4 s later: not yet re-checked
        CpuSample(5.5, 7.6, 5.0),  # (2.5 - 2.5) / 2.5 = 0 -> 4 threads
        CpuSample(8.0, 16.6, 7.5),  # (9.0 - 2.5) / 2.5 = 2.6 -> 1 thread
    ])
    monkeypatch.setattr(threads, "read_sample", lambda: next(samples))
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    torch.set_num_threads(4)
    threads._state.update(ceiling=None, last_set=None)
    governor = ThreadGovernor(interval_s=2.0, environ={})
    seen = [torch.get_num_threads()]
    for _ in range(4):
        governor.step()
        seen.append(torch.get_num_threads())
    assert seen == [4, 3, 3, 4, 1]
    governor.close()
    assert torch.get_num_threads() == 4  # the count torch had before


def test_governor_leaves_fixed_counts_alone(monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "read_sample", lambda: pytest.fail("a fixed count needs no load readings"))
    ThreadGovernor(1, environ={}).step()
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    governor = ThreadGovernor(environ={"OMP_NUM_THREADS": "2"})  # the user pinned it
    governor.step()
    assert not governor.adaptive and torch.get_num_threads() == 2
