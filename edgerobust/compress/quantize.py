"""Post-training static quantization (PTSQ), eager mode, as in the paper (section 3.1.3).

fuse conv-bn(-relu) -> attach the engine's default qconfig (per-channel int8 weights, histogram-
calibrated uint8 activations) -> calibrate on source-domain training images -> convert.

The engine decides the int8 kernels: ``x86``/``fbgemm`` for Intel/AMD servers and laptops,
``qnnpack`` for ARM (phones, Raspberry Pi). A model converted for one engine must run with that
engine active, which the manifest and the runtimes take care of.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from enum import Enum

import numpy as np
import torch
from torch import nn

from edgerobust.errors import ConfigError


class Engine(str, Enum):
    fbgemm = "fbgemm"
    x86 = "x86"
    qnnpack = "qnnpack"


def host_engine() -> str:
    """The engine this machine would use: qnnpack on ARM, x86 elsewhere."""
    import platform

    return "qnnpack" if platform.machine().lower() in {"aarch64", "arm64", "armv7l"} else "x86"


@contextmanager
def quiet() -> Iterable[None]:
    """torch.ao's eager-mode API warns that it is deprecated on every call; it still works."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_engine(engine: str) -> str:
    engine = Engine(engine).value if engine in Engine._value2member_map_ else engine
    if engine not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"quantization engine {engine!r} is not available in this torch build "
            f"(it has {', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')})"
        )
    return engine


def prepare_ptsq(model: nn.Module, engine: str) -> nn.Module:
    """A fused copy of ``model`` with observers attached, ready for calibration."""
    engine = check_engine(engine)
    torch.backends.quantized.engine = engine
    prepared = copy.deepcopy(model).cpu().eval()
    with quiet():
        prepared.backbone.fuse_model()
        prepared.backbone.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        torch.ao.quantization.prepare(prepared, inplace=True)
    return prepared


def calibrate(
    prepared: nn.Module,
    batches: Iterable[np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run calibration batches (float32 NCHW in [0, 1]) through the observers; returns #images."""
    n = 0
    with torch.inference_mode():
        for i, batch in enumerate(batches, 1):
            prepared(torch.from_numpy(np.ascontiguousarray(batch)))
            n += len(batch)
            if progress:
                progress(i)
    if n == 0:
        raise ConfigError("calibration saw no images: the source training split is empty")
    return n


def convert_prepared(prepared: nn.Module, engine: str) -> nn.Module:
    """The int8 model (a copy); ``prepared`` stays usable and saveable."""
    engine = check_engine(engine)
    torch.backends.quantized.engine = engine
    with quiet():
        return torch.ao.quantization.convert(copy.deepcopy(prepared).eval(), inplace=False)
