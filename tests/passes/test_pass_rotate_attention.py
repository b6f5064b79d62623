"""RotateAttentionValuesPass: rotations around ``P @ V`` keep attention exact in float and are idempotent."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, run

from qdeploy.graph.passes import CleanupGraphPass
from qdeploy.graph.passes.rotate_attention import RotateAttentionValuesPass
from qdeploy.graph.passes.rotate_inputs import is_rotation

FLOAT_RTOL = 1e-5  # relative to the output's peak: float32 re-association only
TOKENS, DIM = 16, 8
TEXT = f"""
<ir_version: 8, opset_import: ["" : 17]>
attn (float[2, {TOKENS}, {DIM}] x) => (float[2, {TOKENS}, {DIM}] y, float[2, {TOKENS}, {DIM}] o)
{{
    q = MatMul (x, wq)
    k = MatMul (x, wk)
    v = MatMul (x, wv)
    kt = Transpose <perm = [0, 2, 1]> (k)
    s = MatMul (q, kt)
    a = Softmax <axis = -1> (s)
    o = MatMul (a, v)
    y = MatMul (o, wo)
}}
"""


def _model() -> ir.Model:
    rng = np.random.default_rng(0)
    proto = onnx.parser.parse_model(TEXT)
    for name in ("wq", "wk", "wv", "wo"):
        proto.graph.initializer.append(onnx.numpy_helper.from_array(
            rng.normal(0, 0.5, (DIM, DIM)).astype(np.float32), name))
    return ir.serde.deserialize_model(proto)


@pytest.mark.parametrize(("keys", "head_dim"), [(True, True), (True, False), (False, True)])
def test_rotated_attention_is_exact_and_idempotent(keys: bool, head_dim: bool) -> None:
    model = _model()
    feeds = {"x": np.random.default_rng(1).standard_normal((2, TOKENS, DIM)).astype(np.float32)}
    ref = run(model, feeds)
    rotate = RotateAttentionValuesPass(keys=keys, head_dim=head_dim)
    assert rotate(model).modified and len(rotate.rotated) == 1
    CleanupGraphPass()(model)
    check_onnx(model)
    inserted = [n for n in model.graph if is_rotation(n)]
    assert len(inserted) == 2 * keys + 2 * head_dim  # P R and R^T V; V R and the R^T after
    got = run(model, feeds)
    for name in ("y", "o"):  # "o" is the context output itself, and a graph output: restored by name
        np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=FLOAT_RTOL * np.abs(ref[name]).max())
    assert not RotateAttentionValuesPass(keys=keys, head_dim=head_dim)(model).modified


def test_dynamic_sizes_are_left_alone() -> None:
    proto = onnx.parser.parse_model(TEXT.replace(f"float[2, {TOKENS}, {DIM}] x", f"float[2, T, {DIM}] x")
                                    .replace(f"float[2, {TOKENS}, {DIM}] y", f"float[2, T, {DIM}] y")
                                    .replace(f"float[2, {TOKENS}, {DIM}] o", f"float[2, T, {DIM}] o"))
    rng = np.random.default_rng(0)
    for name in ("wq", "wk", "wv", "wo"):
        proto.graph.initializer.append(onnx.numpy_helper.from_array(
            rng.normal(0, 0.5, (DIM, DIM)).astype(np.float32), name))
    model = ir.serde.deserialize_model(proto)
    rotate = RotateAttentionValuesPass()
    rotate(model)
    assert sum(is_rotation(n) for n in model.graph) == 2  # head_dim (8) is static, the key count T is not


def test_registered_among_all_passes() -> None:
    from qdeploy.graph.passes import ALL_PASSES

    assert RotateAttentionValuesPass in ALL_PASSES


def test_rotate_with_shift_qk_rotates_the_attention_too() -> None:
    """``--rotate --shift-qk``: the shifted attention must still get its P/V rotations (order of the passes)."""
    from qdeploy.calib.attention_stats import collect_qk_means
    from qdeploy.quant import get_preset
    from qdeploy.quant.quantize import calibration_model

    model = _model()
    feeds = [{"x": np.random.default_rng(s).standard_normal((2, TOKENS, DIM)).astype(np.float32)} for s in (1, 2)]
    means = collect_qk_means(model, lambda: iter(feeds))
    config = get_preset("lowbit-sim", bits=4, rotate_inputs=True, shift_qk=True)
    prepared = calibration_model(model, config, means)
    attention = [n for n in prepared.graph
                 if any(v is not None and (v.name or "").startswith("qdeploy_attention_rotation") for v in n.inputs)]
    assert len(attention) == 4  # P R_N, R_N^T V, V R_d, and R_d^T after the context
    ref, got = run(model, feeds[0]), run(prepared, feeds[0])
    np.testing.assert_allclose(got["y"], ref["y"], rtol=0, atol=1e-4 * np.abs(ref["y"]).max())
