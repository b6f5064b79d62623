"""SignedConvWeightsPass + the pair-safe int8 form that ``auto`` tries on CPUs without VNNI.

The storage change must be exact (same dequantized weights, same outputs through plain Q/DQ math); the
pair fix after it must leave ORT's fused u8s8 kernels agreeing with the Q/DQ math (no int16 saturation).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from qdq_models import check_onnx, export, minmax_ranges, run

from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes.signed_weights import SignedConvWeightsPass
from qdeploy.quant.kernel_forms import FORM_NAME, faster_form_for, pair_safe_int8_convs, reapply_faster_form
from qdeploy.quant.presets import get_preset, ort_cpu_int8
from qdeploy.quant.quantize import quantize, tensors_to_calibrate

#: Fused u8s8 kernels vs the Q/DQ reference math once no pair can overflow (requantize rounding only).
MIN_FUSED_VS_QDQ_SQNR_DB = 40.0


@pytest.fixture(scope="module")
def net() -> ir.Model:
    """conv 3x3 (group 1) -> depthwise 3x3 -> conv 1x1, trained-like (Laplace) weights, large positive inputs."""
    import torch

    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        for m in body:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.distributions.Laplace(0.02, 0.1).sample(m.weight.shape))
    return export(body, torch.rand(1, 6, 12, 12))


@pytest.fixture(scope="module")
def feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(0, 1, (1, 6, 12, 12)).astype(np.float32)} for _ in range(4)]


@pytest.fixture(scope="module")
def u8_model(net: ir.Model, feeds) -> ir.Model:
    config = ort_cpu_int8(vnni=False)
    assert config.weight_dtype == "uint8"
    return quantize(net, minmax_ranges(net, tensors_to_calibrate(net, config), feeds), config)


def _weight_codes(model: ir.Model) -> dict[str, np.ndarray]:
    out = {}
    for node in model.graph:
        if node.op_type == "Conv":
            dq = node.inputs[1].producer()
            out[node.name] = dq.inputs[0].const_value.numpy()
    return out


def test_signing_is_exact_and_only_group1(u8_model: ir.Model, feeds) -> None:
    signed = u8_model.clone()
    result = SignedConvWeightsPass()(signed)
    check_onnx(signed)
    before, after = _weight_codes(u8_model), _weight_codes(signed)
    groups = {n.name: n.attributes.get_int("group", 1) for n in signed.graph if n.op_type == "Conv"}
    assert result.modified
    for name, codes in after.items():
        expect = np.int8 if groups[name] == 1 else np.uint8
        assert codes.dtype == expect, f"{name} (group {groups[name]}) stored as {codes.dtype}"
        shift = 128 if groups[name] == 1 else 0
        np.testing.assert_array_equal(codes.astype(np.int16), before[name].astype(np.int16) - shift)
    for f in feeds:  # plain Q/DQ math: the same dequantized weights give the same outputs
        np.testing.assert_array_equal(run(signed, f, "disable")["y"], run(u8_model, f, "disable")["y"])


def test_pair_safe_form_runs_unsaturated_on_the_real_kernels(u8_model: ir.Model, feeds) -> None:
    made = pair_safe_int8_convs(u8_model)
    assert made is not None
    fast, record = made
    assert record["form"] == FORM_NAME and record["convs"] == 2
    for f in feeds:
        assert sqnr_db(run(fast, f, "disable")["y"], run(fast, f, "all")["y"]) >= MIN_FUSED_VS_QDQ_SQNR_DB


def test_forms_offered_only_where_they_apply() -> None:
    assert faster_form_for(ort_cpu_int8(vnni=False)) is pair_safe_int8_convs
    assert faster_form_for(ort_cpu_int8(vnni=True)) is None  # int8 weights already
    assert faster_form_for(get_preset("tensorrt-int8")) is None


def test_reapply_follows_the_record(u8_model: ir.Model) -> None:
    kept = {"faster": {"form": FORM_NAME, "kept": True}}
    assert _weight_codes(reapply_faster_form(u8_model, kept))  # rebuilt
    assert any(c.dtype == np.int8 for c in _weight_codes(reapply_faster_form(u8_model, kept)).values())
    for record in (None, {}, {"faster": {"form": FORM_NAME, "kept": False}}):
        assert reapply_faster_form(u8_model, record) is u8_model
