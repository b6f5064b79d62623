"""The one-file report of a profile: ``report.md``, a self-contained ``report.html`` and ``profile.json``.

Why self-contained: the report travels (PR attachments, CI artifacts, chat), so the HTML inlines its
charts as SVG and needs no network, script or side file. Two charts answer the two deployment
questions at a glance: how fast is each ``model x backend`` (p50 bar with a whisker up to p99: the tail
matters for real-time use), and what does each row trade in accuracy for that speed (SQNR vs the float
reference against p50 latency, one labelled point per row).

Charts are drawn with matplotlib's object API (``Figure``, no pyplot): no global backend state is
touched, so rendering is safe inside a library and under tests.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

from qdeploy.evaluate.report import HEADERS, caption, machine_line, row_notes, summary_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from qdeploy.evaluate.profile_types import ModelProfile, ProfileReport

__all__ = [
    "REPORT_FILES",
    "accuracy_figure",
    "figure_svg",
    "latency_figure",
    "render_html",
    "write_report",
]

#: What :func:`write_report` writes into its folder.
REPORT_FILES = ("report.md", "report.html", "profile.json")
#: Where an identical-output row (SQNR = inf, e.g. the reference itself) is drawn, above the best
#: finite SQNR, so it stays on the chart and reads as "best possible" rather than disappearing.
INF_HEADROOM_DB = 10.0
_NO_FINITE_SQNR_DB = 100.0  # ceiling when no row has a finite SQNR (only identical outputs)
_LOG_X_SPAN = 20.0  # use a log latency axis when the slowest row is this many times the fastest
_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td.t{text-align:left} tr.skipped td{color:#888;font-style:italic}
figure{margin:1.5em 0} figcaption{font-size:13px;color:#555} .machine{font-weight:600}
.notes{font-size:13px} .caption{font-size:13px;color:#555}
"""


def _measured(report: ProfileReport) -> list[ModelProfile]:
    from qdeploy.evaluate.profile_types import ModelProfile

    return [r for r in report.rows() if isinstance(r, ModelProfile)]


def _label(m: ModelProfile) -> str:
    return f"{m.name}\n{m.backend}"


def _backend_colors(rows: list[ModelProfile]) -> dict[str, str]:
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    names = list(dict.fromkeys(m.backend for m in rows))
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def latency_figure(report: ProfileReport) -> Figure:
    """Bar per measured ``model x backend`` row: height p50, whisker from p50 up to p99 (ms)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = _measured(report)
    colors = _backend_colors(rows)
    fig = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    p50 = [m.latency_ms.p50 for m in rows]
    whisker = [[0.0] * len(rows), [m.latency_ms.p99 - m.latency_ms.p50 for m in rows]]
    ax.bar(range(len(rows)), p50, yerr=whisker, capsize=5, color=[colors[m.backend] for m in rows],
           error_kw={"elinewidth": 1.2, "ecolor": "#333"})
    ax.set_xticks(range(len(rows)), [_label(m) for m in rows], fontsize=8,
                  rotation=30 if len(rows) > 6 else 0, ha="right" if len(rows) > 6 else "center")
    ax.set_ylabel("latency per inference (ms)")
    ax.set_title("Latency: p50 (bar) and p99 (whisker)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(color=c, label=b) for b, c in colors.items()], title="backend", fontsize=8)
    return fig


def _sqnr_points(rows: list[ModelProfile]) -> tuple[list[float], list[bool]]:
    """Worst-output SQNR per row with inf replaced by a ceiling; also which rows were inf."""
    raw = [m.worst_accuracy().get("sqnr_db", math.nan) for m in rows]
    finite = [v for v in raw if math.isfinite(v)]
    ceiling = max(finite) + INF_HEADROOM_DB if finite else _NO_FINITE_SQNR_DB
    return [ceiling if math.isinf(v) and v > 0 else v for v in raw], [math.isinf(v) and v > 0 for v in raw]


def accuracy_figure(report: ProfileReport) -> Figure:
    """Scatter of SQNR vs the float reference (dB, y) against p50 latency (ms, x), one labelled point
    per measured row; identical outputs (inf dB) sit :data:`INF_HEADROOM_DB` above the best finite row
    with a triangle marker."""
    from matplotlib.figure import Figure

    rows = _measured(report)
    colors = _backend_colors(rows)
    ys, identical = _sqnr_points(rows)
    xs = [m.latency_ms.p50 for m in rows]
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for m, x, y, inf in zip(rows, xs, ys, identical, strict=True):
        ax.scatter([x], [y], color=colors[m.backend], marker="^" if inf else "o", s=50, zorder=3)
        text = f"{m.name} on {m.backend}" + ("" if m.variant else f" [{m.precision}]")
        text += " (identical: inf dB)" if inf else ""
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    if xs and min(xs) > 0 and max(xs) / min(xs) > _LOG_X_SPAN:
        ax.set_xscale("log")
    ax.set_xlabel("p50 latency (ms, lower is faster)")
    ax.set_ylabel("SQNR vs float reference (dB, higher is closer)")
    ax.set_title("Accuracy vs latency (triangle: identical to the reference, drawn above the best)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    for backend, color in colors.items():
        ax.scatter([], [], color=color, label=backend)
    if colors:
        ax.legend(title="backend", fontsize=8)
    return fig


def figure_svg(fig: Figure, salt: str = "qdeploy") -> str:
    """The figure as an inline ``<svg>`` element (text kept as text, stable ids, no date stamp).

    ``salt`` seeds the element ids: two charts inlined in one page need different salts, or a clip
    path of one could be resolved to the other's definition of the same id.
    """
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _html_table(report: ProfileReport) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = []
    for cells in summary_rows(report):
        cls = ' class="skipped"' if cells[4] == "skipped" else ""
        tds = "".join(f'<td{" class=t" if i < 3 else ""}>{html.escape(c)}</td>' for i, c in enumerate(cells))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: ProfileReport) -> str:
    """A self-contained HTML page: machine line, the table, notes, caption and two inline SVG charts."""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in row_notes(report))
    charts = ""
    if _measured(report):
        latency = figure_svg(latency_figure(report), "qdeploy-latency")
        accuracy = figure_svg(accuracy_figure(report), "qdeploy-accuracy")
        charts = (
            f'<figure id="latency-chart">{latency}<figcaption>p50 latency per model and backend; the '
            f"whisker reaches p99.</figcaption></figure>"
            f'<figure id="accuracy-chart">{accuracy}<figcaption>Each row\'s worst-output SQNR against the '
            f"reference, by p50 latency ({html.escape(report.accuracy_basis())}).</figcaption></figure>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>qdeploy profile</title><style>{_STYLE}</style></head><body>"
        f"<h1>qdeploy profile</h1><p class=machine>{html.escape(machine_line(report))}</p>"
        f"{_html_table(report)}"
        + (f"<ul class=notes>{notes}</ul>" if notes else "")
        + f"<p class=caption>{html.escape(caption(report))}</p>{charts}</body></html>\n"
    )


def write_report(report: ProfileReport, directory: Path) -> dict[str, Path]:
    """Write :data:`REPORT_FILES` into ``directory`` (created if needed), each atomically.

    Returns ``{file name: path}``. Every file is rendered before the first is written, so a rendering
    error leaves the folder as it was.
    """
    from qdeploy.artifacts import atomic_path, write_json

    directory = Path(directory)
    texts = {"report.md": report.to_markdown(), "report.html": render_html(report)}
    data = report.to_dict()
    paths = {name: directory / name for name in REPORT_FILES}
    for name, text in texts.items():
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(text, encoding="utf-8")
    write_json(paths["profile.json"], data)
    return paths
