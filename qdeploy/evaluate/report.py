"""Rendering profiles for people: a rich table for the terminal and a markdown table for READMEs/PRs.

Both views share :func:`summary_rows`, so the terminal and the markdown never disagree. Non-finite
values (SQNR of identical outputs) show as "inf"; in JSON they are the strings "inf"/"-inf"/"nan"
(:func:`json_safe`), because strict JSON has no infinity and null would mean "not measured".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

    from qdeploy.evaluate.profile import ModelProfile, ProfileReport

__all__ = [
    "HEADERS",
    "format_bytes",
    "format_ms",
    "json_safe",
    "machine_line",
    "render_markdown",
    "render_table",
    "summary_rows",
]

HEADERS = ("model", "size", "p50 ms", "p90 ms", "p99 ms", "vs 1st", "runs/s", "peak mem",
           "SQNR dB", "PSNR dB", "cosine", "max abs")
_WIDE_TABLE_MIN_WIDTH = 120  # below this many console columns, render_table transposes


def json_safe(data: Any) -> Any:
    """Recursively replace non-finite floats by "inf"/"-inf"/"nan" and tuples by lists (strict JSON)."""
    if isinstance(data, float) and not math.isfinite(data):
        return "nan" if math.isnan(data) else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {str(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    return data


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


def summary_rows(report: ProfileReport) -> list[list[str]]:
    """One row of formatted cells per model, in :data:`HEADERS` order (accuracy: worst output)."""
    rows = []
    for m in report.models:
        acc = m.worst_accuracy()
        lat = m.latency_ms
        rows.append([
            m.name,
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
        ])
    return rows


def machine_line(report: ProfileReport) -> str:
    """One line naming what the numbers depend on (CPU, VNNI, runtime, backend, threads, timing mode)."""
    m = report.machine
    vnni = {True: "yes", False: "no", None: "unknown"}[m.get("vnni")]
    return (f"{m.get('cpu_model')} ({m.get('usable_cores')} cores usable, VNNI {vnni}), onnxruntime "
            f"{m.get('onnxruntime')}, backend {m.get('backend')}, threads {m.get('threads')}, "
            f"{report.timing_mode} timing")


def _caption(report: ProfileReport) -> str:
    ref = report.models[0].name if report.models else "-"
    how = "median per-round ratio" if report.timing_mode == "interleaved" else "ratio of p50s"
    return (f"reference: {ref}. 'vs 1st' = latency {how} (<1 is faster). Accuracy = worst output vs the "
            f"reference on the same inputs. peak mem = RSS growth of this process while the model loaded "
            f"and ran once.")


def render_table(report: ProfileReport, width: int | None = None) -> Group:
    """:func:`machine_line`, a rich table of :func:`summary_rows`, and a caption saying how to read it.

    One row per model; when ``width`` (the console's) is too narrow for the 12 columns, the table is
    transposed (one column per model) so no number is cut off.
    """
    from rich.console import Group
    from rich.text import Text

    return Group(Text(machine_line(report), style="bold"), _table(report, width), Text(_caption(report)))


def _table(report: ProfileReport, width: int | None) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    rows = [[Text(cell) for cell in row] for row in summary_rows(report)]  # Text: no markup in file names
    if width is not None and width < _WIDE_TABLE_MIN_WIDTH:
        table.add_column("", no_wrap=True)
        for row in rows:
            table.add_column(row[0], justify="right", no_wrap=True)
        for i, header in enumerate(HEADERS[1:], start=1):
            table.add_row(header, *(row[i] for row in rows))
        return table
    longest = max((len(m.name) for m in report.models), default=5)
    table.add_column(HEADERS[0], min_width=min(longest, 24), overflow="fold")
    for header in HEADERS[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def render_markdown(report: ProfileReport) -> str:
    """A GitHub-markdown table with the machine line above and the caption below."""
    lines = [f"**{machine_line(report)}**", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"]
    for row in summary_rows(report):
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    lines += ["", _caption(report), ""]
    return "\n".join(lines)
