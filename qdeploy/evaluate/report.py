"""Rendering profiles for people: a rich table for the terminal and a markdown table for READMEs/PRs,
plus the ``profile.json`` schema (:func:`report_dict`, version 2) and a reader of version 1 files.

Both views share :func:`summary_rows` and :func:`row_notes`, so the terminal and the markdown never
disagree. Non-finite values (SQNR of identical outputs) show as "inf"; in JSON they are the strings
"inf"/"-inf"/"nan" (:func:`json_safe`), because strict JSON has no infinity and null would mean "not
measured". The HTML report with charts is :mod:`qdeploy.evaluate.report_html`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from qdeploy.artifacts import json_safe
from qdeploy.errors import InputError

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

    from qdeploy.evaluate.profile_types import ModelProfile, ProfileReport

__all__ = [
    "HEADERS",
    "SCHEMA_VERSION",
    "caption",
    "format_bytes",
    "format_ms",
    "json_safe",
    "machine_line",
    "ratio_statistic",
    "render_markdown",
    "render_table",
    "report_dict",
    "row_notes",
    "summary_rows",
    "upgrade_profile_dict",
]

HEADERS = ("model", "backend", "precision", "size", "p50 ms", "p90 ms", "p99 ms", "vs 1st", "runs/s",
           "peak mem", "SQNR dB", "PSNR dB", "cosine", "max abs", "INT8")
#: profile.json version: 2 added per-row backend/precision/coverage/variant/note and skipped rows.
SCHEMA_VERSION = 2
_GPU_BACKENDS = ("ort-cuda", "tensorrt", "tensorrt-rtx")
_WIDE_TABLE_MIN_WIDTH = 120  # below this many console columns, render_table transposes


def format_bytes(n: int | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"n/a"``."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_ms(ms: float) -> str:
    """Milliseconds with precision that suits the magnitude (sub-ms models need three decimals)."""
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) and value > 0 else f"{value:.2f}"


def _throughput(m: ModelProfile) -> str:
    return f"{m.throughput_per_s:.1f}" if m.throughput_per_s < 100 else f"{m.throughput_per_s:.0f}"


def _coverage_cell(m: ModelProfile, inline_notes: bool) -> str:
    cov = m.coverage
    if cov is None:
        return "-"
    if inline_notes and cov.target is None and cov.note:
        return f"{cov.cell} ({cov.note})"  # no fusion check applies: the reason *is* the value
    return cov.cell


def _measured_cells(m: ModelProfile, inline_notes: bool) -> list[str]:
    acc = m.worst_accuracy()
    lat = m.latency_ms
    return [
        m.name,
        m.backend,
        m.precision,
        format_bytes(m.size_bytes),
        format_ms(lat.p50),
        format_ms(lat.p90),
        format_ms(lat.p99),
        f"{m.ratio_vs_first:.2f}x",
        _throughput(m),
        format_bytes(m.peak_rss_increase_bytes),
        _db(acc.get("sqnr_db")),
        _db(acc.get("psnr_db")),
        "-" if "cosine" not in acc else f"{acc['cosine']:.6f}",
        "-" if "max_abs_error" not in acc else f"{acc['max_abs_error']:.3g}",
        _coverage_cell(m, inline_notes),
    ]


def summary_rows(report: ProfileReport, inline_notes: bool = True) -> list[list[str]]:
    """One row of formatted cells per ``model x backend`` (skipped ones too), in :data:`HEADERS` order.

    Accuracy is the worst output. ``inline_notes`` puts a coverage reason that *is* the value (ort-cuda:
    no INT8 kernels) into the INT8 cell; the narrow terminal table leaves it to :func:`row_notes`.
    """
    from qdeploy.evaluate.profile_types import ModelProfile

    rows = []
    for row in report.rows():
        if isinstance(row, ModelProfile):
            rows.append(_measured_cells(row, inline_notes))
        else:
            rows.append([row.name, row.backend, row.precision, "-", "skipped"] + ["-"] * (len(HEADERS) - 5))
    return rows


def _wholly_skipped(report: ProfileReport) -> dict[str, str]:
    """Backends where every row was skipped for one reason (said once, not once per model)."""
    out = {}
    for backend in report.config.backends:
        reasons = {r.reason for r in report.skipped if r.backend == backend}
        if len(reasons) == 1 and not any(m.backend == backend for m in report.models):
            out[backend] = reasons.pop()
    return out


def row_notes(report: ProfileReport, inline_notes: bool = True) -> list[str]:
    """Per-row caveats under the table: why a row was skipped, INT8 fallbacks, FP16-on-CPU, ..."""
    from qdeploy.evaluate.profile_types import ModelProfile

    notes = []
    whole = _wholly_skipped(report)
    notes += [f"{backend}: skipped: {reason}" for backend, reason in whole.items()]
    for row in report.rows():
        where = f"{row.name} on {row.backend}"
        if not isinstance(row, ModelProfile):
            if row.backend not in whole:
                notes.append(f"{where}: skipped: {row.reason}")
            continue
        cov = row.coverage
        if cov is not None and cov.note and not (inline_notes and cov.target is None):
            notes.append(f"{where}: INT8 {cov.cell}: {cov.note}")
        if row.note:
            notes.append(f"{where}: {row.note}")
    return notes


def machine_line(report: ProfileReport) -> str:
    """One line naming what the numbers depend on (CPU, VNNI, runtime, backends, threads, timing mode)."""
    m = report.machine
    vnni = {True: "yes", False: "no", None: "unknown"}[m.get("vnni")]
    backends = ", ".join(m.get("backends") or [m.get("backend")])
    label = "backends" if len(m.get("backends") or []) > 1 else "backend"
    return (f"{m.get('cpu_model')} ({m.get('usable_cores')} cores usable, VNNI {vnni}), onnxruntime "
            f"{m.get('onnxruntime')}, {label} {backends}, threads {m.get('threads')}, "
            f"{report.timing_mode} timing")


def ratio_statistic(report: ProfileReport) -> str:
    """Which statistic 'vs 1st' (``ratio_vs_first``) is: it need not equal the ratio of the p50 columns."""
    return "median per-round ratio" if report.timing_mode == "interleaved" else "ratio of p50s"


def caption(report: ProfileReport) -> str:
    """How to read the table: the reference, what 'vs 1st' is, what accuracy and memory mean."""
    ref = report.models[0].name if report.models else "-"
    on = f" on {report.reference_backend}" if report.reference_backend else ""
    how = ratio_statistic(report)
    basis = report.input_basis or "the same inputs"
    text = (f"reference: {ref}{on}. 'vs 1st' = latency {how} against the first model on the same backend "
            f"(<1 is faster). Accuracy (SQNR, PSNR, cosine, max abs) = worst output vs the reference, measured "
            f"on {basis}. peak mem = RSS growth of this process while the model loaded and ran once (host "
            f"memory only). INT8 = quantized layers that run as INT8 kernels on that backend / quantized layers.")
    if any(b in _GPU_BACKENDS for b in report.config.backends):
        text += " GPU latencies include the host<->device copies of inputs and outputs."
    return text


def report_dict(report: ProfileReport) -> dict[str, Any]:
    """The strict-JSON ``profile.json`` document (version :data:`SCHEMA_VERSION`).

    Version 2 keeps every version 1 key with its meaning (``machine.backend`` is the reference backend)
    and adds ``backends``, ``reference_backend``, per-row ``backend``/``precision``/``coverage``/
    ``variant``/``note``, and ``skipped`` rows; :func:`upgrade_profile_dict` reads version 1 files.
    ``accuracy_basis`` ("accuracy vs REF on BACKEND on <inputs>"), ``input_basis`` (what the models
    were fed) and ``ratio_statistic`` (what ``ratio_vs_first`` is) were added later within version 2:
    files without them were measured on uniform random inputs (``config.input_range``, ``config.seed``).
    """
    models = []
    for m in report.models:
        row = asdict(m)
        row["accuracy_worst"] = m.worst_accuracy()
        if m.coverage is not None:
            row["coverage"]["cell"] = m.coverage.cell
        models.append(row)
    return json_safe({
        "format": "qdeploy-profile",
        "version": SCHEMA_VERSION,
        "reference": report.models[0].name if report.models else None,
        "reference_backend": report.reference_backend,
        "accuracy_basis": report.accuracy_basis(),
        "input_basis": report.input_basis,
        "backends": list(report.config.backends),
        "timing_mode": report.timing_mode,
        "ratio_statistic": ratio_statistic(report),
        "machine": report.machine,
        "config": _config_dict(report.config),
        "inputs": {k: list(v) for k, v in report.inputs.items()},
        "models": models,
        "skipped": [asdict(s) for s in report.skipped],
    })


def _config_dict(config: Any) -> dict[str, Any]:
    """``asdict`` of the config with paths as strings, so ``to_dict()`` is plain JSON."""
    out = asdict(config)
    if out.get("data") is not None:
        out["data"] = str(out["data"])
    return out


def upgrade_profile_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``profile.json`` document in the current schema (version 1 files gain the version 2
    keys with the values they implied: one backend, unknown precision, no coverage, nothing skipped)."""
    if data.get("format") != "qdeploy-profile":
        raise InputError("not a qdeploy profile report (no \"format\": \"qdeploy-profile\")",
                         "pass a profile.json written by `qdeploy profile`")
    version = data.get("version")
    if version == SCHEMA_VERSION:
        return copy.deepcopy(data)
    if version != 1:
        raise InputError(f"profile.json version {version} is not readable by this qdeploy "
                         f"(reads 1..{SCHEMA_VERSION})", "upgrade qdeploy or re-run `qdeploy profile`")
    out = copy.deepcopy(data)
    backend = out.get("machine", {}).get("backend", "ort-cpu")
    out.update(version=SCHEMA_VERSION, reference_backend=backend, backends=[backend], skipped=[])
    out.setdefault("config", {}).setdefault("backends", [backend])
    for row in out.get("models", []):
        for key, value in (("backend", backend), ("precision", "unknown"), ("coverage", None),
                           ("variant", None), ("note", "")):
            row.setdefault(key, value)
    return out


def render_table(report: ProfileReport, width: int | None = None) -> Group:
    """:func:`machine_line`, what accuracy was measured on, a rich table of :func:`summary_rows`, and a
    caption saying how to read it.

    One row per model; when ``width`` (the console's) is too narrow for the 12 columns, the table is
    transposed (one column per model) so no number is cut off.
    """
    from rich.console import Group
    from rich.text import Text

    notes = [Text(f"- {note}") for note in row_notes(report, inline_notes=False)]
    return Group(Text(machine_line(report), style="bold"), Text(report.accuracy_basis()), _table(report, width),
                 *notes, Text(caption(report)))


def _table(report: ProfileReport, width: int | None) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    cells = summary_rows(report, inline_notes=False)
    rows = [[Text(cell) for cell in row] for row in cells]  # Text: no markup in file names
    if width is not None and width < _WIDE_TABLE_MIN_WIDTH:
        rows = [row for row, raw in zip(rows, cells, strict=True) if raw[4] != "skipped"]  # see the notes
        table.add_column("", no_wrap=True)
        for row in rows:
            table.add_column(row[0], justify="right", no_wrap=True)
        for i, header in enumerate(HEADERS[1:], start=1):
            table.add_row(header, *(row[i] for row in rows))
        return table
    longest = max((len(row[0]) for row in cells), default=5)
    table.add_column(HEADERS[0], min_width=min(longest, 24), overflow="fold")
    for header in HEADERS[1:]:
        justify = "left" if header in ("backend", "precision") else "right"
        table.add_column(header, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def render_markdown(report: ProfileReport) -> str:
    """A GitHub-markdown table with the machine line and the accuracy basis above, the caption below."""
    lines = [f"**{machine_line(report)}**", "", report.accuracy_basis(), "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * (len(HEADERS) - 3)) + "|"]
    for row in summary_rows(report):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    notes = row_notes(report)
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    lines += ["", caption(report), ""]
    return "\n".join(lines)
