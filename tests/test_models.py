"""edgerobust.models.build: the registry, normalization inside the model, and loading pretrained weights."""

from __future__ import annotations

import re
import urllib.error

import pytest
import torch
import torchvision

from edgerobust.errors import CheckpointError, ConfigError
from edgerobust.models import get_arch, list_archs, register_arch
from edgerobust.models.build import (
    Classifier,
    build_model,
    count_params,
    create_model,
    layer_widths,
    load_pretrained,
)

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


FAMILIES = (
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
)
TINY = ("tinyresnet", "tinymobilenetv2", "tinymobilenetv3", "tinyefficientnet_lite")


def test_registry_lists_every_resnet():
    assert set(RESNETS) | set(FAMILIES) | set(TINY) == set(list_archs())
    assert list_archs("resnet1*") == ["resnet18", "resnet101", "resnet152"]
    with pytest.raises(ConfigError, match="resnet18"):
        get_arch("resnet9000")
    with pytest.raises(ConfigError):
        build_model("vgg16", 10)


def test_duplicate_arch_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_arch(get_arch("resnet18"))


@pytest.mark.parametrize("arch", RESNETS)
def test_every_resnet_has_torchvisions_parameter_count(arch):
    # Built on the meta device: shapes only, no memory, milliseconds even for resnet152.
    with torch.device("meta"):
        model = build_model(arch, 1000)
        head = build_model(arch, 7).backbone.fc
    # The registry's description quotes torchvision's count for the 1000-class model.
    quoted = float(re.match(r"([\d.]+) M params", get_arch(arch).description).group(1))
    assert count_params(model) == pytest.approx(quoted * 1e6, abs=0.05e6)
    assert head.out_features == 7
    assert get_arch(arch).imagenet == f"ResNet{arch[6:]}_Weights"


def test_parameter_counts_grow_with_depth():
    with torch.device("meta"):
        counts = [count_params(build_model(a, 10)) for a in ("tinyresnet", *RESNETS)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


@pytest.mark.parametrize("arch", ["tinyresnet", "resnet18", "resnet50"])
def test_forward_takes_unit_range_pixels(arch):
    torch.manual_seed(0)
    model = build_model(arch, 5).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 5) and torch.isfinite(y).all()


def test_normalization_is_inside_the_model():
    torch.manual_seed(0)
    model = build_model("tinyresnet", 4).eval()
    assert isinstance(model, Classifier)
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        full = model(x)
        assert not torch.allclose(full, model.backbone(x), atol=1e-3)
        torch.testing.assert_close(full, model.backbone((x - mean) / std))


def test_tinyresnet_is_tiny():
    model = build_model("tinyresnet", 10)
    assert count_params(model) < 100_000
    # Same topology as resnet18 with one block per stage: every layer name is one of resnet18's.
    assert set(layer_widths(model)) <= set(layer_widths(build_model("resnet18", 10)))


def test_two_classes_at_least():
    with pytest.raises(ConfigError):
        build_model("tinyresnet", 1)


# --------------------------------------------------------------------------- pretrained weights


@pytest.fixture(scope="module")
def torchvision_resnet18() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=1000).state_dict()


def _assert_backbone_loaded(model, state, head_before):
    own = model.backbone.state_dict()
    for key in ("conv1.weight", "layer3.1.conv2.weight", "layer4.0.downsample.1.running_var"):
        torch.testing.assert_close(own[key], state[key])
    # The classification head is the new one (7 classes), untouched by the 1000-class file.
    assert own["fc.weight"].shape == (7, 512)
    torch.testing.assert_close(own["fc.weight"], head_before)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file(tmp_path, torchvision_resnet18, suffix):
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(torchvision_resnet18, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in torchvision_resnet18.items()}, str(path))
    model = build_model("resnet18", 7)
    head_before = model.backbone.fc.weight.detach().clone()
    info = load_pretrained(model, "resnet18", str(path))
    assert info["weights"] == str(path)
    # Every backbone tensor but the head (fc.weight, fc.bias) was loaded.
    assert info["tensors_loaded"] == len(model.backbone.state_dict()) - 2
    _assert_backbone_loaded(model, torchvision_resnet18, head_before)


def test_weights_of_another_architecture_are_refused(tmp_path, torchvision_resnet18):
    path = tmp_path / "r18.pth"
    torch.save(torchvision_resnet18, path)
    with pytest.raises(CheckpointError, match="do not fit resnet50"):
        create_model("resnet50", 7, weights=str(path))


def test_imagenet_offline_says_to_use_weights_path(monkeypatch):
    calls = []

    def offline(self, *args, **kwargs):
        calls.append(self)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(CheckpointError) as err:
        create_model("resnet18", 7, weights="imagenet")
    msg = str(err.value)
    assert calls, "the download was not attempted"
    assert "\n" not in msg
    assert "--weights" in msg and "resnet18-" in msg and "offline" in msg


def test_imagenet_for_tinyresnet_is_a_config_error():
    with pytest.raises(ConfigError, match="--weights none"):
        create_model("tinyresnet", 7, weights="imagenet")


def test_text_file_as_weights(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(CheckpointError) as err:
        create_model("tinyresnet", 7, weights=str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(CheckpointError, match="not 'imagenet', 'none' or an existing file"):
        create_model("tinyresnet", 7, weights=str(tmp_path / "nope.pth"))
