"""`qdeploy export`: options -> ExportConfig -> qdeploy.export.export_model -> summary or JSON.

torch is imported only when the command runs (through the library), so `qdeploy --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from qdeploy_cli._common import console, input_range_callback, parse_shape, print_json

if TYPE_CHECKING:
    from qdeploy.export import ExportResult

__all__ = ["export_cmd", "result_dict"]


def _shapes_callback(ctx: click.Context, param: click.Parameter,
                     values: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """``--input-shape`` values (repeatable, ';'-separated) -> one shape per positional input."""
    shapes = []
    for item in (tok for v in values for tok in v.replace(";", " ").split()):
        if ":" in item:
            raise click.BadParameter(f"{item!r}: export inputs are positional, give bare shapes in forward() "
                                     "argument order, e.g. --input-shape 1,3,64,64 --input-shape 1,1")
        shapes.append(parse_shape(item))
    return tuple(shapes)


def _zoo_epilog() -> str:
    from qdeploy_models.zoo import ZOO

    lines = [f"  {name:<10} {ZOO.get(name).description}" for name in ZOO.names()]
    return "\b\nZoo models:\n" + "\n".join(lines)


@click.command("export", epilog=_zoo_epilog())
@click.argument("spec")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the .onnx file (manifest.json is written beside it).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="SHAPE", callback=_shapes_callback,
              help="Shape of each forward() input in order, e.g. 1,3,64,64; repeat the option or separate "
                   "with ';' for several inputs. Optional for zoo models and builders that return inputs.")
@click.option("--dynamic-hw", is_flag=True, help="Let height and width (last two axes of image inputs) vary.")
@click.option("--dynamic-batch", is_flag=True, help="Let the batch size (axis 0) vary.")
@click.option("--opset", type=click.IntRange(min=17), default=18, show_default=True,
              help="ONNX opset (>= 17).")
@click.option("--simplify/--no-simplify", default=True, show_default=True,
              help="Run onnxsim after export (kept only if it still matches PyTorch).")
@click.option("--exporter", type=click.Choice(["auto", "dynamo", "torchscript"]), default="auto",
              show_default=True,
              help="auto: dynamo, falling back to TorchScript when dynamo fails (the reason is printed).")
@click.option("--input-range", "--range", "input_range", callback=input_range_callback, metavar="LOW,HIGH",
              default=None,
              help="Value range of the model's inputs: random values and parity photos are scaled to it "
                   "[default: the zoo model's, else 0,1].")
@click.option("--min-sqnr", type=float, default=60.0, show_default=True,
              help="Parity: lowest acceptable SQNR (dB) of ONNX Runtime vs PyTorch.")
@click.option("--max-abs-rel", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True,
              help="Parity: largest acceptable |ONNX - PyTorch| as a fraction of the output's range.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Image file or folder (png/jpg/bmp) the parity check feeds to image inputs (4-D, 1 or 3 "
                   "channels), cropped to the export shape [default: photos bundled with scikit-image].")
@click.option("--random-parity", is_flag=True,
              help="Check parity on uniform random inputs even for image inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Zoo models only: a state-dict file to load instead of the zoo's weights (required for "
                   "models whose public weights are not shipped when ../shared/weights does not have them).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def export_cmd(spec: str, output: Path, input_shapes: tuple[tuple[int, ...], ...], dynamic_hw: bool,
               dynamic_batch: bool, opset: int, simplify: bool, exporter: str,
               input_range: tuple[float, float] | None, min_sqnr: float, max_abs_rel: float,
               data: Path | None, random_parity: bool, seed: int, weights: Path | None, as_json: bool) -> None:
    """Export a PyTorch model (SPEC) to ONNX and check it against PyTorch.

    \b
    SPEC is one of:
      path/to/file.py:build     a function in a Python file that returns an nn.Module,
                                or (module, example_inputs)
      package.module:build      the same, from an importable module
      abpn-x3                   a zoo model (list below); ships its input shape and weights
      model.pt2                 a program saved with torch.export.save

    \b
    The dynamo exporter is tried first; if it fails (e.g. Python `if` on tensor values)
    the TorchScript exporter is used and the reason is printed. onnxsim simplifies the
    graph. Every export ends with a parity check: ONNX Runtime CPU vs PyTorch (and at a
    second size with --dynamic-hw/--dynamic-batch); a mismatch is an error that names
    SQNR and max abs error. Image inputs (4-D, 1 or 3 channels) get photos (--data DIR,
    else bundled ones), resized and cropped to the shape and scaled to --input-range,
    because trained image nets can blow up on noise; other inputs get seeded random
    values. A manifest.json beside OUTPUT records the source, input shapes, exporter,
    opset and parity numbers, and what the check was fed.

    \b
    Examples:
      qdeploy export abpn-x3 --dynamic-hw -o exports/abpn/model.onnx
      qdeploy export my_net.py:build --input-shape 1,3,128,128 -o exports/net/model.onnx
      qdeploy export mypkg.models:make_unet --input-shape "1,3,64,64;1,1" -o unet.onnx
      qdeploy export net.pt2 --exporter dynamo --opset 17 --no-simplify -o net.onnx
      qdeploy export pan.py:build --input-shape 1,3,64,64 --data train_lr/ -o pan.onnx
      qdeploy export ngswin-x2 --dynamic-hw --weights NGswin_x2.pth -o exports/ngswin/model.onnx
    """
    from qdeploy.export import ExportConfig, ParityTolerance, export_model

    config = ExportConfig(spec=spec, output=output, input_shapes=input_shapes, dynamic_batch=dynamic_batch,
                          dynamic_hw=dynamic_hw, opset=opset, simplify=simplify, exporter=exporter,
                          parity=ParityTolerance(min_sqnr_db=min_sqnr, max_abs_rel=max_abs_rel), seed=seed,
                          input_range=input_range, data=data, random_parity=random_parity, weights=weights)
    result = export_model(config)
    if as_json:
        print_json(result_dict(result))
    else:
        _print_summary(result)


def result_dict(result: ExportResult) -> dict[str, Any]:
    """The ``--json`` document: paths, how it was exported, tensor specs and the parity report."""
    spec = lambda s: {"name": s.name, "shape": list(s.shape), "dtype": s.dtype}
    return {
        "path": str(result.path),
        "bytes": result.path.stat().st_size,
        "source": result.source,
        "kind": result.kind,
        "exporter": result.exporter_used,
        "fallback_reason": result.fallback_reason,
        "opset": result.opset,
        "simplified": result.simplified,
        "simplify_note": result.simplify_note,
        "inputs": [spec(s) for s in result.input_specs],
        "outputs": [spec(s) for s in result.output_specs],
        "parity": result.parity.to_dict(),
        "module_names": result.named_values,
        "manifest": str(result.manifest) if result.manifest else None,
    }


def _fmt(specs: list[Any]) -> str:
    dims = lambda s: ", ".join("?" if d is None else str(d) for d in s.shape)
    return ", ".join(f"{s.name} {s.dtype} [{dims(s)}]" for s in specs)


def _print_summary(result: ExportResult) -> None:
    from rich.markup import escape

    out = console()
    size_kib = result.path.stat().st_size / 1024
    if result.fallback_reason:
        out.print(f"[yellow]exported with the TorchScript exporter because the dynamo exporter failed: "
                  f"{escape(result.fallback_reason)}[/yellow]")
    if result.simplify_note:
        out.print(f"[yellow]{escape(result.simplify_note)}[/yellow]")
    report = result.parity
    sizes = list(dict.fromkeys("; ".join("x".join(map(str, s)) for s in c.input_shapes)
                               for c in report.checks))
    allowed = max((c.max_abs_allowed for c in report.checks), default=float("nan"))
    rows = [
        ("model", f"{result.source} ({result.kind})"),
        ("exporter", f"{result.exporter_used}, opset {result.opset}"
                     + (", simplified with onnxsim" if result.simplified else ", not simplified")),
        ("inputs", _fmt(result.input_specs)),
        ("outputs", _fmt(result.output_specs)),
        ("parity", f"ORT CPU vs PyTorch: SQNR {report.worst_sqnr_db:.1f} dB "
                   f"(>= {report.tolerance.min_sqnr_db:g}), max abs error {report.worst_max_abs_error:.3g} "
                   f"(<= {allowed:.3g}) at {', '.join(sizes)}"),
        ("fed", report.inputs),
        ("names", f"{result.named_values} tensors named after their PyTorch modules" if result.named_values
                  else "no PyTorch module names recorded: tables show ONNX names"),
        ("file", f"{result.path} ({size_kib:,.1f} KiB)"),
        ("manifest", str(result.manifest)),
    ]
    out.print(f"[green]exported[/green] {escape(str(result.path))}")
    for key, value in rows:
        out.print(f"  [bold]{key:<9}[/bold] {escape(value)}")
