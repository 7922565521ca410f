"""Where a study's stages run: the registry of executors behind ``edgerobust run --executor``.

An executor takes the planned stages (:class:`~edgerobust.study.scheduler.ExecutorRun`) and
returns one :class:`~edgerobust.study.scheduler.StageResult` per stage. Caching, the rules for
failed and optional inputs, the commit of each stage (``done.json``), the log and the summary are
the study's own (:mod:`edgerobust.study.scheduler`, :mod:`edgerobust.study.store`): every
executor keeps them, so a study gives the same folders and figures wherever it ran.

This module is light (no torch, no Ray): the CLI takes its choices from :data:`EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgerobust.registry import Registry

if TYPE_CHECKING:
    from edgerobust.study.scheduler import ExecutorRun, StageResult


@dataclass(frozen=True)
class Executor:
    name: str
    help: str
    run: Callable[[ExecutorRun], list[StageResult]]
    check: Callable[[], None] = lambda: None  # raises MissingExtra when its library is absent
    takes_address: bool = False  # --address: the cluster to join


EXECUTORS: Registry[Executor] = Registry("executor")


def register_executor(executor: Executor) -> Executor:
    """Add an executor; a duplicate name is an error."""
    return EXECUTORS.add(executor.name, executor)


def get_executor(name: str) -> Executor:
    return EXECUTORS.get(name)


def list_executors() -> list[str]:
    return list(EXECUTORS)


def _run_local(run: ExecutorRun) -> list[StageResult]:
    from edgerobust.study.scheduler import _Scheduler

    return _Scheduler(run).run()


def _run_ray(run: ExecutorRun) -> list[StageResult]:
    from edgerobust.study.ray_executor import run_on_ray

    return run_on_ray(run)


def _check_ray() -> None:
    from edgerobust.study.ray_executor import require_ray

    require_ray()


register_executor(
    Executor(
        "local",
        "this machine: one stage at a time, or --jobs N in a process pool",
        _run_local,
    )
)
register_executor(
    Executor(
        "ray",
        "a Ray cluster (--address HOST:PORT), or a Ray instance started on this machine",
        _run_ray,
        _check_ray,
        takes_address=True,
    )
)
