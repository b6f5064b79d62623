"""`qdeploy eval`: accuracy on standard benchmarks; `eval sr` maps options to qdeploy.sr.evaluate_sr."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from qdeploy_cli._common import PixelRange, console, print_json

__all__ = ["DATASET_HINT", "eval_group", "sr_cmd"]

#: Where the standard SR benchmarks come from (qdeploy never downloads or bundles them).
DATASET_HINT = ("Set5/Set14/B100/Urban100 are not shipped with qdeploy: get the EDSR benchmark pack "
                "(benchmark.tar, ~250 MB, https://cv.snu.ac.kr/research/EDSR/benchmark.tar, also used by "
                "BasicSR-style repos), unpack it and pass one set's folder, e.g. --dataset benchmark/Set5 "
                "(it holds HR/*.png and LR_bicubic/X2..X4/)")


@click.group("eval", context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Score models on standard benchmarks with the protocol papers use.

    \b
    Subcommands:
      sr   super-resolution: PSNR/SSIM on the Y channel over Set5/Set14/B100/Urban100-style folders
    """


@eval_group.command("sr", short_help="Super-resolution PSNR/SSIM (Y channel) of ONNX models.")
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Path(path_type=Path), required=True,
              help="Benchmark folder with HR/*.png (+ optional LR_bicubic/X{S}/<name>x{S}.png).")
@click.option("--scale", type=click.IntRange(min=1), required=True, help="SR factor S (2, 3, 4, ...).")
@click.option("--range", "--input-range", "value_range", type=PixelRange(), default=None, metavar="0-255|0-1",
              help="Pixel range the model takes and returns: 0-255 or 0-1 (0,255 / 0..255 / 255 work too). "
                   "Default: what `qdeploy export` recorded for the first model, else 0-255.")
@click.option("--color", type=click.Choice(["rgb", "y"]), default=None,
              help="What the models take and return: rgb, or y (Y channel: SRCNN/ESPCN/FSRCNN style). "
                   "Default: from the input's channels (1 = y, 3 = rgb).")
@click.option("--save-dir", type=click.Path(path_type=Path), default=None,
              help="Write every output image to DIR/<model>/<image>.png (Y models: Cb/Cr from bicubic).")
@click.option("--rgb-psnr", is_flag=True,
              help="Also report RGB PSNR with a 1-pixel border crop (ABPN's metric).")
@click.option("--max-images", type=click.IntRange(min=1), default=None, help="Use only the first N images.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--backend", default="ort-cpu", show_default=True, help="ort-cpu or ort-cuda.")
@click.option("--per-image", is_flag=True, help="Also print a per-image PSNR-Y/SSIM-Y table.")
@click.option("--graph-optimization", type=click.Choice(["all", "extended", "basic", "disable"]), default="all",
              show_default=True,
              help="ONNX Runtime graph optimization: 'all' runs the fused integer kernels a deployment runs; "
                   "'basic' keeps Q/DQ as plain math (the accuracy of a W4A4/W3A3 simulation graph, which no "
                   "CPU kernel runs).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the full report (per-image values too) as JSON on stdout.")
def sr_cmd(models: tuple[Path, ...], dataset: Path, scale: int, value_range: int | None, color: str | None,
           save_dir: Path | None, rgb_psnr: bool, max_images: int | None, threads: int | None, backend: str,
           per_image: bool, graph_optimization: str, as_json: bool) -> None:
    """Super-resolution PSNR/SSIM of MODELS (.onnx, dynamic H/W) on a benchmark folder.

    \b
    Dataset layout (the EDSR "benchmark" pack, benchmark.tar from
    https://cv.snu.ac.kr/research/EDSR/benchmark.tar; qdeploy does not ship or download it):
      DIR/HR/<name>.png                      ground truth (RGB or grayscale)
      DIR/LR_bicubic/X<S>/<name>x<S>.png     LR input (optional: else made with MATLAB-exact bicubic)

    \b
    Protocol (what SR papers report): each whole LR image is fed at batch 1 as NCHW float32 RGB;
    the output is clamped to --range, scaled to 0..255 and rounded to uint8; HR is cropped to a
    multiple of S; PSNR and SSIM (11x11 Gaussian, sigma 1.5) are computed on the BT.601 Y channel
    after shaving S pixels per border. A bicubic row (MATLAB imresize of LR) is always added as a
    sanity baseline (Set5 x3: 30.40 dB). ΔPSNR is each row minus the FIRST model, so put the
    float model first and read the quantized model's cost directly.

    \b
    Y-channel models (1 input channel, or --color y): the input is the Y of the LR image
    (BT.601 as MATLAB rgb2ycbcr, 16..235, divided by 255 for --range 1); the output Y is
    rounded to uint8 and scored directly; saved images take Cb/Cr from bicubic upscaling.

    \b
    Examples:
      qdeploy eval sr abpn.onnx abpn.qdq.onnx --dataset benchmark/Set5 --scale 3
      qdeploy eval sr abpn.onnx --dataset benchmark/B100 --scale 3 --max-images 10 --json
      qdeploy eval sr --dataset benchmark/Set14 --scale 4      (bicubic baseline only)
      qdeploy eval sr srcnn_y.onnx --dataset benchmark/Set5 --scale 3 --range 0-1 --color y
    """
    from qdeploy.errors import InputError
    from qdeploy.sr import SREvalConfig, evaluate_sr, render_per_image_table, render_table

    if not dataset.exists():
        raise InputError(f"dataset folder not found: {dataset}", DATASET_HINT)
    if value_range is None:
        value_range = _recorded_range(models, as_json)
    config = SREvalConfig(dataset=dataset, scale=scale, value_range=value_range, backend=backend,
                          threads=threads, rgb_psnr=rgb_psnr, max_images=max_images, color=color,
                          save_dir=save_dir, graph_optimization=graph_optimization)
    with _progress_bar() as progress:
        report = evaluate_sr(list(models), config, progress=progress)
    for row in report.models:
        if row.note:  # an auto-detected Y model: one line, on stderr under --json
            console(stderr=as_json).print(row.note, markup=False)
    if as_json:
        print_json(report.to_dict())
        return
    out = console()
    out.print(render_table(report))
    if per_image:
        out.print(render_per_image_table(report))
    if save_dir is not None:
        out.print(f"wrote output images to {save_dir}/<model>/<image>.png", markup=False)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar on stderr (stdout stays clean for --json), one bar per row."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console(stderr=True), transient=True) as bar:

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        yield update


def _recorded_range(models: tuple[Path, ...], quiet: bool) -> int:
    """``--range`` when not given: the export's record of the first model (said on stderr), else 255.

    Why: a float model fed the wrong range scores below bicubic and every delta is garbage; the export
    already knows the range (calibrate and profile read the same record).
    """
    from qdeploy.artifacts import exported_pixel_range

    found = exported_pixel_range(models[0]) if models else None
    if found is None:
        return 255
    console(stderr=True).print(f"pixel range {found} (recorded by qdeploy export for {models[0].name}; "
                               "--range to change)", markup=False)
    return 1 if found == "0-1" else 255
