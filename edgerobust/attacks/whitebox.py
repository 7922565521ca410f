"""White-box attacks with foolbox on a PyTorch model, and numpy views of torch models.

The model takes [0, 1] pixels (normalisation is inside it), so foolbox runs with
``bounds=(0, 1)`` and every epsilon is in pixel space. One call crafts the adversarials of one
batch at every epsilon; the caller replays them on other models (``transfer``) as it likes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgerobust.attacks.base import Attack, NumpyModel, perturbation_norms
from edgerobust.errors import ConfigError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(
            f"--device: {device!r} is not a device (auto, cpu, cuda, cuda:N)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is visible here; use auto or cpu")
    return dev


def is_quantized(model: nn.Module) -> bool:
    """True for an eager-mode converted int8 model (its kernels have no backward)."""
    # convert() turns the QuantStub into a Quantize module (FloatFunctional, also from
    # torch.ao.nn.quantized, is in every fp32 QuantizableResNet, so the module path cannot tell)
    return any(isinstance(m, torch.ao.nn.quantized.Quantize) for m in model.modules())


def torch_numpy_model(
    model: nn.Module, device: torch.device, batch_size: int = 8, engine: str | None = None
) -> NumpyModel:
    """Wrap a torch model as a numpy callable (the form runtimes and Salt&Pepper use).

    int8 models run on the CPU with their quantization ``engine`` active, as they were converted.
    """
    dev = torch.device("cpu") if is_quantized(model) else device

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        if engine is not None:
            torch.backends.quantized.engine = engine
        out = []
        for s in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size], np.float32))
            out.append(model(chunk.to(dev)).float().cpu().numpy())
        return np.concatenate(out)

    return run


def build_attack(spec: Attack, overrides: Mapping[str, Any] | None = None) -> Any:
    """The foolbox attack object for ``spec`` with the paper's settings (plus ``overrides``)."""
    import foolbox

    if not getattr(spec, "foolbox", None):
        raise ValueError(f"{spec.name} is not a foolbox attack")
    cls = getattr(foolbox.attacks, spec.foolbox)
    return cls(**spec.with_params(overrides or {}))


@dataclass(frozen=True)
class Crafted:
    """Adversarials of one batch: ``adversarials[k]`` is clipped to ``eps[k]``."""

    eps: tuple[float, ...]
    adversarials: np.ndarray  # (n_eps, B, C, H, W) float32 in [0, 1]
    success: np.ndarray  # (n_eps, B): misclassified by the crafting model
    gradients: np.ndarray | None = None  # (B,) gradient evaluations per image, when counted


class CountingModel(nn.Module):
    """``model`` that counts the images it evaluates: with an input gradient (a forward and a
    backward pass, one "gradient evaluation" per image) or without (a check)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gradients = 0
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.gradients += x.shape[0]
        else:
            self.forwards += x.shape[0]
        return self.model(x)


def craft(
    model: nn.Module,
    spec: Attack,
    x: np.ndarray,
    y: np.ndarray,
    eps: Sequence[float],
    *,
    device: torch.device,
    overrides: Mapping[str, Any] | None = None,
    stop: str = "exact",
) -> Crafted:
    """Run a gradient attack on one batch at every eps in ``eps`` (foolbox's own sweep;
    :class:`~edgerobust.attacks.gradient.FoolboxAttack` hands a fixed-eps attack one eps at a
    time).

    ``stop="exact"`` runs foolbox's attack. ``stop="settled"`` runs the attack's per-image loop
    from :mod:`edgerobust.attacks.settled` (C&W, EAD, DDN, DeepFool, PGD; foolbox for FGSM),
    judged at each eps exactly as foolbox judges. Both count gradient evaluations per image
    (foolbox's for the batch, spread evenly over its images)."""
    import foolbox

    from edgerobust.attacks.gradient import SETTLED, GradStop

    if is_quantized(model):
        # Never a fake number: int8 kernels have no backward, so the attack would silently fail.
        raise ValueError("gradient attacks need a differentiable model; int8 gets transfer")
    GradStop(stop)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    eps = [float(e) for e in eps]
    name = getattr(spec, "foolbox", None)
    if stop == GradStop.settled.value and name in SETTLED:
        from edgerobust.attacks.settled import SEARCHES, judge, judge_each

        settings = spec.with_params(overrides or {})
        found = SEARCHES[name](model, xt, yt, eps, stop=stop, **settings)
        if spec.fixed_eps:  # PGD: one run per eps, each judged at its own eps
            clipped, success = judge_each(model, xt, yt, found.adversarials, eps, spec.norm)
        else:
            clipped, success = judge(model, xt, yt, found.best, eps, spec.norm)
        return Crafted(
            tuple(eps),
            clipped.detach().float().cpu().numpy(),
            success.detach().cpu().numpy().astype(bool),
            found.counts.per_image.copy(),
        )
    attack = build_attack(spec, overrides)
    counting = CountingModel(model)
    counting.training = model.training  # foolbox warns about a model in training mode
    fmodel = foolbox.PyTorchModel(counting, bounds=(0, 1), device=device)
    _, clipped, success = attack(fmodel, xt, yt, epsilons=eps)
    adv = np.stack([c.detach().float().cpu().numpy() for c in clipped])
    per_image = np.full(len(x), counting.gradients // len(x), np.int64)
    per_image[: counting.gradients % len(x)] += 1
    return Crafted(tuple(eps), adv, success.detach().cpu().numpy().astype(bool), per_image)


def fastest_batch(
    model: nn.Module,
    input_size: int,
    device: torch.device,
    sizes: Sequence[int] = (8, 16, 32, 64, 128),
) -> tuple[int, dict[int, float]]:
    """The batch size with the fewest seconds per image for one forward and backward pass of
    ``model`` on ``device`` (what a gradient attack's step costs), and the timings. Sizes are
    tried in order after a warm-up pass each; the probe stops at the first that is slower per
    image than the best so far."""
    import time

    timing: dict[int, float] = {}
    for size in sizes:
        x = torch.rand(size, 3, input_size, input_size, device=device, requires_grad=True)
        for _ in range(2):  # the first pass warms up (allocations, kernel choice)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            (grad,) = torch.autograd.grad(model(x).sum(), x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
        timing[size] = seconds / size
        if timing[size] > min(timing.values()):
            break
    return min(timing, key=timing.__getitem__), timing


def input_gradient_norms(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device
) -> np.ndarray:
    """L2 norm per sample of d(cross-entropy)/d(input): all zeros means gradient masking."""
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device).requires_grad_(True)
    yt = torch.from_numpy(np.asarray(y, np.int64)).to(device)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(xt), yt, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xt)
    return grad.flatten(1).norm(dim=1).detach().cpu().numpy().astype(np.float64)


__all__ = [
    "CountingModel",
    "Crafted",
    "NumpyModel",
    "build_attack",
    "craft",
    "fastest_batch",
    "input_gradient_norms",
    "is_quantized",
    "perturbation_norms",
    "resolve_device",
    "torch_numpy_model",
]
