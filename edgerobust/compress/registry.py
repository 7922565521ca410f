"""The compression registry and protocol (torch-free); see :mod:`edgerobust.compress`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from edgerobust.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from edgerobust.progress import Reporter
    from edgerobust.study.spec import Study, TrainSpec, _Table
    from edgerobust.study.stage import Stage, StageOutput


@dataclass
class PlannedModel:
    """A checkpoint the study makes, and where it sits in the paper's tables."""

    stage: Stage
    label: str
    base: str
    method: str  # "-" | "FP" | "KD" | "PTSQ"
    arch: str
    compression: str  # baseline | pruned | distilled | int8
    source: str
    engine: str | None = None
    parent: PlannedModel | None = None

    def meta(self) -> dict[str, Any]:
        m = {
            "source": self.source,
            "model": self.label,
            "base": self.base,
            "method": self.method,
            "arch": self.arch,
            "compression": self.compression,
        }
        if self.engine:
            m["engine"] = self.engine
        if self.parent is not None:
            m["parent_model"] = self.parent.label
        return m

    def with_meta(self, **extra: Any) -> PlannedModel:
        """Rebuild the model's stage with its study annotations attached."""
        from edgerobust.study.stage import Stage

        s = self.stage
        self.stage = Stage(
            s.kind, s.settings, s.deps, s.label, {**self.meta(), **extra}, s.optional
        )
        return self


@dataclass(frozen=True)
class ParseContext:
    """What a compression's table is read against."""

    train: TrainSpec
    where: str  # the study file's name, for error messages
    base_dir: Any  # Path: relative paths start here


@dataclass
class PlanContext:
    """What a compression's ``plan`` sees while the study is expanded."""

    study: Study
    add: Callable[[Stage], Stage]  # adds a stage (or returns the equal one already added)
    data_settings: dict[str, Any]  # {"data": folder} for a folder dataset, else {}
    data_deps: tuple[tuple[str, Stage], ...]  # (("data", synthetic stage),) or ()
    notes: list[str] = field(default_factory=list)  # what was left out, and why
    source: str | None = None  # scope "source": the source domain being expanded
    baselines: dict[str, PlannedModel] = field(default_factory=dict)  # arch -> baseline
    cache: dict[str, Any] = field(default_factory=dict)  # what a compression computes once

    @property
    def seed(self) -> int:
        return self.study.study.seed

    @property
    def device(self) -> str:
        return self.study.train.device


class Compression(Protocol):
    name: ClassVar[str]
    method: ClassVar[str]
    compression: ClassVar[str]
    scope: ClassVar[str]  # "source" | "models"

    # optional, for its stage kind: version (default 1; bumping it changes every key of the
    # kind), resumable (default False: a partial folder is cleared on rerun), accelerated
    # (default False: True gets the stage a GPU on a cluster that has them)

    def parse(self, table: _Table, ctx: ParseContext) -> Any: ...

    def plan(
        self, spec: Any, ctx: PlanContext, models: list[PlannedModel]
    ) -> list[PlannedModel]: ...

    def run(
        self, settings: dict[str, Any], inputs: dict[str, StageOutput], out: Path, rep: Reporter
    ) -> Path | str: ...


COMPRESSIONS: Registry[Compression] = Registry("compression")


def register_compression(cls: type) -> type:
    """Class decorator: register one instance under ``cls.name``, and its ``run`` as the stage
    kind of that name; a duplicate name (of a compression or a stage kind) is an error."""
    from edgerobust.study.stage import STAGE_KINDS, register_stage

    if cls.scope not in ("source", "models"):
        raise ValueError(f"compression {cls.name!r}: scope must be 'source' or 'models'")
    if cls.name in STAGE_KINDS:
        raise ValueError(f"stage kind {cls.name!r} is already registered")
    obj = COMPRESSIONS.add(cls.name, cls())
    register_stage(
        cls.name,
        version=getattr(cls, "version", 1),
        resumable=getattr(cls, "resumable", False),
        accelerated=getattr(cls, "accelerated", False),
    )(obj.run)
    return cls


def get_compression(name: str) -> Compression:
    return COMPRESSIONS.get(name)


def list_compressions() -> list[str]:
    return list(COMPRESSIONS)
