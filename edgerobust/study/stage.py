"""A study's stages: what a stage is (kind, settings, dependencies, key), what it leaves
(:class:`StageOutput`), and the registry of stage kinds the adapters in
:mod:`edgerobust.study.stages` fill."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError
from edgerobust.progress import Reporter
from edgerobust.registry import Registry

# --------------------------------------------------------------------------- stage kinds

StageFn = Callable[[dict[str, Any], dict[str, "StageOutput"], Path, Reporter], "Path | str"]


@dataclass(frozen=True)
class StageKind:
    """A registered adapter: how to run one kind of stage."""

    name: str
    run: StageFn
    version: int = 1  # bump when the adapter's output changes: every key of this kind changes
    resumable: bool = False  # keep a partial folder on rerun (the function resumes from it)
    exclusive: bool = False  # run alone: its timings must not compete with other stages
    # gets a GPU when a cluster executor has one (its settings' device "auto" then picks it)
    accelerated: bool = False


STAGE_KINDS: Registry[StageKind] = Registry("stage kind")


def register_stage(
    name: str,
    *,
    version: int = 1,
    resumable: bool = False,
    exclusive: bool = False,
    accelerated: bool = False,
) -> Callable[[StageFn], StageFn]:
    """Decorator registering a stage adapter; a duplicate name is an error."""

    def deco(fn: StageFn) -> StageFn:
        STAGE_KINDS.add(name, StageKind(name, fn, version, resumable, exclusive, accelerated))
        return fn

    return deco


def get_stage_kind(name: str) -> StageKind:
    return STAGE_KINDS.get(name)


def list_stage_kinds() -> list[str]:
    return sorted(STAGE_KINDS)


# --------------------------------------------------------------------------- stages


def canonical_json(obj: Any) -> str:
    """The one serialisation that keys are computed from (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True, eq=False)
class Stage:
    """One unit of work: kind + settings + the stages it reads (``deps``: role -> stage)."""

    kind: str
    settings: dict[str, Any]
    deps: tuple[tuple[str, Stage], ...] = ()
    label: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # study annotations (not hashed)
    # roles the stage can do without: when such a dep fails, the stage runs without it (and
    # runs again once it exists), e.g. an int8 export refused by the parity gate must not keep
    # its fp32 parent from being attacked
    optional: tuple[str, ...] = ()
    key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        version = get_stage_kind(self.kind).version
        payload = {
            "kind": self.kind,
            "version": version,
            "settings": self.settings,
            "deps": {role: dep.key for role, dep in self.deps},
        }
        object.__setattr__(
            self, "key", hashlib.sha256(canonical_json(payload).encode()).hexdigest()
        )

    @property
    def dirname(self) -> str:
        return f"{self.kind}-{self.key[:12]}"

    def describe(self) -> str:
        return f"{self.kind} {self.label}".strip()


@dataclass(frozen=True)
class StageOutput:
    """A finished stage, as its dependents see it: its folder and its record."""

    dir: Path
    record: dict[str, Any]
    record_path: Path

    def path(self, name: str = "checkpoint") -> str:
        """A path the record names (e.g. its checkpoint)."""
        value = self.record.get(name)
        if not value:
            raise ConfigError(f"{self.record_path} has no {name!r}")
        return str(value)
