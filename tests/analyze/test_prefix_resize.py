"""Prefix reuse on a net with a size-driven bilinear Resize (issue 11: `analyze` crashed, reuse off worked).

A dynamic-H/W export of ``F.interpolate(x, size=y.shape[2:], mode="bilinear")`` (RFDN/ESA's gate) computes
the Resize's ``sizes`` from ``Shape`` ops; when a prefix cut falls between them and the Resize, ``sizes``
becomes an input of the suffix model. Declared with unknown length, ONNX's Resize shape inference read it
as 0 elements and ONNX Runtime refused to load the suffix model. Prefix reuse must give exactly the
results of full runs, with and without shape annotations in the graph.
"""

from __future__ import annotations

import textwrap

import analyze_models
import numpy as np
import onnx_ir as ir
import pytest

from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
from qdeploy.export import ExportConfig, export_model
from qdeploy.graph.io import load_model

GATE_NET = """
import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        coarse = torch.relu(self.c3(F.max_pool2d(self.down(a), 3, 2)))
        up = F.interpolate(coarse, size=a.shape[2:], mode="bilinear", align_corners=False)
        return self.head(a * torch.sigmoid(up))


def build():
    torch.manual_seed(0)
    return Gate().eval()
"""


@pytest.fixture(scope="module")
def resize_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[ir.Model, ir.Model, list]:
    """(float, W8A8 QDQ, held-out feeds) of GATE_NET exported by qdeploy with dynamic H/W."""
    folder = tmp_path_factory.mktemp("resize")
    (folder / "gate.py").write_text(textwrap.dedent(GATE_NET))
    export_model(ExportConfig(spec=f"{folder / 'gate.py'}:build", output=folder / "gate.onnx",
                              input_shapes=((1, 3, 16, 16),), dynamic_hw=True, threads=1))
    float_model = load_model(folder / "gate.onnx")
    assert any(n.op_type == "Resize" and len(n.inputs) == 4 for n in float_model.graph)  # sizes-driven
    feeds = [{"input": f["x"]} for f in analyze_models.feeds(5, seed=0)]
    qdq_model, _ = analyze_models.qdq(float_model, 8, feeds[:3])
    return float_model, qdq_model, feeds[3:]


def _without_shapes(model: ir.Model) -> ir.Model:
    proto = ir.to_proto(model)
    del proto.graph.value_info[:]
    return ir.from_proto(proto)


@pytest.mark.parametrize("annotated", [True, False])
def test_prefix_reuse_matches_full_runs_on_resize(resize_models, annotated: bool) -> None:
    float_model, qdq_model, heldout = resize_models
    if not annotated:
        float_model, qdq_model = _without_shapes(float_model), _without_shapes(qdq_model)
    fast = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(reuse_prefix=True))
    full = analyze_sensitivity(float_model, qdq_model, heldout, config=AnalyzeConfig(reuse_prefix=False))
    assert fast.timings["prefix_cuts"] >= 3 and full.timings["prefix_cuts"] == 0
    assert [t.name for t in fast.tensors] == [t.name for t in full.tensors]
    for field in ("only_quantized_sqnr_db", "only_float_sqnr_db"):
        got = np.array([getattr(t, field) for t in fast.tensors])
        want = np.array([getattr(t, field) for t in full.tensors])
        assert np.array_equal(got, want), field  # same graph, same inputs: identical numbers
