"""The MobileNet family: torchvision's MobileNetV2 and MobileNetV3-Small/Large.

Plain torchvision modules (ImageNet normalization, weights from torchvision's enums): int8
goes through the general FX graph-mode PTSQ path (``edgerobust.compress.quantize``), which fuses
conv-bn(-relu) by itself, so no quantizable twin of the definition is needed.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from edgerobust.models import Arch

BUILDERS = {
    "v2": tvm.mobilenet_v2,
    "v3_small": tvm.mobilenet_v3_small,
    "v3_large": tvm.mobilenet_v3_large,
}


def build_backbone(arch: Arch, num_classes: int) -> nn.Module:
    from edgerobust.models.build import apply_widths, scaled_widths

    net = BUILDERS[arch.config["model"]](weights=None, num_classes=num_classes)
    if arch.width_divisor > 1:
        apply_widths(net, scaled_widths(net, arch.width_divisor))
    return net
