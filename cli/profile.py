"""``qdeploy profile``: latency, memory and accuracy of ONNX models side by side on one or more backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from qdeploy_cli._common import RANGE_HELP, console, input_range_callback, print_json, shapes_callback

__all__ = ["profile_cmd"]

_EPILOG = """\b
Examples:
  qdeploy profile model.onnx model.qdq.onnx --input-shape 1,3,360,640
  qdeploy profile fp32.onnx int8.onnx --time-budget 20 --threads 4 --input-range 0-255 --data val_images/
  qdeploy profile model.onnx --input-shape x:1,3,64,64 --json -o runs/p.json | jq .models
  qdeploy profile fp32.onnx int8.onnx --backend ort-cpu --backend ort-cuda --fp16 --report runs/r
"""


@click.command("profile", epilog=_EPILOG)
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", "backends", multiple=True, default=("ort-cpu",), show_default=True,
              help="Runtime to profile on (ort-cpu, ort-cuda, tensorrt, ...); repeat for several. "
                   "Unavailable ones become skipped rows while one works.")
@click.option("--fp16", is_flag=True,
              help="Also profile an FP16 copy of every float32 model (float16 math, float32 inputs/outputs).")
@click.option("--input-shape", "input_shapes", multiple=True, callback=shapes_callback,
              metavar="[NAME:]SHAPE",
              help="Input shape, e.g. 1,3,360,640; NAME:SHAPE (repeatable) for several inputs. "
                   "Needed for dynamic dims.")
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed runs per model (rounds when interleaved).")
@click.option("--time-budget", "time_budget", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Time for as long as this instead of --iterations (at least 5 runs each).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Untimed runs per model before timing.")
@click.option("--threads", type=click.IntRange(min=1),
              help="Intra-op threads (default: the runtime's choice).")
@click.option("--input-range", "--range", "input_range", default=None, callback=input_range_callback,
              metavar="LOW-HIGH",
              help=f"Value range of the inputs: images are scaled to it, random inputs drawn from it; {RANGE_HELP}. "
                   "Default: the range `qdeploy export` recorded for the first model, else 0-1.")
@click.option("--data", type=click.Path(exists=True, path_type=Path), metavar="DIR",
              help="Feed the image inputs your own images (a folder of png/jpg/bmp, or one file) instead of the "
                   "bundled photos.")
@click.option("--random-inputs", is_flag=True,
              help="Feed every input uniform random values in --input-range instead of images.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random inputs (all inputs with --random-inputs, else the non-image ones).")
@click.option("--graph-optimization", type=click.Choice(["all", "extended", "basic", "disable"]),
              default="all", show_default=True,
              help="Runtime graph optimization level ('all' = the real fused kernels).")
@click.option("--sequential", is_flag=True,
              help="Time models one after another instead of interleaved (less robust to machine noise).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON report here (atomically). Default: no file.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Also write the table as markdown here.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write DIR/report.md, DIR/report.html (self-contained, with charts) and DIR/profile.json.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the JSON report to stdout (table and progress go to stderr).")
@click.pass_context
def profile_cmd(ctx: click.Context, models: tuple[Path, ...], backends: tuple[str, ...], fp16: bool,
                input_shapes: Any, iterations: int, time_budget: float | None, warmup: int,
                threads: int | None, input_range: tuple[float, float] | None, data: Path | None,
                random_inputs: bool, seed: int, graph_optimization: str, sequential: bool, output: Path | None,
                markdown: Path | None, report_dir: Path | None, as_json: bool) -> None:
    """Profile ONNX MODELS side by side: latency, throughput, memory and accuracy.

    The FIRST model is the reference (normally the float export): every other model's speed is given as
    a latency ratio to it and its outputs are compared with the reference's on the same inputs (SQNR,
    PSNR, cosine, max abs error; the reference against itself shows inf / 1 / 0).

    \b
    What the models are fed: image inputs (float, 4-D, 1 or 3 channels) get natural images - your
    --data folder, else photos bundled with scikit-image (or images qdeploy renders) - resized and
    centre-cropped to the input shape and scaled to --input-range; other inputs get seeded uniform
    random values; --random-inputs feeds random values everywhere. The report says which, next to
    every accuracy number ("accuracy vs REF on BACKEND on ...").

    \b
    One report for several backends: rows are model x precision x backend. Precision is read from the
    graph: fp32, fp16, int8-qdq, int4-weights, or e.g. "W4A4 sim (8-bit storage)" for a sub-8-bit
    accuracy simulation (its latency is an 8-bit graph's). The INT8 column counts the quantized layers
    that will run as INT8 kernels on that backend (ort-cuda: 0, it has no static INT8 kernels).
    Accuracy is always against the first model on the first backend that runs.

    \b
    Side-by-side timing: machine load drifts over seconds, so timing model A and then model B would
    mix that drift into the comparison. By default all models are opened together and every round
    runs each model once (rotating the order); the reported ratio is the median of per-round ratios,
    which cancels the drift. Use --sequential to time one model at a time instead.

    \b
    Peak memory is the growth of this process's RSS while each model is loaded and run once (models
    are loaded one at a time). The JSON report, with CPU model, VNNI support, runtime version and
    threads, is written only where asked: -o FILE, --report DIR, or stdout with --json.
    """
    from qdeploy.evaluate.profile import ProfileConfig, profile_models
    from qdeploy.evaluate.report import render_table

    source = ctx.get_parameter_source("iterations")
    if time_budget is not None and source is not None and source.name == "COMMANDLINE":
        raise click.UsageError("give either --iterations or --time-budget, not both")
    if random_inputs and data is not None:
        raise click.UsageError("give either --data (images to feed) or --random-inputs, not both")
    config = ProfileConfig(backends=backends, fp16=fp16, input_shapes=input_shapes, warmup=warmup,
                           iterations=iterations, time_budget_s=time_budget, threads=threads, seed=seed,
                           input_range=input_range or _default_range(models[0], quiet=as_json),
                           graph_optimization=graph_optimization, interleave=not sequential,
                           inputs="random" if random_inputs else "natural", data=data)
    err = console(stderr=True)
    with _ProgressBar(err) as progress:
        report = profile_models(list(models), config, progress=progress)
    result = report.to_dict()
    out = console(stderr=as_json)
    out.print(render_table(report, width=out.width))
    _write_outputs(report, result, output, markdown, report_dir)
    if as_json:
        print_json(result)


def _default_range(model: Path, quiet: bool) -> tuple[float, float]:
    """``--input-range`` when not given: what ``qdeploy export`` recorded for ``model`` (said on stderr),
    else 0-1. Natural images scaled to the wrong range would measure accuracy off the model's domain."""
    from qdeploy.artifacts import exported_pixel_range

    found = exported_pixel_range(model) if model.is_file() else None
    if found is None:
        return 0.0, 1.0
    if not quiet:
        click.echo(f"input range {found} (recorded by qdeploy export in {model.parent / 'manifest.json'}; "
                   f"--input-range to change)", err=True)
    lo, hi = found.split("-")
    return float(lo), float(hi)


def _write_outputs(report: Any, data: dict[str, Any], output: Path | None, markdown: Path | None,
                   report_dir: Path | None) -> None:
    """Write profile.json, the markdown table and the report folder atomically and say where they went
    (on stderr). Plain ``click.echo`` rather than rich, so paths are never wrapped or read as markup.
    """
    from qdeploy.artifacts import atomic_path, write_json

    if report_dir is not None:
        from qdeploy.evaluate.report_html import write_report

        for path in write_report(report, report_dir).values():
            click.echo(f"wrote {path}", err=True)
    if output is not None:
        write_json(output, data)
        click.echo(f"wrote {output}", err=True)
    if markdown is not None:
        with atomic_path(markdown) as tmp:
            tmp.write_text(report.to_markdown())
        click.echo(f"wrote {markdown}", err=True)


class _ProgressBar:
    """A rich progress bar on stderr driven by ``profile_models``'s ``progress(stage, done, total)``."""

    def __init__(self, err: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        self._task: Any = None
        self._stage = ""

    def __enter__(self) -> _ProgressBar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self._stage:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._task = self._bar.add_task(stage, total=total)
            self._stage = stage
        self._bar.update(self._task, completed=done, total=total)
