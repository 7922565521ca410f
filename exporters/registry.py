"""The exporter registry: how each artifact format is written from a torch model. Torch-free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgerobust.registry import Registry
from edgerobust.runtimes.formats import get_format

from .parity import ParityBar


@dataclass(frozen=True)
class Exporter:
    """How one artifact format is written from a torch model (data only: torch-free).

    ``write(model, input_size, path, quant=, calibration=, optimize=)`` writes the file (torch is
    imported inside it). ``int8`` says
    where an int8 artifact comes from: ``"ptsq"``, the eager-PTSQ torch model for a quantization
    engine (the writer saves it as given), or ``"own"``, the writer quantizes the fp32 model
    itself for its runtime (``int8_engine`` names that quantizer in the manifest).
    ``int8_options``: the writer takes ``int8=`` (target CPU, tuning, fallback, the parity gate;
    see :class:`edgerobust.exporters.onnx.Int8Options`). A writer returns its notes, or a
    :class:`WriteOutcome` when it also has a ``quantization`` or ``delegation`` block for the
    manifest.
    """

    format: str
    write: Callable[..., list[str]]
    fp32_bar: ParityBar  # the parity bar for fp32, declared next to the exporter
    int8: str = "ptsq"
    int8_engine: str | None = None
    int8_options: bool = False


@dataclass(frozen=True)
class WriteOutcome:
    """What a writer reports: notes for the manifest; how it quantized (target, the chosen
    configuration and why, a tuning table, the layers kept in fp32); how the runtime's backend
    takes the graph (ExecuTorch: nodes delegated to XNNPACK vs left on portable kernels)."""

    notes: list[str]
    quantization: dict[str, Any] = field(default_factory=dict)
    delegation: dict[str, Any] = field(default_factory=dict)


EXPORTERS: Registry[Exporter] = Registry("format")


def register_exporter(exporter: Exporter) -> Exporter:
    """Add an exporter for a format its runtime module registered; a duplicate is an error."""
    get_format(exporter.format)
    return EXPORTERS.add(exporter.format, exporter)


def get_exporter(fmt: str) -> Exporter:
    return EXPORTERS.get(fmt)


def list_exporters(pattern: str = "*") -> list[str]:
    return EXPORTERS.list(pattern)
