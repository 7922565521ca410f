"""One self-contained HTML page: tables, plots (inlined) and the records they came from."""

from __future__ import annotations

import base64
import datetime as dt
import html

from edgerobust.records import Record
from edgerobust.report.plots import Plot
from edgerobust.report.tables import Table

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:100em;color:#222}
div.wide{overflow-x:auto;margin:.5em 0 1em}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
p.note{font-size:12px;color:#555;margin:.2em 0} img{max-width:100%;border:1px solid #eee}
"""


def _html(results: str, records: list[Record], tables: list[Table], plots: list[Plot]) -> str:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.KIND] = counts.get(r.KIND, 0) + 1
    studies = sorted({(getattr(r, "study", None) or {}).get("study", "") for r in records} - {""})
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>edgerobust report {html.escape(', '.join(studies))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgerobust report{': ' + html.escape(', '.join(studies)) if studies else ''}</h1>",
        f"<p class='note'>from {len(records)} records under {html.escape(str(results))} "
        f"({html.escape(', '.join(f'{v} {k}' for k, v in sorted(counts.items())))}), "
        f"written {stamp}. Accuracies: % [n, 95 % Wilson interval].</p>",
        "<ul>"
        + "".join(f"<li><a href='#{t.name}'>{html.escape(t.title)}</a></li>" for t in tables)
        + "".join(f"<li><a href='#{p.name}'>plot: {p.name}</a></li>" for p in plots)
        + "</ul>",
    ]
    parts += [t.to_html() for t in tables]
    for p in plots:
        data = base64.b64encode(p.path.read_bytes()).decode("ascii")
        parts.append(f"<h2 id='{p.name}'>{html.escape(p.name.replace('_', ' '))}</h2>")
        parts.append(f"<p>{html.escape(p.headline)}</p>")
        parts.append(f"<img alt='{p.name}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
