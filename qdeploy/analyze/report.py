"""The analysis report: ``report.md``, a self-contained ``report.html``, ``analysis.json`` and the PNG plots.

Same approach as the profile report (:mod:`qdeploy.evaluate.report_html`, whose page style is reused):
matplotlib's object API (no pyplot global state), everything inlined so the HTML travels alone. Plots are
PNG (base64 in the HTML) rather than SVG because a per-tensor bar chart of a transformer has hundreds of
bars; the PNGs are also written as files so they can be opened and checked without a browser.

Plots: per-tensor SQNR bars in graph order (activations blue, weights orange), each tensor's share of the
output noise (same order), value histograms of the worst tensors with the calibrated range and the grid's
limits drawn on them, and, when a precision search ran, output accuracy against size of every candidate.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from qdeploy.analyze.search import PrecisionPlan
    from qdeploy.analyze.sensitivity import SensitivityResult, TensorSensitivity

__all__ = [
    "KIND_COLORS",
    "contribution_figure",
    "histogram_figure",
    "render_html",
    "render_markdown",
    "search_figure",
    "sqnr_figure",
    "write_analysis_report",
]

#: Bar colour per tensor kind (tests find the bars by these exact colours).
KIND_COLORS = {"activation": "#1f77b4", "weight": "#ff7f0e"}
_DPI = 100
_SLOT_IN = 0.09  # inches of figure width per bar: >= 9 px, so neighbouring bars stay apart at 100 dpi
_INF_HEADROOM_DB = 10.0
_HIST_TOP = 4
_NAMED_BARS = 40  # up to this many bars carry their tensor names


def _label(t: TensorSensitivity) -> str:
    """The tensor as a reader finds it in the PyTorch source (its ONNX name when none was recorded)."""
    return t.label or t.name


def _map_rows(result: SensitivityResult, plan: PrecisionPlan) -> list[list[str]]:
    """Precision-map rows: #, module, ONNX name (the map's key), precision."""
    shown = {t.name: _label(t) for t in result.tensors}
    return [[str(i + 1), shown.get(name, name), name, label]
            for i, (name, label) in enumerate(plan.precision_map.items())]


def _graph_order(result: SensitivityResult) -> list[TensorSensitivity]:
    return sorted(result.tensors, key=lambda t: t.index)


def _bar_figure(values: list[float], kinds: list[str], ylabel: str, title: str,
                names: list[str] | None = None) -> Figure:
    """Bars at x = 1..n, the table's ``#`` column; with few tensors their names are the tick labels."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(values)
    named = names is not None and n <= _NAMED_BARS
    fig = Figure(figsize=(max(6.0, 1.5 + _SLOT_IN * n), 4.6 if named else 3.6), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(1, n + 1), values, width=0.7, color=[KIND_COLORS[k] for k in kinds], antialiased=False)
    ax.set_xlim(0.2, n + 0.8)
    if named:
        ax.set_xticks(range(1, n + 1), names, rotation=90, fontsize=7)
        ax.set_xlabel("quantized tensor (graph order)")
    else:
        ax.set_xlabel("quantized tensor # (graph order: the # column of the tables)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in KIND_COLORS.items()], fontsize=8)
    return fig


def sqnr_figure(result: SensitivityResult) -> Figure:
    """One bar per tensor: its SQNR vs the float tensor (dB; upstream error included, local SQNR where the
    float model has no such tensor); identical tensors are drawn above the best finite bar."""
    tensors = _graph_order(result)
    raw = [t.sqnr_db if not math.isnan(t.sqnr_db) else t.local_sqnr_db for t in tensors]
    finite = [v for v in raw if math.isfinite(v)]
    ceiling = (max(finite) if finite else 0.0) + _INF_HEADROOM_DB
    values = [ceiling if math.isinf(v) else max(v, 0.5) for v in raw]
    return _bar_figure(
        values,
        [t.kind for t in tensors],
        "SQNR vs float tensor (dB)",
        "Per-tensor error (lower bar = more error)",
        [_label(t) for t in tensors],
    )


def contribution_figure(result: SensitivityResult) -> Figure:
    """One bar per tensor: its estimated share of the output error (the ranking key)."""
    tensors = _graph_order(result)
    label = "share of output noise" if result.metric == "output_sqnr" else "score change (max of b, c)"
    return _bar_figure(
        [max(t.contribution, 0.0) for t in tensors],
        [t.kind for t in tensors],
        label,
        "Output sensitivity (higher bar = hurts the output more)",
        [_label(t) for t in tensors],
    )


def histogram_figure(result: SensitivityResult, name: str) -> Figure:
    """Histogram (log counts) of tensor ``name``'s float values with the calibrated [lo, hi] (solid red)
    and the grid's float limits (dashed black) drawn on it."""
    from matplotlib.figure import Figure

    t = result.get(name)
    values = result.histograms.get(name)
    fig = Figure(figsize=(6.0, 3.2), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    if values is not None and values.size:
        ax.hist(values, bins=120, color=KIND_COLORS[t.kind], log=True)
    for bounds, style, label in ((t.calib_range, "-", "calibrated range"), (t.grid, "--", "grid limits")):
        if bounds is not None:
            for k, x in enumerate(bounds):
                ax.axvline(
                    x,
                    color="#d62728" if style == "-" else "#222",
                    linestyle=style,
                    linewidth=1.4,
                    label=label if k == 0 else None,
                )
    shown = _label(t) if _label(t) == name else f"{_label(t)} = {name}"
    ax.set_title(
        f"#{t.rank} {shown} ({t.kind}, int{t.bits}): clipped {100 * t.clipped_fraction:.3g}%", fontsize=9
    )
    ax.set_xlabel("float value")
    ax.set_ylabel("count (log)")
    if t.calib_range is not None or t.grid is not None:
        ax.legend(fontsize=8)
    return fig


def search_figure(plan: PrecisionPlan) -> Figure:
    """Every candidate of the search: output accuracy (y) against packed weight size (x), the chosen one
    starred, the target (and for a task target the float score) drawn as lines; beside it each
    candidate's predicted speed cost (layers on integer kernels per the fusion check) against size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.5, 4.0), dpi=_DPI, layout="constrained")
    ax, speed = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    use_score = plan.target.kind == "loss"
    ys = [(c["score"] if use_score else c["sqnr_db"]) for c in plan.candidates]
    ys = [min(y, 200.0) for y in ys]
    xs = [c["size_bytes"] / 1024 for c in plan.candidates]
    colors = ["#2ca02c" if c["met"] else "#d62728" for c in plan.candidates]
    ax.scatter(xs, ys, c=colors, s=30, zorder=3)
    for c, x, y in zip(plan.candidates, xs, ys, strict=True):
        ax.annotate(
            f"{c['stage']}:{c['raised']}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7
        )
    final = plan.score if use_score else plan.sqnr_db
    ax.scatter(
        [plan.size_bytes / 1024],
        [min(final, 200.0) if final is not None else 0.0],
        marker="*",
        s=220,
        color="#ffbf00",
        edgecolor="#222",
        zorder=4,
        label="chosen",
    )
    if plan.target.kind == "sqnr":
        ax.axhline(plan.target.value, color="#555", linestyle=":", label="target")
    elif plan.float_score is not None:
        ax.axhline(plan.float_score, color="#1f77b4", linestyle="--", linewidth=1, label="float model")
        ax.axhline(plan.float_score - plan.target.value, color="#555", linestyle=":",
                   label=f"target (float - {plan.target.value:g})")
    ax.set_xlabel("weight size, packed (KiB)")
    ax.set_ylabel("task score" if use_score else "output SQNR vs float (dB)")
    ax.set_title("Candidates tried (green: meets the target; label = step:tensors raised)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _speed_panel(speed, plan, xs, colors)
    return fig


def _speed_panel(ax: Any, plan: PrecisionPlan, xs: list[float], colors: list[str]) -> None:
    """Predicted speed cost of each candidate: quantized layers the fusion check says run integer kernels."""
    layers = [c.get("int8_layers") for c in plan.candidates]
    if any(v is None for v in layers):
        ax.set_axis_off()
        return
    ax.scatter(xs, layers, c=colors, s=30, zorder=3)
    total = max((c.get("quantized_layers") or 0) for c in plan.candidates)
    ax.axhline(total, color="#555", linestyle=":", label=f"all {total} quantized layers")
    ax.set_xlabel("weight size, packed (KiB)")
    ax.set_ylabel(f"layers on integer kernels ({plan.speed.get('target', 'target')})")
    ax.set_title("Predicted speed: integer-kernel layers (fusion check)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}")
    return str(value)


_COLUMNS = ("rank", "#", "module", "ONNX name", "kind", "bits", "SQNR dB", "local dB", "clipped %",
            "only-quantized out dB", "only-float out dB", "contribution")


def _rows(result: SensitivityResult, top: int | None) -> list[list[str]]:
    return [
        [
            str(t.rank),
            str(t.index + 1),
            _label(t),
            t.name,
            t.kind,
            f"int{t.bits}",
            _fmt(t.sqnr_db),
            _fmt(t.local_sqnr_db),
            f"{100 * t.clipped_fraction:.3g}",
            _fmt(t.only_quantized_sqnr_db),
            _fmt(t.only_float_sqnr_db),
            f"{t.contribution:.3g}",
        ]
        for t in result.tensors[:top]
    ]


def _summary_lines(result: SensitivityResult, plan: PrecisionPlan | None) -> list[str]:
    lines = [
        f"{len(result.tensors)} quantized tensors, {result.samples} samples; output SQNR of the QDQ model "
        f"vs float: {_fmt(result.quantized_sqnr_db)} dB "
        f"(all switches off: {_fmt(result.all_float_sqnr_db)} dB)",
        f"analysis time {result.timings.get('total_s', 0.0):.1f} s "
        f"({int(result.timings.get('sweep_runs', 0))} sweep runs, "
        f"{result.timings.get('ms_per_run', 0.0):.1f} ms each)",
    ]
    if result.float_score is not None:
        lines.append(
            f"task score: float {_fmt(result.float_score)}, quantized {_fmt(result.quantized_score)}"
        )
    if plan is not None:
        lines.append(
            f"precision search ({plan.target}): {'met' if plan.met else 'NOT met'}, output SQNR "
            f"{_fmt(plan.sqnr_db)} dB, {_counts(plan.counts)}, weights {plan.size_bytes / 1024:.1f} KiB "
            f"(lowest {plan.base_size_bytes / 1024:.1f}, float {plan.float_size_bytes / 1024:.1f}); "
            f"{plan.speed.get('line', '')}"
        )
    return lines


def _counts(counts: dict[str, int]) -> str:
    """``{"int8": 13, "int4": 2}`` -> ``"13 int8, 2 int4"`` (largest first)."""
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def render_markdown(
    result: SensitivityResult,
    plan: PrecisionPlan | None = None,
    top: int = 20,
    images: dict[str, str] | None = None,
) -> str:
    """The report as Markdown; ``images`` (file names by key) are linked when given."""
    out = [
        "# qdeploy analyze",
        "",
        *[f"- {line}" for line in _summary_lines(result, plan)],
        "",
        f"## Most harmful tensors (top {min(top, len(result.tensors))})",
        "",
        "| " + " | ".join(_COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(result, top)]
    for key, file in (images or {}).items():
        out += ["", f"![{key}]({file})"]
    if plan is not None:
        out += ["", "## Precision map", "", "| # | module | ONNX name | precision |", "|---|---|---|---|"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _map_rows(result, plan)]
    return "\n".join(out) + "\n"


def _html_table(columns: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(cell: str) -> str:
    """A ``<td>`` whose text may wrap after ``.`` and ``/`` (module paths have no spaces to wrap at); the
    unbroken text is also its ``title``, so the name stays one searchable string in the page."""
    text = html.escape(cell)
    if _align(cell) == "":
        return f"<td>{text}</td>"
    broken = re.sub(r"([./])(?=\w)", r"\1<wbr>", text)
    return f"<td class=t>{broken}</td>" if broken == text else f'<td class=t title="{text}">{broken}</td>'


def _align(cell: str) -> str:
    """Text cells left-aligned (class ``t``), numbers right-aligned (the style's default)."""
    numeric = cell in ("-", "nan", "inf") or cell.lstrip("+-")[:1].isdigit()
    return "" if numeric else " class=t"


# Wide tables scroll on screen and shrink on paper (checked by rendering the page: see qdeploy.evaluate.render).
_PRINT_STYLE = (
    ".wrap{overflow-x:auto}"
    "@page{size:A4 landscape;margin:10mm}"
    "@media print{body{margin:0;font-size:11px}table{font-size:9px}th,td{padding:2px 4px}}"
)


def render_html(
    result: SensitivityResult, pngs: dict[str, bytes], plan: PrecisionPlan | None = None, top: int = 20
) -> str:
    """A self-contained page: summary, top-``top`` table, the PNGs inline (base64), the precision map."""
    from qdeploy.evaluate.report_html import _STYLE

    summary = "".join(f"<li>{html.escape(line)}</li>" for line in _summary_lines(result, plan))
    figures = "".join(
        f'<figure id="{html.escape(key)}"><img alt="{html.escape(key)}" style="max-width:100%" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}"><figcaption>{html.escape(key)}'
        "</figcaption></figure>"
        for key, data in pngs.items()
    )
    pmap = ""
    if plan is not None:
        pmap = "<h2>Precision map</h2>" + _html_table(["#", "module", "ONNX name", "precision"],
                                                      _map_rows(result, plan))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>qdeploy analyze</title>'
        f"<style>{_STYLE}{_PRINT_STYLE}</style></head><body><h1>qdeploy analyze</h1><ul class=notes>{summary}</ul>"
        f"<h2>Most harmful tensors</h2><div class=wrap>{_html_table(_COLUMNS, _rows(result, top))}</div>"
        f"{figures}{pmap}"
        "</body></html>\n"
    )


def _figures(result: SensitivityResult, plan: PrecisionPlan | None) -> dict[str, bytes]:
    pngs = {
        "tensor_sqnr.png": _png(sqnr_figure(result)),
        "contribution.png": _png(contribution_figure(result)),
    }
    worst = [t for t in result.tensors if t.name in result.histograms][:_HIST_TOP]
    for t in worst:
        pngs[f"hist_{t.rank}.png"] = _png(histogram_figure(result, t.name))
    if plan is not None and plan.candidates:
        pngs["search.png"] = _png(search_figure(plan))
    return pngs


def write_analysis_report(
    result: SensitivityResult, directory: Path, plan: PrecisionPlan | None = None, top: int = 20
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``analysis.json`` and the PNGs into ``directory``.

    Returns ``{file name: path}``. Everything is rendered before the first file is written.
    """
    from qdeploy.artifacts import atomic_path, json_safe, write_json

    directory = Path(directory)
    pngs = _figures(result, plan)
    texts = {
        "report.md": render_markdown(result, plan, top, {k: k for k in pngs}),
        "report.html": render_html(result, pngs, plan, top),
    }
    data = {"analysis": result.to_dict(), "plan": plan.to_dict() if plan is not None else None}
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, blob in pngs.items():
        with atomic_path(directory / name) as tmp:
            tmp.write_bytes(blob)
        paths[name] = directory / name
    for name, text in texts.items():
        with atomic_path(directory / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths[name] = directory / name
    paths["analysis.json"] = write_json(directory / "analysis.json", json_safe(data))
    return paths
