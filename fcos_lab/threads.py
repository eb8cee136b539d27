"""CPU threads on a shared machine: as many intra-op threads as the cores other processes leave free.

Not about the paper. torch parallelizes each CPU operator over its intra-op threads (GNU OpenMP here,
``torch.__config__.parallel_info()``); every parallel region ends at a barrier where all threads wait
for the slowest. With one thread per core and another CPU-bound process on one of the cores, each region
waits for the thread that shares its core with that process, and by default OpenMP's waiting threads
spin (libgomp: ``GOMP_SPINCOUNT`` 300,000 turns, milliseconds) on the cores that the other threads need.
A training step of the small demo model runs thousands of short regions, so on two cores one competing
process made it 7-10x slower (``benchmarks/bench_busy_machine.py``). Two remedies, both here:

- :func:`prefer_passive_wait`: waiting threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``); it must run
  before torch loads its OpenMP runtime, which reads the variable once (the CLI calls it first thing).
- :class:`ThreadGovernor`: measures how busy the other processes keep the CPUs (``/proc/stat`` minus
  this process's own CPU time) and sets ``torch.set_num_threads`` to the cores left free, re-checked
  every few seconds from the loops of training, prediction and the statistics.

A different thread count changes float summation order, so runs are bit-identical only with a fixed
count: ``train.threads=N`` or ``OMP_NUM_THREADS=N`` (the governor then leaves the count alone).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

# Variables with which a user (or a launcher such as torchrun) has already chosen OpenMP's waiting.
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# /proc/stat columns: user nice system idle iowait irq softirq steal guest guest_nice (guest is in user).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
# Half a core's worth of other work takes the core: at 0.67 (a competitor sharing with our threads) we
# yield it, at 0.3 (say, our own data-loading worker) we keep it.
TAKEN_FROM = 0.5


def prefer_passive_wait(environ: MutableMapping[str, str] = os.environ, torch_loaded: bool | None = None) -> bool:
    """Make OpenMP's idle threads sleep instead of spinning, unless the user chose otherwise.

    Returns whether ``OMP_WAIT_POLICY=PASSIVE`` was set. Once torch is imported (``torch_loaded``, by
    default read from ``sys.modules``) its OpenMP runtime has read the environment, so nothing is set.
    """
    if torch_loaded is None:
        torch_loaded = "torch" in sys.modules
    if torch_loaded or any(name in environ for name in WAIT_POLICY_VARIABLES):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def threads_for_load(available: int, others_busy: float, ceiling: int) -> int:
    """Intra-op threads for ``available`` cores of which other processes keep ``others_busy`` busy.

    A core counts as taken once others use :data:`TAKEN_FROM` of it or more; at least one thread, at
    most ``ceiling`` (what torch or the user configured).
    """
    taken = math.floor(max(0.0, others_busy) + (1 - TAKEN_FROM))
    return max(1, min(ceiling, available - taken))


def busy_seconds(proc_stat: str, cpus: set[int] | None = None) -> float:
    """CPU-seconds the CPUs in ``cpus`` (all when None) have been busy since boot, from ``/proc/stat`` text.

    Busy is user, nice, system, irq, softirq and steal (time a hypervisor gave to someone else).
    """
    ticks = 0
    for line in proc_stat.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in rest.split()]
        ticks += sum(values[i] for i in _BUSY_COLUMNS if i < len(values))
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """A reading of the clocks: wall time, busy CPU-seconds of our CPUs, this process's CPU-seconds."""

    wall: float
    busy: float
    own: float


def others_busy(before: CpuSample, after: CpuSample) -> float:
    """Cores kept busy by other processes between two samples (0 when the interval is empty)."""
    elapsed = after.wall - before.wall
    if elapsed <= 0:
        return 0.0
    return max(0.0, (after.busy - before.busy) - (after.own - before.own)) / elapsed


def available_cpus() -> int:
    """CPUs this process may run on: its affinity set, and no more than a cgroup CPU quota allows."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def read_sample() -> CpuSample | None:
    """The clocks now, or None where ``/proc/stat`` cannot be read (not Linux)."""
    try:
        text = Path("/proc/stat").read_text()
    except OSError:
        return None
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = None
    return CpuSample(time.monotonic(), busy_seconds(text, cpus), time.process_time())


# torch's thread count is process-wide; the governor never goes above the count it found (the user's or
# torch's default) and remembers what it set, so a later governor starts from the same ceiling.
_state: dict[str, int | None] = {"ceiling": None, "last_set": None}


def _ceiling() -> int:
    import torch

    current = torch.get_num_threads()
    if _state["ceiling"] is None or _state["last_set"] != current:  # first use, or changed by the user since
        _state["ceiling"] = current
    return int(_state["ceiling"])


def _set_threads(count: int) -> None:
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _state["last_set"] = count


class ThreadGovernor:
    """Keeps torch's intra-op thread count at the cores that other processes leave free.

    Args:
        threads: a fixed count (> 0), or 0 to follow the load.
        interval_s: seconds between two load checks in :meth:`step`.
        first_window_s: how long the first measurement (in the constructor) watches the CPUs.
        environ: where ``OMP_NUM_THREADS`` is looked up; when set there, the count is left alone.
    """

    def __init__(
        self,
        threads: int = 0,
        *,
        interval_s: float = 2.0,
        first_window_s: float = 0.1,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.interval_s = interval_s
        self.adaptive = threads <= 0 and "OMP_NUM_THREADS" not in environ
        self.available = available_cpus()
        self._last = read_sample() if self.adaptive else None
        self.adaptive = self.adaptive and self._last is not None
        if threads > 0:
            _set_threads(threads)
        elif self.adaptive:
            time.sleep(first_window_s)
            self._update(force=True)

    def _update(self, force: bool = False) -> None:
        now = read_sample()
        if now is None or self._last is None:
            return
        if not force and now.wall - self._last.wall < self.interval_s:
            return
        load = others_busy(self._last, now)
        self._last = now
        _set_threads(threads_for_load(self.available, load, _ceiling()))

    def step(self) -> None:
        """Re-check the load when ``interval_s`` has passed since the last check (cheap otherwise)."""
        if self.adaptive:
            self._update()

    def close(self) -> None:
        """Give torch back the thread count it had before (the ceiling), for whatever runs next."""
        if self.adaptive:
            _set_threads(_ceiling())
