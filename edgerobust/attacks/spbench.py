"""``edgerobust bench-saltpepper``: early-stopped Salt&Pepper against foolbox's full-cost run.

Both runs attack the same artifact, inside its runtime, on the same images with the same seed
(each image draws from its own noise stream), so the only difference is when a sample's search
stops. The record gives, per run, robust accuracy at each eps, the number of broken samples,
and the model queries; then the query ratio and the largest difference in broken samples.

The goal (issue 4): the same robust accuracy at each eps within one sample, with at most one
tenth of the queries. ``exact`` stopping is identical by construction (and checked here);
``settled`` is not identical per seed, which is why this benchmark exists.

Only numpy and the runtime's library are needed.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgerobust import __version__
from edgerobust.attacks.device import default_eps
from edgerobust.attacks.saltpepper import SETTLE_TAIL_SD, StopRule, saltpepper_attack
from edgerobust.errors import ConfigError, DataError
from edgerobust.progress import NullReporter, Reporter

RECORD_VERSION = 1
GOAL_RATIO = 0.1  # at most one tenth of foolbox's queries
GOAL_SAMPLES = 1  # robust accuracy within one sample at every eps


@dataclass(frozen=True)
class SaltPepperBenchConfig:
    artifact: str
    data: str | None = None  # None: the dataset recorded in the artifact's manifest
    domain: str | None = None  # None: the artifact's source domain (its validation split)
    runtime: str | None = None
    eps: tuple[float, ...] | None = None  # None: (1, 15)
    limit: int | None = 16
    seed: int = 0
    steps: int = 400
    stops: tuple[str, ...] = (StopRule.exact.value, StopRule.settled.value)
    tail_sd: float = SETTLE_TAIL_SD
    threads: int = 1
    out: str | None = None

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.eps is not None and (not self.eps or any(e < 0 for e in self.eps)):
            raise ConfigError(f"--eps: budgets must be >= 0, got {list(self.eps)}")
        if not self.tail_sd >= 0:
            raise ConfigError(f"--tail-sd must be >= 0, got {self.tail_sd}")
        if not self.stops:
            raise ConfigError("--stops is empty: name exact and/or settled")
        for s in self.stops:
            if s not in (StopRule.exact.value, StopRule.settled.value):
                raise ConfigError(f"--stops: {s!r} is not an early-stopping rule (exact, settled)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["eps"] = list(self.eps) if self.eps is not None else None
        d["stops"] = list(self.stops)
        return d


def bench_saltpepper(
    cfg: SaltPepperBenchConfig, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Run foolbox's full-cost Salt&Pepper and each early-stopped one; return the record."""
    from edgerobust.data import decode_domain, open_dataset
    from edgerobust.evaluate import check_classes, domain_indices
    from edgerobust.runtimes import open_artifact
    from edgerobust.runtimes.manifest import atomic_write_json
    from edgerobust.runtimes.preprocess import to_input

    cfg.validate()
    rep = reporter or NullReporter()
    model = open_artifact(cfg.artifact, cfg.runtime, threads=cfg.threads)
    man = model.manifest
    root = cfg.data or man.source.get("dataset")
    if not root:
        raise DataError(f"{man.file} records no dataset: pass --data DIR")
    ds = open_dataset(root)
    check_classes(man.class_names, ds.classes, ds.root)
    domain = cfg.domain or man.source.get("source_domain") or next(iter(ds.domains))
    dom = ds.domain(domain)
    images = decode_domain(dom, man.input_size)
    part, idx = domain_indices(dom, man.source, cfg.limit)
    idx = [i for i in idx if images.ok[i]]
    if not idx:
        raise DataError(f"no readable image to attack in {domain!r}")
    x = to_input(np.asarray(images.pixels[idx]))
    y = np.asarray(images.labels[idx], dtype=np.int64)
    eps = tuple(cfg.eps) if cfg.eps is not None else default_eps()

    runs: dict[str, Any] = {}
    for stop in (StopRule.none.value, *cfg.stops):
        t = rep.task(f"saltpepper ({stop})", None)
        t0 = time.perf_counter()
        res = saltpepper_attack(
            model,
            x,
            y,
            eps,
            steps=cfg.steps,
            seed=cfg.seed,
            stop=stop,
            sample_ids=idx,
            tail_sd=cfg.tail_sd,
        )
        rep.done(t)
        runs[stop] = (res, time.perf_counter() - t0)

    full, _ = runs[StopRule.none.value]
    broken_full = full.success.sum(axis=1)
    record_runs = {}
    verdicts = {}
    for stop, (res, seconds) in runs.items():
        broken = res.success.sum(axis=1)
        diff = (broken - broken_full).astype(int)
        ratio = res.total_queries / full.total_queries
        record_runs[stop] = {
            "robust_accuracy": list(res.robust_accuracy),
            "broken": [int(b) for b in broken],
            "broken_minus_full": [int(d) for d in diff],
            "samples_differing": [int(v) for v in (res.success != full.success).sum(axis=1)],
            "queries": res.total_queries,
            "query_ratio": ratio,
            "seconds": seconds,
        }
        if stop != StopRule.none.value:
            verdicts[stop] = {
                "same_within_one_sample": bool(np.abs(diff).max() <= GOAL_SAMPLES),
                "at_most_one_tenth": bool(ratio <= GOAL_RATIO),
                "identical": bool(np.array_equal(res.success, full.success)),
            }
    record = {
        "record": "bench-saltpepper",
        "record_version": RECORD_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "edgerobust": __version__,
        "artifact": {
            "file": man.file,
            "format": man.format,
            "precision": man.precision,
            "sha256": man.sha256,
        },
        "runtime": model.info(),
        "data": {
            "root": str(ds.root),
            "domain": domain,
            "split": part,
            "n": len(idx),
            "files": [dom.files[i] for i in idx],
        },
        "eps": list(eps),
        "steps": cfg.steps,
        "seed": cfg.seed,
        "clean_accuracy": full.clean_accuracy,
        "runs": record_runs,
        "goal": {"max_query_ratio": GOAL_RATIO, "max_broken_difference": GOAL_SAMPLES},
        "verdicts": verdicts,
        "config": cfg.to_dict(),
    }
    if cfg.out:
        atomic_write_json(cfg.out, record)
    return record


def bench_lines(record: dict[str, Any]) -> list[str]:
    """The benchmark as a few printable lines (the CLI prints them)."""
    eps = record["eps"]
    d = record["data"]
    lines = [
        f"{record['artifact']['file']} on {d['domain']} ({d['split']}, n={d['n']}), "
        f"steps {record['steps']}, seed {record['seed']}, clean accuracy "
        f"{100 * record['clean_accuracy']:.1f} %"
    ]
    head = "  ".join(f"eps {e:g}" for e in eps)
    lines.append(f"{'run':9s} robust accuracy % ({head})   queries   ratio  broken vs full")
    for stop, r in record["runs"].items():
        accs = "  ".join(f"{100 * a:6.1f}" for a in r["robust_accuracy"])
        lines.append(
            f"{stop:9s} {accs}   {r['queries']:8d}  {r['query_ratio']:6.3f}  "
            f"{r['broken_minus_full']}"
        )
    for stop, v in record["verdicts"].items():
        ok = v["same_within_one_sample"] and v["at_most_one_tenth"]
        lines.append(
            f"{stop}: {'meets' if ok else 'misses'} the goal (within one sample: "
            f"{'yes' if v['same_within_one_sample'] else 'no'}, <= 1/10 queries: "
            f"{'yes' if v['at_most_one_tenth'] else 'no'}, identical per sample: "
            f"{'yes' if v['identical'] else 'no'})"
        )
    return lines


__all__ = ["SaltPepperBenchConfig", "bench_lines", "bench_saltpepper"]
