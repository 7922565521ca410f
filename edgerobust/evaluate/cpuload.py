"""Did another process share the cores while we timed? Measured, not guessed.

A latency figure taken while another job runs on the same cores is that job's figure too: on
this project's 2-core host an attack benchmark beside ``eval-device`` moved a Lite0 int8 p50 from
11 ms to 352 ms, and nothing in the record said so. :class:`CpuWindow` reads the kernel's
whole-machine busy time (``/proc/stat``) and this process's own CPU time around the timed runs;
the difference is what *other* processes used, in cores. Where ``/proc/stat`` is missing
(macOS, Windows) the figure is ``None`` and no warning is given.

The warning fires when other processes kept at least :data:`BUSY_CORES` of a core busy on
average. The fastest run is reported beside the p50 (``p50_over_min``) because a p50 several
times the minimum is the other visible sign of contention.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BUSY_CORES = 0.5  # half a core of other work on average: enough to move a 1-2 thread p50

_STAT = Path("/proc/stat")


def _busy_seconds() -> float | None:
    """Whole-machine busy CPU time since boot, in seconds (all cores), or None."""
    try:
        first = _STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    ticks = [int(v) for v in first[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuWindow:
    """``with CpuWindow() as w: ...`` then ``w.result(p50, fastest)``: other processes' CPU use
    over the block, in cores, and a warning when it was enough to distort a latency."""

    def __enter__(self) -> CpuWindow:
        self._busy0, self._own0, self._t0 = _busy_seconds(), _own_seconds(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self._busy1, self._own1, self._t1 = _busy_seconds(), _own_seconds(), time.monotonic()

    def other_cores(self) -> float | None:
        wall = self._t1 - self._t0
        if self._busy0 is None or self._busy1 is None or wall <= 0:
            return None
        other = (self._busy1 - self._busy0) - (self._own1 - self._own0)
        # Tick granularity (1/CLK_TCK per core) can make a quiet window read slightly negative.
        return max(0.0, other / wall)

    def own_cores(self) -> float | None:
        wall = self._t1 - self._t0
        return (self._own1 - self._own0) / wall if wall > 0 else None

    def result(self, p50: float, fastest: float) -> dict[str, Any]:
        other = self.other_cores()
        ratio = p50 / fastest if fastest > 0 else None
        warning = None
        if other is not None and other >= BUSY_CORES:
            warning = (
                f"other processes kept {other:.1f} of {os.cpu_count()} cores busy during the "
                f"latency runs (p50 {ratio:.1f}x the fastest run): the latency may be "
                "inflated; rerun on a quiet machine"
            )
        return {
            "other_cores": other,
            "own_cores": self.own_cores(),
            "cpu_count": os.cpu_count(),
            "p50_over_min": ratio,
            "method": "/proc/stat busy time minus this process's CPU time"
            if other is not None
            else "unavailable (no /proc/stat)",
            "warning": warning,
        }
