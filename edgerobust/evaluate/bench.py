"""Benchmark of the measuring path itself: does eval-device report what the runtime really does?

Runs, in one process, on the same artifact and images:

* latency: bare runtime calls (an ``InferenceSession.run`` / a TorchScript module call written out
  here, not through edgerobust) against :func:`edgerobust.evaluate.measure_latency`;
* throughput over a domain: bare inference on pre-converted float arrays against the whole
  :func:`edgerobust.evaluate.evaluate` accuracy pass (cached decoded images, conversion, inference).

Rounds are interleaved (bare, tool, bare, tool, ...) and the medians compared, so drift in machine
load hits both sides alike. Goals: latency ratio <= 1.05, throughput ratio >= 0.80.

:func:`run_precision_bench` (``edgerobust bench CHECKPOINT``) compares one model's precisions
side by side the same way: torch eager, onnxruntime fp32 and int8, lite fp32 and int8.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerobust.data import decode_domain, open_dataset
from edgerobust.errors import ConfigError, RuntimeUnavailable
from edgerobust.evaluate import EvalConfig, domain_indices, evaluate, measure_latency, percentiles
from edgerobust.evaluate.fingerprint import host_fingerprint
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes import ContractRuntime, open_artifact
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


def _bare_onnx(path: Path, threads: int, engine: str | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # The session settings eval-device uses (runtimes/ort.py): no spin-waiting.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def call(x: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: x})[0]

    call.session = sess  # type: ignore[attr-defined]  # for tests: the settings it runs with
    return call


def _bare_torch(path: Path, threads: int, engine: str | None):
    import torch

    torch.set_num_threads(threads)
    if engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    if path.suffix == ".ptl":
        from torch.jit.mobile import _load_for_lite_interpreter

        module = _load_for_lite_interpreter(str(path))
    else:
        module = torch.jit.load(str(path)).eval()

    def call(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return call


def _bare_pte(path: Path, threads: int, engine: str | None):
    """The ExecuTorch bindings' method, executed directly (see runtimes/executorch.py)."""
    from edgerobust.runtimes.executorch import ExecuTorchRuntime
    from edgerobust.runtimes.manifest import read_manifest

    return ExecuTorchRuntime.load(path, read_manifest(path), threads).bare_callable()


# format -> (path, threads, engine) -> numpy callable: the runtime called directly, the way a
# user's own script would. A new format adds its bare call here.
BARE_CALLS = {
    "onnx": _bare_onnx,
    "torchscript": _bare_torch,
    "ptl": _bare_torch,
    "pte": _bare_pte,
}


def _bare_callable(path: Path, fmt: str, threads: int, engine: str | None):
    """The runtime called directly, the way a user's own script would."""
    if fmt not in BARE_CALLS:
        raise ConfigError(f"bench has no bare call for {fmt} artifacts")
    return BARE_CALLS[fmt](path, threads, engine)


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
    if isinstance(tool, ContractRuntime):
        # An imported model's own script would preprocess for it too: same conversion both sides.
        bare = ContractRuntime(bare, tool.contract)
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


# --------------------------------------------------------------------------- precisions side by side


@dataclass(frozen=True)
class PrecisionBenchConfig:
    """``edgerobust bench CHECKPOINT``: one model in every precision and runtime, side by side."""

    checkpoint: str
    data: str | None = None  # dataset folder, if it moved since training
    threads: tuple[int, ...] = (1,)
    runs: int = 100
    repeats: int = 5
    target: str = "auto"  # ONNX int8 target (see exporters/onnx.py TARGETS)
    agreement_images: int = 64
    calib_batches: int = 16


def _contenders(cfg: PrecisionBenchConfig, tmp: Path, rep: Reporter):
    """``[(label, make(threads) -> callable, note)]`` for every precision we can build here,
    plus the fp32 model itself and the images."""
    import torch

    from edgerobust.compress.quantize import calibrate, convert_prepared, host_engine, prepare_ptsq
    from edgerobust.data import origin_split, spread_batches
    from edgerobust.exporters.onnx import TARGETS, _Work, export_fp32, preprocess, resolve_target
    from edgerobust.exporters.torchscript import save_lite
    from edgerobust.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    size = ckpt.spec.input_size
    _, images, split = origin_split(ckpt.spec.origin, size, cfg.data)
    calib = spread_batches(images, split.train, cfg.calib_batches, 8)
    val = [i for i in split.val if images.ok[i]][: cfg.agreement_images]
    model = ckpt.model.eval()
    t = rep.task("build the contenders", None)
    fp32 = tmp / "fp32.onnx"
    export_fp32(model, size, fp32)
    pre, _ = preprocess(fp32, tmp / "pre.onnx")
    target, how = resolve_target(cfg.target)
    onnx_int8 = [(f"onnxruntime int8 {target.name} ({target.config.label})", target.config)]
    s8s8 = TARGETS["arm64-dotprod"].config
    if target.config != s8s8:
        onnx_int8.append((f"onnxruntime int8 s8s8 ({s8s8.label})", s8s8))
    work = _Work(pre, tmp, calib)  # as export builds them (one calibration, bias correction)
    built = [(label, work.build(config)) for label, config in onnx_int8]
    lite32 = tmp / "fp32.ptl"
    save_lite(model, size, lite32)
    engine = host_engine()
    prepared = prepare_ptsq(model, engine)
    calibrate(prepared, calib)
    lite8 = tmp / "int8.ptl"
    save_lite(convert_prepared(prepared, engine), size, lite8)
    rep.done(t)

    def eager(threads: int):
        torch.set_num_threads(threads)

        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        return call

    def lite(path: Path, eng: str | None):
        return lambda threads: _bare_torch(path, threads, eng)

    contenders = [
        ("torch fp32 eager", eager),
        ("onnxruntime fp32", lambda threads: _bare_onnx(fp32, threads, None)),
        *[(label, lambda threads, p=p: _bare_onnx(p, threads, None)) for label, p in built],
        ("lite fp32", lite(lite32, None)),
        (f"lite int8 ({engine} PTSQ)", lite(lite8, engine)),
    ]
    pte, missing = _pte_contenders(model, size, tmp, calib)
    x_val = to_input(np.asarray(images.pixels[val]))
    return contenders + pte, x_val, how, missing


def _pte_contenders(
    model: Any, size: int, tmp: Path, calib: list[np.ndarray]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """ExecuTorch ``.pte`` fp32 and PT2E int8 (XNNPACK), written as ``export --format pte``
    writes them: ``(contenders, [])``; ``([], [why not])`` where executorch is missing."""
    from edgerobust.exporters.executorch import write
    from edgerobust.runtimes.executorch import ExecuTorchRuntime

    def make(path: Path):
        # The threadpool is process-wide: each load sets it to the round's thread count.
        return lambda threads: ExecuTorchRuntime.load(path, None, threads).bare_callable()

    out = []
    try:
        for quant, label in (("fp32", "executorch fp32"), ("int8", "executorch int8 (PT2E)")):
            path = tmp / f"{quant}.pte"
            write(model, size, path, quant=quant, calibration=lambda: calib)
            out.append((label, make(path)))
    except (ConfigError, RuntimeUnavailable) as exc:
        return [], [f"executorch .pte: not measured ({exc})"]
    return out, []


def run_precision_bench(cfg: PrecisionBenchConfig, reporter: Reporter | None = None) -> dict:
    """Batch-1 latency of one model as torch eager fp32, onnxruntime fp32 and int8 (the target's
    configuration and s8s8), lite fp32 and int8, ExecuTorch fp32 and int8 where installed, timed
    in one process in interleaved rounds (single calls alternated; median of per-round p50s),
    with each one's ratio to onnxruntime fp32 and its top-1 agreement with torch fp32 on source
    validation images. Sessions without thread spinning."""
    import tempfile

    import torch

    if not cfg.threads or min(cfg.threads) < 1 or cfg.runs < 1 or cfg.repeats < 1:
        raise ConfigError("--threads, --runs and --repeats must be >= 1")
    rep = reporter or NullReporter()
    torch_threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgerobust-bench-") as d:
        contenders, x_val, how, missing = _contenders(cfg, Path(d), rep)
        x1 = np.ascontiguousarray(x_val[:1])
        try:
            for threads in cfg.threads:
                calls = [(label, make(threads)) for label, make in contenders]
                reference = calls[0][1](x_val).argmax(1)
                agree = {
                    label: float((fn(x_val).argmax(1) == reference).mean()) for label, fn in calls
                }
                p50s: dict[str, list[float]] = {label: [] for label, _ in calls}
                torch.set_num_threads(threads)  # process-wide, the same for every torch contender
                task = rep.task(f"{threads} thread(s): rounds", cfg.repeats)
                for _ in range(cfg.repeats):
                    samples: dict[str, list[float]] = {label: [] for label, _ in calls}
                    for _, fn in calls:
                        for _ in range(5):
                            fn(x1)
                    # Single calls alternated across contenders: a swing in machine load hits
                    # every one of them alike (blocks of calls each would not be comparable).
                    for _ in range(cfg.runs):
                        for label, fn in calls:
                            t0 = time.perf_counter()
                            fn(x1)
                            samples[label].append((time.perf_counter() - t0) * 1e3)
                    for label, _ in calls:
                        p50s[label].append(percentiles(samples[label])["p50"])
                    rep.advance(task)
                rep.done(task)
                base = statistics.median(p50s["onnxruntime fp32"])
                for label, _ in calls:
                    p50 = statistics.median(p50s[label])
                    rows.append(
                        {
                            "threads": threads,
                            "contender": label,
                            "p50_ms": p50,
                            "p50_ms_per_round": p50s[label],
                            "speedup_vs_onnxruntime_fp32": base / p50,
                            "top1_agreement_vs_torch_fp32": agree[label],
                        }
                    )
        finally:
            torch.set_num_threads(torch_threads)
    n = len(x_val)
    lines = [
        f"{cfg.checkpoint}: batch-1 p50, median of {cfg.repeats} interleaved rounds of {cfg.runs} "
        f"calls; agreement on {n} source validation images; int8 target: {how}"
    ]
    for r in rows:
        lines.append(
            f"{r['threads']} thr  {r['contender']:<58} {r['p50_ms']:8.2f} ms  "
            f"x{r['speedup_vs_onnxruntime_fp32']:.2f} vs onnxruntime fp32  "
            f"top-1 agreement {r['top1_agreement_vs_torch_fp32']:.1%}"
        )
    lines += missing
    return {
        "record": "bench-precisions",
        "checkpoint": cfg.checkpoint,
        "target": how,
        "host": host_fingerprint(),
        "rows": rows,
        "not_measured": missing,
        "agreement_images": n,
        "config": {**cfg.__dict__, "threads": list(cfg.threads)},
        "lines": lines,
    }
