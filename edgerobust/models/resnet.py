"""The ResNet family: torchvision's *quantizable* ResNet.

In fp32 its quant stubs are identities, and the same module tree fuses and converts to
eager-mode int8 (PTSQ) without a second definition.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.quantization import resnet as tvq

from edgerobust.models import Arch

BLOCKS = {"basic": tvq.QuantizableBasicBlock, "bottleneck": tvq.QuantizableBottleneck}


def build_backbone(arch: Arch, num_classes: int) -> nn.Module:
    from edgerobust.models.build import apply_widths, scaled_widths

    net = tvq.QuantizableResNet(
        BLOCKS[arch.config["block"]], list(arch.config["layers"]), num_classes=num_classes
    )
    if arch.width_divisor > 1:
        apply_widths(net, scaled_widths(net, arch.width_divisor))
    return net
