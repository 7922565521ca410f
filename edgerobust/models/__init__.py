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
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgerobust.registry import Registry


@dataclass(frozen=True)
class Arch:
    """A registered architecture: how to build it and where its ImageNet weights come from."""

    name: str
    family: str  # the module edgerobust.models.<family> with build_backbone(arch, num_classes)
    config: Mapping[str, Any] = field(default_factory=dict)  # the family's settings
    imagenet: str | None = None  # name of torchvision's weights enum, e.g. "ResNet18_Weights"
    width_divisor: int = 1  # >1 only for the test-sized model
    description: str = ""

    def build_backbone(self, num_classes: int) -> Any:
        """The torch backbone (imports torch and the family module on first use)."""
        family = importlib.import_module(f"edgerobust.models.{self.family}")
        return family.build_backbone(self, num_classes)


ARCHS: Registry[Arch] = Registry("architecture")


def register_arch(arch: Arch) -> Arch:
    """Add ``arch`` to the registry; a duplicate name is an error."""
    return ARCHS.add(arch.name, arch)


def get_arch(name: str) -> Arch:
    return ARCHS.get(name)


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
