"""The torch interpreter against ONNX Runtime: float and QDQ graphs of real SR exports, errors, gradients."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from refine_models import ABPN_SHAPE, SWIN_SHAPE, W4A4, qdq, samples

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.errors import UnsupportedModelError
from qdeploy.quant import get_preset
from qdeploy.torchexec import TorchGraph, missing_ops

#: Largest |torch - ORT| relative to the output's peak |value| (float32 op-order differences only).
FLOAT_REL_TOL = 1e-5
#: The same for QDQ graphs; a rounding tie decided differently moves one code, so allow a few elements
#: one step off while the bulk must agree as tightly as float.
QDQ_REL_TOL = 1e-5
MAX_OFF_FRACTION = 0.002

CASES = [("abpn", ABPN_SHAPE, 255.0), ("swin", SWIN_SHAPE, 1.0)]


def _ort(model: ir.Model, feeds: dict, optimize: str = "all") -> dict[str, np.ndarray]:
    session = get_backend("ort-cpu").open(model, SessionOptions(threads=1, graph_optimization=optimize))
    return session.run(feeds)


@pytest.mark.parametrize(("name", "shape", "scale"), CASES)
def test_float_graph_matches_ort(request: pytest.FixtureRequest, name: str, shape: tuple,
                                 scale: float) -> None:
    model = request.getfixturevalue(name)
    feeds = samples(model, shape, scale, 1, seed=1)[0]
    ref, out = _ort(model, feeds), TorchGraph(model).run_numpy(feeds)
    for key, value in ref.items():
        assert out[key].shape == value.shape
        assert np.abs(out[key] - value).max() <= FLOAT_REL_TOL * np.abs(value).max()


@pytest.mark.parametrize("preset", ["w4a4", "ort-cpu-int8", "tensorrt-int8"])
@pytest.mark.parametrize(("name", "shape", "scale"), CASES)
def test_qdq_graph_matches_ort(request: pytest.FixtureRequest, name: str, shape: tuple, scale: float,
                               preset: str) -> None:
    model = request.getfixturevalue(name)
    config = W4A4 if preset == "w4a4" else get_preset(preset)
    qmodel = qdq(model, config, samples(model, shape, scale, 2, seed=0))
    assert any(n.op_type == "QuantizeLinear" for n in qmodel.graph)
    feeds = samples(model, shape, scale, 1, seed=1)[0]
    ref, out = _ort(qmodel, feeds, "disable"), TorchGraph(qmodel).run_numpy(feeds)
    for key, value in ref.items():
        peak = np.abs(value).max()
        off = np.abs(out[key] - value) > QDQ_REL_TOL * peak
        assert off.mean() <= MAX_OFF_FRACTION, f"{off.mean():.4f} of {key} differ"


def _parsed(text: str) -> ir.Model:
    return ir.serde.deserialize_model(onnx.parser.parse_model(text))


def test_unsupported_op_is_named() -> None:
    model = _parsed("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) { y = Hardmax(x) }""")
    assert missing_ops(model) == ["Hardmax"]
    with pytest.raises(UnsupportedModelError, match="Hardmax") as info:
        TorchGraph(model)
    assert "OPS.register" in info.value.hint


def test_fake_quant_passes_gradients_to_scale_and_input() -> None:
    """Straight-through rounding: d out / d x is 1 inside the grid, 0 where Q saturates; the scale learns."""
    import torch

    model = _parsed("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y)
        <float s = {0.1}, uint8 z = {0}> { q = QuantizeLinear(x, s, z)  y = DequantizeLinear(q, s, z) }""")
    graph = TorchGraph(model)
    x = torch.tensor([0.04, 0.26, 30.0, -1.0], requires_grad=True)
    scale = torch.tensor(0.1, requires_grad=True)
    y = graph.run({"x": x}, overrides={"s": scale})["y"]
    assert torch.allclose(y.detach(), torch.tensor([0.0, 0.3, 25.5, 0.0]))  # round, saturate at 0 and 255
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert scale.grad is not None and scale.grad.item() != 0.0


POOL_NORM_TEXT = """
<ir_version: 8, opset_import: ["" : 18]>
net (float[1, 3, 9, 8] x) => (float[1, 3, 4, 4] p, float[1, 3, 5, 4] q, float[1, 1, 9, 8] n)
{
    p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)
    q = MaxPool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 2, 1]> (x)
    axes = Constant <value = int64[1] {1}> ()
    n = ReduceL2 <keepdims = 1> (x, axes)
}
"""


def test_max_pool_and_reduce_l2_match_ort() -> None:
    """NGswin's ops: MaxPool (incl. asymmetric pads, padded with -inf) and ReduceL2 (cosine attention)."""
    model = _parsed(POOL_NORM_TEXT)
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 9, 8)).astype(np.float32) - 2.0}
    ref, out = _ort(model, feeds), TorchGraph(model).run_numpy(feeds)
    for key, value in ref.items():
        assert out[key].shape == value.shape, key
        assert np.abs(out[key] - value).max() <= FLOAT_REL_TOL * np.abs(value).max(), key
