"""`qdeploy quantize-weights`: options -> WeightOnlyConfig -> quantize_weights_only -> summary (no data)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["quantize_weights_cmd"]


@click.command("quantize-weights")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Where to write the model.")
@click.option("--bits", type=click.Choice(["4", "8"]), default="4", show_default=True, help="Weight bits.")
@click.option("--block-size", type=click.Choice(["16", "32", "64", "128", "256"]), default="32",
              show_default=True, help="Weights per scale, along the reduction (K) axis.")
@click.option("--asymmetric", is_flag=True, help="UINT4 codes with zero points (TensorRT needs the default, "
              "symmetric INT4).")
@click.option("--no-clip-search", is_flag=True, help="Scale = max|w| / 7 per block, no clipping search.")
@click.option("--include", multiple=True, metavar="REGEX", help="Only quantize nodes whose name matches.")
@click.option("--exclude", multiple=True, metavar="REGEX", help="Never quantize nodes whose name matches.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def quantize_weights_cmd(model: Path, output: Path, bits: str, block_size: str, asymmetric: bool,
                         no_clip_search: bool, include: tuple[str, ...], exclude: tuple[str, ...],
                         as_json: bool) -> None:
    """Store MatMul/Gemm weights block-wise in INT4 (DequantizeLinear with block_size, opset 21).

    \b
    Weight-only: activations stay float, no calibration data is needed. This is the form TensorRT's
    INT4 weight path reads (`qdeploy build OUT --precision int4-weights`) and that ONNX Runtime CPU
    turns into MatMulNBits at its default optimization level (a win when memory-bound: few tokens).

    \b
    Examples:
      qdeploy quantize-weights exports/swinir/model.onnx -o exports/swinir/model.int4w.onnx
      qdeploy quantize-weights model.onnx --block-size 128 --exclude "head" -o model.int4w.onnx
    """
    from qdeploy_cli._common import console, node_modules, print_json

    from qdeploy.errors import InputError
    from qdeploy.graph.io import load_model, save_model
    from qdeploy.quant.weight_only import WeightOnlyConfig, quantize_weights_only, weight_only_summary

    if output.resolve() == model.resolve():
        raise InputError("the output would overwrite the input model", "choose another -o path")
    config = WeightOnlyConfig(bits=int(bits), block_size=int(block_size), symmetric=not asymmetric,
                              include_nodes=include, exclude_nodes=exclude, clip_search=not no_clip_search)
    quantized = quantize_weights_only(load_model(model), config)
    save_model(quantized, output)
    summary = weight_only_summary(quantized)
    sizes = {"input_bytes": model.stat().st_size, "output_bytes": output.stat().st_size}
    if as_json:
        print_json({"output": str(output), **sizes, "summary": summary})
        return
    con = console()
    done = summary.get("quantized", [])
    skipped = summary.get("skipped", {})
    con.print(f"quantized {len(done)} weights to INT{bits} (block {block_size}); {len(skipped)} left float")
    for line in _skipped_lines(skipped, modules=node_modules(quantized)):
        con.print(line, markup=False)
    ratio = sizes["input_bytes"] / max(sizes["output_bytes"], 1)
    change = f"{ratio:.2f}x smaller" if ratio >= 1 else f"{1 / ratio:.2f}x larger: the weights are too small to gain"
    con.print(f"wrote {output}  ({sizes['input_bytes'] / 1024:,.0f} KiB -> {sizes['output_bytes'] / 1024:,.0f} KiB,"
              f" {change})")


#: How many names of the weights one reason left float the summary shows; the rest are counted, all are in --json.
SHOWN_PER_REASON = 3


def _skipped_lines(skipped: dict[str, str], shown: int = SHOWN_PER_REASON,
                   modules: dict[str, str] | None = None) -> list[str]:
    """One line per reason a weight was left float, most frequent first: how many, the reason, the first
    ``shown`` names and ``+N more`` (so a cut list is never mistaken for the whole one), e.g.
    ``10 left float: too small: a, b, c (+7 more; all of them: --json)``. (One reason repeated on ten
    lines read as ten problems.)"""
    by_reason: dict[str, list[str]] = {}
    for node, reason in skipped.items():
        by_reason.setdefault(reason, []).append(node)
    lines = []
    for reason, nodes in sorted(by_reason.items(), key=lambda item: -len(item[1])):
        more = f" (+{len(nodes) - shown} more; all of them: --json)" if len(nodes) > shown else ""
        names = [_named(n, modules or {}) for n in nodes[:shown]]
        lines.append(f"  {len(nodes)} left float: {reason}: {', '.join(names)}{more}")
    return lines


def _named(node: str, modules: dict[str, str]) -> str:
    """``layers.0.attn.qkv (node_MatMul_12)``: the module the node belongs to, then its ONNX name."""
    module = modules.get(node)
    return node if not module or module == node else f"{module} ({node})"
