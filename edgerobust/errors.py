"""Typed, user-facing errors.

Every error a user can cause is an :class:`EdgeRobustError`. Its message is one line that says
what is wrong and what to do; the CLI prints it without a traceback and exits with ``exit_code``.
"""

from __future__ import annotations


class EdgeRobustError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the one line the CLI prints."""

    exit_code = 2


class DataError(EdgeRobustError):
    """A dataset folder is missing, empty, or laid out wrongly."""


class CheckpointError(EdgeRobustError):
    """A checkpoint cannot be read or does not match what is asked of it."""


class ArtifactError(EdgeRobustError):
    """An exported artifact is missing, truncated, tampered with, or has no manifest."""


class RuntimeUnavailable(EdgeRobustError):
    """A runtime is unknown, or its library is not installed here."""


class ParityError(EdgeRobustError):
    """An exported artifact does not reproduce its source model within the declared bar."""

    exit_code = 3


class MissingExtra(EdgeRobustError):
    """A command needs an optional dependency (the ``torch`` extra) that is not installed."""


class ConfigError(EdgeRobustError):
    """An option or configuration value is out of range or inconsistent."""


class OutputError(EdgeRobustError):
    """An output path cannot be written: a parent is a file, no permission, or the wrong kind."""


class EmulationUnavailable(EdgeRobustError):
    """This host cannot run the emulated arm64 device (no root, no binfmt_misc, no qemu)."""


def require_torch(what: str) -> None:
    """Raise :class:`MissingExtra` with install advice when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in the torch-free subprocess test
        raise MissingExtra(
            f"{what} needs torch, which is not installed here: "
            "pip install 'edgerobust[torch]' (the device side needs only the base install)"
        ) from exc
