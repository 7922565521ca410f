"""The attacks registry: the paper's seven attacks, their norms, settings and epsilons.

Importing this package needs neither torch nor foolbox (the device side imports
:mod:`edgerobust.attacks.saltpepper`, a numpy-only module). A spec names its foolbox class as a
string; :mod:`edgerobust.attacks.whitebox` resolves it when an attack actually runs.

Settings are the paper's (section 4): foolbox defaults, except EAD and C&W with 100 steps (C&W
step size 0.001) and Salt&Pepper with 400 steps. Epsilons are in [0, 1] pixel space, in the
attack's own norm over the whole image tensor, as foolbox measures them.

    >>> from edgerobust.attacks import get, parse_attacks, parse_eps
    >>> get("cw").eps("heavy")
    (0.4,)
    >>> parse_attacks("fgsm,pgd")
    ('fgsm', 'pgd')
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from edgerobust.errors import ConfigError


class Strength(str, Enum):
    """The paper's two perturbation budgets (Tables 4 and 5)."""

    light = "light"
    heavy = "heavy"


class Label(str, Enum):
    """How a robustness figure was obtained (design.md, "Robustness labels")."""

    direct = "direct"  # a white-box (gradient) attack run against that very model
    transfer = "transfer"  # adversarials crafted on another model, replayed on this one
    bpda = "bpda"  # gradients through a differentiable stand-in (reserved: not implemented)
    blackbox = "blackbox"  # a decision-based attack that only sees this model's answers


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    ``foolbox`` is the class name in ``foolbox.attacks`` (``None`` for the numpy Salt&Pepper);
    ``params`` are all the keyword arguments it is built with (foolbox's defaults spelled out,
    so a record shows every setting), and the only keys a user may override. ``fixed_eps``
    attacks (FGSM, PGD) run once per epsilon; the others are minimisation attacks that run once
    and are clipped to each epsilon, as foolbox does.
    """

    name: str
    title: str
    norm: str  # "linf" | "l2" | "l1"
    gradient: bool
    light: tuple[float, ...]
    heavy: tuple[float, ...]
    foolbox: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    fixed_eps: bool = False

    def eps(self, strength: Strength | str) -> tuple[float, ...]:
        """The paper's epsilons for ``strength``."""
        return self.light if Strength(strength) is Strength.light else self.heavy

    def with_params(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` updated by ``overrides``; an unknown key is a :class:`ConfigError`."""
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ConfigError(f"{self.name} has no setting {unknown[0]!r}: it takes {known}")
        return {**self.params, **overrides}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "norm": self.norm,
            "gradient": self.gradient,
            "foolbox": self.foolbox,
            "params": dict(self.params),
            "light": list(self.light),
            "heavy": list(self.heavy),
        }


_REGISTRY: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    """Add an attack to the registry; a duplicate name is an error, never a silent overwrite."""
    if spec.name in _REGISTRY:
        raise ValueError(f"attack {spec.name!r} is already registered")
    if spec.norm not in ("linf", "l2", "l1"):
        raise ValueError(f"attack {spec.name!r}: norm must be linf, l2 or l1, got {spec.norm!r}")
    _REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> AttackSpec:
    """The attack registered as ``name``; an unknown name is a one-line :class:`ConfigError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown attack {name!r}: choose from {', '.join(list_attacks())}"
        ) from None


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching a glob ``pattern``, in the paper's table order."""
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def parse_attacks(value: str | None) -> tuple[str, ...]:
    """``"fgsm,pgd"`` -> ``("fgsm", "pgd")``; ``None`` or ``"all"`` -> every attack."""
    if value is None or value.strip() == "all":
        return tuple(list_attacks())
    names = [v.strip() for v in value.split(",")]
    if not value.strip() or any(not n for n in names):
        raise ConfigError(f"--attacks: expected names separated by commas, got {value!r}")
    for n in names:
        get(n)
    if len(set(names)) != len(names):
        raise ConfigError(f"--attacks: {value!r} names an attack twice")
    return tuple(names)


def parse_eps(value: str | None, option: str = "--eps") -> tuple[float, ...] | None:
    """``"1,15"`` -> ``(1.0, 15.0)``; ``None`` -> ``None``. Malformed or negative values raise one
    clear :class:`ConfigError` line (``"1,,x"``, ``"-1"``, ``"nan"``)."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    out = []
    for p in parts:
        try:
            e = float(p)
        except ValueError:
            raise ConfigError(
                f"{option}: {p!r} is not a number (give budgets separated by commas, e.g. 1,15)"
            ) from None
        if not math.isfinite(e) or e < 0:
            raise ConfigError(f"{option}: every budget must be a finite number >= 0, got {p!r}")
        out.append(e)
    if len(set(out)) != len(out):
        raise ConfigError(f"{option}: {value!r} repeats a budget")
    return tuple(out)


register(
    AttackSpec(
        "deepfool",
        "DeepFool Linf",
        "linf",
        True,
        light=(0.0003,),
        heavy=(0.004,),
        foolbox="LinfDeepFoolAttack",
        params={"steps": 50, "candidates": 10, "overshoot": 0.02, "loss": "logits"},
    )
)
register(
    AttackSpec(
        "pgd",
        "PGD Linf",
        "linf",
        True,
        light=(0.0003,),
        heavy=(0.004,),
        foolbox="LinfPGD",
        params={
            "steps": 40,
            "rel_stepsize": 0.01 / 0.3,
            "abs_stepsize": None,
            "random_start": True,
        },
        fixed_eps=True,
    )
)
register(
    AttackSpec(
        "fgsm",
        "FGSM",
        "linf",
        True,
        light=(0.0003,),
        heavy=(0.004,),
        foolbox="FGSM",
        params={},
        fixed_eps=True,
    )
)
register(
    AttackSpec(
        "cw",
        "C&W L2",
        "l2",
        True,
        light=(0.03,),
        heavy=(0.4,),
        foolbox="L2CarliniWagnerAttack",
        # The paper: 100 steps, step size 0.001; the rest are foolbox's defaults.
        params={
            "binary_search_steps": 9,
            "steps": 100,
            "stepsize": 0.001,
            "confidence": 0.0,
            "initial_const": 0.001,
            "abort_early": True,
        },
    )
)
register(
    AttackSpec(
        "ddn",
        "DDN L2",
        "l2",
        True,
        light=(0.003,),
        heavy=(0.24,),
        foolbox="DDNAttack",
        params={"steps": 100, "init_epsilon": 1.0, "gamma": 0.05},
    )
)
register(
    AttackSpec(
        "ead",
        "EAD L1",
        "l1",
        True,
        light=(1.0,),
        heavy=(10.0,),
        foolbox="EADAttack",
        # The paper: 100 steps; the rest are foolbox's defaults.
        params={
            "binary_search_steps": 9,
            "steps": 100,
            "initial_stepsize": 0.01,
            "confidence": 0.0,
            "initial_const": 0.001,
            "regularization": 0.01,
            "decision_rule": "EN",
            "abort_early": True,
        },
    )
)
register(
    AttackSpec(
        "saltpepper",
        "Salt&Pepper L2",
        "l2",
        False,
        light=(1.0,),
        heavy=(15.0,),
        foolbox=None,  # edgerobust.attacks.saltpepper: foolbox 3.3.4's algorithm, numpy only
        params={"steps": 400, "repetitions": 1},
    )
)

__all__ = [
    "AttackSpec",
    "Label",
    "Strength",
    "get",
    "list_attacks",
    "parse_attacks",
    "parse_eps",
    "register",
]
