"""The last line of defence of the command line, and the checks that run before any work.

* :func:`report_crash`: an exception nobody expected becomes one line on the terminal (what
  failed, on which input file, where in edgerobust, what to try) and the full traceback goes to a
  log file whose path the line gives. ``edgerobust.cli.main`` calls it; expected errors
  (:class:`~edgerobust.errors.EdgeRobustError`) never get here and keep their own message.
* :func:`reading`: marks the input file a block works on, so that a crash inside it can name
  the file the user should look at, not just a line of our source.
* :func:`check_output`: every path a command will write is checked when the options are parsed,
  before any work starts, so a bad ``--out`` costs nothing and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgerobust.errors import OutputError

_INPUT_ATTR = "_edgerobust_input"


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Attach ``path`` to any exception raised inside (the innermost ``reading`` wins)."""
    try:
        yield
    except Exception as exc:
        if not hasattr(exc, _INPUT_ATTR):
            # an exception type with __slots__ takes no note: the same error, unnamed file
            with contextlib.suppress(AttributeError):
                setattr(exc, _INPUT_ATTR, str(path))
        raise


def input_of(exc: BaseException) -> str | None:
    """The input file an exception was raised on, when anything says so."""
    marked = getattr(exc, _INPUT_ATTR, None)
    if marked:
        return marked
    filename = getattr(exc, "filename", None)
    return str(filename) if filename else None


def log_dir() -> Path:
    """Where crash logs go: ``$EDGEROBUST_LOG_DIR``, else the cache's ``logs/`` (the same place
    as :func:`edgerobust.data.cache_dir`, not imported here to keep this module bare)."""
    env = os.environ.get("EDGEROBUST_LOG_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("EDGEROBUST_CACHE")
    if cache:
        return Path(cache) / "logs"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgerobust" / "logs"


def _write_log(exc: BaseException, argv: list[str]) -> Path | None:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    text = f"edgerobust {' '.join(argv)}\nat {stamp} UTC, pid {os.getpid()}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)
    )
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"edgerobust-crash-{stamp}-{os.getpid()}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _where(exc: BaseException) -> str:
    """``file:line`` of the deepest frame in edgerobust's own code (else the deepest frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    roots = [
        str(Path(m.__file__).parent)
        for name in ("edgerobust", "edgerobust.exporters", "edgerobust.runtimes")
        if (m := sys.modules.get(name)) is not None and getattr(m, "__file__", None)
    ]
    ours = [f for f in frames if any(f.filename.startswith(r + os.sep) for r in roots)]
    frame = (ours or frames)[-1]
    parts = Path(frame.filename).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else frame.filename
    return f"{short}:{frame.lineno}"


def crash_line(exc: BaseException, log: Path | None) -> str:
    """The one line printed for an unexpected exception."""
    text = str(exc).strip().splitlines()
    what = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    source = input_of(exc)
    on = f" while reading {source}" if source else ""
    hint = (
        "check that file (damaged, or of a kind edgerobust does not handle)"
        if source
        else "check the inputs and options"
    )
    if isinstance(exc, MemoryError):
        hint = "out of memory: try a smaller --batch-size or --limit, or fewer --jobs"
    saved = f"full traceback in {log}" if log else "the traceback could not be saved"
    return (
        f"error: unexpected failure{on} ({what}, in {_where(exc)}): {hint}; "
        f"if it persists, report it with the log. {saved}"
    )


def report_crash(exc: BaseException, argv: list[str]) -> str:
    """Write the traceback to a log file and return the one line to print."""
    return crash_line(exc, _write_log(exc, argv))


def check_output(path: str | Path, *, folder: bool, what: str = "output") -> None:
    """Raise :class:`OutputError` unless ``path`` can be written as a file (``folder=False``)
    or used as a folder: nothing on the way is a file, the right kind if it exists, and the
    nearest existing folder is writable. Creates nothing."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise OutputError(f"{what} {path} is a file, but a folder is needed: choose a folder")
        if not folder and path.is_dir():
            raise OutputError(
                f"{what} {path} is a folder, but a file is needed: give a file name, "
                f"e.g. {path / 'result.json'}"
            )
        if folder:
            _writable(path, path, what)
            return
    anchor = path.absolute().parent
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not anchor.is_dir():
        raise OutputError(
            f"cannot write {what} {path}: {anchor} is a file, not a folder: choose another path"
        )
    _writable(anchor, path, what)


def _writable(folder: Path, path: Path, what: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write {what} {path}: no permission to write in {folder}: choose another path"
        )
