"""RotateLinearInputsPass and ``QuantConfig.rotate_inputs``: exact in float, and worth it on outlier channels.

Real ORT sessions: the rotated float model must give the float outputs (rounding only), and at W4A4 the
rotation must buy accuracy on an input with one outlier channel (what NGswin's residual stream looks like).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, minmax_ranges, run

from qdeploy.errors import InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import CleanupGraphPass
from qdeploy.graph.passes.rotate_inputs import ChannelAffine, RotateLinearInputsPass, is_rotation, rotation_matrix
from qdeploy.quant import get_preset, quantize, tensors_to_calibrate
from qdeploy.quant.quantize import calibration_model

ORTHO_ATOL = 1e-5  # R R^T = I up to float32 rounding
FLOAT_RTOL = 1e-4  # rotated vs original float outputs: float32 re-association only
MIN_ROTATION_GAIN_DB = 6.0  # W4A4 output SQNR with vs without rotation, one outlier channel

WEIGHTS = {"w0": (16, 12), "b0": (12,), "w1": (8, 12), "w2": (12, 5)}
TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[6, 16] x) => (float[6, 8] y, float[6, 5] z)
{
    h = Gemm <transB: int = 0> (x, w0, b0)
    y = Gemm <transB: int = 1> (h, w1)
    z = MatMul (h, w2)
}
"""


def _with_weights(text: str, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> ir.Model:
    """Parse ``text`` whose free inputs ``shapes`` become seeded Gaussian initializers."""
    rng = np.random.default_rng(seed)
    proto = onnx.parser.parse_model(text)
    for name, shape in shapes.items():
        proto.graph.initializer.append(onnx.numpy_helper.from_array(
            rng.standard_normal(shape).astype(np.float32), name))
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def _model() -> ir.Model:
    return _with_weights(TEXT, WEIGHTS)


def _feeds(n: int = 4, outlier: float = 100.0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    feeds = []
    for _ in range(n):
        x = rng.standard_normal((6, 16)).astype(np.float32)
        x[:, 3] *= outlier  # one channel ~100x the others, like a residual-stream outlier
        feeds.append({"x": x})
    return feeds


@pytest.mark.parametrize("k", [16, 64, 12, 24])
def test_rotation_is_orthogonal_and_deterministic(k: int) -> None:
    r = rotation_matrix(k, seed=3)
    np.testing.assert_allclose(r @ r.T, np.eye(k), atol=ORTHO_ATOL)
    np.testing.assert_array_equal(r, rotation_matrix(k, seed=3))
    assert not np.array_equal(r, rotation_matrix(k, seed=4))


def _affine(k: int, seed: int) -> ChannelAffine:
    rng = np.random.default_rng(seed)
    return ChannelAffine(shift=rng.uniform(-50, 50, k).astype(np.float32),
                         scale=rng.uniform(0.1, 10, k).astype(np.float32))


@pytest.mark.parametrize(("affine", "rotate"), [(False, True), (True, True), (True, False)])
def test_rewritten_model_computes_the_float_outputs(affine: bool, rotate: bool) -> None:
    """Gemm with bias, Gemm without (a bias is added for the shift), MatMul (scale only): all exact."""
    model, feeds = _model(), _feeds()
    ref = [run(model, f) for f in feeds]
    per_input = {"x": _affine(16, 2), "h": _affine(12, 3)} if affine else None
    rewrite = RotateLinearInputsPass(affine=per_input, rotate=rotate)
    rewrite(model)
    CleanupGraphPass()(model)
    check_onnx(model)
    assert sorted(rewrite.rotated) == sorted(n.name for n in model.graph if n.op_type in ("Gemm", "MatMul")
                                             and not is_rotation(n))
    assert sum(n.name.endswith("/rotate") for n in model.graph) == 3  # one chain per Linear, ending here
    assert all(is_rotation(n) for n in model.graph if "/rotate" in n.name)
    assert not RotateLinearInputsPass(affine=per_input, rotate=rotate)(model).modified  # idempotent
    for f, expected in zip(feeds, ref, strict=True):
        got = run(model, f)
        for name in ("y", "z"):
            np.testing.assert_allclose(got[name], expected[name], rtol=FLOAT_RTOL,
                                       atol=FLOAT_RTOL * np.abs(expected[name]).max())


def test_shared_weight_is_left_alone() -> None:
    model = _with_weights("""
<ir_version: 8, opset_import: ["" : 17]>
net (float[2, 8] a, float[2, 8] b) => (float[2, 4] y, float[2, 4] z)
{
    y = MatMul (a, w)
    z = MatMul (b, w)
}
""", {"w": (8, 4)})
    rotate = RotateLinearInputsPass()
    assert not rotate(model).modified and rotate.rotated == []


ONE_LINEAR = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[6, 16] x) => (float[6, 12] y)
{
    y = Gemm (x, w0, b0)
}
"""


def _w4a4_sqnr(rotate: bool) -> float:
    """Output SQNR of one W4A4 Linear whose input has an outlier channel read through a small weight row.

    That is the SmoothQuant picture: the wide channel sets the per-tensor grid while the output's signal
    comes from the narrow ones, which an unrotated 4-bit grid rounds to zero.
    """
    model, feeds = _with_weights(ONE_LINEAR, {"w0": (16, 12), "b0": (12,)}), _feeds(outlier=10.0)
    w0 = model.graph.initializers["w0"]
    small_row = w0.const_value.numpy().copy()
    small_row[3] *= 0.01
    w0.const_value = ir.tensor(small_row, name="w0")
    config = get_preset("lowbit-sim", bits=4, rotate_inputs=rotate)
    calib = calibration_model(model, config)
    ranges = minmax_ranges(calib, tensors_to_calibrate(model, config), feeds)
    qmodel = quantize(model, ranges, config)
    check_onnx(qmodel)
    if rotate:  # the rotations are float ops: no Q/DQ on their matrix, and one Q/DQ on their output
        for node in qmodel.graph:
            if is_rotation(node):
                assert node.inputs[1].const_value is not None
    test = _feeds(2, outlier=10.0)
    ref = np.concatenate([run(model, f)["y"].ravel() for f in test])
    got = np.concatenate([run(qmodel, f)["y"].ravel() for f in test])
    return sqnr_db(ref, got)


def test_rotation_buys_w4a4_accuracy_on_an_outlier_channel() -> None:
    plain, rotated = _w4a4_sqnr(False), _w4a4_sqnr(True)
    assert rotated > plain + MIN_ROTATION_GAIN_DB, (plain, rotated)


def test_rotate_inputs_needs_a_linear_to_rotate() -> None:
    with pytest.raises((ValueError, InputError), match="rotate_inputs"):
        get_preset("lowbit-sim", op_types=("Conv",), rotate_inputs=True)


def test_registered_among_all_passes() -> None:
    from qdeploy.graph.passes import ALL_PASSES

    assert RotateLinearInputsPass in ALL_PASSES
