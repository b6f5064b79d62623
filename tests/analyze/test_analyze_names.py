"""Module paths in what analyze and the calibrate repair show: result labels, the report tables, the console
table at 80 columns, the "made by" column; and plain ONNX names when a model carries no module info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from qdeploy_cli.main import cli

from qdeploy.analyze import AnalyzeConfig, SensitivityResult, analyze_sensitivity
from qdeploy.analyze.report import render_html, render_markdown
from qdeploy.analyze.verify import _producers
from qdeploy.graph.io import save_model
from qdeploy.graph.names import NAMES_KEY

#: conv_net's layers (TorchScript names its nodes /c1/Conv ...), as analyze labels their tensors.
LAYERS = {"c1 (Conv)", "c2 (Conv)", "c3 (Conv)", "head (Conv)"}


@pytest.fixture(scope="module")
def result(float_model, w8a8, heldout) -> SensitivityResult:
    return analyze_sensitivity(float_model, w8a8[0], heldout[:2], config=AnalyzeConfig(threads=1))


def test_result_labels_tensors_by_module(result: SensitivityResult) -> None:
    by_label = {t.label: t for t in result.tensors}
    weights = {t.label for t in result.tensors if t.kind == "weight"}
    assert {"c1.weight", "head.weight"} <= weights
    assert all(t.label == t.name for t in result.tensors if t.kind == "weight")  # already parameter paths
    activations = {t.label for t in result.tensors if t.kind == "activation"}
    # torch.relu and the residual + are ops of Net.forward itself (the top-level module), the last conv's
    # output is the graph output y; labels are unique (Relu, Relu #2, ...) while the ONNX names stay
    assert {"head (Conv)", "top-level (Add)", "top-level (Relu)", "top-level (Relu #2)"} <= activations
    assert by_label["top-level (Relu)"].name == "/Relu_output_0" and by_label["head (Conv)"].name == "y"
    assert all(t.to_dict()["label"] == t.label for t in result.tensors)


def test_report_tables_show_module_and_onnx_name(result: SensitivityResult) -> None:
    top = result.tensors[0]
    md = render_markdown(result, top=len(result.tensors))
    assert "| rank | # | module | ONNX name |" in md
    assert f"| {top.label} | {top.name} |" in md.replace("\\|", "|")
    page = render_html(result, {}, top=len(result.tensors))
    assert "<th>module</th><th>ONNX name</th>" in page
    assert "c1.<wbr>weight" in page  # module paths may wrap at their dots, not run off the page


def test_console_table_fits_80_columns(tmp_path: Path, float_model, w8a8, heldout) -> None:
    paths = {"float": save_model(float_model, tmp_path / "m.onnx"), "qdq": save_model(w8a8[0], tmp_path / "q.onnx"),
             "data": tmp_path / "d.npz"}
    np.savez(paths["data"], x=np.concatenate([f["x"] for f in heldout[:2]]))
    args = ["analyze", str(paths["float"]), str(paths["qdq"]), "--data", str(paths["data"]), "--top", "20"]
    for width, cut in (("80", 80), ("140", 140)):
        run = CliRunner().invoke(cli, args, env={"COLUMNS": width})
        assert run.exit_code == 0, run.output
        lines = run.stdout.splitlines()  # the table (stderr holds the sweep's plain progress and estimate lines)
        rows = [line for line in lines if line.startswith(" ")]  # the table's; its title and the prose start at 0
        assert len(rows) > 10 and max(len(line) for line in rows) <= cut, width
        # off a terminal prose is not wrapped (a log line stays whole); on one, rich wraps it at the width
        legend = any(line.startswith("at: the grid analysed at; SQNR: the tensor") and line.endswith("--json.")
                     for line in lines)
        assert legend == (width == "80")
        assert any("c1.weight" in line for line in lines) and any("top-level (Relu)" in line for line in lines)
        assert any(line.strip() == "/Relu_output_0" for line in lines)  # the ONNX name beneath its label
        assert ("only-f dB" in run.stdout) == (width == "140")  # narrow: the compact column set + a legend


def test_made_by_column_names_the_module(float_model) -> None:
    made_by = _producers(float_model)
    assert set(made_by.values()) >= LAYERS
    assert made_by["x"] == "graph input" and made_by["c1.weight"] == "c1.weight"


def _anonymous(model: ir.Model) -> ir.Model:
    """``model`` as another tool might write it: no node names, no module map, weights named W0, W1 ..."""
    out = model.clone()
    for i, node in enumerate(out.graph):
        node.name = f"n{i}"
    for i, name in enumerate(list(out.graph.initializers)):
        out.graph.initializers[name].name = f"W{i}"
    out.metadata_props.pop(NAMES_KEY, None)
    return out


def test_model_without_module_info_falls_back_to_onnx_names(float_model, heldout) -> None:
    import analyze_models

    plain = _anonymous(float_model)
    made_by = _producers(plain)
    assert {v for v in made_by.values() if v.endswith("(Conv)")} == {f"n{i} (Conv)" for i, n in enumerate(plain.graph)
                                                                     if n.op_type == "Conv"}
    qdq, _ = analyze_models.qdq(plain, 8, heldout)
    result = analyze_sensitivity(plain, qdq, heldout[:1], config=AnalyzeConfig(threads=1))
    for t in result.tensors:  # weights and the input keep their names, the rest say node and op
        assert t.label == t.name if t.kind == "weight" or t.name == "x" else t.label.endswith(")"), t.label
    assert "| rank |" in render_markdown(result)
