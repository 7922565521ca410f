"""The attacks registry: the paper's seven attacks, their norms, settings and epsilons.

Every entry is an attack object (:mod:`edgerobust.attacks.base`): its settings card and its
``run`` method, behind one protocol. The paper's six gradient attacks are
:class:`~edgerobust.attacks.gradient.FoolboxAttack` objects, and Salt&Pepper is a
:class:`~edgerobust.attacks.decision.SaltPepper`. Adding an attack means one class and one
:func:`register` call.

Importing this package needs neither torch nor foolbox (the device side imports
:mod:`edgerobust.attacks.saltpepper`, a numpy-only module). A foolbox attack names its class as a
string, and :mod:`edgerobust.attacks.whitebox` resolves it when the attack actually runs.

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

from edgerobust.attacks.base import (
    Attack,
    DecisionAttack,
    Found,
    GradientAttack,
    Kind,
    Label,
    RunContext,
    Strength,
    Sweep,
    Target,
)
from edgerobust.attacks.decision import SaltPepper
from edgerobust.attacks.gradient import FoolboxAttack
from edgerobust.errors import ConfigError

#: The name older code annotates with: every registered attack is its own settings card.
AttackSpec = Attack

_REGISTRY: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
    """Add an attack to the registry; a duplicate name is an error, never a silent overwrite.

    ``attack`` is an instance of a :class:`GradientAttack` or :class:`DecisionAttack` subclass
    that implements ``run``; ``run_attacks`` then reaches it by its name, and nothing else needs
    to change."""
    if not isinstance(attack, Attack) or not isinstance(getattr(attack, "kind", None), Kind):
        raise TypeError(
            f"register() takes a GradientAttack or DecisionAttack instance, got {attack!r}"
        )
    if attack.name in _REGISTRY:
        raise ValueError(f"attack {attack.name!r} is already registered")
    if attack.norm not in ("linf", "l2", "l1"):
        raise ValueError(
            f"attack {attack.name!r}: norm must be linf, l2 or l1, got {attack.norm!r}"
        )
    _REGISTRY[attack.name] = attack
    return attack


def get(name: str) -> Attack:
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


def settled_attacks() -> list[str]:
    """Registered attacks with a settled search (:mod:`edgerobust.attacks.settled`), which
    ``--stop`` chooses between that and foolbox's own."""
    return [n for n, a in _REGISTRY.items() if getattr(a, "settles", False)]


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
    FoolboxAttack(
        "deepfool",
        "DeepFool Linf",
        "linf",
        light=(0.0003,),
        heavy=(0.004,),
        foolbox="LinfDeepFoolAttack",
        params={"steps": 50, "candidates": 10, "overshoot": 0.02, "loss": "logits"},
    )
)
register(
    FoolboxAttack(
        "pgd",
        "PGD Linf",
        "linf",
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
    FoolboxAttack(
        "fgsm",
        "FGSM",
        "linf",
        light=(0.0003,),
        heavy=(0.004,),
        foolbox="FGSM",
        params={},
        fixed_eps=True,
    )
)
register(
    FoolboxAttack(
        "cw",
        "C&W L2",
        "l2",
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
    FoolboxAttack(
        "ddn",
        "DDN L2",
        "l2",
        light=(0.003,),
        heavy=(0.24,),
        foolbox="DDNAttack",
        params={"steps": 100, "init_epsilon": 1.0, "gamma": 0.05},
    )
)
register(
    FoolboxAttack(
        "ead",
        "EAD L1",
        "l1",
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
    SaltPepper(  # edgerobust.attacks.saltpepper: foolbox 3.3.4's algorithm, numpy only
        "saltpepper",
        "Salt&Pepper L2",
        "l2",
        light=(1.0,),
        heavy=(15.0,),
        params={"steps": 400, "repetitions": 1},
    )
)

__all__ = [
    "Attack",
    "AttackSpec",
    "DecisionAttack",
    "FoolboxAttack",
    "Found",
    "GradientAttack",
    "Kind",
    "Label",
    "RunContext",
    "SaltPepper",
    "Strength",
    "Sweep",
    "Target",
    "get",
    "list_attacks",
    "parse_attacks",
    "parse_eps",
    "register",
]
