"""The analysis report's plots (matplotlib's object API: no pyplot global state), as PNG bytes.

Per-tensor SQNR and output-sensitivity bars in graph order (activations blue, weights orange; with few
tensors a horizontal chart whose rows carry the module names, readable however long they are; with
many, vertical bars numbered like the tables' ``#`` column), value histograms of the worst tensors with
the calibrated range and the grid's limits drawn on them, and a precision search's candidates.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from qdeploy.analyze.search import PrecisionPlan
    from qdeploy.analyze.sensitivity import SensitivityResult, TensorSensitivity

__all__ = ["KIND_COLORS", "contribution_figure", "histogram_figure", "png", "search_figure", "sqnr_figure",
           "tensor_label"]

#: Bar colour per tensor kind (tests find the bars by these exact colours).
KIND_COLORS = {"activation": "#1f77b4", "weight": "#ff7f0e"}
_DPI = 100
_SLOT_IN = 0.09  # inches of figure width per bar: >= 9 px, so neighbouring bars stay apart at 100 dpi
_INF_HEADROOM_DB = 10.0
_NAMED_BARS = 40  # up to this many bars carry their tensor names (horizontal chart)
_ROW_IN = 0.22  # inches of figure height per named bar: an 8-pt label row with space around it
_LABEL_CHARS = 56  # longest tensor label on a named bar (cut in the middle beyond)


def tensor_label(t: TensorSensitivity) -> str:
    """The tensor as a reader finds it in the PyTorch source (its ONNX name when none was recorded)."""
    return t.label or t.name


def _graph_order(result: SensitivityResult) -> list[TensorSensitivity]:
    return sorted(result.tensors, key=lambda t: t.index)


def _short(text: str, width: int = _LABEL_CHARS) -> str:
    """``text`` cut in the middle to ``width`` characters: both the block (``layers.0.residual_group``)
    and the layer (``attn.qkv (MatMul)``) stay readable; the full names are in the tables."""
    if len(text) <= width:
        return text
    head, tail = text[: (width - 1) // 2], text[len(text) - (width - 1) // 2:]
    head = head[: head.rfind(".") + 1] or head  # cut at the dots of a module path where there are any
    tail = tail[tail.find(".") :] if "." in tail else tail
    return f"{head}\u2026{tail}"


def _bar_figure(values: list[float], kinds: list[str], value_label: str, title: str,
                names: list[str] | None = None) -> Figure:
    """One bar per tensor in graph order. Up to ``_NAMED_BARS`` tensors: horizontal bars, one row per tensor
    named ``#k module`` (rows never overlap, however long the names); more: vertical bars at x = 1..n, the
    tables' ``#`` column. The kind legend sits above the plot, off the bars."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(values)
    named = names is not None and n <= _NAMED_BARS
    size = (8.0, 1.6 + _ROW_IN * n) if named else (max(6.0, 1.5 + _SLOT_IN * n), 3.8)
    fig = Figure(figsize=size, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    colors = [KIND_COLORS[k] for k in kinds]
    if named:
        ax.barh(range(1, n + 1), values, height=0.7, color=colors, antialiased=False)
        ax.set_ylim(n + 0.8, 0.2)  # graph order from the top
        ax.set_yticks(range(1, n + 1), [f"{_short(name)}  #{i}" for i, name in enumerate(names or [], 1)],
                      fontsize=8)
        ax.set_xlabel(value_label)
        ax.grid(axis="x", alpha=0.3)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.bar(range(1, n + 1), values, width=0.7, color=colors, antialiased=False)
        ax.set_xlim(0.2, n + 0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
        ax.set_xlabel("quantized tensor # (graph order: the # column of the tables)")
        ax.set_ylabel(value_label)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, loc="left", fontsize=10)
    fig.legend(handles=[Patch(color=c, label=k) for k, c in KIND_COLORS.items()], loc="outside upper right",
               ncols=len(KIND_COLORS), fontsize=8, frameon=False)
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
        "Per-tensor error (shorter bar = more error)",
        [tensor_label(t) for t in tensors],
    )


def contribution_figure(result: SensitivityResult) -> Figure:
    """One bar per tensor: its estimated share of the output error (the ranking key)."""
    tensors = _graph_order(result)
    label = "share of output noise" if result.metric == "output_sqnr" else "score change (max of b, c)"
    return _bar_figure(
        [max(t.contribution, 0.0) for t in tensors],
        [t.kind for t in tensors],
        label,
        "Output sensitivity (longer bar = hurts the output more)",
        [tensor_label(t) for t in tensors],
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
    shown = tensor_label(t) if tensor_label(t) == name else f"{tensor_label(t)} = {name}"
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


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()
