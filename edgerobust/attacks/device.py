"""Black-box robustness of an artifact inside its runtime (``eval-device --attack saltpepper``).

Only numpy: this runs on the device, next to ONNX Runtime, where torch and foolbox are absent.
The attack is decision-based, so the figure is labelled ``blackbox``: it was measured against the
deployed artifact itself, not a PyTorch twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgerobust.attacks import Label, get, list_attacks
from edgerobust.attacks.saltpepper import StopRule, saltpepper_attack
from edgerobust.errors import ConfigError
from edgerobust.runtimes.preprocess import to_input

#: Images converted to float at once; bounds memory on a device (224 px: about 150 MB).
CHUNK = 256


def default_eps() -> tuple[float, ...]:
    """The paper's Salt&Pepper budgets, light then heavy: (1, 15)."""
    spec = get("saltpepper")
    return (*spec.light, *spec.heavy)


def validate_options(
    attack: str, eps: Sequence[float] | None, steps: int, seed: int, stop: str
) -> None:
    """One :class:`ConfigError` line for anything ``eval-device --attack`` cannot run."""
    spec = get(attack)  # unknown name: lists the registered ones
    if spec.gradient:
        black = [n for n in list_attacks() if not get(n).gradient]
        raise ConfigError(
            f"{attack} needs gradients, which an artifact does not have: eval-device runs "
            f"decision-based attacks ({', '.join(black)}); for {attack} use 'edgerobust attack' "
            "(its figures on artifacts are labelled transfer)"
        )
    if attack != "saltpepper":
        # blackbox_saltpepper below is Salt&Pepper's (its record and on-device chunking): never
        # run it under another decision-based attack's name.
        raise ConfigError(
            f"eval-device runs saltpepper only; for {attack} use 'edgerobust attack "
            "--artifacts' (its figures on artifacts are labelled blackbox)"
        )
    if eps is not None and (not eps or any(not np.isfinite(e) or e < 0 for e in eps)):
        raise ConfigError(f"--eps: budgets must be finite numbers >= 0, got {list(eps)}")
    if steps < 1:
        raise ConfigError(f"--sp-steps must be >= 1, got {steps}")
    if seed < 0:
        raise ConfigError(f"--sp-seed must be >= 0, got {seed}")
    try:
        StopRule(stop)
    except ValueError:
        raise ConfigError(
            f"--sp-stop must be one of {', '.join(r.value for r in StopRule)}, got {stop!r}"
        ) from None


def blackbox_saltpepper(
    model: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    labels: np.ndarray,
    ids: Sequence[int],
    eps: Sequence[float],
    *,
    steps: int = 400,
    seed: int = 0,
    stop: StopRule | str = StopRule.settled,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Salt&Pepper against ``model`` on ``pixels[ids]`` (uint8 NHWC); a JSON-ready summary.

    Each image draws its noise from its own stream keyed by its index in the domain, so the
    figure for an image does not depend on ``--limit``, on chunking or on batching.
    """
    ids = list(ids)
    eps = tuple(float(e) for e in eps)
    t0 = time.perf_counter()
    success, clean, queries = [], [], []
    for s in range(0, len(ids), CHUNK):
        sel = ids[s : s + CHUNK]
        res = saltpepper_attack(
            model,
            to_input(np.asarray(pixels[sel])),
            np.asarray(labels[sel], dtype=np.int64),
            eps,
            steps=steps,
            seed=seed,
            batch_size=batch_size,
            stop=stop,
            sample_ids=sel,
        )
        success.append(res.success)
        clean.append(res.clean_correct)
        queries.append(res.queries)
    n = len(ids)
    succ = np.concatenate(success, axis=1) if n else np.zeros((len(eps), 0), bool)
    q = np.concatenate(queries) if n else np.zeros(0, np.int64)
    clean_correct = np.concatenate(clean) if n else np.zeros(0, bool)
    return {
        "attack": "saltpepper",
        "label": Label.blackbox.value,
        "norm": "l2",
        "eps": list(eps),
        "robust_accuracy": [float((~row).mean()) if n else None for row in succ],
        "clean_accuracy": float(clean_correct.mean()) if n else None,
        "n": n,
        "steps": steps,
        "seed": seed,
        "stop": StopRule(stop).value,
        "queries": int(q.sum()),
        "queries_full": n * (1 + steps + len(eps)),
        "seconds": time.perf_counter() - t0,
    }


__all__ = ["blackbox_saltpepper", "default_eps", "validate_options"]
