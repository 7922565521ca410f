"""Where a study keeps its stages: one folder per stage, committed by an atomic ``done.json``."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import edgerobust.study.stages  # noqa: F401 - registers the stage adapters
from edgerobust.progress import Reporter
from edgerobust.records import INCOMPLETE, STAGING
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.study.stage import Stage, StageOutput, get_stage_kind

DONE = "done.json"
_MARKER_TEXT = "this stage has not finished; its records are not final\n"
LOG_NAME = "study.log"
SUMMARY_NAME = "summary.json"

# --------------------------------------------------------------------------- storage


def stage_dir(out: Path, stage: Stage) -> Path:
    return out / "stages" / stage.dirname


def load_output(folder: Path) -> StageOutput | None:
    """The finished stage in ``folder``, or None if it is not finished (or unreadable)."""
    done = folder / DONE
    if not done.is_file():
        return None
    try:
        marker = json.loads(done.read_text())
        record_path = folder / marker["record_file"]
        record = json.loads(record_path.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return StageOutput(folder, record, record_path)


def is_record(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("record"), str)


def _annotate(folder: Path, annotation: dict[str, Any]) -> None:
    """Add the study block to every record the stage wrote (reports group rows by it)."""
    for path in sorted(folder.rglob("*.json")):
        if path.name == DONE:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_record(data):
            data["study"] = annotation
            atomic_write_json(path, data)


def execute_stage(
    kind: str,
    settings: dict[str, Any],
    inputs: dict[str, StageOutput],
    folder: Path,
    annotation: dict[str, Any],
    reporter: Reporter,
    threads: int,
) -> StageOutput:
    """Run one stage into ``folder`` and commit it with ``done.json``; raises on failure."""
    adapter = get_stage_kind(kind)
    _open_folder(folder, keep=adapter.resumable)
    _set_torch_threads(threads)
    t0 = time.perf_counter()
    record_path = Path(adapter.run(settings, inputs, folder, reporter))
    if not record_path.is_absolute():
        record_path = folder / record_path
    _annotate(folder, {**annotation, "threads_per_stage": threads})
    atomic_write_json(
        folder / DONE,
        {
            "kind": kind,
            "key": annotation["key"],
            "label": annotation.get("label"),
            "record_file": str(record_path.relative_to(folder)),
            "settings": settings,
            "deps": annotation.get("deps", {}),
            "seconds": round(time.perf_counter() - t0, 3),
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    (folder / INCOMPLETE).unlink(missing_ok=True)
    out = load_output(folder)
    assert out is not None
    return out


def _open_folder(folder: Path, *, keep: bool) -> None:
    """Make ``folder`` ready for a stage to run in, marked INCOMPLETE, such that a process
    killed at any moment never leaves it holding records without the marker (a report would
    read them as final). A new folder is made, marker and all, under a staging name and renamed
    into place; an unfinished attempt of a stage that cannot resume (``keep`` false) is renamed
    away before it is deleted. Both renames are atomic: the staging folder, ``.staging`` beside
    the stage folders, is on the same file system. The report never reads records under a
    ``.staging`` folder."""
    staging = folder.parent / STAGING
    fresh, trash = staging / f"{folder.name}.new", staging / f"{folder.name}.old"
    for left in (fresh, trash):  # left by an attempt that was killed
        if left.exists():
            shutil.rmtree(left)
    if folder.exists() and not keep:
        staging.mkdir(parents=True, exist_ok=True)
        folder.replace(trash)
        shutil.rmtree(trash)
    if folder.exists():
        (folder / INCOMPLETE).write_text(_MARKER_TEXT)
        return
    staging.mkdir(parents=True, exist_ok=True)
    fresh.mkdir()
    (fresh / INCOMPLETE).write_text(_MARKER_TEXT)
    fresh.replace(folder)


def _set_torch_threads(threads: int) -> None:
    if threads < 1:
        return
    try:
        import torch
    except ImportError:  # the device side: stages that need torch say so themselves
        return
    # Results of float training depend on the thread count (reduction order): a study pins it.
    torch.set_num_threads(threads)
