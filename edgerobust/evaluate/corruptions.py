"""Accuracy under ImageNet-C corruptions inside the runtime, and the corruption error (CE).

:func:`corruption_accuracy` scores one model on one set of images, clean and corrupted at each
severity (the corrupted images come from :func:`edgerobust.data.corruptions.corrupt_images`, made
once and cached). :func:`corruption_errors` compares two such results on the same images as
Hendrycks & Dietterich normalise them: ``CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c}`` (E the top-1
error), its relative form ``sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean)``, and
mCE, the mean of ``CE_c`` over the benchmark corruptions measured. Their reference is AlexNet;
ours is whichever artifact the user names (e.g. the fp32 baseline), so CE < 1 means "fewer errors
under corruption than the reference".

Light: numpy and the runtime only (scipy for some corruptions), no torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgerobust.data.corruptions import (
    CORRUPTIONS,
    LEFT_OUT,
    VERSION,
    check_available,
    corrupt_images,
)
from edgerobust.errors import ConfigError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes.preprocess import to_input


def images_key(domain: str, files: Sequence[str]) -> str:
    """Which images a result was measured on (domain and files): CE compares like with like."""
    h = hashlib.sha256(json.dumps([domain, list(files)]).encode())
    return h.hexdigest()[:16]


def _score(model: Callable, pixels: np.ndarray, labels: np.ndarray, batch_size: int) -> int:
    correct = 0
    for s in range(0, len(pixels), batch_size):
        logits = model(to_input(np.asarray(pixels[s : s + batch_size])))
        correct += int((logits.argmax(1) == labels[s : s + batch_size]).sum())
    return correct


def corruption_accuracy(
    model: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    labels: np.ndarray,
    indices: Sequence[int],
    corruptions: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    batch_size: int = 16,
    domain: str = "images",
    files: Sequence[str] | None = None,
    cache: bool = True,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Top-1 accuracy of ``model`` on ``pixels[indices]`` clean and under each corruption and
    severity. ``pixels`` are uint8 NHWC at the model's input size; each image's corruption is
    keyed by its index, so any model gets the very same corrupted images."""
    check_available(corruptions)
    rep = reporter or NullReporter()
    idx = [int(i) for i in indices]
    y = np.asarray(labels)[idx]
    n = len(idx)
    clean = _score(model, np.asarray(pixels[idx]), y, batch_size)
    results = []
    t = rep.task(f"corruptions on {domain}", len(corruptions) * len(severities))
    for name in corruptions:
        c = CORRUPTIONS.get(name)
        correct = []
        for sev in severities:
            x = corrupt_images(pixels, idx, name, sev, seed=seed, domain=domain, cache=cache)
            correct.append(_score(model, x, y, batch_size))
            rep.advance(t, 1)
        accs = [k / n if n else None for k in correct]
        results.append(
            {
                "corruption": name,
                "group": c.group,
                "benchmark": c.benchmark,
                "params": [c.params[s - 1] if s else None for s in severities],
                "correct": correct,
                "accuracy": accs,
                "mean_accuracy": float(np.mean(accs)) if n else None,
            }
        )
    rep.done(t)
    by_sev = (
        [float(np.mean([r["accuracy"][k] for r in results])) for k in range(len(severities))]
        if n and results
        else []
    )
    bench = [r["mean_accuracy"] for r in results if r["benchmark"]]
    return {
        "version": VERSION,
        "seed": seed,
        "severities": list(severities),
        "n": n,
        "images": images_key(domain, files if files is not None else [str(i) for i in idx]),
        "clean": {"correct": clean, "accuracy": clean / n if n else None},
        "results": results,
        "mean_by_severity": by_sev,
        # ImageNet-C's headline: mean over the benchmark corruptions and severities measured
        "mean_accuracy": float(np.mean(bench)) if n and bench else None,
        "left_out": dict(LEFT_OUT),
        "reference": None,
    }


def corruption_errors(result: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """CE and relative CE per corruption, and their means (mCE), of ``result`` against
    ``reference`` (both from :func:`corruption_accuracy`, on the same images and severities).
    A CE whose reference made no error is missing (None), with the reason in ``notes``."""
    for key in ("images", "severities", "seed", "n", "version"):
        if result[key] != reference[key]:
            raise ConfigError(
                f"the reference was measured with other {key} ({reference[key]} vs "
                f"{result[key]}): measure it on the same images, severities and seed"
            )
    ref = {r["corruption"]: r for r in reference["results"]}
    n = result["n"]
    e_clean, r_clean = 1 - result["clean"]["accuracy"], 1 - reference["clean"]["accuracy"]
    ce: dict[str, float | None] = {}
    rel: dict[str, float | None] = {}
    notes = []
    for r in result["results"]:
        name = r["corruption"]
        if name not in ref:
            notes.append(f"{name}: not measured on the reference")
            continue
        e = [1 - k / n for k in r["correct"]]
        er = [1 - k / n for k in ref[name]["correct"]]
        ce[name] = sum(e) / sum(er) if sum(er) > 0 else None
        if ce[name] is None:
            notes.append(f"{name}: the reference made no error, CE undefined")
        d_ref = sum(x - r_clean for x in er)
        rel[name] = sum(x - e_clean for x in e) / d_ref if d_ref > 0 else None
        if rel[name] is None:
            notes.append(f"{name}: the reference lost no accuracy, relative CE undefined")
    bench = [n for n in ce if CORRUPTIONS.get(n).benchmark]
    ces = [ce[n] for n in bench if ce[n] is not None]
    rels = [rel[n] for n in bench if rel[n] is not None]
    return {
        "ce": ce,
        "relative_ce": rel,
        "mce": float(np.mean(ces)) if ces else None,
        "relative_mce": float(np.mean(rels)) if rels else None,
        "mce_over": [n for n in bench if ce[n] is not None],
        "notes": notes,
    }
