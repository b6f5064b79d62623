"""`qdeploy check`: will the QDQ placement of MODEL run INT8 on a target? (qdeploy.trt.check_placement)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["check_cmd"]


@click.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--target",
    type=click.Choice(["tensorrt", "ort-cpu"]),
    default="tensorrt",
    show_default=True,
    help="Whose QDQ fusion rules to check against.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def check_cmd(model: Path, target: str, as_json: bool) -> None:
    """Report, per Conv/ConvTranspose/MatMul/Gemm of MODEL (a QDQ .onnx), whether TARGET fuses it to INT8.

    \b
    A report, not a gate: the exit code is 0 even when layers fall back; unreadable models exit non-zero.
    Examples:
      qdeploy check model.trt.qdq.onnx --target tensorrt
      qdeploy check model.qdq.onnx --target ort-cpu --json
    """
    from qdeploy_cli._common import console, name_cell, node_modules, print_json

    from qdeploy.graph.io import load_model
    from qdeploy.trt import check_placement

    graph_model = load_model(model)
    report = check_placement(graph_model, target)
    modules = node_modules(graph_model)
    if as_json:
        doc = report.to_dict()
        for entry in (*doc["nodes"], *doc["others"]):
            entry["module"] = modules.get(entry["node"])
        print_json(doc)
        return
    from rich.table import Table

    table = Table(title=f"QDQ placement vs {target}: {model}")
    table.add_column("node (module / ONNX name)", overflow="fold")
    for col in ("op", "status", "reason"):
        table.add_column(col)
    for v in (*report.nodes, *report.others):
        reasons = [*v.misses, *v.warnings] or ["-"]
        table.add_row(name_cell(v.node, modules), v.op_type, v.status, reasons[0])
        for extra in reasons[1:]:
            table.add_row("", "", "", extra)
    con = console()
    con.print(table)
    con.print(report.summary_line())
