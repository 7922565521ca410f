"""The attack protocol: each attack is a class with one ``run`` method, and the shared base owns the
epsilon sweep, batching and the success matrix. Adding an attack means one class and one
``register`` call, and ``run_attacks`` then runs that attack and no other."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgerobust.attacks as attacks
from edgerobust.attacks import (
    DecisionAttack,
    FoolboxAttack,
    Found,
    GradientAttack,
    Kind,
    RunContext,
    SaltPepper,
    Target,
    get,
    list_attacks,
    register,
)

ROOT = Path(__file__).resolve().parents[2]


class UniformNoise(DecisionAttack):
    """A trivial decision-based attack: one draw of uniform noise in the Linf ball of radius eps.

    It is a fixed-eps attack, so the base hands ``run`` one budget at a time. ``calls`` records
    every call, so the tests can see what the base asked for."""

    calls: list[tuple[tuple[float, ...], int]] = []

    def run(
        self,
        model: Any,
        x: np.ndarray,
        y: np.ndarray,
        eps: tuple[float, ...],
        *,
        settings: Mapping[str, Any],
        ids: Sequence[int],
        ctx: RunContext,
    ) -> Found:
        self.calls.append((eps, len(x)))
        (e,) = eps
        rng = np.random.default_rng([ctx.seed, int(settings["draws"])])
        noise = rng.uniform(-e, e, size=x.shape).astype(x.dtype)
        adv = np.clip(x + noise, 0, 1)
        pred = np.asarray(model(adv)).argmax(1)
        return Found(success=(pred != y)[None], adversarials=adv[None])


def noise_attack(name: str = "noise") -> UniformNoise:
    return UniformNoise(
        name,
        "Uniform noise Linf",
        "linf",
        light=(0.01,),
        heavy=(0.2,),
        params={"draws": 1},
        fixed_eps=True,
    )


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A copy of the registry for one test, so what it registers goes away afterwards."""
    copy = dict(attacks._REGISTRY)
    monkeypatch.setattr(attacks, "_REGISTRY", copy)
    UniformNoise.calls = []
    return copy


def linear_model(x: np.ndarray) -> np.ndarray:
    """Two classes from the mean brightness: a numpy model a decision attack can query."""
    m = x.reshape(len(x), -1).mean(1)
    return np.stack([0.5 - m, m - 0.5], axis=1)


def images(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0.3, 0.7, n, dtype=np.float32)[:, None, None, None] * np.ones(
        (n, 3, 4, 4), np.float32
    )
    return x, linear_model(x).argmax(1)


# --------------------------------------------------------------------------- the registry


def test_every_registered_attack_is_a_class_of_its_kind() -> None:
    for name in list_attacks():
        attack = get(name)
        assert isinstance(attack, GradientAttack | DecisionAttack)
        assert type(attack).kind is attack.kind  # the kind belongs to the class
        assert attack.gradient == (attack.kind is Kind.gradient)
    assert all(isinstance(get(n), FoolboxAttack) for n in list_attacks() if n != "saltpepper")
    assert isinstance(get("saltpepper"), SaltPepper) and not get("saltpepper").gradient
    assert [n for n in list_attacks() if get(n).fixed_eps] == ["pgd", "fgsm"]


def test_duplicate_name_is_an_error(registry) -> None:
    register(noise_attack())
    with pytest.raises(ValueError, match="'noise' is already registered"):
        register(noise_attack())
    before = get("saltpepper")
    with pytest.raises(ValueError, match="'saltpepper' is already registered"):
        register(noise_attack("saltpepper"))
    assert get("saltpepper") is before  # never silently overwritten
    with pytest.raises(TypeError, match="GradientAttack or DecisionAttack"):
        register("noise2")  # type: ignore[arg-type]


def test_registry_and_decision_attacks_need_no_torch() -> None:
    """The device side imports the registry with numpy only: registering and running a decision
    attack through the protocol must not import torch or foolbox."""
    code = (
        "import sys\n"
        "for name in ('torch', 'foolbox', 'eagerpy'):\n"
        "    sys.modules[name] = None  # importing it would now raise ImportError\n"
        "import numpy as np\n"
        "from edgerobust.attacks import RunContext, Target, get\n"
        "x = np.full((3, 3, 4, 4), 0.5, np.float32)\n"
        "fn = lambda b: b.reshape(len(b), 3, -1).mean(-1)\n"
        "t = Target('m', 'artifact', 'artifact', fn, {}, clean_correct=np.ones(3, bool))\n"
        "sp = get('saltpepper')\n"
        "ctx = RunContext(seed=0, batch_size=2, sample_ids=(0, 1, 2))\n"
        "res, flags = sp.measure([t], t, x, np.zeros(3, np.int64), (0.0, 1.0),"
        " settings=sp.with_params({'steps': 5}), ctx=ctx)\n"
        "print(res[0]['label'], res[0]['queries'] > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["blackbox", "True"]


# --------------------------------------------------------------------------- the base's sweep


def test_fixed_eps_attack_runs_once_per_eps_and_batch() -> None:
    x, y = images(5)
    attack = noise_attack()
    UniformNoise.calls = []
    ctx = RunContext(seed=0, batch_size=2, sample_ids=tuple(range(5)))
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    swept = attack.sweep(
        linear_model,
        x,
        y,
        (0.0, 0.05, 0.3),
        settings=attack.params,
        ctx=ctx,
        batch_size=2,
        on_batch=lambda b, found: seen.append((b.start, b.stop, found.success.shape)),
    )
    # batches of 2, 2, 1; in each, one run per eps, in order
    assert UniformNoise.calls == [((e,), m) for m in (2, 2, 1) for e in (0.0, 0.05, 0.3)]
    assert seen == [(0, 2, (3, 2)), (2, 4, (3, 2)), (4, 5, (3, 1))]
    assert swept.success.shape == swept.norms.shape == (3, 5)
    assert not swept.success[0].any()  # eps 0: the clean images, all classified correctly
    assert (swept.norms <= np.array([0.0, 0.05, 0.3])[:, None] + 1e-7).all()
    assert swept.queries is None and swept.clean_correct is None


def test_minimisation_attack_runs_once_for_the_whole_sweep() -> None:
    x, y = images(5)
    attack = UniformNoise("noise", "Noise", "linf", light=(0.1,), heavy=(0.3,), params={"draws": 1})
    calls: list[tuple[float, ...]] = []

    class Once(UniformNoise):
        def run(self, model, x, y, eps, *, settings, ids, ctx) -> Found:  # type: ignore[override]
            calls.append(eps)
            return Found(
                success=np.zeros((len(eps), len(x)), bool), norms=np.zeros((len(eps), len(x)))
            )

    once = Once(**{f: getattr(attack, f) for f in ("name", "title", "norm", "light", "heavy")})
    ctx = RunContext(seed=0, batch_size=2, sample_ids=tuple(range(5)))
    swept = once.sweep(linear_model, x, y, (0.0, 0.1, 0.3), settings={}, ctx=ctx)
    assert calls == [(0.0, 0.1, 0.3)]  # one search, judged at every eps
    assert swept.success.shape == (3, 5)


def test_a_run_with_the_wrong_shape_is_one_line() -> None:
    x, y = images(3)

    class Bad(UniformNoise):
        def run(self, model, x, y, eps, *, settings, ids, ctx) -> Found:  # type: ignore[override]
            return Found(success=np.zeros(len(x), bool), norms=np.zeros(len(x)))

    bad = Bad("bad", "Bad", "l2", light=(1.0,), heavy=(2.0,))
    ctx = RunContext(seed=0, batch_size=8, sample_ids=(0, 1, 2))
    with pytest.raises(ValueError, match="'bad': run returned success of shape") as info:
        bad.sweep(linear_model, x, y, (0.0, 1.0), settings={}, ctx=ctx)
    assert "\n" not in str(info.value)


def test_a_decision_attack_is_measured_on_every_target_itself() -> None:
    x, y = images(4)
    targets = [
        Target(name, "artifact", "artifact", linear_model, {}, clean_correct=np.ones(4, bool))
        for name in ("a", "b")
    ]
    attack = noise_attack()
    UniformNoise.calls = []
    ctx = RunContext(seed=0, batch_size=8, sample_ids=(0, 1, 2, 3))
    results, flags = attack.measure(
        targets, targets[0], x, y, (0.0, 0.3), settings=attack.params, ctx=ctx
    )
    assert [r["target"] for r in results] == ["a", "b"]
    assert {r["label"] for r in results} == {"blackbox"}
    assert len(UniformNoise.calls) == 4  # two eps on each of the two targets, all 4 samples at once
    assert flags == []


# --------------------------------------------------------------------------- through run_attacks


def test_a_registered_blackbox_attack_runs_itself_not_salt_and_pepper(
    registry, tiny, monkeypatch, capsys, tmp_path
) -> None:
    """Registering is all it takes: ``run_attacks`` (and the ``attack`` command) run the new
    decision-based attack on every model, label it blackbox, and never call Salt&Pepper."""
    from edgerobust.attacks.run import AttackConfig, run_attacks
    from edgerobust.cli import main

    def no_saltpepper(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Salt&Pepper ran in place of the registered attack")

    monkeypatch.setattr("edgerobust.attacks.decision.saltpepper_attack", no_saltpepper)
    monkeypatch.setattr("edgerobust.attacks.saltpepper.saltpepper_attack", no_saltpepper)
    register(noise_attack())

    cfg = AttackConfig(
        str(tiny.int8),
        attacks=("noise",),
        strength="heavy",
        limit=5,
        params={"noise": {"draws": 2}},
        artifacts=(str(tiny.onnx_int8),),
    )
    rec = run_attacks(cfg)
    (a,) = rec["attacks"]
    assert (a["attack"], a["title"], a["gradient"]) == ("noise", "Uniform noise Linf", False)
    assert a["eps"] == [0.0, 0.2] and a["settings"] == {"draws": 2}
    names = [t["name"] for t in rec["targets"]]
    assert [r["target"] for r in a["results"]] == names
    assert {r["label"] for r in a["results"]} == {"blackbox"}
    assert "queries" not in a["results"][0]  # nothing of Salt&Pepper's record
    # run once per eps (fixed eps) on each model, with all 5 samples (decision attacks batch
    # their own queries)
    assert UniformNoise.calls == [((e,), 5) for _ in names for e in (0.0, 0.2)]
    assert rec["gradients"] is None  # no gradient attack, so no gradient check
    assert not [f for f in rec["sanity"] if f["check"] == "eps0"]

    UniformNoise.calls = []
    out = tmp_path / "noise.json"
    try:
        main(["attack", str(tiny.fp32), "--attacks", "noise", "--limit", "3", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    assert "Uniform noise Linf" in capsys.readouterr().out
    assert json.loads(out.read_text())["attacks"][0]["results"][0]["label"] == "blackbox"
    assert UniformNoise.calls == [((0.0,), 3), ((0.01,), 3)]


def test_eval_device_never_runs_salt_and_pepper_under_another_name(registry) -> None:
    """``eval-device --attack`` runs Salt&Pepper's own on-device loop; another decision-based
    attack is refused with one line rather than silently measured as Salt&Pepper."""
    from edgerobust.attacks.device import validate_options
    from edgerobust.errors import ConfigError

    register(noise_attack())
    validate_options("saltpepper", None, 10, 0, "settled")
    with pytest.raises(ConfigError, match="eval-device runs saltpepper only") as info:
        validate_options("noise", None, 10, 0, "settled")
    assert "\n" not in str(info.value)
