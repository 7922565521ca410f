"""Benchmark of the measuring path itself: does eval-device report what the runtime really does?

Runs, in one process, on the same artifact and images:

* latency: bare runtime calls (an ``InferenceSession.run`` / a TorchScript module call written out
  here, not through edgerobust) against :func:`edgerobust.evaluate.measure_latency`;
* throughput over a domain: bare inference on pre-converted float arrays against the whole
  :func:`edgerobust.evaluate.evaluate` accuracy pass (cached decoded images, conversion, inference).

Rounds are interleaved (bare, tool, bare, tool, ...) and the medians compared, so drift in machine
load hits both sides alike. Goals: latency ratio <= 1.05, throughput ratio >= 0.80.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.data import decode_domain, open_dataset
from edgerobust.evaluate import EvalConfig, domain_indices, evaluate, measure_latency, percentiles
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes import open_artifact
from edgerobust.runtimes.preprocess import to_input

LATENCY_GOAL = 1.05
THROUGHPUT_GOAL = 0.80


@dataclass(frozen=True)
class BenchConfig:
    artifact: str
    data: str
    domain: str | None = None
    runtime: str | None = None
    threads: int = 1
    runs: int = 200
    repeats: int = 5  # 3 rounds left +-6 % run-to-run noise in a p50 ratio (measured)
    batch_size: int = 16


def _bare_callable(path: Path, fmt: str, threads: int, engine: str | None):
    """The runtime called directly, the way a user's own script would."""
    if fmt == "pte":  # the bindings' method, executed directly (see runtimes/executorch.py)
        from edgerobust.runtimes.executorch import ExecuTorchRuntime
        from edgerobust.runtimes.manifest import read_manifest

        return ExecuTorchRuntime.load(path, read_manifest(path), threads).bare_callable()
    if fmt == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    import torch

    torch.set_num_threads(threads)
    if engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    if fmt == "ptl":
        from torch.jit.mobile import _load_for_lite_interpreter

        module = _load_for_lite_interpreter(str(path))
    else:
        module = torch.jit.load(str(path)).eval()

    def call(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return call


def run_bench(cfg: BenchConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    rep = reporter or NullReporter()
    tool = open_artifact(cfg.artifact, cfg.runtime, threads=cfg.threads)
    man = tool.manifest
    ds = open_dataset(cfg.data)
    domain = cfg.domain or next(iter(ds.domains))
    images = decode_domain(ds.domain(domain), man.input_size)  # warms the decode cache
    _, idx = domain_indices(ds.domain(domain), man.source, None)
    idx = [i for i in idx if images.ok[i]]
    bare = _bare_callable(Path(cfg.artifact), man.format, cfg.threads, man.engine)
    x1 = to_input(np.asarray(images.pixels[idx[:1]]))
    pre = [
        to_input(np.asarray(images.pixels[idx[s : s + cfg.batch_size]]))
        for s in range(0, len(idx), cfg.batch_size)
    ]

    lat_bare, lat_tool, thr_bare, thr_tool = [], [], [], []
    task = rep.task("bench rounds", cfg.repeats)
    for _ in range(cfg.repeats):
        for _ in range(10):
            bare(x1)
        samples = []
        for _ in range(cfg.runs):
            t0 = time.perf_counter()
            bare(x1)
            samples.append((time.perf_counter() - t0) * 1e3)
        lat_bare.append(percentiles(samples)["p50"])
        lat_tool.append(measure_latency(tool, x1, 10, cfg.runs)["p50"])

        t0 = time.perf_counter()
        for x in pre:
            bare(x)
        thr_bare.append(len(idx) / (time.perf_counter() - t0))
        rec = evaluate(
            EvalConfig(
                artifact=cfg.artifact,
                data=cfg.data,
                runtime=cfg.runtime,
                domains=(domain,),
                threads=cfg.threads,
                batch_size=cfg.batch_size,
                warmup=0,
                latency_runs=1,
            )
        )
        thr_tool.append(rec["domains"][0]["throughput_images_per_s"])
        rep.advance(task)
    rep.done(task)
    lb, lt = statistics.median(lat_bare), statistics.median(lat_tool)
    tb, tt = statistics.median(thr_bare), statistics.median(thr_tool)
    lat_ratio, thr_ratio = lt / lb, tt / tb
    info = tool.info()
    lines = [
        f"{man.file} ({man.format} {man.precision}) in {info['runtime']} {info['version']}, "
        f"{cfg.threads} thread(s), domain {domain}: {len(idx)} images, {cfg.repeats} interleaved rounds",
        f"latency p50 batch 1: bare {lb:.3f} ms  eval-device {lt:.3f} ms  ratio {lat_ratio:.3f} "
        f"(goal <= {LATENCY_GOAL}) {'ok' if lat_ratio <= LATENCY_GOAL else 'MISSED'}",
        f"throughput batch {cfg.batch_size}: bare {tb:.1f} img/s  eval-device end-to-end {tt:.1f} img/s  "
        f"ratio {thr_ratio:.3f} (goal >= {THROUGHPUT_GOAL}) {'ok' if thr_ratio >= THROUGHPUT_GOAL else 'MISSED'}",
    ]
    return {
        "record": "bench",
        "artifact": man.file,
        "runtime": info,
        "domain": domain,
        "n": len(idx),
        "latency_p50_ms": {"bare": lat_bare, "eval_device": lat_tool},
        "throughput_images_per_s": {"bare": thr_bare, "eval_device": thr_tool},
        "latency_ratio": lat_ratio,
        "throughput_ratio": thr_ratio,
        "goals": {"latency_ratio_max": LATENCY_GOAL, "throughput_ratio_min": THROUGHPUT_GOAL},
        "lines": lines,
    }
