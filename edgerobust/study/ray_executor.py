"""The ``ray`` executor: every stage of a study is one Ray task.

What Ray does: placement and resources, waiting on dependencies, retries. Each stage declares
the CPUs it uses (the study's torch threads), a GPU when its kind is ``accelerated`` (training,
pruning and distillation retraining, white-box attacks) and the cluster has GPUs, and an
``exclusive`` stage (eval-device) asks for every CPU of one node, always the same node, so its
latency is measured alone and every artifact's latency on the same machine. A stage's task takes
its dependencies' tasks as arguments, so Ray starts it when they finish and independent stages
run at once across the nodes. A worker that dies mid-stage (killed, out of memory, its node lost)
is retried up to :data:`MAX_RETRIES` times; an exception in a stage is a failed stage, not a
retry (it would fail the same way again).

What stays the study's: caching, the rules for failed and optional inputs, and the commit.
Workers write each stage **straight into the study folder, which every node must see at the same
path (a shared filesystem)**, and commit it with the same atomic ``done.json`` as the local
executor (:func:`edgerobust.study.store.execute_stage`). Not sent back to the driver: a stage's
outputs are datasets, checkpoints and artifacts that later stages, on other nodes, open by the
paths their records name, and reports read by those paths too; shipping them through the driver
would copy every file twice and still leave the readers needing them. A run writes a token into
the folder (``.ray/run``) and a worker that does not see it fails the stage with a line that
says so, instead of writing somewhere no one reads.

Faults: a retried stage starts in its folder as a rerun does (non-resumable kinds start afresh,
training resumes from its last epoch), one attempt at a time (``.ray/locks/STAGE``, which also
names the worker's host and pid). A driver killed and started again finds the committed stages
cached, exactly as with the local executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgerobust.errors import ConfigError, MissingExtra
from edgerobust.runtimes.manifest import atomic_write_bytes
from edgerobust.study.scheduler import (
    ExecutorRun,
    StageResult,
    _error_line,
    _QueueReporter,
    _Scheduler,
    blocked_reason,
    cached_output,
    stage_annotation,
)
from edgerobust.study.stage import Stage, StageOutput, get_stage_kind
from edgerobust.study.store import execute_stage, stage_dir

INSTALL = "pip install 'edgerobust[cluster]'"
MAX_RETRIES = 3  # a worker that dies mid-stage: how often Ray starts the stage again
RUN_TOKEN = Path(".ray") / "run"  # in the study folder: proof that a worker sees it
LOCKS = Path(".ray") / "locks"  # in the study folder: one attempt of a stage at a time
FLUSH_S = 0.25  # a worker sends its progress events at most this often


def require_ray() -> None:
    """Raise :class:`MissingExtra` with install advice when Ray cannot be imported."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"--executor ray needs Ray, which is not installed here: {INSTALL}"
        ) from exc


def run_on_ray(run: ExecutorRun) -> list[StageResult]:
    """Run the plan's stages as Ray tasks on ``run.cfg.address`` (None: Ray's own default,
    ``RAY_ADDRESS`` or a Ray instance started here for the run)."""
    require_ray()
    import ray

    started = _connect(run.cfg.address)
    try:
        return _RayScheduler(run).run()
    finally:
        if started:
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join the cluster (or start one here); True when this call did, so the run ends it."""
    import ray

    if ray.is_initialized():  # a caller's session (e.g. a notebook or a test): use it
        return False
    # Workers report through the study's log and progress view, not the terminal.
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # 'ray start' turns token authentication on (Ray 2.60); a driver without it is refused
        auth = (
            "; a head started by 'ray start' wants RAY_AUTH_MODE=token here (and its token)"
            if not os.environ.get("RAY_AUTH_MODE")
            else ""
        )
        raise ConfigError(
            f"cannot join the Ray cluster at {address or 'the default address'}: {first} "
            f"(start one with 'ray start --head' and pass its HOST:PORT to --address{auth})"
        ) from None
    return True


# --------------------------------------------------------------------------- driver side


@dataclass(frozen=True)
class _Node:
    id: str
    ip: str
    cpus: int
    gpus: int


def _nodes() -> list[_Node]:
    import ray

    return [
        _Node(
            n["NodeID"],
            n["NodeManagerAddress"],
            int(n["Resources"].get("CPU", 0)),
            int(n["Resources"].get("GPU", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


class _RayScheduler(_Scheduler):
    """The local scheduler's bookkeeping (results, log, progress), with Ray running the stages."""

    def _execute(self, stages: list[Stage]) -> None:
        import ray

        nodes = [n for n in _nodes() if n.cpus > 0]
        if not nodes:
            raise ConfigError("the Ray cluster has no node with CPUs: join a worker to it")
        here = ray.get_runtime_context().get_node_id()
        # The driver's node when it has CPUs (the head, usually), so a study's latencies come
        # from the machine it was started on; else the largest node.
        eval_node = next((n for n in nodes if n.id == here), max(nodes, key=lambda n: n.cpus))
        gpus = sum(n.gpus for n in nodes)
        self.log(
            f"ray: {len(nodes)} node(s), {sum(n.cpus for n in nodes)} CPUs, {gpus} GPUs; "
            f"eval-device stages run alone on {eval_node.ip} ({eval_node.cpus} CPUs)"
        )
        token = secrets.token_hex(16)
        atomic_write_bytes(self.out / RUN_TOKEN, token.encode())
        task = ray.remote(_stage_task)
        box = ray.remote(num_cpus=0)(_EventBox).remote()
        max_cpus = max(n.cpus for n in nodes)

        refs: dict[str, Any] = {}  # stage key -> its task's ObjectRef
        waiting: dict[Any, Stage] = {}
        for stage in stages:
            if all(d.key in self.state for _, d in stage.deps) and self._try_cached(stage):
                continue  # committed, and so are its inputs: no task at all
            args = [
                refs[d.key] if d.key in refs else ("cached", self.outputs[d.key], "", 0.0)
                for _, d in stage.deps
            ]
            opts = self._options(stage, max_cpus, gpus, eval_node)
            ref = task.options(**opts).remote(
                stage, str(self.out), token, self.threads, self.plan.study.study.name, box, *args
            )
            refs[stage.key], waiting[ref] = ref, stage
        try:
            self._collect(waiting, box, {s.key: i for i, s in enumerate(stages)})
        finally:
            with contextlib.suppress(Exception):
                ray.kill(box)

    def _options(self, stage: Stage, max_cpus: int, gpus: int, eval_node: _Node) -> dict:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        kind = get_stage_kind(stage.kind)
        opts: dict[str, Any] = {
            "num_cpus": min(self.threads, max_cpus),
            "max_retries": MAX_RETRIES,
            "retry_exceptions": False,
            "name": stage.dirname,
        }
        if kind.exclusive:
            opts["num_cpus"] = eval_node.cpus
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(eval_node.id, soft=False)
        elif kind.accelerated and gpus and stage.settings.get("device", "auto") != "cpu":
            opts["num_gpus"] = 1
        return opts

    def _collect(self, waiting: dict[Any, Stage], box: Any, order: dict[str, int]) -> None:
        import ray

        tasks: dict[tuple[str, int], int] = {}
        self._bars: dict[str, int] = {}
        self._starts: dict[str, int] = {}
        crashed: set[str] = set()  # stages whose task raised (its worker died every time)
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0.2)
            # results first, so the log reads "done A" before "start B" (B needed A) ...
            for ref in sorted(done, key=lambda r: order[waiting[r].key]):
                stage = waiting.pop(ref)
                try:
                    status, payload, tb, seconds = ray.get(ref)
                except Exception as exc:  # the worker died on every attempt, or an input's did
                    status, payload, tb, seconds = self._crash(stage, exc, crashed)
                if status in ("ran", "failed") and stage.describe() not in self._starts:
                    self._drain_box(box, tasks)  # ... and "start A" before "done A"
                self._settle(stage, status, payload, tb, seconds, tasks)
            self._drain_box(box, tasks)

    def _crash(
        self, stage: Stage, exc: Exception, crashed: set[str]
    ) -> tuple[str, str, str, float]:
        # Ray fails a task whose argument failed: that is a skip, as with the local executor.
        gone = [d for _, d in stage.deps if d.key in crashed or self.state.get(d.key) == "skipped"]
        if gone:
            why = "failed" if self.state.get(gone[0].key) == "failed" else "was skipped"
            return "skipped", f"needs {gone[0].describe()} ({gone[0].dirname}), which {why}", "", 0
        crashed.add(stage.key)
        line = f"its Ray worker died on all {MAX_RETRIES + 1} attempts: {_error_line(exc)}"
        return "failed", line, "".join(traceback.format_exception(exc)), 0.0

    def _settle(
        self,
        stage: Stage,
        status: str,
        payload: Any,
        tb: str,
        seconds: float,
        tasks: dict[tuple[str, int], int],
    ) -> None:
        prefix = stage.describe()
        for key in [k for k in tasks if k[0] == prefix]:  # bars a killed attempt left open
            self.rep.done(tasks.pop(key))
        if prefix in self._bars:
            self.rep.done(self._bars.pop(prefix))
        if status == "ran":
            self._record_success(stage, payload, seconds)
        elif status == "cached":
            self.outputs[stage.key] = payload
            self._finish(stage, "cached")
        elif status == "skipped":
            self._finish(stage, "skipped", payload)
        else:
            self._record_failure(stage, payload, tb, seconds)

    def _drain_box(self, box: Any, tasks: dict[tuple[str, int], int]) -> None:
        import ray

        try:
            events = ray.get(box.take.remote(), timeout=30)
        except Exception:  # the event box is lost: progress stops, the stages carry on
            return
        for ev in events:
            if ev[0] == "start":
                _, prefix, dirname, host, pid, gpus = ev
                n = self._starts[prefix] = self._starts.get(prefix, 0) + 1
                gpu = f", GPU {gpus}" if gpus else ""
                again = f", attempt {n} (the last one's worker died)" if n > 1 else ""
                self.log(f"start {prefix} ({dirname}) on {host} pid {pid}{gpu}{again}")
                if prefix in self._bars:
                    self.rep.done(self._bars.pop(prefix))
                self._bars[prefix] = self.rep.task(f"▶ {prefix}", None)
            else:
                self._on_event(ev, tasks)


# --------------------------------------------------------------------------- worker side


class _EventBox:
    """A Ray actor: the workers' progress events, until the driver takes them."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def put(self, events: list[tuple[Any, ...]]) -> None:
        self.events.extend(events)

    def take(self) -> list[tuple[Any, ...]]:
        events, self.events = self.events, []
        return events


class _Outbox:
    """Buffers a worker's events and sends them to the box at most every :data:`FLUSH_S`."""

    def __init__(self, box: Any) -> None:
        self.box, self.pending, self.last = box, [], 0.0

    def put(self, event: tuple[Any, ...]) -> None:
        self.pending.append(event)
        if time.monotonic() - self.last >= FLUSH_S or event[0] in ("start", "log"):
            self.flush()

    def flush(self, wait: bool = False) -> None:
        import ray

        if not self.pending:
            return
        events, self.pending, self.last = self.pending, [], time.monotonic()
        with contextlib.suppress(Exception):  # progress is best effort; the stage is not
            ref = self.box.put.remote(events)
            if wait:  # the last events reach the driver before the stage's result does
                ray.get(ref, timeout=30)


def _stage_task(
    stage: Stage,
    out: str,
    token: str,
    threads: int,
    study: str,
    box: Any,
    *deps: tuple[str, Any, str, float],
) -> tuple[str, Any, str, float]:
    """One stage on a Ray worker: (status, StageOutput or reason, traceback, seconds)."""
    import ray

    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    outbox = _Outbox(box)
    rep = _QueueReporter(outbox, stage.describe())
    try:
        host = socket.gethostname()
        root = Path(out)
        if not _sees(root, token):
            return (
                "failed",
                f"the study folder {out} is not visible on {host}: the ray executor writes "
                "every stage into it, so every node needs it at the same path (a shared "
                "filesystem)",
                "",
                0.0,
            )
        state = {dep.key: result[0] for (_, dep), result in zip(stage.deps, deps, strict=True)}
        inputs: dict[str, StageOutput] = {
            role: result[1]
            for (role, _), result in zip(stage.deps, deps, strict=True)
            if result[0] in ("ran", "cached")
        }
        blocked = blocked_reason(stage, state)
        if blocked:
            return "skipped", blocked, "", 0.0
        with _attempt_lock(root, stage, host, rep):
            done = cached_output(root, stage, state)  # committed by an earlier run or attempt
            if done is not None:
                return "cached", done, "", 0.0
            gpus = ",".join(str(g) for g in ray.get_gpu_ids())  # as CUDA_VISIBLE_DEVICES numbers it
            outbox.put(("start", stage.describe(), stage.dirname, host, os.getpid(), gpus))
            t0 = time.perf_counter()
            try:
                output = execute_stage(
                    stage.kind,
                    stage.settings,
                    inputs,
                    stage_dir(root, stage),
                    stage_annotation(study, stage, state),
                    rep,
                    threads,
                )
            except Exception as exc:  # a failed stage: the driver records it
                return "failed", _error_line(exc), traceback.format_exc(), time.perf_counter() - t0
            return "ran", output, "", time.perf_counter() - t0
    finally:
        outbox.flush(wait=True)


def _sees(root: Path, token: str) -> bool:
    try:
        return (root / RUN_TOKEN).read_text() == token
    except OSError:
        return False


@contextlib.contextmanager
def _attempt_lock(root: Path, stage: Stage, host: str, rep: _QueueReporter) -> Any:
    """Hold ``.ray/locks/STAGE`` while the stage runs: an attempt whose driver was killed may
    still be writing its folder while a new run's attempt starts; the new one waits for it.
    The file names the worker (host, pid) for whoever wants to find it."""
    import fcntl

    path = root / LOCKS / stage.dirname
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            rep.log("waiting for an earlier attempt of this stage to end")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{host} {os.getpid()}\n")
        f.flush()
        yield
