"""Module paths from export to analysis: a nested torch module exported by each exporter names its tensors
``blocks.1.conv``-style, the names survive onnxsim, quantize() and a save/load, and analyze shows them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qdeploy.export import ExportConfig, ExportResult, export_model
from qdeploy.graph.io import load_model, save_model
from qdeploy.graph.names import NAMES_KEY, TOP, labels, readable_names
from qdeploy.quant import get_preset, quantize, tensors_to_calibrate
from qdeploy.types import TensorRange

NESTED = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) + x


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).chunk(3, -1)
        a = (q @ k.transpose(1, 2)).softmax(-1)
        return self.proj(a @ v).transpose(1, 2).reshape(b, c, h, w)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(Block(), Block())
        self.attn = Attn()
        self.tail = nn.Conv2d(5, 3, 1)

    def forward(self, x):
        return self.tail(torch.cat([self.attn(self.blocks(self.head(x))), x[:, :1]], 1))


def build():
    torch.manual_seed(0)
    return Net()
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    """The nested net exported by dynamo (onnxsim on) and by TorchScript."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("names")
    source = root / "nested.py"
    source.write_text(textwrap.dedent(NESTED))
    return {ex: export_model(ExportConfig(f"{source}:build", root / ex / "model.onnx", input_shapes=((1, 3, 8, 8),),
                                          exporter=ex, threads=1))
            for ex in ("dynamo", "torchscript")}


def _conv_output(model, weight: str) -> str:
    """The value computed by the layer whose weight initializer is ``weight``."""
    return next(n.outputs[0].name for n in model.graph if any(v is not None and v.name == weight for v in n.inputs))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_names_convs_and_weights(exports: dict[str, ExportResult], exporter: str) -> None:
    result = exports[exporter]
    model = load_model(result.path)
    shown, names = labels(model), readable_names(model)
    assert result.named_values > 0 and NAMES_KEY in model.metadata_props
    assert shown[_conv_output(model, "blocks.1.conv.weight")] == "blocks.1.conv (Conv)"
    assert shown[_conv_output(model, "head.weight")] == "head (Conv)"
    assert names["blocks.1.conv.weight"] == "blocks.1.conv.weight"
    # the Linear weights are transposed and folded into new initializers (val_5, onnx::MatMul_72) that read
    # nothing like the parameter; their layer names them, and the Gemm onnxsim made from the MatMul + Add
    assert {"attn.qkv.weight", "attn.proj.weight"} <= set(names.values())
    assert any(label.startswith("attn.qkv (") for label in shown.values())
    assert any(label.startswith(f"{TOP} (Concat") for label in shown.values())  # torch.cat in Net.forward
    assert all(v.name == model.graph.outputs[0].name for v in model.graph.outputs)  # ONNX names untouched
    manifest = json.loads((result.path.parent / "manifest.json").read_text())
    assert manifest["artifacts"]["model.onnx"]["module_names"] == result.named_values


def _qdq(model):
    config = get_preset("ort-cpu-int8", bits=8, full_integer=False)
    names = tensors_to_calibrate(model, config)
    ranges = {n: TensorRange(n, -4.0, 4.0, -4.0, 4.0, 0.0, "minmax", 1) for n in names}
    return quantize(model, ranges, config), names


def test_names_survive_quantize_and_save(exports: dict[str, ExportResult], tmp_path: Path) -> None:
    model = load_model(exports["dynamo"].path)
    qdq, calibrated = _qdq(model)
    assert NAMES_KEY in qdq.metadata_props
    qdq = load_model(save_model(qdq, tmp_path / "q.onnx"))
    before, after = labels(model), labels(qdq)
    assert [after[n] for n in calibrated] == [before[n] for n in calibrated]  # keyed by the same ONNX names
    conv = _conv_output(model, "head.weight")  # (a conv followed by a Relu is quantized after the Relu)
    assert conv in calibrated and after[conv] == "head (Conv)"
    assert "blocks.1.act (Relu)" in {after[n] for n in calibrated}
    weights = {n.removesuffix("_quantized"): after[n] for n in qdq.graph.initializers if n.endswith("_quantized")}
    assert weights["blocks.1.conv.weight"] == "blocks.1.conv.weight"
    assert "attn.qkv.weight" in weights.values()
    assert all(after[k] == v for k, v in weights.items())  # analysis names a weight without the suffix


def test_analyze_shows_module_paths(exports: dict[str, ExportResult], tmp_path: Path) -> None:
    from qdeploy_cli.main import cli

    from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
    from qdeploy.analyze.report import write_analysis_report

    model = load_model(exports["dynamo"].path)
    qdq, _ = _qdq(model)
    rng = np.random.default_rng(0)
    batches = [{"input": rng.random((1, 3, 8, 8), dtype=np.float32)} for _ in range(2)]
    result = analyze_sensitivity(model, qdq, batches, config=AnalyzeConfig(threads=1))
    shown = {t.name: t.label for t in result.tensors}
    conv = _conv_output(model, "head.weight")
    assert shown[conv] == "head (Conv)" and shown["blocks.1.conv.weight"] == "blocks.1.conv.weight"
    report = (write_analysis_report(result, tmp_path / "report", top=len(result.tensors))["report.md"]).read_text()
    assert f"| head (Conv) | {conv} |" in report and "| blocks.1.conv.weight | blocks.1.conv.weight |" in report
    paths = {"q": save_model(qdq, tmp_path / "q.onnx"), "data": tmp_path / "data.npz"}
    np.savez(paths["data"], input=np.concatenate([b["input"] for b in batches]))
    run = CliRunner().invoke(cli, ["analyze", str(exports["dynamo"].path), str(paths["q"]), "--data",
                                   str(paths["data"]), "--top", "40"], env={"COLUMNS": "80"})
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()  # the table (stderr holds the sweep's plain progress and estimate lines)
    assert max(len(line) for line in lines if line.startswith(" ")) <= 80  # table rows (prose starts at 0, unwrapped)
    assert any("blocks.1.act (Relu)" in line for line in lines) and any("attn.qkv" in line for line in lines)


def test_check_and_quantize_weights_name_modules(exports: dict[str, ExportResult], tmp_path: Path) -> None:
    """`qdeploy check` rows and the `quantize-weights` left-float list name the module beside the node."""
    from qdeploy_cli.main import cli

    model = load_model(exports["dynamo"].path)
    qdq, _ = _qdq(model)
    path = save_model(qdq, tmp_path / "q.onnx")
    doc = json.loads(CliRunner().invoke(cli, ["check", str(path), "--target", "ort-cpu", "--json"]).stdout)
    modules = {entry["node"]: entry["module"] for entry in doc["nodes"]}
    assert {"head", "blocks.0.conv", "attn.qkv", "tail"} <= set(modules.values()), modules
    table = CliRunner().invoke(cli, ["check", str(path), "--target", "ort-cpu"], env={"COLUMNS": "160"}).output
    assert "attn.qkv" in table and "blocks.1.conv" in table
    out = CliRunner().invoke(cli, ["quantize-weights", str(exports["dynamo"].path), "-o", str(tmp_path / "w.onnx")],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    left = [line for line in out.output.splitlines() if "left float:" in line]
    assert len(left) == 1 and "attn (node_matmul" in left[0], out.output  # module, then the ONNX node
