"""`qdeploy analyze`: which quantized tensor hurts the output? (qdeploy.analyze, one switchable session)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from qdeploy_cli._common import PixelRange

__all__ = ["analyze_cmd"]


@click.command(
    "analyze", short_help="Rank quantized tensors by the error they add; optional mixed precision."
)
@click.argument("float_model", type=click.Path(path_type=Path))
@click.argument("qdq_model", type=click.Path(path_type=Path))
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Held-out inputs: image folder, .npy, or .npz keyed by input name (not the calibration set).",
)
@click.option(
    "--num-samples",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Samples to analyse on (each configuration runs all of them).",
)
@click.option(
    "--crop",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Square crop per image (analysis time grows with the pixels).",
)
@click.option(
    "--range",
    "--input-range",
    "value_range",
    type=PixelRange(as_text=True),
    metavar="0-255|0-1",
    default="0-1",
    show_default=True,
    help="Pixel value range the model expects (0,255 / 0..255 / 255 work too).",
)
@click.option("--color", type=click.Choice(["rgb", "y", "gray"]), default="rgb", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=None,
    help="The QDQ model's calibration cache: ranges for the histograms and for re-quantizing; with "
    "--target-sqnr the chosen precision map is written into it. Raised tensors take the 8-bit bounds a "
    "`calibrate --target-*` run stored in the cache; without them, the cache's own bounds, which a low-bit "
    "observer chose for its grid (for the best raise, use `calibrate --target-sqnr` instead).",
)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Rows of the table.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="ORT threads.")
@click.option(
    "--target-sqnr",
    type=float,
    default=None,
    metavar="DB",
    help="Also search a mixed precision meeting this output SQNR vs float (QDQ_MODEL = lowest bits).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="With --target-sqnr: write the mixed-precision QDQ model here.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write report.md, report.html (self-contained), analysis.json and the PNG plots here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON on stdout.")
def analyze_cmd(
    float_model: Path,
    qdq_model: Path,
    data: Path,
    num_samples: int,
    crop: int,
    value_range: str,
    color: str,
    seed: int,
    cache: Path | None,
    top: int,
    threads: int,
    target_sqnr: float | None,
    output: Path | None,
    report_dir: Path | None,
    as_json: bool,
) -> None:
    """Per quantized tensor of QDQ_MODEL: its SQNR vs FLOAT_MODEL's tensor, and the output SQNR when only
    it is quantized / only it is left float; ranked, most harmful first.

    \b
    All 2N+2 configurations run through ONE ONNX Runtime session (a Where switch behind every DQ,
    driven by a mask input), on plain Q/DQ math; see `qdeploy.analyze` for how it is made fast.

    \b
    Examples:
      qdeploy analyze model.onnx model.qdq.onnx --data heldout/ --report analysis/
      qdeploy analyze model.onnx model.w4a4.qdq.onnx --data heldout/ --cache model.w4a4.qdq.calib.json \\
          --target-sqnr 35 -o model.mixed.qdq.onnx --json
    """
    from qdeploy.errors import InputError

    if output is not None and target_sqnr is None:
        raise InputError(
            "-o writes the mixed-precision model of a search", "add --target-sqnr DB, or drop -o"
        )
    fm, qm, batches, ranges, cache_obj = _load(
        float_model, qdq_model, data, num_samples, crop, value_range, color, seed, cache
    )
    raise_ranges = cache_obj.raise_ranges() if cache_obj is not None else None
    result, plan = _run(fm, qm, batches, ranges, raise_ranges, threads, target_sqnr, quiet=as_json)
    _write(plan, output, cache, cache_obj, result, report_dir, top,
           _source(float_model, qdq_model, data, len(batches)) if report_dir is not None else None)
    if as_json:
        from qdeploy_cli._common import print_json

        print_json(
            {
                "analysis": result.to_dict(),
                "plan": plan.to_dict() if plan else None,
                "report": str(report_dir) if report_dir else None,
            }
        )
        return
    _print(result, plan, top)


def _load(
    float_model: Path,
    qdq_model: Path,
    data: Path,
    num_samples: int,
    crop: int,
    value_range: str,
    color: str,
    seed: int,
    cache: Path | None,
) -> tuple[Any, Any, list[Any], dict[str, Any], Any]:
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.calib.cache import load_cache
    from qdeploy.calib.data import DataConfig, iter_samples
    from qdeploy.graph.io import load_model

    fm, qm = load_model(float_model), load_model(qdq_model)
    specs = get_backend("ort-cpu").open(fm, SessionOptions(threads=1, graph_optimization="disable")).inputs
    images = data.is_dir() and not any(p.suffix in (".npy", ".npz") for p in data.iterdir())
    config = DataConfig(
        source=data,
        value_range=value_range,
        color=color,
        crop=crop if images else None,
        num_samples=num_samples,
        seed=seed,
    )
    batches = list(iter_samples(config, specs))
    cache_obj = load_cache(cache) if cache is not None else None
    return fm, qm, batches, dict(cache_obj.ranges) if cache_obj else {}, cache_obj


def _run(
    fm: Any,
    qm: Any,
    batches: list[Any],
    ranges: dict[str, Any],
    raise_ranges: dict[str, Any] | None,
    threads: int,
    target_sqnr: float | None,
    quiet: bool,
) -> tuple[Any, Any]:
    from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
    from qdeploy.analyze.search import PrecisionTarget, search_precision

    config = AnalyzeConfig(threads=threads)
    with _progress(quiet) as progress:
        result = analyze_sensitivity(fm, qm, batches, ranges=ranges, config=config, progress=progress)
    plan = None
    if target_sqnr is not None:
        plan = search_precision(
            fm,
            qm,
            batches,
            PrecisionTarget("sqnr", target_sqnr),
            ranges=raise_ranges,
            analysis=result,
            config=config,
        )
    return result, plan


def _source(float_model: Path, qdq_model: Path, data: Path, samples: int) -> dict[str, str]:
    """What the report names: the two models, the data and this very command."""
    from qdeploy_cli.main import command_line

    return {"float model": str(float_model), "QDQ model": str(qdq_model), "data": f"{data} ({samples} samples)",
            "command": command_line()}


def _write(
    plan: Any,
    output: Path | None,
    cache: Path | None,
    cache_obj: Any,
    result: Any,
    report_dir: Path | None,
    top: int,
    source: dict[str, str] | None = None,
) -> None:
    import dataclasses

    from qdeploy_cli._common import console

    from qdeploy.calib.cache import save_cache
    from qdeploy.graph.io import save_model

    note = console(stderr=True)
    if plan is not None and output is not None:
        save_model(plan.model, output)
        note.print(f"wrote {output}")
    if plan is not None and cache is not None:
        # the map stays keyed by ONNX names (ApplyPrecisionMapPass reads it); "modules" only helps a reader
        modules = {t.name: t.label or t.name for t in result.tensors}
        save_cache(cache, dataclasses.replace(cache_obj, precision_map=dict(plan.precision_map),
                                              extra={**cache_obj.extra, "modules": modules}))
        note.print(f"wrote the precision map into {cache}")
    if report_dir is not None:
        from qdeploy.analyze.report import write_analysis_report

        write_analysis_report(result, report_dir, plan, top, source)
        note.print(f"wrote {report_dir / 'report.html'}")


#: Console width from which the table shows every column (below it: the compact set and a legend).
_WIDE = 100
#: Narrowest tensor column: below it long paths would take more lines than they save.
_MIN_TENSOR = 16


def _print(result: Any, plan: Any, top: int) -> None:
    """The ranking table, readable at 80 columns: tensors by module path (ONNX name dimmed beneath).

    The full column set needs ~100 columns; narrower consoles get the columns that decide what to do
    (own SQNR, clipping, output SQNR with only this tensor quantized, share of the noise) and a legend;
    ``--report`` and ``--json`` always hold everything. Long module paths wrap at their dots.
    """
    from qdeploy_cli._common import console
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from qdeploy.analyze.report import _summary_lines

    out = console()
    wide = out.width >= _WIDE
    final = None if plan is None else plan.precision_map
    columns = _columns(wide, final is not None)
    rows = [(t, _cells(t, wide, final)) for t in result.tensors[:top]]
    others = sum(max([len(name), *(len(c[i]) for _, c in rows)]) for i, (name, _) in enumerate(columns) if i != 1)
    room = max(_MIN_TENSOR, out.width - others - 2 * len(columns))
    title = f"Most harmful quantized tensors (top {min(top, len(result.tensors))})"
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name, kwargs in columns:
        table.add_column(name, **kwargs)
    for t, cells in rows:
        label = t.label or t.name
        tensor = escape(_fold(label, room))
        if label != t.name:
            tensor += f"\n[dim]{escape(_fold(t.name, room))}[/dim]"
        table.add_row(cells[0], tensor, *cells[2:])
    out.print(table)
    if not wide:
        out.print("[dim]at: the grid analysed at; SQNR: the tensor vs float; only-q: output SQNR with only this "
                  "tensor quantized; share: of the output noise. All columns: --report DIR or --json.[/dim]")
    for line in _summary_lines(result, plan):
        out.print(line)


def _fold(text: str, width: int) -> str:
    """``text`` in lines of at most ``width``, broken after ``.``, ``/`` or a space where it can be."""
    lines, line = [], ""
    for part in re.findall(r"[^./ ]*[./ ]|[^./ ]+$", text):
        if line and len(line) + len(part.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        while len(part) > width:
            lines.append(part[:width])
            part = part[width:]
        line += part
    return "\n".join([*lines, line.rstrip()] if line else lines)


def _columns(wide: bool, final: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(header, rich column options) of the table; column 1 is the tensor. "at" is the grid the tensor was
    analysed at; "final" (with a precision search) the precision the search left it at."""
    num = {"justify": "right", "no_wrap": True}
    cols: list[tuple[str, dict[str, Any]]] = [
        ("#", num),
        ("tensor", {"overflow": "fold", "min_width": _MIN_TENSOR}),
        ("at", {"no_wrap": True}),
        *([("final", {"no_wrap": True})] if final else []),
        ("SQNR dB", num),
    ]
    if wide:
        cols.append(("local dB", num))
    cols += [("clip %", num), ("only-q dB", num)]
    if wide:
        cols.append(("only-f dB", num))
    return [*cols, ("share", num)]


def _cells(t: Any, wide: bool, final: dict[str, str] | None = None) -> list[str]:
    """One row as plain text (the tensor cell is filled in by :func:`_print`)."""
    from qdeploy.analyze.report import _fmt

    cells = [str(t.rank), "", f"{'W' if t.kind == 'weight' else 'A'}{t.bits}",
             *([final.get(t.name, "-")] if final is not None else []), _fmt(t.sqnr_db)]
    if wide:
        cells.append(_fmt(t.local_sqnr_db))
    cells += [f"{100 * t.clipped_fraction:.3g}", _fmt(t.only_quantized_sqnr_db)]
    if wide:
        cells.append(_fmt(t.only_float_sqnr_db))
    return [*cells, f"{t.contribution:.3g}"]


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """The sweep's progress on stderr (stdout stays clean for --json): a bar on a terminal, plain lines
    in a log (the sweep also announces its estimate after the first tensor)."""
    from qdeploy_cli._progress import progress_reporter

    with progress_reporter("sensitivity sweep", quiet=quiet, unit="runs") as report:
        yield report
