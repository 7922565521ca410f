"""L1-norm filter pruning (Li et al., ICLR 2017; the paper's section 3.1.1), then retraining.

Filters are really removed, not masked: a pruned conv has fewer output channels, its batch norm
and every layer reading its output shrink with it. Torch-Pruning's dependency graph finds the
channels that must go together: a ResNet stage's residual stream couples the ``conv2``/``conv3``
of all its blocks and the downsample projection (plus, for basic blocks, the stem conv), so those
filters are ranked and removed as one group, and the skip additions keep matching shapes. The
classifier's outputs (the classes) and the stem's RGB input are never pruned.

The same holds for the inverted-residual families (MobileNetV2/V3, EfficientNet-Lite, timm
models): a depthwise conv's filters are tied one to one to its input channels, so the expansion
conv, the depthwise conv (whose ``groups`` shrinks with its channels), their batch norms, the
squeeze-excitation convs that gate them and the projection's inputs form one group; residual
streams couple the projections of a stage. Torch-Pruning's dependency graph finds all of it.

**Importance** (the paper's eq. 1): ``Score(F_i) = sum_j |F_ij|``, the L1 norm of each filter.
A group of coupled filters is scored by the sum of its filters' L1 norms. Within each group the
lowest-scoring channels are removed.

**One sensitivity parameter.** ``s`` in (0, 1) sets every group's ratio: a group in stage ``k``
(1-4; the stem counts as stage 1; for families without ResNet's ``layerN`` stages, the
quarter of the network by conv order) loses the fraction ``r_k = s * w_k`` of its channels, with
stage weights ``w = (0.4, 0.6, 0.8, 1.0)`` by default: deeper stages, which hold most of the
parameters and are the least sensitive to pruning in Li et al.'s sensitivity analysis, are pruned
hardest; ``s`` itself is the deepest stage's ratio. A group of ``C`` channels keeps
``max(1, round(C * (1 - r_k)))``. ``--target-params`` bisects ``s`` until the pruned model's
parameter count lands within 2 % of the target; the count is computed exactly from the channel
widths (then checked against the pruned model), so the search needs no trial pruning.

After pruning, the model is retrained on the source domain with the paper's settings (SGD
momentum 0.9, weight decay 1e-4, batch 8, 100 epochs; lr 1e-3 divided by 10 at epoch 70 for
ResNet-18/34/101, a fixed 1e-4 for ResNet-50/152), keeping the best validation checkpoint.

The record reports parameters, MACs and channel ratios, never a speed-up: whether fewer channels
run faster depends on the runtime and is measured by ``eval-device`` on both artifacts.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from edgerobust.errors import ConfigError
from edgerobust.models.build import build_model, count_params, is_depthwise, layer_widths
from edgerobust.models.checkpoint import (
    CHECKPOINT_NAME,
    ModelSpec,
    load_checkpoint,
    save_checkpoint,
)
from edgerobust.progress import NullReporter, Reporter
from edgerobust.records import PruneRecord

STAGE_WEIGHTS: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)
TOLERANCE = 0.02  # --target-params must land within 2 % of the request
LR_DECAY_AT = 0.7  # the paper's "epoch 70 of 100"

# The paper's retraining lr per base model (section 4): base lr and the factor applied at 70 %.
PAPER_LR: dict[str, tuple[float, float]] = {
    "resnet18": (1e-3, 0.1),
    "resnet34": (1e-3, 0.1),
    "resnet101": (1e-3, 0.1),
    "resnet50": (1e-4, 1.0),
    "resnet152": (1e-4, 1.0),
}
DEFAULT_LR = (1e-3, 0.1)  # other archs (tinyresnet): like ResNet-18


def parse_count(value: str | int | float) -> int:
    """``"4.51M"``, ``"850k"``, ``"11190000"``, ``4.51e6`` -> a parameter count."""
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kKmMgG]?)\s*", str(value))
        if not m:
            raise ConfigError(
                f"--target-params {value!r}: expected a count like 4.51M, 850k or 11190000"
            )
        n = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    if n < 1:
        raise ConfigError(f"--target-params must be a positive count, got {value!r}")
    return int(round(n))


# ----------------------------------------------------------------------------- importance


_FILTERS = (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels)


class FilterL1Importance(tp.importance.Importance):
    """Li et al.'s eq. 1 for a group of coupled filters: ``sum_j |F_ij|`` summed over the group.

    Only convolution *filters* (output channels, depthwise filters included) count;
    torch-pruning's ``MagnitudeImportance`` would also add batch-norm scales and the consumers'
    input weights, which is not eq. 1.
    """

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        score: torch.Tensor | None = None
        for i, (dep, idxs) in enumerate(group):
            layer = dep.layer
            if dep.pruning_fn not in _FILTERS or not isinstance(layer, nn.Conv2d):
                continue
            l1 = layer.weight.detach()[idxs].flatten(1).abs().sum(1).float().cpu()
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            if score is None:
                score = torch.zeros(len(root), dtype=torch.float32)
            score.scatter_add_(0, root, l1)
        return score


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that are pruned together (one index set for every listed conv)."""

    root: str  # the conv whose out-channels define the group
    stage: int
    channels: int
    convs: tuple[str, ...]  # every conv whose filters belong to the group


@dataclass(frozen=True)
class _Layer:
    kind: str  # conv | bn | linear
    cin: int
    cout: int
    kernel: int  # kernel elements (kh * kw; 1 for linear)
    groups: int
    depthwise: bool  # groups == in == out, before and after pruning
    bias: bool
    in_group: int | None
    out_group: int | None


def _stage(name: str, convs: list[str]) -> int:
    """ResNet's ``layerN`` (the stem counts as stage 1); elsewhere the quarter by conv order."""
    if any(re.search(r"(?:^|\.)layer\d+\.", c) for c in convs):
        m = re.search(r"(?:^|\.)layer(\d+)\.", name)
        return int(m.group(1)) if m else 1
    return 1 + min(3, 4 * convs.index(name) // len(convs))


def stage_label(name: str, convs: list[str]) -> str:
    """``stem``/``layerN`` for ResNets, ``stageK`` (quarters by conv order) for other families."""
    if any(re.search(r"(?:^|\.)layer\d+\.", c) for c in convs):
        m = re.search(r"(?:^|\.)(layer\d+)\.", name)
        return m.group(1) if m else "stem"
    return f"stage{_stage(name, convs)}"


def _out_fn(conv: nn.Module):
    return (
        tp.prune_depthwise_conv_out_channels if is_depthwise(conv) else tp.prune_conv_out_channels
    )


class PruningPlan:
    """A model's dependency graph, its channel groups and an exact parameter count per sensitivity.

    Built once per model; :meth:`params` is plain arithmetic, so ``search_sensitivity`` can
    try hundreds of sensitivities without touching a weight.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        stage_weights: tuple[float, ...] = STAGE_WEIGHTS,
    ) -> None:
        if not stage_weights or any(not 0 < w <= 1 for w in stage_weights):
            raise ConfigError(f"stage weights must be in (0, 1], got {stage_weights}")
        self.model = model
        self.stage_weights = tuple(stage_weights)
        self.params_before = count_params(model)
        names = {m: n for n, m in model.named_modules()}
        self.modules = dict(model.named_modules())
        self.conv_order = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        classifier = _last_linear(model)
        was_training = model.training
        model.eval()
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        model.train(was_training)
        self.groups: list[ChannelGroup] = []
        in_group: dict[str, int] = {}
        out_group: dict[str, int] = {}
        for group in self.graph.get_all_groups(
            ignored_layers=[classifier], root_module_types=[nn.Conv2d]
        ):
            gid = len(self.groups)
            convs = []
            for dep, _ in group:
                mod = dep.target.module
                if mod not in names:  # torch-pruning's internal op nodes (add, flatten...)
                    continue
                name = names[mod]
                if isinstance(mod, nn.BatchNorm2d):
                    out_group[name] = gid
                elif dep.pruning_fn in _FILTERS:
                    out_group[name] = gid
                    convs.append(name)
                    if dep.pruning_fn == tp.prune_depthwise_conv_out_channels:
                        in_group[name] = gid  # a depthwise conv's inputs go with its filters
                elif dep.pruning_fn in (
                    tp.prune_conv_in_channels,
                    tp.prune_linear_in_channels,
                    tp.prune_depthwise_conv_in_channels,
                ):
                    in_group[name] = gid
            root = names[group[0].dep.target.module]
            self.groups.append(
                ChannelGroup(
                    root=root,
                    stage=min(_stage(c, self.conv_order) for c in convs),
                    channels=self.graph.get_out_channels(self.modules[root]),
                    convs=tuple(sorted(convs)),
                )
            )
        self.layers: dict[str, _Layer] = {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                k = int(np.prod(m.kernel_size))
                dw = is_depthwise(m)
                spec = ("conv", m.in_channels, m.out_channels, k, m.groups, dw, m.bias is not None)
            elif isinstance(m, nn.BatchNorm2d):
                spec = ("bn", m.num_features, m.num_features, 0, 1, False, m.affine)
            elif isinstance(m, nn.Linear):
                spec = ("linear", m.in_features, m.out_features, 1, 1, False, m.bias is not None)
            else:
                continue
            self.layers[name] = _Layer(*spec, in_group.get(name), out_group.get(name))
        # Parameters outside conv/bn/linear layers are never pruned.
        self._fixed = self.params_before - sum(self._layer_params(self._full()).values())

    def stage_ratios(self, sensitivity: float) -> tuple[float, ...]:
        """The pruning ratio of each stage: ``s * w_k``."""
        return tuple(sensitivity * w for w in self.stage_weights)

    def keep(self, sensitivity: float) -> list[int]:
        """Channels each group keeps at ``sensitivity``."""
        ratios = self.stage_ratios(sensitivity)
        out = []
        for g in self.groups:
            r = ratios[min(g.stage, len(ratios)) - 1]
            out.append(max(1, int(round(g.channels * (1.0 - r)))))
        return out

    def _full(self) -> list[int]:
        return [g.channels for g in self.groups]

    def widths(self, keep: list[int]) -> dict[str, tuple[int, int]]:
        """``{layer: (in, out)}`` after keeping ``keep[g]`` channels of every group ``g``."""
        out = {}
        for name, ly in self.layers.items():
            cin = keep[ly.in_group] if ly.in_group is not None else ly.cin
            cout = keep[ly.out_group] if ly.out_group is not None else ly.cout
            if ly.kind == "bn":
                cin = cout
            out[name] = (cin, cout)
        return out

    def _layer_params(self, keep: list[int]) -> dict[str, int]:
        counts = {}
        for name, (cin, cout) in self.widths(keep).items():
            ly = self.layers[name]
            if ly.kind == "bn":
                counts[name] = 2 * cout if ly.bias else 0
            elif ly.depthwise:
                counts[name] = cout * ly.kernel + (cout if ly.bias else 0)
            else:
                counts[name] = cin // ly.groups * cout * ly.kernel + (cout if ly.bias else 0)
        return counts

    def params(self, sensitivity: float) -> int:
        """The exact parameter count of the model pruned at ``sensitivity``."""
        return self._fixed + sum(self._layer_params(self.keep(sensitivity)).values())


def _last_linear(model: nn.Module) -> nn.Module:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("the model has no linear classifier layer to keep")
    return linears[-1]


def plan_pruning(
    model: nn.Module,
    example_input: torch.Tensor,
    stage_weights: tuple[float, ...] = STAGE_WEIGHTS,
) -> PruningPlan:
    """Trace ``model`` (a float model taking ``example_input``) into a :class:`PruningPlan`."""
    return PruningPlan(model, example_input, stage_weights)


def search_sensitivity(
    plan: PruningPlan, target_params: int, tolerance: float = TOLERANCE
) -> float:
    """The sensitivity whose pruned parameter count is closest to ``target_params``.

    Raises :class:`ConfigError` when the target is not below the model's size, or when no
    sensitivity lands within ``tolerance`` (channel counts are integers, so a small model can
    step over the band); the message names the closest achievable count.
    """
    before = plan.params_before
    if target_params >= before:
        raise ConfigError(
            f"--target-params {target_params:,} is not smaller than the model "
            f"({before:,} parameters): pick a smaller target"
        )
    lo, hi = 0.0, 1.0 - 1e-9  # params(lo) >= target > params(hi), once checked
    p_hi = plan.params(hi)
    if p_hi > target_params:
        rel = (p_hi - target_params) / target_params
        if rel <= tolerance:
            return hi
        raise ConfigError(
            f"--target-params {target_params:,} is below what pruning can reach: the smallest "
            f"model keeps {p_hi:,} parameters (one channel per group); pick a larger target"
        )
    for _ in range(60):  # params(s) is a non-increasing step function of s
        mid = (lo + hi) / 2
        if plan.params(mid) >= target_params:
            lo = mid
        else:
            hi = mid
    candidates = [s for s in (lo, hi) if s > 0]
    best = min(candidates, key=lambda s: abs(plan.params(s) - target_params))
    achieved = plan.params(best)
    rel = abs(achieved - target_params) / target_params
    if rel > tolerance:
        raise ConfigError(
            f"--target-params {target_params:,} cannot be met within {tolerance:.0%}: the "
            f"closest achievable is {achieved:,} ({rel:+.1%}, sensitivity {best:.4f}); "
            "use that count or --ratio"
        )
    return best


@dataclass(frozen=True)
class PruneSummary:
    """What :func:`prune_model` did; the numbers are counted on the pruned model itself."""

    sensitivity: float
    stage_weights: tuple[float, ...]
    stage_ratios: tuple[float, ...]
    params_before: int
    params_after: int
    channels_before: int  # prunable channels (each coupled group counted once)
    channels_after: int
    layer_channels: dict[str, tuple[int, int]]  # conv -> (out before, out after)
    stages: dict[str, str] | None = None  # conv -> stage label; None: ResNet's regex

    @property
    def compression_rate(self) -> float:
        """``1 - params_after / params_before`` (the paper's "compression rate")."""
        return 1.0 - self.params_after / self.params_before

    @property
    def channel_ratio(self) -> float:
        """Kept channels / original channels over all prunable groups."""
        return self.channels_after / self.channels_before

    def stage_channel_ratios(self) -> dict[str, float]:
        """Kept/original conv output channels per stage (``stem``, ``layer1``...)."""
        acc: dict[str, list[int]] = {}
        convs = list(self.layer_channels)
        for name, (before, after) in self.layer_channels.items():
            key = self.stages[name] if self.stages else stage_label(name, convs)
            a = acc.setdefault(key, [0, 0])
            a[0] += before
            a[1] += after
        return {k: round(v[1] / v[0], 4) for k, v in acc.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensitivity": self.sensitivity,
            "stage_weights": list(self.stage_weights),
            "stage_ratios": [round(r, 6) for r in self.stage_ratios],
            "params_before": self.params_before,
            "params_after": self.params_after,
            "compression_rate": round(self.compression_rate, 6),
            "channel_ratio": round(self.channel_ratio, 6),
            "stage_channel_ratios": self.stage_channel_ratios(),
        }


def prune_model(
    model: nn.Module,
    example_input: torch.Tensor,
    sensitivity: float,
    *,
    stage_weights: tuple[float, ...] = STAGE_WEIGHTS,
    plan: PruningPlan | None = None,
) -> PruneSummary:
    """Remove the lowest-L1 filters of ``model`` in place at ``sensitivity`` (see module doc).

    ``plan`` reuses a :class:`PruningPlan` already built for this model (e.g. by a search); it
    is spent afterwards, because the model it describes has changed.
    """
    if not 0.0 < sensitivity < 1.0:
        raise ConfigError(f"--ratio must be in (0, 1), got {sensitivity}")
    plan = plan or PruningPlan(model, example_input, stage_weights)
    if plan.model is not model:
        raise ValueError("the plan was built for another model")
    predicted = plan.params(sensitivity)
    keep = plan.keep(sensitivity)
    convs_before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    importance = FilterL1Importance()
    choices = []
    for g, k in zip(plan.groups, keep, strict=True):
        if k >= g.channels:
            continue
        root = plan.modules[g.root]
        full = plan.graph.get_pruning_group(root, _out_fn(root), idxs=list(range(g.channels)))
        score = importance(full)
        # Stable sort: equal scores (e.g. a freshly initialized model) prune deterministically.
        drop = torch.argsort(score, stable=True)[: g.channels - k].tolist()
        choices.append((g.root, root, sorted(drop)))
    # Groups own disjoint output channels, so indices chosen up front stay valid while pruning.
    for name, root, drop in choices:
        group = plan.graph.get_pruning_group(root, _out_fn(root), idxs=drop)
        if not plan.graph.check_pruning_group(group):  # pragma: no cover - keep >= 1 prevents it
            raise RuntimeError(f"torch-pruning refused to prune the group of {name}")
        group.prune()
    after = count_params(model)
    if after != predicted:  # pragma: no cover - the plan's arithmetic is the search's contract
        raise RuntimeError(f"pruned model has {after} parameters, the plan predicted {predicted}")
    plan.model = None  # spent: the graph now describes the pruned model
    layer_channels = {
        n: (convs_before[n], m.out_channels)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    }
    return PruneSummary(
        sensitivity=sensitivity,
        stage_weights=plan.stage_weights,
        stage_ratios=plan.stage_ratios(sensitivity),
        params_before=plan.params_before,
        params_after=after,
        channels_before=sum(g.channels for g in plan.groups),
        channels_after=sum(keep),
        layer_channels=layer_channels,
        stages={n: stage_label(n, plan.conv_order) for n in layer_channels},
    )


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass at ``input_size`` (torch-pruning's counter)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
    macs, _ = tp.utils.count_ops_and_params(model, x)
    model.train(was_training)
    return int(macs)


def example_input(input_size: int) -> torch.Tensor:
    """A tracing input: channel coupling does not depend on the spatial size, so keep it small."""
    size = min(input_size, 64)
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class PruneConfig:
    checkpoint: str
    out: str
    ratio: float | None = None  # the sensitivity s; exactly one of ratio / target_params
    target_params: str | None = None  # "4.51M", "850k", "11190000"
    data: str | None = None  # default: the dataset the parent was trained on
    source: str | None = None  # default: the parent's source domain
    epochs: int = 100  # 0: prune only, no retraining
    lr: float | None = None  # None: the paper's per-arch rate (see PAPER_LR)
    lr_gamma: float | None = None  # factor at 70 % of the epochs; None: the paper's per arch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    augment: bool = False
    freeze_bn: bool = False  # batch-norm statistics stay as the base's (eval mode)
    seed: int = 1
    stage_weights: tuple[float, ...] = STAGE_WEIGHTS
    tolerance: float = TOLERANCE
    device: str = "auto"

    def validate(self) -> None:
        if (self.ratio is None) == (self.target_params is None):
            raise ConfigError("pass exactly one of --ratio R or --target-params N")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"--ratio must be in (0, 1) (exclusive), got {self.ratio}")
        if self.target_params is not None:
            parse_count(self.target_params)
        if self.epochs < 0:
            raise ConfigError(
                f"--epochs must be >= 0 (0: prune without retraining), got {self.epochs}"
            )
        if self.lr is not None and not 0 < self.lr < 10:
            raise ConfigError(f"--lr must be in (0, 10), got {self.lr}")
        if self.lr_gamma is not None and not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if len(self.stage_weights) < 1 or any(not 0 < w <= 1 for w in self.stage_weights):
            raise ConfigError(f"stage weights must be in (0, 1], got {self.stage_weights}")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"tolerance must be in (0, 1), got {self.tolerance}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stage_weights"] = list(self.stage_weights)
        return d


def _schedule(cfg: PruneConfig, arch: str) -> tuple[float, float]:
    base, gamma = PAPER_LR.get(arch, DEFAULT_LR)
    return (cfg.lr if cfg.lr is not None else base), (
        cfg.lr_gamma if cfg.lr_gamma is not None else gamma
    )


def prune_checkpoint(cfg: PruneConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    """Prune a checkpoint, retrain it on the source domain, and return the run record.

    Writes ``OUT/model.safetensors`` (best validation epoch; the spec carries the new channel
    widths), ``OUT/last.safetensors`` (resume point: rerunning the same command continues) and
    ``OUT/prune.json`` (the record returned).
    """
    from edgerobust.train import (
        FitConfig,
        SourceSplit,
        accuracy,
        pick_device,
        recalibrate_bn,
        write_record,
    )

    cfg.validate()
    rep = reporter or NullReporter()
    parent = load_checkpoint(cfg.checkpoint)
    pspec = parent.spec
    if pspec.quant:
        raise ConfigError(
            f"{parent.path} is int8: prune its fp32 parent ({pspec.origin.get('parent', '?')}) "
            "and quantize the pruned model afterwards"
        )
    data = cfg.data or pspec.origin.get("dataset")
    source = cfg.source or pspec.origin.get("source_domain")
    if not data or not source:
        raise ConfigError(
            f"{parent.path} records no dataset/source domain: pass --data and --source"
        )
    src = SourceSplit.open(
        data,
        source,
        *SourceSplit.inherited(pspec.origin),
        class_names=pspec.class_names,
        mismatch=lambda classes: _class_mismatch(pspec.class_names, data, classes),
    )
    split = src.split
    # Parse the target before the slow part, so a typo fails at once.
    target = parse_count(cfg.target_params) if cfg.target_params is not None else None

    model = parent.model.float().cpu().train()
    arch = pspec.arch
    t = rep.task("trace + plan", None)
    plan = plan_pruning(model, example_input(pspec.input_size), cfg.stage_weights)
    sensitivity = (
        search_sensitivity(plan, target, cfg.tolerance) if target is not None else float(cfg.ratio)
    )
    macs_before = count_macs(model, pspec.input_size)
    summary = prune_model(model, example_input(pspec.input_size), sensitivity, plan=plan)
    macs_after = count_macs(model, pspec.input_size)
    rep.done(t)
    rep.log(
        f"pruned {arch} at sensitivity {sensitivity:.4f}: {summary.params_before:,} -> "
        f"{summary.params_after:,} parameters, channel ratio {summary.channel_ratio:.3f}"
    )

    images = src.decode(pspec.input_size, rep)
    device = pick_device(cfg.device)
    model.to(device)
    if cfg.freeze_bn:
        # Pruning changes what every layer sees, so the base's statistics no longer hold. They
        # are re-estimated once on the source training images, then kept while retraining.
        t = rep.task("re-estimate batch-norm statistics", None)
        recalibrate_bn(model, images, split.train, device=device)
        rep.done(t)
    c0, n0 = accuracy(model, images, split.val, device=device)

    widths = layer_widths(model.backbone)
    default = layer_widths(build_model(arch, pspec.num_classes).backbone)
    spec = ModelSpec(
        arch=arch,
        class_names=pspec.class_names,
        input_size=pspec.input_size,
        mean=pspec.mean,
        std=pspec.std,
        widths=None if widths == default else widths,
    )
    lr, gamma = _schedule(cfg, arch)
    prune_info = {
        **summary.to_dict(),
        "target_params": target,
        "target_error": (summary.params_after - target) / target if target else None,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "importance": "filter L1 norm (Li et al. 2017, eq. 1), summed over coupled filters",
    }
    origin = {
        "kind": "prune",
        **src.origin(),
        "parent": str(parent.path),
        "parent_sha256": parent.sha256,
        "parent_arch": arch,
        "parent_origin_kind": pspec.origin.get("kind"),
        **prune_info,
        "val_accuracy_before_retraining": c0 / max(n0, 1),
        "config": cfg.to_dict(),
    }
    out = Path(cfg.out)
    if cfg.epochs == 0:  # prune only: the pruned model as it is
        src.begin(out)
        save_checkpoint(
            out / CHECKPOINT_NAME,
            model,
            spec.with_origin(**origin, best_epoch=0, val_accuracy=c0 / max(n0, 1), val_n=n0),
        )
        history, best_acc, best_epoch, val_n, seconds = [], c0 / max(n0, 1), 0, n0, 0.0
    else:
        result = src.fit(
            model,
            images,
            FitConfig.of(
                cfg,
                lr=lr,  # None in the config: the paper's per arch
                lr_milestones=(round(LR_DECAY_AT * cfg.epochs),) if gamma != 1.0 else (),
                lr_gamma=gamma,
            ),
            out=out,
            spec=spec,
            origin=origin,
            key=_resume_key(cfg, parent.sha256, data, source),
            device=device,
            reporter=rep,
        )
        history, best_acc, best_epoch = result.history, result.best_acc, result.best_epoch
        val_n, seconds = result.val_n, result.seconds

    record = PruneRecord(
        checkpoint=str(out / CHECKPOINT_NAME),
        parent=str(parent.path),
        parent_sha256=parent.sha256,
        arch=arch,
        **prune_info,
        layer_channel_ratios={n: round(a / b, 4) for n, (b, a) in summary.layer_channels.items()},
        latency="not inferred from parameter counts: export both models and compare their "
        "eval-device records (latency_ms) in each runtime",
        source_domain=source,
        classes=list(src.classes),
        val_accuracy_before_retraining=c0 / max(n0, 1),
        best_epoch=best_epoch,
        val_accuracy=best_acc,
        val_n=val_n,
        lr=lr,
        lr_gamma=gamma,
        history=history,
        device=str(device),
        seconds_this_session=seconds,
        config=cfg.to_dict(),
    )
    return write_record(out, "prune.json", record)


def _resume_key(cfg: PruneConfig, parent_sha: str, data: str, source: str) -> str:
    d = cfg.to_dict()
    for k in ("out", "device", "checkpoint", "data"):
        d.pop(k)
    d.update(parent_sha256=parent_sha, source=source, kind="prune")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _class_mismatch(ckpt: tuple[str, ...], data: str, theirs: tuple[str, ...]) -> str:
    only_c = [c for c in ckpt if c not in theirs]
    only_d = [c for c in theirs if c not in ckpt]
    if only_c or only_d:
        what = (
            f"only the checkpoint has {only_c[:3] or '-'}, only the dataset has {only_d[:3] or '-'}"
        )
    else:
        what = "the same names in another order"
    return (
        f"the checkpoint's classes differ from {data}'s ({what}): retrain on the dataset "
        "the model was trained on (or drop --data)"
    )
