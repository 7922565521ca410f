"""Running a study: what is cached, what runs where (the executors: this machine's process
pool, or a Ray cluster), progress, the log and the summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError, EdgeRobustError
from edgerobust.progress import NullReporter, Reporter
from edgerobust.runtimes.manifest import atomic_write_json
from edgerobust.study.plan import Plan, plan_study
from edgerobust.study.spec import Study, load_study
from edgerobust.study.stage import Stage, StageOutput, get_stage_kind
from edgerobust.study.store import LOG_NAME, SUMMARY_NAME, execute_stage, load_output, stage_dir

# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class RunConfig:
    study: str
    out: str | None = None  # default: runs/<study name>
    jobs: int = 1
    dry_run: bool = False
    executor: str = "local"  # a name in edgerobust.study.executors.EXECUTORS
    address: str | None = None  # the cluster to join (executors that take one)

    def validate(self) -> None:
        from edgerobust.study.executors import get_executor

        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")
        ex = get_executor(self.executor)
        if self.address and not ex.takes_address:
            raise ConfigError(
                f"--address is for a cluster executor; --executor {ex.name} takes none"
            )


@dataclass
class StageResult:
    stage: str  # kind + label
    dir: str
    status: str  # ran | cached | failed | skipped | pending (dry run)
    reason: str = ""
    seconds: float = 0.0


@dataclass
class StudySummary:
    study: str
    out: str
    dry_run: bool
    results: list[StageResult]
    notes: list[str]
    seconds: float = 0.0

    def by_status(self, status: str) -> list[StageResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        return not self.by_status("failed") and not self.by_status("skipped")

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for r in self.results:
            c[r.status] = c.get(r.status, 0) + 1
        return c

    def lines(self) -> list[str]:
        """What a person reads at the end: counts, then every failure and skip with its reason."""
        c = self.counts()
        order = ("pending", "cached") if self.dry_run else ("ran", "cached", "failed", "skipped")
        head = ", ".join(f"{c.get(s, 0)} {'to run' if s == 'pending' else s}" for s in order)
        lines = [f"{self.study}: {len(self.results)} stages: {head}"]
        for r in self.by_status("failed"):
            lines.append(f"FAILED  {r.stage} ({r.dir}): {r.reason}")
        for r in self.by_status("skipped"):
            lines.append(f"skipped {r.stage}: {r.reason}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "out": self.out,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            "stages": [r.__dict__ for r in self.results],
        }


class _Log:
    """Appends timestamped lines to OUT/study.log (opened per line: safe across a kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        stamp = dt.datetime.now().isoformat(timespec="seconds")
        with open(self.path, "a", encoding="utf-8") as f:
            for line in str(message).splitlines() or [""]:
                f.write(f"{stamp} {line}\n")


class _StageReporter:
    """What an adapter gets: bars go to the study's progress view, log lines to the log file."""

    def __init__(self, parent: Reporter, log: Callable[[str], None], prefix: str) -> None:
        self.parent, self.log_file, self.prefix = parent, log, prefix

    def task(self, description: str, total: int | None) -> int:
        return self.parent.task(f"  {description}", total)

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        self.parent.advance(task, n, **fields)

    def done(self, task: int) -> None:
        self.parent.done(task)

    def log(self, message: str) -> None:
        self.log_file(f"[{self.prefix}] {message}")


@contextlib.contextmanager
def _study_lock(out: Path) -> Iterator[None]:
    """One runner per output folder: two would run the same stages into the same folders."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"another 'edgerobust run' is using {out}: wait for it, or choose another --out"
            ) from None
        yield


def default_out(study: Study) -> Path:
    return Path("runs") / study.study.name


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, EdgeRobustError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_study(cfg: RunConfig, reporter: Reporter | None = None) -> StudySummary:
    """Run (or with ``dry_run`` list) every stage of a study; see the module docstring."""
    from edgerobust.study.executors import get_executor

    cfg.validate()
    executor = get_executor(cfg.executor)
    rep = reporter or NullReporter()
    study = load_study(cfg.study)
    plan = plan_study(study)
    out = Path(cfg.out) if cfg.out else default_out(study)
    out = out.resolve()
    t_start = time.perf_counter()
    if cfg.dry_run:
        results = [
            StageResult(
                s.describe(),
                str(stage_dir(out, s)),
                "cached" if load_output(stage_dir(out, s)) else "pending",
            )
            for s in plan.stages
        ]
        return StudySummary(study.study.name, str(out), True, results, list(plan.notes))
    executor.check()  # e.g. Ray not installed: one line, before anything is written
    with _study_lock(out):
        log = _Log(out / LOG_NAME)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = study.study.threads or max(1, (cores or 1) // cfg.jobs)
        where = f", executor {executor.name}" if executor.name != "local" else ""
        log(
            f"run {cfg.study} -> {out}: {len(plan.stages)} stages, jobs {cfg.jobs}{where}, "
            f"{threads} torch thread(s) per stage, pid {os.getpid()}"
        )
        for note in plan.notes:
            log(f"note: {note}")
        results = executor.run(ExecutorRun(plan, out, cfg, threads, rep, log))
        summary = StudySummary(
            study.study.name,
            str(out),
            False,
            results,
            list(plan.notes),
            time.perf_counter() - t_start,
        )
        for line in summary.lines():
            log(line)
        atomic_write_json(out / SUMMARY_NAME, summary.to_dict())
    return summary


@dataclass(frozen=True)
class ExecutorRun:
    """What an executor gets: the plan, where it goes, the run's options, threads per stage,
    the progress view and the study log."""

    plan: Plan
    out: Path
    cfg: RunConfig
    threads: int
    rep: Reporter
    log: Callable[[str], None]


# ------------------------------------------------------------------ the rules every executor keeps


def missing_inputs(stage: Stage, state: dict[str, str]) -> dict[str, str]:
    """Optional deps that failed or were skipped: role -> why (the stage runs without them)."""
    return {
        role: f"{dep.describe()} {state[dep.key]}"
        for role, dep in stage.deps
        if role in stage.optional and state.get(dep.key) in ("failed", "skipped")
    }


def blocked_reason(stage: Stage, state: dict[str, str]) -> str | None:
    """Why ``stage`` cannot run (a required dep failed or was skipped), or None."""
    for role, dep in stage.deps:
        if role in stage.optional:
            continue
        if state.get(dep.key) in ("failed", "skipped"):
            why = "failed" if state[dep.key] == "failed" else "was skipped"
            return f"needs {dep.describe()} ({dep.dirname}), which {why}"
    return None


def stage_annotation(study: str, stage: Stage, state: dict[str, str]) -> dict[str, Any]:
    """The ``study`` block every record of ``stage`` carries."""
    ann = {
        "study": study,
        "stage": stage.kind,
        "key": stage.key,
        "label": stage.label,
        "deps": {role: dep.key for role, dep in stage.deps},
        **stage.meta,
    }
    missing = missing_inputs(stage, state)
    if missing:
        ann["missing_inputs"] = missing
    return ann


def cached_output(out: Path, stage: Stage, state: dict[str, str]) -> StageOutput | None:
    """The committed output of ``stage``, unless it ran without an optional input that exists
    now (then it must run again)."""
    done = load_output(stage_dir(out, stage))
    if done is None:
        return None
    was_missing = (done.record.get("study") or {}).get("missing_inputs") or {}
    if set(was_missing) - set(missing_inputs(stage, state)):
        return None
    return done


def record_error(folder: Path, error: str, tb: str) -> None:
    """``error.txt`` in a failed stage's folder (the stage did not commit: no ``done.json``)."""
    if folder.is_dir():
        (folder / "error.txt").write_text(f"{error}\n\n{tb}")


class _Scheduler:
    """Runs ready stages (all dependencies finished), up to ``jobs`` at a time."""

    def __init__(self, run: ExecutorRun) -> None:
        self.plan, self.out, self.jobs, self.threads = run.plan, run.out, run.cfg.jobs, run.threads
        self.rep, self.log = run.rep, run.log
        self.outputs: dict[str, StageOutput] = {}
        self.state: dict[str, str] = {}  # key -> cached | ran | failed | skipped
        self.results: dict[str, StageResult] = {}
        self.overall = -1

    def _finish(self, stage: Stage, status: str, reason: str = "", seconds: float = 0.0) -> None:
        self.state[stage.key] = status
        self.results[stage.key] = StageResult(
            stage.describe(), str(stage_dir(self.out, stage)), status, reason, round(seconds, 2)
        )
        self.rep.advance(self.overall, 1)

    def _annotation(self, stage: Stage) -> dict[str, Any]:
        return stage_annotation(self.plan.study.study.name, stage, self.state)

    def _blocked(self, stage: Stage) -> str | None:
        return blocked_reason(stage, self.state)

    def _ready(self, stage: Stage) -> bool:
        settled = ("cached", "ran", "failed", "skipped")
        return all(
            self.state.get(dep.key) in (settled if role in stage.optional else ("cached", "ran"))
            for role, dep in stage.deps
        )

    def run(self) -> list[StageResult]:
        stages = list(self.plan.stages)
        self.overall = self.rep.task(f"study {self.plan.study.study.name}", len(stages))
        torch = sys.modules.get("torch")
        before = torch.get_num_threads() if torch is not None else None
        try:
            self._execute(stages)
        finally:
            self.rep.done(self.overall)
            torch = sys.modules.get("torch")
            if before is not None and torch is not None:
                torch.set_num_threads(before)  # stages pinned it; give the caller theirs back
        return [self.results[s.key] for s in stages]

    def _execute(self, stages: list[Stage]) -> None:
        if self.jobs == 1:
            self._run_serial(stages)
        else:
            self._run_parallel(stages)

    def _try_cached(self, stage: Stage) -> bool:
        done = cached_output(self.out, stage, self.state)
        if done is None:
            return False
        self.outputs[stage.key] = done
        self._finish(stage, "cached")
        return True

    def _inputs(self, stage: Stage) -> dict[str, StageOutput]:
        return {role: self.outputs[dep.key] for role, dep in stage.deps if dep.key in self.outputs}

    def _record_failure(self, stage: Stage, error: str, tb: str, seconds: float) -> None:
        self.log(f"FAILED {stage.describe()} ({stage.dirname}) after {seconds:.1f} s: {error}")
        self.log(tb.rstrip())
        record_error(stage_dir(self.out, stage), error, tb)
        self.rep.log(f"[red]failed[/] {stage.describe()}: {error}")
        self._finish(stage, "failed", error, seconds)

    def _record_success(self, stage: Stage, output: StageOutput, seconds: float) -> None:
        self.outputs[stage.key] = output
        self.log(f"done {stage.describe()} ({stage.dirname}) in {seconds:.1f} s")
        self._finish(stage, "ran", "", seconds)

    def _run_serial(self, stages: list[Stage]) -> None:
        for stage in stages:
            blocked = self._blocked(stage)
            if blocked:
                self._finish(stage, "skipped", blocked)
                continue
            if self._try_cached(stage):
                continue
            self.log(f"start {stage.describe()} ({stage.dirname})")
            task = self.rep.task(f"▶ {stage.describe()}", None)
            t0 = time.perf_counter()
            try:
                output = execute_stage(
                    stage.kind,
                    stage.settings,
                    self._inputs(stage),
                    stage_dir(self.out, stage),
                    self._annotation(stage),
                    _StageReporter(self.rep, self.log, stage.describe()),
                    self.threads,
                )
            except Exception as exc:  # a failed stage must not stop the others
                self._record_failure(
                    stage, _error_line(exc), traceback.format_exc(), time.perf_counter() - t0
                )
            else:
                self._record_success(stage, output, time.perf_counter() - t0)
            finally:
                self.rep.done(task)

    def _run_parallel(self, stages: list[Stage]) -> None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        # spawn, not fork: forking a process that has started torch's thread pools can hang.
        ctx = mp.get_context("spawn")
        manager = ctx.Manager()
        events = manager.Queue()
        pending = list(stages)
        running: dict[Any, tuple[Stage, float, int]] = {}
        tasks: dict[tuple[str, int], int] = {}
        try:
            with ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(events,),
            ) as pool:
                while pending or running:
                    progressed = True
                    while progressed:
                        progressed = False
                        exclusive_running = any(
                            get_stage_kind(s.kind).exclusive for s, _, _ in running.values()
                        )
                        waiting_exclusive = False
                        for stage in list(pending):
                            blocked = self._blocked(stage)
                            if blocked:
                                pending.remove(stage)
                                self._finish(stage, "skipped", blocked)
                                progressed = True
                                continue
                            if not self._ready(stage):
                                continue
                            if self._try_cached(stage):
                                pending.remove(stage)
                                progressed = True
                                continue
                            exclusive = get_stage_kind(stage.kind).exclusive
                            if exclusive_running or waiting_exclusive:
                                break
                            if exclusive and running:
                                waiting_exclusive = True  # let the pool drain, then run it alone
                                break
                            if len(running) >= self.jobs:
                                break
                            pending.remove(stage)
                            self.log(f"start {stage.describe()} ({stage.dirname})")
                            task = self.rep.task(f"▶ {stage.describe()}", None)
                            fut = pool.submit(
                                _worker_run,
                                stage.kind,
                                stage.settings,
                                self._inputs(stage),
                                str(stage_dir(self.out, stage)),
                                self._annotation(stage),
                                self.threads,
                                stage.describe(),
                            )
                            running[fut] = (stage, time.perf_counter(), task)
                            progressed = True
                            if exclusive:
                                break
                    if not running:
                        if pending:  # cannot happen with a DAG; guard against a silent hang
                            raise RuntimeError(f"no runnable stage among {len(pending)} pending")
                        break
                    done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                    self._drain(events, tasks)
                    for fut in done:
                        stage, t0, task = running.pop(fut)
                        self.rep.done(task)
                        seconds = time.perf_counter() - t0
                        try:
                            status, payload, tb = fut.result()
                        except Exception as exc:  # the worker itself died
                            status, payload, tb = "failed", _error_line(exc), traceback.format_exc()
                        if status == "ok":
                            self._record_success(stage, payload, seconds)
                        else:
                            self._record_failure(stage, payload, tb, seconds)
                    self._drain(events, tasks)
        finally:
            manager.shutdown()

    def _drain(self, events: Any, tasks: dict[tuple[str, int], int]) -> None:
        import queue

        while True:
            try:
                ev = events.get_nowait()
            except (queue.Empty, EOFError, OSError):
                return
            self._on_event(ev, tasks)

    def _on_event(self, ev: tuple[Any, ...], tasks: dict[tuple[str, int], int]) -> None:
        """One event of a worker's reporter (see :class:`_QueueReporter`)."""
        what, prefix = ev[0], ev[1]
        if what == "task":
            tasks[(prefix, ev[2])] = self.rep.task(f"  {ev[3]}", ev[4])
        elif what == "advance" and (prefix, ev[2]) in tasks:
            self.rep.advance(tasks[(prefix, ev[2])], ev[3], **ev[4])
        elif what == "done" and (prefix, ev[2]) in tasks:
            self.rep.done(tasks.pop((prefix, ev[2])))
        elif what == "log":
            self.log(f"[{prefix}] {ev[2]}")


# --------------------------------------------------------------------------- worker side

_EVENTS: Any = None


def _worker_init(events: Any) -> None:
    global _EVENTS
    _EVENTS = events
    # torch is imported after this (by the adapters): keep its C++ deprecation chatter out of
    # the progress view, as the single-process path does.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    import warnings

    for category in (DeprecationWarning, UserWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    if sys.platform.startswith("linux"):
        # Die with the runner: a worker orphaned by ``kill -9`` must not keep writing stages
        # that the next run is about to redo.
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _QueueReporter:
    """A worker's reporter: every call becomes an event the runner draws / logs."""

    def __init__(self, events: Any, prefix: str) -> None:
        self.events, self.prefix, self.next = events, prefix, 0

    def task(self, description: str, total: int | None) -> int:
        self.next += 1
        self.events.put(("task", self.prefix, self.next, f"{self.prefix}: {description}", total))
        return self.next

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        # Numbers (``completed``) stay numbers; anything else travels as its text.
        plain = {k: v if isinstance(v, int | float) else str(v) for k, v in fields.items()}
        self.events.put(("advance", self.prefix, task, n, plain))

    def done(self, task: int) -> None:
        self.events.put(("done", self.prefix, task))

    def log(self, message: str) -> None:
        self.events.put(("log", self.prefix, str(message)))


def _worker_run(
    kind: str,
    settings: dict[str, Any],
    inputs: dict[str, StageOutput],
    folder: str,
    annotation: dict[str, Any],
    threads: int,
    prefix: str,
) -> tuple[str, Any, str]:
    rep = _QueueReporter(_EVENTS, prefix) if _EVENTS is not None else NullReporter()
    try:
        out = execute_stage(kind, settings, inputs, Path(folder), annotation, rep, threads)
    except Exception as exc:
        return "failed", _error_line(exc), traceback.format_exc()
    return "ok", out, ""
