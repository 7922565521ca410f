"""``export --quant int8 --tune``: try the int8 configurations on this host, keep the fastest that
passes the parity gate (as Olive's tuning does).

Candidates: QDQ and QOperator, u8s8 and s8s8, per-channel and per-tensor weights, MinMax, Entropy
and Percentile calibration (24; u8s8 takes the target's ``reduce_range``). Each is built from the
same pre-processed graph (one calibration per method, cached), judged by the export's own parity
gate, and the passing ones are timed at batch 1 with eval-device's timing code
(:func:`edgerobust.evaluate.measure_latency`, no thread spinning) in interleaved rounds, so a
change in machine load hits every candidate alike. Timing is of *this* host: tune on the CPU that
will run the model (or one like it).
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .onnx import CALIBRATIONS, Int8Config, latency_ms

if TYPE_CHECKING:
    from .onnx import Int8Options, Target, _Work

ROUNDS = 3
RUNS = 30


def candidates(target: Target) -> list[Int8Config]:
    """Every configuration ``--tune`` tries for ``target``; its own configuration first."""
    out = [target.config]
    for fmt, (a, w), pc, cal in itertools.product(
        ("qdq", "qoperator"), (("u8", "s8"), ("s8", "s8")), (True, False), CALIBRATIONS
    ):
        rr = target.config.reduce_range and a == "u8"
        c = Int8Config(fmt, a, w, pc, rr, cal)
        if c not in out:
            out.append(c)
    return out


def tune(
    work: _Work, target: Target, options: Int8Options
) -> tuple[dict[str, Any], Int8Config | None]:
    """``(table for the manifest, the fastest passing configuration or None)``."""
    import numpy as np

    rows: list[dict[str, Any]] = []
    passing: list[tuple[int, Path]] = []
    for config in candidates(target):
        row: dict[str, Any] = {"config": config.label}
        try:
            path = work.build(config)
        except Exception as exc:  # onnxruntime refuses some combinations; the table says which
            row["error"] = f"quantize: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            continue
        try:
            parity = options.judge(path) if options.judge else None
        except Exception as exc:
            row["error"] = f"run: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            rows.append(row)
            continue
        if parity is not None:
            row["top1_agreement"] = parity.top1_agreement
            row["passed"] = parity.passed
        if parity is None or parity.passed:
            passing.append((len(rows), path))
        rows.append(row)
    x1 = np.ascontiguousarray(work.calibration[0][:1])
    timings: dict[int, list[float]] = {i: [] for i, _ in passing}
    for _ in range(ROUNDS):
        for i, path in passing:
            timings[i].append(latency_ms(path, x1, options.threads, RUNS))
    for i, samples in timings.items():
        rows[i]["p50_ms"] = statistics.median(samples)
    best_i = min(timings, key=lambda i: rows[i]["p50_ms"]) if timings else None
    for i, row in enumerate(rows):
        row["chosen"] = i == best_i
    configs = candidates(target)
    table = {
        "host_threads": options.threads,
        "timing": f"batch-1 p50, median of {ROUNDS} interleaved rounds of {RUNS} calls",
        "candidates": rows,
        "chosen": rows[best_i]["config"] if best_i is not None else None,
    }
    return table, configs[best_i] if best_i is not None else None
