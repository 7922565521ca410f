"""Terminal output for the CLI: a rich progress reporter and table helpers (library code never
prints; it takes a :class:`~edgerobust.progress.Reporter`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False)
# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class RichReporter:
    """Progress bars on stderr (transient), log lines kept above them."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal and not _force_progress(),
        )

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def task(self, description: str, total: int | None) -> int:
        return self.progress.add_task(description, total=total, info="")

    def advance(self, task: int, n: int = 1, **fields: object) -> None:
        completed = fields.pop("completed", None)
        info = "  ".join(f"{k} {v}" for k, v in fields.items())
        if completed is not None:
            self.progress.update(task, completed=completed, info=info)
        else:
            self.progress.update(task, advance=n, info=info)

    def done(self, task: int) -> None:
        self.progress.remove_task(task)

    def log(self, message: str) -> None:
        console.print(message)


def _force_progress() -> bool:
    return "--progress" in sys.argv


# --------------------------------------------------------------------------- tables


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def eval_table(records: list[dict]):
    from rich.table import Table

    domains: list[str] = []
    for r in records:
        for d in r["domains"]:
            label = d["domain"] + (" (src)" if d["role"] == "source" else "")
            if label not in domains:
                domains.append(label)
    t = Table(title="accuracy % [n] inside the runtime; latency batch 1")
    for col in ("artifact", "runtime", "MB"):
        t.add_column(col, justify="right" if col == "MB" else "left")
    for d in domains:
        t.add_column(d, justify="right")
    for col in ("p50 ms", "p99 ms", "img/s"):
        t.add_column(col, justify="right")
    for r in records:
        cells = {}
        for d in r["domains"]:
            label = d["domain"] + (" (src)" if d["role"] == "source" else "")
            cells[label] = f"{pct(d['accuracy'])} [{d['n']}]"
        lat = r["latency_ms"]
        t.add_row(
            r["artifact"]["file"],
            r["runtime"]["runtime"],
            f"{r['artifact']['size_mb']:.2f}",
            *(cells.get(d, "-") for d in domains),
            f"{lat['p50']:.2f}",
            f"{lat['p99']:.2f}",
            f"{r['throughput']['images_per_s']:.0f}",
        )
    return t


def corruption_table(domain: str, c: dict):
    """Accuracy % per corruption and severity on one domain, with CE when there is a reference."""
    from rich.table import Table

    ref = c.get("reference")
    t = Table(
        title=f"{domain} (n={c['n']}) under corruptions, accuracy %; "
        f"clean {pct(c['clean']['accuracy'])} %" + (f"; CE vs {ref['file']}" if ref else ""),
    )
    t.add_column("corruption")
    for s in c["severities"]:
        t.add_column(f"sev {s}", justify="right")
    t.add_column("mean", justify="right")
    if ref:
        t.add_column("CE", justify="right")
        t.add_column("rel. CE", justify="right")

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    for r in c["results"]:
        row = [r["corruption"] + ("" if r["benchmark"] else " (extra)")]
        row += [pct(a) for a in r["accuracy"]] + [pct(r["mean_accuracy"])]
        if ref:
            row += [
                num(ref["ce"].get(r["corruption"])),
                num(ref["relative_ce"].get(r["corruption"])),
            ]
        t.add_row(*row)
    t.add_section()
    row = ["mean (benchmark)"] + [pct(a) for a in c["mean_by_severity"]] + [pct(c["mean_accuracy"])]
    if ref:
        row += [f"mCE {num(ref['mce'])}", num(ref["relative_mce"])]
    t.add_row(*row)
    return t


def attack_table(record: dict):
    from rich.table import Table

    targets = [t["name"] for t in record["targets"]]
    d = record["data"]
    t = Table(
        title=f"robust accuracy % on {d['domain']} val (n={d['n']}), "
        f"{record['config']['strength']} attacks (label: how it was measured)"
    )
    t.add_column("attack")
    t.add_column("strength")
    t.add_column("eps", justify="right")
    for name in targets:
        t.add_column(name, justify="right")
    t.add_row("clean", "", "0", *(pct(tg["clean_accuracy"]) for tg in record["targets"]))
    averages = record["average_adversarial_accuracy"]
    for strength, avg in averages.items():
        t.add_section()
        for a in record["attacks"]:
            e = a["headline_eps"].get(strength)
            if e is None:
                continue
            k = a["eps"].index(e)
            cells = {r["target"]: r for r in a["results"]}
            row = []
            for name in targets:
                r = cells.get(name)
                row.append("-" if r is None else f"{pct(r['robust_accuracy'][k])} ({r['label']})")
            t.add_row(a["title"], strength, f"{e:g}", *row)
        t.add_row(
            "average", strength, "", *(pct(avg[n]["value"]) if n in avg else "-" for n in targets)
        )
    return t


def print_device_check(report: Any) -> None:
    """The device-check table, then one line per artifact: rule, host, warnings, notes."""
    from rich.table import Table

    stdout = out
    t = Table(title=f"emulated {report.board}: QEMU_CPU={report.cpu}, judged on this host")
    for col in (
        "artifact",
        "runtime",
        "loads",
        "n",
        "against",
        "top-1 agree",
        "max |diff|",
        "steps",
        "verdict",
    ):
        t.add_column(col, justify="right" if col in ("n", "max |diff|", "steps") else "left")
    style = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "error": "[red]ERROR[/]"}
    for c in report.checks:
        cmp = c.comparison
        t.add_row(
            Path(c.artifact).name,
            c.runtime,
            "yes" if c.loads else "no",
            str(cmp.n) if cmp else "-",
            cmp.against if cmp else "-",
            pct(cmp.top1_agreement) + " %" + (f" ({cmp.ties} at ties)" if cmp.ties else "")
            if cmp
            else "-",
            f"{cmp.max_abs_diff:.3g}" if cmp else "-",
            f"{cmp.diff_steps:.2f}" if cmp and cmp.diff_steps is not None else "-",
            style[c.verdict],
        )
    stdout.print(t)
    env = report.env
    built = env["built_now_seconds"]
    stdout.print(
        f"arm64 root: {env['root']}"
        + (
            f" (built now: {', '.join(f'{k} {v:.0f} s' for k, v in built.items())})"
            if built
            else ""
        )
        + (", light venv has no torch" if env.get("light_venv_has_torch") is False else "")
    )
    fp = next((c.device_host for c in report.checks if c.device_host), None)
    if fp:
        dp = "yes" if "asimddp" in fp.get("isa_flags", []) else "no"
        stdout.print(
            f"the emulated process sees: {fp['arch']}, {fp['cpu_model']}, flags from "
            f"{fp.get('flags_source')}, asimddp: {dp}"
        )
    for c in report.checks:
        name = Path(c.artifact).name
        if c.error:
            stdout.print(f"[red]{name}:[/] {c.error}")
        elif c.comparison:
            stdout.print(f"{name}: rule: {c.comparison.rule}")
        h = c.host_vs_reference
        if h is not None:
            off = (
                f"{h.diff_steps:.2f} steps" if h.diff_steps is not None else f"{h.max_abs_diff:.3g}"
            )
            stdout.print(
                f"{name}: this host's own run against the same reference: max |diff| {off}, "
                f"top-1 {pct(h.top1_agreement)} % ("
                + (
                    "within the rule"
                    if h.passed
                    else "[yellow]outside the rule: this host's kernels[/]"
                )
                + ")"
            )
        if c.int8_warning:
            stdout.print(f"[yellow]warning:[/] {name}: {c.int8_warning}")
        if c.optimized:
            o = c.optimized
            res = o.get("comparison") or {}
            stdout.print(
                f"{o['artifact']}: optimize_for_mobile "
                + ("passed" if o.get("passed") else "[red]FAILED[/]")
                + (f", max |diff| {res['max_abs_diff']:.3g} vs {name}" if res else "")
                + (f" -> {o['written']}" if o.get("written") else "")
                + (f" ({o['error']})" if o.get("error") else "")
            )
    for note in report.notes:
        stdout.print(f"note: {note}")


def print_findings(rows: Any) -> None:
    """The findings table (edgerobust.report.findings): verdict, A - B with its interval, n."""
    from rich.table import Table

    from edgerobust.report.findings import cells

    t = Table(title="the paper's findings, judged on these records (A - B, percentage points)")
    for col in ("finding", "verdict", "A - B", "95 % interval", "n", "compared"):
        t.add_column(col, justify="right" if col in ("A - B", "n") else "left", overflow="fold")
    style = {
        "supported": "[green]supported[/]",
        "contradicted": "[red]contradicted[/]",
        "unresolved": "[yellow]unresolved[/]",
        "missing": "[dim]missing[/]",
    }
    for r in rows:
        key, verdict, diff, ci, n, _claim, compared = cells(r)
        t.add_row(key, style[verdict], diff, ci, n, compared)
    out.print(t)
    claims = {r.key.rstrip("ab"): r.claim for r in rows}
    for key, claim in claims.items():
        out.print(f"{key}: {claim}")
