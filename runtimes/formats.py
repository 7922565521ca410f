"""Artifact formats: one registry, the one source of format names and file suffixes.

A runtime module registers the formats it runs (``runtimes/ort.py``: ``onnx``); exporters,
the CLI, study files, the report and the device check all read names and suffixes from here.
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgerobust.errors import ArtifactError
from edgerobust.registry import Registry


@dataclass(frozen=True)
class ArtifactFormat:
    name: str  # "onnx"
    suffix: str  # ".onnx"
    description: str = ""
    needs_torch: bool = False  # does running it need torch on the device?
    extra: str | None = None  # the install extra that runs it, when not "torch" (needs_torch)

    @property
    def device_install(self) -> str:
        """What a device needs to run it: ``base`` (the light install) or an extra's name."""
        return self.extra or ("torch" if self.needs_torch else "base")


FORMATS: Registry[ArtifactFormat] = Registry("format", ArtifactError)


def register_format(fmt: ArtifactFormat) -> ArtifactFormat:
    """Add ``fmt``; a duplicate name or suffix is an error."""
    if any(f.suffix == fmt.suffix for _, f in FORMATS.items()):
        raise ValueError(f"suffix {fmt.suffix!r} is already registered")
    return FORMATS.add(fmt.name, fmt)


def get_format(name: str) -> ArtifactFormat:
    return FORMATS.get(name)


def list_formats(pattern: str = "*") -> list[str]:
    """Format names in registration order (the report's order of preference)."""
    return FORMATS.list(pattern)


def format_of(path_or_suffix: str) -> ArtifactFormat | None:
    """The format whose suffix ends ``path_or_suffix`` (``"m.onnx"`` or ``".onnx"``), or None."""
    for _, f in FORMATS.items():
        if str(path_or_suffix).endswith(f.suffix):
            return f
    return None


def suffixes() -> list[str]:
    return [f.suffix for _, f in FORMATS.items()]
