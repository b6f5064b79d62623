"""`qdeploy build`: ONNX -> serialized TensorRT / TensorRT-RTX engine (qdeploy.trt.build_engine)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["build_cmd"]


@click.command("build")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp16", "int4-weights", "best", "fp32"]),
    default="int8",
    show_default=True,
    help="int8 needs a QDQ model (qdeploy calibrate --preset tensorrt-int8); "
    "best = INT8 where quantized + FP16 elsewhere.",
)
@click.option(
    "--flavor",
    type=click.Choice(["tensorrt", "tensorrt-rtx"]),
    default="tensorrt-rtx",
    show_default=True,
    help="tensorrt-rtx also builds on a machine without a GPU (ahead of time).",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Engine file to write.")
@click.option(
    "--input-shape",
    "input_shape",
    multiple=True,
    metavar="[NAME:]MIN-OPT-MAX",
    help="Shape range of a dynamic input, e.g. input:1x3x64x64-1x3x360x640-1x3x720x1280 (or one shape).",
)
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Timing cache file, created or reused (TensorRT-RTX ignores its content).",
)
@click.option(
    "--engine-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of cached engines: an identical build is returned from here.",
)
@click.option("--workspace-mb", type=int, default=None, help="Builder workspace limit in MiB.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def build_cmd(
    model: Path,
    precision: str,
    flavor: str,
    output: Path,
    input_shape: tuple[str, ...],
    timing_cache: Path | None,
    engine_cache: Path | None,
    workspace_mb: int | None,
    as_json: bool,
) -> None:
    """Build a TensorRT (or TensorRT-RTX) engine from MODEL (.onnx).

    \b
    Examples:
      qdeploy build model.trt.qdq.onnx --precision int8 -o model.plan \\
          --input-shape input:1x3x64x64-1x3x360x640-1x3x720x1280
      qdeploy build model.onnx --precision fp16 --flavor tensorrt --timing-cache trt.cache -o model.fp16.plan
    """
    from qdeploy_cli._common import console, print_json

    from qdeploy.errors import InputError
    from qdeploy.trt import BuildConfig, build_engine, parse_shape_ranges

    try:
        config = BuildConfig(
            precision=precision,
            flavor=flavor,
            shapes=parse_shape_ranges(input_shape),
            timing_cache=timing_cache,
            engine_cache_dir=engine_cache,
            workspace_mb=workspace_mb,
        )
    except ValueError as exc:
        raise InputError(str(exc), "see `qdeploy build --help`") from None
    if not model.exists():
        raise InputError(f"model file not found: {model}", "check the path")
    _require_flavor(flavor)
    result = build_engine(model, config, output=output)
    if as_json:
        print_json(result.to_dict())
        return
    from qdeploy.progress import format_elapsed

    con = console()
    note = "from the engine cache" if result.cached else f"{len(result.layers)} network layers"
    con.print(
        f"built {flavor} {precision} engine ({len(result.engine) / 1e6:.2f} MB, {note}, "
        f"{'strongly typed' if result.strongly_typed else 'flag-typed'}, device {result.device}, "
        f"{'TensorRT-RTX' if flavor == 'tensorrt-rtx' else 'TensorRT'} {result.trt_version}) "
        f"in {format_elapsed(result.seconds, tenths=True)}"
    )
    con.print(f"wrote {output}")


#: What each --flavor needs besides the pip extra that installs it.
_FLAVOR_NOTES = {
    "tensorrt-rtx": "TensorRT-RTX builds engines ahead of time, no GPU needed",
    "tensorrt": "TensorRT 10.x; needs an NVIDIA GPU and driver",
}


def _require_flavor(flavor: str) -> None:
    """Fail early, naming the qdeploy extra to install, when the TensorRT flavour cannot be imported.

    The library's hint names the raw packages; a user of a qdeploy checkout wants the one extra that
    pins them (the same one ``scripts/setup.sh`` and pyproject.toml use).
    """
    from qdeploy.errors import BackendUnavailableError
    from qdeploy.trt import loader

    try:
        loader.import_trt(flavor)
    except BackendUnavailableError as exc:
        raise BackendUnavailableError(
            f"`qdeploy build --flavor {flavor}` needs {flavor}: {exc.message}",
            f'pip install -e ".[{flavor}]" in the qdeploy checkout (or pip install "qdeploy[{flavor}]"); '
            f"{_FLAVOR_NOTES[flavor]}",
        ) from None
