"""The report's three plots (matplotlib, written as PNG)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgerobust.report.cells import pooled
from edgerobust.report.records import METHOD_ORDER, Models, best_eval, target_pooled

# --------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Plot:
    name: str
    path: Path
    headline: str


_MARKERS = {"-": "o", "FP": "s", "KD": "^", "PTSQ": "D", "imported": "x"}
_METHOD_NAMES = {
    "-": "baseline",
    "FP": "pruned (FP)",
    "KD": "distilled (KD)",
    "PTSQ": "int8 (PTSQ)",
    "imported": "imported (edgerobust import)",
}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower latency (x) and higher accuracy (y)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _figure():
    try:
        import matplotlib
    except ImportError as exc:
        from edgerobust.errors import MissingExtra

        raise MissingExtra("report plots need matplotlib: pip install 'edgerobust[torch]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_target_vs_params(models: Models, path: Path) -> Plot:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best: dict[str, tuple[float, str]] = {}
    any_point = False
    for method in METHOD_ORDER:
        xs, ys, names = [], [], []
        for m in models.sorted():
            if m.method != method or m.params is None:
                continue
            ev = best_eval(m, "int8" if m.method == "PTSQ" else "fp32")
            acc = target_pooled(ev) if ev else None
            if acc is None or acc.value is None:
                continue
            xs.append(m.params / 1e6)
            ys.append(100 * acc.value)
            names.append(f"{m.source}/{m.label}")
            if method not in best or 100 * acc.value > best[method][0]:
                best[method] = (100 * acc.value, f"{m.source}/{m.label}")
        if xs:
            any_point = True
            ax.scatter(xs, ys, marker=_MARKERS[method], s=50, label=_METHOD_NAMES[method])
            for x, y, n in zip(xs, ys, names, strict=True):
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("target accuracy, all target images (%)")
    ax.set_title("Target accuracy vs parameters, per compression method")
    if any_point:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no eval-device records", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    headline = (
        "best target accuracy per method: "
        + "; ".join(f"{_METHOD_NAMES[k]} {v:.1f} % ({n})" for k, (v, n) in best.items())
        if best
        else "no target-domain measurements"
    )
    return Plot("target_vs_params", path, headline)


def plot_adversarial_vs_size(models: Models, path: Path) -> Plot:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lines = []
    for strength, marker in (("light", "o"), ("heavy", "x")):
        xs, ys, names = [], [], []
        for m in models.sorted():
            accs = [e["acc"] for (a, s), e in m.attacks.items() if s == strength]
            avg = pooled(accs)
            sizes = [e.size_mb for e in m.exports if e.size_mb]
            if not sizes:
                sizes = [r.artifact["size_mb"] for r in m.evals if r.artifact["size_mb"]]
            if avg is None or avg.value is None or not sizes:
                continue
            xs.append(min(sizes))
            ys.append(100 * avg.value)
            names.append(f"{m.source}/{m.label}")
        if xs:
            ax.scatter(xs, ys, marker=marker, s=50, label=f"{strength} attacks")
            for x, y, n in zip(xs, ys, names, strict=True):
                ax.annotate(n, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            top = max(range(len(ys)), key=ys.__getitem__)
            lines.append(
                f"{strength}: most robust {names[top]} ({ys[top]:.1f} %, {xs[top]:.2f} MB)"
            )
    ax.set_xlabel("artifact size (MB)")
    ax.set_ylabel("average adversarial accuracy (%)")
    ax.set_title("Adversarial accuracy vs size")
    if lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no attack records", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Plot("adversarial_vs_size", path, "; ".join(lines) or "no attack records")


def plot_latency_vs_accuracy(models: Models, path: Path) -> Plot:
    """One panel per (source domain, runtime): accuracies on different targets do not compare."""
    plt = _figure()
    groups: dict[tuple[str, str], list[tuple[float, float, str]]] = {}
    contended: list[str] = []
    for m in models.sorted():
        for ev in m.evals:
            acc = target_pooled(ev)
            lat = ev.latency_ms["p50"]
            if acc is None or acc.value is None or lat is None:
                continue
            rt, art = ev.runtime, ev.artifact
            name = f"{m.label} {art['format']} {art['precision']} x{rt['threads']}"
            if (ev.latency_ms.get("contention") or {}).get("warning"):
                name += " (cores shared)"
                contended.append(name)
            key = (m.source, rt["runtime"])
            groups.setdefault(key, []).append((lat, 100 * acc.value, name))
    sources = sorted({s for s, _ in groups}) or ["-"]
    runtimes = sorted({r for _, r in groups}) or ["-"]
    fig, axes = plt.subplots(
        len(sources),
        len(runtimes),
        figsize=(5.5 * len(runtimes), 4 * len(sources)),
        squeeze=False,
    )
    lines = []
    for i, source in enumerate(sources):
        for j, runtime in enumerate(runtimes):
            ax = axes[i][j]
            pts = groups.get((source, runtime), [])
            ax.set_title(f"{runtime}, source {source}", fontsize=10)
            ax.grid(alpha=0.3)
            if not pts:
                ax.text(0.5, 0.5, "no records", ha="center", transform=ax.transAxes)
                continue
            xy = [(x, y) for x, y, _ in pts]
            front = pareto_front(xy)
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], color="0.6", s=30, label="measured")
            fx, fy = [xy[k][0] for k in front], [xy[k][1] for k in front]
            ax.plot(fx, fy, "-o", color="tab:red", label="Pareto front", zorder=3)
            for k in front:
                ax.annotate(pts[k][2], xy[k], fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel("latency p50, batch 1 (ms)")
            ax.set_ylabel("target accuracy (%)")
            ax.legend(fontsize=7)
            lines.append(
                f"{runtime} ({source}) front: "
                + ", ".join(f"{pts[k][2]} ({xy[k][0]:.2f} ms, {xy[k][1]:.1f} %)" for k in front)
            )
    fig.suptitle("Latency vs target accuracy (Pareto front: faster and more accurate)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    if contended:
        lines.append(
            "latency measured while other processes shared the cores (likely inflated; rerun "
            "eval-device on a quiet machine): " + ", ".join(contended)
        )
    return Plot("latency_vs_accuracy", path, "; ".join(lines) or "no eval-device records")
