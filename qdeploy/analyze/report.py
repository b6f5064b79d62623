"""The analysis report: ``report.md``, a self-contained ``report.html``, ``analysis.json`` and the PNG plots.

Same approach as the profile report (:mod:`qdeploy.evaluate.report_html`, whose page style is reused):
everything inlined so the HTML travels alone. Plots (:mod:`qdeploy.analyze.report_plots`) are PNG
(base64 in the HTML) rather than SVG because a per-tensor bar chart of a transformer has hundreds of
bars; the PNGs are also written as files so they can be opened and checked without a browser.

A report says what it is about before anything else: the models, the data and the command that made it
(``source``), and it explains its columns (:func:`legend`): a table of "local dB" and "contribution"
means nothing to a reader who did not write the analysis.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qdeploy.analyze.report_plots import (
    KIND_COLORS,
    contribution_figure,
    histogram_figure,
    png,
    search_figure,
    sqnr_figure,
    tensor_label,
)

if TYPE_CHECKING:
    from qdeploy.analyze.search import PrecisionPlan
    from qdeploy.analyze.sensitivity import SensitivityResult

__all__ = [
    "KIND_COLORS",
    "contribution_figure",
    "histogram_figure",
    "legend",
    "render_html",
    "render_markdown",
    "search_figure",
    "sqnr_figure",
    "write_analysis_report",
]

_HIST_TOP = 4

#: ``{"float model": path, "QDQ model": path, "data": what, "command": qdeploy ...}``: what a report names.
Source = Mapping[str, str]


def legend(result: SensitivityResult) -> list[tuple[str, str]]:
    """(column, what it means) for the table's columns and the summary's "all switches off" figure."""
    if result.metric == "output_sqnr":
        contribution = ("the tensor's estimated share of the output noise, the ranking key: the larger of the "
                        "noise with only it quantized and the noise it removes when only it is left float, "
                        "as a fraction of the whole model's output noise (the two views overlap, so shares "
                        "can add up to more than 1)")
    else:
        contribution = ("the ranking key, in the task metric's units: the larger of the score drop with only "
                        "this tensor quantized and the score gain with only it left float")
    return [
        ("rank / #", "1 = hurts the output most; # = position in graph order (the plots' axis)"),
        ("module / ONNX name", "the PyTorch module that computed the tensor (recorded at export) / its name "
                               "in the graph (the key of the precision map and the calibration cache)"),
        ("kind", "activation or weight"),
        ("analysed at", "the grid the tensor was quantized to for this analysis (the starting width; after a "
                        "precision search, \"final\" and the precision map give the width each tensor ends at)"),
        ("SQNR dB", "the tensor's dequantized value in the fully quantized model against the same tensor of "
                    "the float model: its own rounding plus all error arriving from upstream"),
        ("local dB", "the dequantized value against the QuantizeLinear's own input in the same quantized run: "
                     "this tensor's own rounding and clipping only (weights: the same as SQNR dB)"),
        ("clipped %", "share of the QuantizeLinear's input values outside the grid's float limits "
                      "(weights: not measured, 0)"),
        ("only-quantized out dB", "output SQNR against the float model when only this tensor is quantized "
                                  "and every other one is float: low means it hurts on its own"),
        ("only-float out dB", "output SQNR when every other tensor stays quantized and only this one is float: "
                              "above the model's output SQNR means leaving it float helps"),
        ("contribution", contribution),
        ("(all switches off: ...)", "output SQNR with every tensor switched to float: only int32 biases (and "
                                    "Qs without a DQ) stay quantized, so this is the analysis' floor; it should "
                                    "be far above the model's own output SQNR"),
    ]


def _source_lines(source: Source | None) -> list[tuple[str, str]]:
    return [(key, str(value)) for key, value in (source or {}).items() if value]


def _map_rows(result: SensitivityResult, plan: PrecisionPlan) -> list[list[str]]:
    """Precision-map rows: #, module, ONNX name (the map's key), precision."""
    shown = {t.name: tensor_label(t) for t in result.tensors}
    return [[str(i + 1), shown.get(name, name), name, label]
            for i, (name, label) in enumerate(plan.precision_map.items())]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.2f}")
    return str(value)


_COLUMNS = ("rank", "#", "module", "ONNX name", "kind", "analysed at", "SQNR dB", "local dB", "clipped %",
            "only-quantized out dB", "only-float out dB", "contribution")


def _columns(plan: PrecisionPlan | None) -> tuple[str, ...]:
    """The table's columns; with a precision search, "final" (the precision the search gave) after the grid
    the tensor was analysed at, so the table never shows only the starting width."""
    if plan is None:
        return _COLUMNS
    at = _COLUMNS.index("analysed at") + 1
    return (*_COLUMNS[:at], "final", *_COLUMNS[at:])


def _rows(result: SensitivityResult, top: int | None, plan: PrecisionPlan | None = None) -> list[list[str]]:
    return [
        [
            str(t.rank),
            str(t.index + 1),
            tensor_label(t),
            t.name,
            t.kind,
            f"int{t.bits}",
            *([plan.precision_map.get(t.name, "-")] if plan is not None else []),
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


def _title(source: Source | None) -> str:
    """``qdeploy analyze: model.w4a4.qdq.onnx``: the command that wrote the report (``qdeploy calibrate`` when
    its ``--target-*`` search did, read from the source's command line) and the analysed model's file name."""
    command = str((source or {}).get("command") or "").split()
    tool = " ".join(command[:2]) if command[:1] == ["qdeploy"] and len(command) > 1 else "qdeploy analyze"
    model = (source or {}).get("QDQ model")
    return f"{tool}: {Path(model).name}" if model else tool


def render_markdown(
    result: SensitivityResult,
    plan: PrecisionPlan | None = None,
    top: int = 20,
    images: dict[str, str] | None = None,
    source: Source | None = None,
) -> str:
    """The report as Markdown; ``images`` (file names by key) are linked when given; ``source`` names the
    models, the data and the command (:data:`Source`)."""
    out = [f"# {_title(source)}", "", *[f"- **{key}**: `{value}`" for key, value in _source_lines(source)]]
    out += [
        *([""] if source else []),
        *[f"- {line}" for line in _summary_lines(result, plan)],
        "",
        f"## Most harmful tensors (top {min(top, len(result.tensors))})",
        "",
        "| " + " | ".join(_columns(plan)) + " |",
        "|" + "---|" * len(_columns(plan)),
    ]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in _rows(result, top, plan)]
    out += ["", "Columns:", "", *[f"- **{name}**: {meaning}" for name, meaning in legend(result)]]
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
    ".wrap{overflow-x:auto} code{word-break:break-all}"
    "@page{size:A4 landscape;margin:10mm}"
    "@media print{body{margin:0;font-size:11px}table{font-size:9px}th,td{padding:2px 4px}}"
)


def render_html(
    result: SensitivityResult, pngs: dict[str, bytes], plan: PrecisionPlan | None = None, top: int = 20,
    source: Source | None = None,
) -> str:
    """A self-contained page: what was analysed (``source``), summary, top-``top`` table and its legend, the
    PNGs inline (base64), the precision map."""
    from qdeploy.evaluate.report_html import _STYLE

    named = "".join(f"<li><b>{html.escape(key)}</b>: <code>{html.escape(value)}</code></li>"
                    for key, value in _source_lines(source))
    summary = named + "".join(f"<li>{html.escape(line)}</li>" for line in _summary_lines(result, plan))
    columns = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(meaning)}</li>"
                      for name, meaning in legend(result))
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
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(_title(source))}</title>'
        f"<style>{_STYLE}{_PRINT_STYLE}</style></head><body><h1>{html.escape(_title(source))}</h1>"
        f"<ul class=notes>{summary}</ul>"
        f"<h2>Most harmful tensors</h2><div class=wrap>{_html_table(_columns(plan), _rows(result, top, plan))}</div>"
        f'<ul class=notes id=legend>{columns}</ul>{figures}{pmap}'
        "</body></html>\n"
    )


def _figures(result: SensitivityResult, plan: PrecisionPlan | None) -> dict[str, bytes]:
    pngs = {
        "tensor_sqnr.png": png(sqnr_figure(result)),
        "contribution.png": png(contribution_figure(result)),
    }
    worst = [t for t in result.tensors if t.name in result.histograms][:_HIST_TOP]
    for t in worst:
        pngs[f"hist_{t.rank}.png"] = png(histogram_figure(result, t.name))
    if plan is not None and plan.candidates:
        pngs["search.png"] = png(search_figure(plan))
    return pngs


def write_analysis_report(
    result: SensitivityResult, directory: Path, plan: PrecisionPlan | None = None, top: int = 20,
    source: Source | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``analysis.json`` and the PNGs into ``directory``.

    ``source`` (:data:`Source`) names the models, the data and the command in every file. Returns ``{file
    name: path}``. Everything is rendered before the first file is written.
    """
    from qdeploy.artifacts import atomic_path, json_safe, write_json

    directory = Path(directory)
    pngs = _figures(result, plan)
    texts = {
        "report.md": render_markdown(result, plan, top, {k: k for k in pngs}, source),
        "report.html": render_html(result, pngs, plan, top, source),
    }
    data = {"source": dict(source or {}), "analysis": result.to_dict(),
            "plan": plan.to_dict() if plan is not None else None}
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
