"""Did another process share the cores while we timed? Measured, not guessed.

A latency figure taken while another job runs on the same cores is that job's figure too: on
this project's 2-core host an attack benchmark beside ``eval-device`` moved a Lite0 int8 p50 from
11 ms to 352 ms, and nothing in the record said so. :class:`CpuWindow` reads the kernel's busy
time of the cores this process may run on (the ``cpuN`` lines of ``/proc/stat`` for
``os.sched_getaffinity``) and this process's own CPU time around the timed runs; the difference
is what *other* processes used there, in cores. Where ``/proc/stat`` is missing (macOS,
Windows) the figure is ``None`` and no warning is given.

The kernel counts busy time in clock ticks, so a short window reads it coarsely: the record
gives that resolution (``resolution_cores``: one tick per core over the window), and a warning
needs the figure to clear it. The warning fires when, beyond that resolution, other processes
used at least :data:`BUSY_CORES` of a core *and* they and we together wanted more than the cores
there were, less half a core (a 1-thread run on an idle 64-core box is not contended by a
daemon). The p50 over the fastest run is reported beside it: a p50 several times the minimum is
the other visible sign.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BUSY_CORES = 0.5  # half a core of other work on average: enough to move a 1-2 thread p50

_STAT = Path("/proc/stat")
_clock = time.monotonic


def _cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _busy_seconds(cores: set[int]) -> float | None:
    """Busy CPU time since boot of ``cores`` together, in seconds, or None."""
    try:
        lines = _STAT.read_text().splitlines()
        busy = 0
        seen = 0
        for line in lines:
            head, _, rest = line.partition(" ")
            if not head.startswith("cpu") or head == "cpu" or int(head[3:]) not in cores:
                continue
            # user nice system idle iowait irq softirq steal [guest guest_nice: in user/nice]
            t = [int(v) for v in rest.split()[:8]]
            busy += t[0] + t[1] + t[2] + t[5] + t[6] + t[7]
            seen += 1
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf("SC_CLK_TCK") if seen else None


def _own_seconds() -> float:
    return time.process_time()  # this process's CPU time, every thread, finer than ticks


class CpuWindow:
    """``with CpuWindow() as w: ...`` then ``w.result(p50, fastest)``: other processes' CPU use
    over the block, in cores, and a warning when it was enough to distort a latency."""

    def __enter__(self) -> CpuWindow:
        self.cores = _cores()
        self._busy0, self._own0, self._t0 = _busy_seconds(self.cores), _own_seconds(), _clock()
        return self

    def __exit__(self, *exc: object) -> None:
        self._busy1, self._own1, self._t1 = _busy_seconds(self.cores), _own_seconds(), _clock()

    @property
    def wall(self) -> float:
        return self._t1 - self._t0

    def own_cores(self) -> float | None:
        return (self._own1 - self._own0) / self.wall if self.wall > 0 else None

    def other_cores(self) -> float | None:
        if self._busy0 is None or self._busy1 is None or self.wall <= 0:
            return None
        other = (self._busy1 - self._busy0) - (self._own1 - self._own0)
        return max(0.0, other / self.wall)  # ticks can make a quiet window read just below 0

    def resolution_cores(self) -> float | None:
        if self.wall <= 0:
            return None
        return len(self.cores) / os.sysconf("SC_CLK_TCK") / self.wall

    def result(self, p50: float, fastest: float) -> dict[str, Any]:
        other, own, res = self.other_cores(), self.own_cores(), self.resolution_cores()
        ratio = p50 / fastest if fastest > 0 else None
        n = len(self.cores)
        warning = None
        if other is not None and own is not None and res is not None:
            sure = other - res  # what the ticks cannot explain away
            if sure >= BUSY_CORES and sure + own > n - 0.5:
                warning = (
                    f"other processes kept {other:.1f} of the {n} cores busy during the latency "
                    "runs"
                    + (f" (p50 {ratio:.1f}x the fastest run)" if ratio else "")
                    + ": the latency may be inflated; rerun on a quiet machine"
                )
        return {
            "other_cores": other,
            "own_cores": own,
            "resolution_cores": res,
            "cores": n,
            "window_s": self.wall,
            "p50_over_min": ratio,
            "method": "/proc/stat busy time of this process's cores minus its own CPU time"
            if other is not None
            else "unavailable (no /proc/stat)",
            "warning": warning,
        }
