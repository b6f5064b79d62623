"""ShiftQKPass: attention matching, float exactness of the q/k shift, and what it buys at 4 and 3 bits.

Real ORT sessions on real exports (SwinIR via the dynamo and TorchScript exporters, a TorchScript
``Div``-scaled attention) and a hand-built graph with decoys; no mocks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from qdq_models import export, from_text, run

from qdeploy.calib import make_observer
from qdeploy.calib.attention_stats import collect_qk_means, vector_sums
from qdeploy.calib.collect import CollectConfig, collect_ranges
from qdeploy.errors import CalibrationError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.graph.passes import ALL_PASSES, ExposeTensorsPass, ShiftQKPass
from qdeploy.graph.passes.shift_qk import SHIFT_QK_MARK, QKMeans, find_attention
from qdeploy.quant import QuantConfig, get_preset
from qdeploy.quant.quantize import calibration_model, quantize, tensors_to_calibrate
from qdeploy.types import QuantTarget

MAX_REL_ERR = 1e-4  # shifted float graph vs original: max |diff| / max |ref| (float32 rounding only)
MIN_BROKEN_REL_ERR = 1e-2  # the same graph with the per-key bias removed must be visibly wrong
PLANTED_OFFSET = 3.0  # std of the per-channel offsets added to SwinIR's q and k biases
MIN_CONTEXT_GAIN_DB = 3.0  # attention output (softmax @ v) SQNR gain from shift_qk, mean over blocks
MIN_OUTPUT_GAIN_DB = 1.0  # model output SQNR gain (measured +2.2 dB at A4, +3.9 dB at A3)
MEAN_RTOL = 1e-12  # batch size 1 vs 3: float64 sums in another order
SWIN_INPUT = (1, 3, 16, 16)

ATTENTION_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
net (float[B, 2, 8, 4] q, float[B, 2, 8, 4] k, float[B, 2, 8, 4] v, float[1, 1, 8, 8] mask, float[B, 8, 4] x)
    => (float[B, 2, 8, 4] y, float[B, 8, 8] gram, float[B, 8, 3] lin, float[B, 2, 8, 4] cols,
        float[B, 2, 8, 4] twice, float[B, 2, 8, 8] scores_out)
<float[4, 3] w = {0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, 0.9, -1.0, 1.1, 1.2}, float s = {2.0}>
{
    kt = Transpose <perm = [0, 1, 3, 2]> (k)
    scores = MatMul (q, kt)
    scaled = Div (scores, s)
    masked = Add (scaled, mask)
    probs = Softmax <axis = -1> (masked)
    y = MatMul (probs, v)
    xt = Transpose <perm = [0, 2, 1]> (x)
    gram = MatMul (x, xt)
    lin = MatMul (x, w)
    scores2 = MatMul (q, kt)
    probs2 = Softmax <axis = 2> (scores2)
    cols = MatMul (probs2, v)
    scores_out = MatMul (v, kt)
    probs3 = Softmax <axis = -1> (scores_out)
    twice = MatMul (probs3, v)
}
"""


def _attention_feeds(batch: int, seed: int, offset: float = 4.0) -> dict[str, np.ndarray]:
    """q/k with large per-(head, channel) offsets, the case the shift is for."""
    rng = np.random.default_rng(seed)
    bias = np.random.default_rng(99).normal(0, offset, (2, 1, 4)).astype(np.float32)
    return {"q": rng.normal(size=(batch, 2, 8, 4)).astype(np.float32) + bias,
            "k": rng.normal(size=(batch, 2, 8, 4)).astype(np.float32) - bias,
            "v": rng.normal(size=(batch, 2, 8, 4)).astype(np.float32),
            "mask": np.where(rng.random((1, 1, 8, 8)) < 0.2, -100.0, 0.0).astype(np.float32),
            "x": rng.normal(size=(batch, 8, 4)).astype(np.float32)}


def _swinir(offset: float = 0.0):
    import torch
    from qdeploy_models.swinir import SwinIR

    torch.manual_seed(0)
    module = SwinIR(scale=2, dim=12, depths=(2,), heads=2, window=4).eval()
    if offset:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for attn in (m for m in module.modules() if hasattr(m, "qkv")):
                attn.qkv.bias[:24] += offset * torch.randn(24, generator=gen)  # q and k parts (dim 12 each)
    return module


def _dynamo_export(module) -> ir.Model:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.rand(*SWIN_INPUT),), dynamo=True, opset_version=18,
                                    input_names=["x"], output_names=["y"], verbose=False)
    return ir.serde.deserialize_model(program.model_proto)


def _div_attention() -> ir.Model:
    """TorchScript form: ``Div(MatMul(q, Transpose(k)), sqrt(d))``, q/k/v from one Linear, 4 heads."""
    import torch

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.proj = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)
            with torch.no_grad():
                self.qkv.bias[:32] += 2.0 * torch.randn(32)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4)
            attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(4), dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, 16))

    torch.manual_seed(5)
    return export(Attention(), torch.randn(1, 10, 16))


def _cosine_attention() -> ir.Model:
    """NGswin / Swin-v2 form: normalised q and k, scores times a learned per-head ``exp(logit_scale)``
    (``[heads, 1, 1]``, clamped), plus a relative-position bias; exported and simplified as
    ``qdeploy export`` does (onnxsim folds the clamp and exp of the parameter into one constant)."""
    import onnxsim
    import torch

    class Cosine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.proj = torch.nn.Linear(16, 48), torch.nn.Linear(16, 16)
            self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.rand(4, 1, 1) + 1))
            self.bias = torch.nn.Parameter(torch.randn(4, 10, 10))
            with torch.no_grad():
                self.qkv.bias[:32] += 2.0 * torch.randn(32)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4)
            q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            attn = torch.softmax(q @ k.transpose(-2, -1) * scale + self.bias, dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, 16))

    torch.manual_seed(6)
    raw = ir.serde.serialize_model(export(Cosine(), torch.randn(1, 10, 16)))
    simplified, ok = onnxsim.simplify(raw)
    assert ok
    return ir.serde.deserialize_model(simplified)


@pytest.fixture(scope="module")
def models() -> dict[str, ir.Model]:
    return {"swinir-dynamo": _dynamo_export(_swinir()), "swinir-torchscript": export(_swinir(), _rand()),
            "div-attention": _div_attention(), "hand-built": from_text(ATTENTION_TEXT),
            "cosine-attention": _cosine_attention()}


def _rand():
    import torch

    return torch.rand(*SWIN_INPUT)


def _feeds(model: ir.Model, seed: int) -> dict[str, np.ndarray]:
    if {v.name for v in model.graph.inputs} >= {"q", "k"}:
        return _attention_feeds(2, seed)
    spec = model.graph.inputs[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    return {spec.name: np.random.default_rng(seed).random(shape, dtype=np.float32)}


def _data(model: ir.Model, n: int = 3, seed: int = 0) -> Callable[[], list[dict[str, np.ndarray]]]:
    feeds = [_feeds(model, seed + i) for i in range(n)]
    return lambda: feeds


EXPECTED_BLOCKS = {"swinir-dynamo": 2, "swinir-torchscript": 2, "div-attention": 1, "hand-built": 1,
                   "cosine-attention": 1}


@pytest.mark.parametrize("name", sorted(EXPECTED_BLOCKS))
def test_finds_every_attention_block_and_nothing_else(models: dict[str, ir.Model], name: str) -> None:
    matches = find_attention(models[name])
    assert len(matches) == EXPECTED_BLOCKS[name]
    for m in matches:
        assert m.k.producer() is not None and m.k.producer().op_type == "Transpose"  # k^T
        assert m.context.inputs[0] is m.softmax.outputs[0]
    if name.startswith("swinir"):  # SwinIR scales q before the MatMul: the scaled q is what gets shifted
        assert all(m.q.producer().op_type == "Mul" for m in matches)
    scores = {m.scores for m in matches}
    others = [n for n in models[name].graph if n.op_type == "MatMul" and n not in scores]
    assert others and not scores & {m.context for m in matches}


def test_hand_built_decoys_are_left_alone(models: dict[str, ir.Model]) -> None:
    """Activation MatMul without softmax, constant weight, softmax over axis 2, scores read twice."""
    model = models["hand-built"].clone()
    (match,) = find_attention(model)
    assert match.scores.outputs[0].name == "scores"
    before = {n: list(n.inputs) for n in model.graph if n.op_type == "MatMul"}
    means = collect_qk_means(model, _data(model))
    assert set(means) == {"q"}
    ShiftQKPass(means)(model)
    changed = [n for n, inputs in before.items() if list(n.inputs) != inputs]
    assert changed == [match.scores]


def _planted_means(means: dict[str, QKMeans], seed: int) -> dict[str, QKMeans]:
    """Arbitrary large means: the rewrite must be exact for *any* mu, not only the calibrated one."""
    rng = np.random.default_rng(seed)
    return {q: QKMeans(m.q, m.k, m.q_mean + rng.normal(0, 5, m.q_mean.shape),
                       m.k_mean + rng.normal(0, 5, m.k_mean.shape)) for q, m in means.items()}


def _max_rel_err(reference: ir.Model, candidate: ir.Model, feeds: dict[str, np.ndarray]) -> float:
    """Worst relative error over the model outputs and every attention probability tensor."""
    probs = [m.softmax.outputs[0].name for m in find_attention(reference)]
    ref = run(ExposeTensorsPass(probs)(reference).model, feeds)
    out = run(ExposeTensorsPass(probs)(candidate).model, feeds)
    return max(float(np.abs(ref[k] - out[k]).max() / np.abs(ref[k]).max()) for k in ref)


@pytest.mark.parametrize("planted", [False, True], ids=["calibrated-means", "planted-means"])
@pytest.mark.parametrize("name", sorted(EXPECTED_BLOCKS))
def test_shifted_float_graph_is_exact(models: dict[str, ir.Model], name: str, planted: bool) -> None:
    model = models[name]
    means = collect_qk_means(model, _data(model))
    means = _planted_means(means, 1) if planted else means
    shifted = model.clone()
    shift = ShiftQKPass(means)
    shift(shifted)
    assert len(shift.shifted) == EXPECTED_BLOCKS[name] and not shift.missing
    onnx.checker.check_model(ir.serde.serialize_model(shifted), full_check=True)
    feeds = _feeds(model, 10)
    assert _max_rel_err(model, shifted, feeds) <= MAX_REL_ERR
    if planted:  # the per-key bias is what keeps it exact: without it the output moves
        for add in [n for n in shifted.graph if n.name.endswith("_QKCompensation")]:
            add.outputs[0].replace_all_uses_with(add.inputs[0])
        assert _max_rel_err(model, shifted, feeds) >= MIN_BROKEN_REL_ERR


def test_pass_is_idempotent(models: dict[str, ir.Model]) -> None:
    model = models["swinir-dynamo"].clone()
    means = collect_qk_means(model, _data(model))
    ShiftQKPass(means)(model)
    again = ShiftQKPass(means)
    assert not again(model).modified and again.shifted == [] and again.missing == []
    assert len([n for n in model.graph if n.metadata_props.get(SHIFT_QK_MARK)]) == 2


def test_means_are_exact_and_batch_size_independent(models: dict[str, ir.Model]) -> None:
    model = models["hand-built"]
    feeds = [_attention_feeds(1, s) for s in range(6)]
    one = collect_qk_means(model, lambda: feeds, CollectConfig(batch_size=1))["q"]
    three = collect_qk_means(model, lambda: feeds, CollectConfig(batch_size=3))["q"]
    q = np.concatenate([f["q"] for f in feeds]).astype(np.float64)
    k = np.concatenate([f["k"] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(one.q_mean, q.mean(axis=(0, 2)), rtol=MEAN_RTOL)
    np.testing.assert_allclose(one.k_mean, k.mean(axis=(0, 2)), rtol=MEAN_RTOL)  # k^T averaged over N
    np.testing.assert_allclose(three.q_mean, one.q_mean, rtol=MEAN_RTOL)
    np.testing.assert_allclose(three.k_mean, one.k_mean, rtol=MEAN_RTOL)
    assert one.count == three.count == 6 * 8
    restored = QKMeans.from_dict(one.to_dict())  # the cache round trip is lossless
    assert np.array_equal(restored.q_mean, one.q_mean) and np.array_equal(restored.k_mean, one.k_mean)


def test_vector_sums_without_head_axis() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # [B, N, d]: one shared mean vector
    sums, count = vector_sums(array, -1)
    assert sums.shape == (1, 4) and count == 6
    np.testing.assert_allclose(sums[0] / count, array.reshape(-1, 4).mean(axis=0))


def _lowbit(bits: int, shift: bool) -> QuantConfig:
    return get_preset("lowbit-sim", activation=QuantTarget(bits, symmetric=False), shift_qk=shift)


def _quantized(model: ir.Model, config: QuantConfig, data: Callable[[], list]) -> ir.Model:
    means = collect_qk_means(model, data) if config.shift_qk else None
    names = tensors_to_calibrate(model, config, means)
    ranges = collect_ranges(calibration_model(model, config, means), names, data,
                            lambda: make_observer("minmax"), config.activation)
    return quantize(model, ranges, config, means)


def test_qdq_lands_on_the_shifted_tensors(models: dict[str, ir.Model]) -> None:
    model = models["swinir-dynamo"]
    qmodel = _quantized(model, _lowbit(4, True), _data(model))
    scores = [n for n in qmodel.graph if n.metadata_props.get(SHIFT_QK_MARK)]
    assert len(scores) == 2
    for node in scores:
        for value in node.inputs:
            dq = value.producer()
            assert dq.op_type == "DequantizeLinear"
            source = dq.inputs[0].producer().inputs[0]  # Q's input (after the sub-8-bit Clip, if any)
            if source.producer().op_type == "Clip":
                source = source.producer().inputs[0]
            assert source.name.endswith("_qk_shifted") and source.producer().op_type == "Sub"
    float_bias = [n for n in qmodel.graph if n.name.endswith("_QKBiasMul")]
    assert len(float_bias) == 2
    assert all(n.inputs[0].producer().op_type != "DequantizeLinear" for n in float_bias)  # unshifted float k


def test_shift_qk_needs_means_and_matmuls(models: dict[str, ir.Model]) -> None:
    with pytest.raises(CalibrationError, match="no q/k means for 2 attention block"):
        tensors_to_calibrate(models["swinir-torchscript"], _lowbit(4, True))
    with pytest.raises(ValueError, match="needs MatMul"):
        QuantConfig(op_types=("Conv",), shift_qk=True)
    assert ShiftQKPass in ALL_PASSES


def _context_sqnr(model: ir.Model, qmodel: ir.Model, feeds: list[dict[str, np.ndarray]]
                  ) -> tuple[float, float]:
    """(mean over blocks of the attention-output SQNR, model-output SQNR), averaged over ``feeds``."""
    contexts = [m.context.outputs[0].name for m in find_attention(model)]
    ref_model, q_model = ExposeTensorsPass(contexts)(model).model, ExposeTensorsPass(contexts)(qmodel).model
    refs, outs = [run(ref_model, f) for f in feeds], [run(q_model, f) for f in feeds]
    context = np.mean([sqnr_db(r[c], o[c]) for r, o in zip(refs, outs, strict=True) for c in contexts])
    return float(context), float(np.mean([sqnr_db(r["y"], o["y"]) for r, o in zip(refs, outs, strict=True)]))


@pytest.mark.parametrize("bits", [4, 3])
def test_shift_improves_low_bit_sqnr_with_large_means(bits: int) -> None:
    model = export(_swinir(PLANTED_OFFSET), _rand())
    data, test = _data(model, 4, seed=0), _data(model, 3, seed=100)()
    plain = _context_sqnr(model, _quantized(model, _lowbit(bits, False), data), test)
    shifted = _context_sqnr(model, _quantized(model, _lowbit(bits, True), data), test)
    assert shifted[0] - plain[0] >= MIN_CONTEXT_GAIN_DB, (plain, shifted)
    assert shifted[1] - plain[1] >= MIN_OUTPUT_GAIN_DB, (plain, shifted)


def test_calibrate_model_records_and_reuses_means(tmp_path: Path, models: dict[str, ir.Model]) -> None:
    from qdeploy.calib.cache import load_cache
    from qdeploy.calib.data import DataConfig
    from qdeploy.graph.io import save_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    src = tmp_path / "swin.onnx"
    save_model(models["swinir-torchscript"], src)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32))
    options = {"shift_qk": True, "activation": QuantTarget(4, False)}
    first = calibrate_model(CalibrateConfig(src, tmp_path / "a.onnx", DataConfig(tmp_path / "calib.npz"),
                                            method="minmax", preset="lowbit-sim", preset_options=options))
    stored = load_cache(first.cache).extra["shift_qk"]
    assert len(stored) == 2 and all(len(b["q_head_norms"]) == 2 and b["k"] for b in stored.values())
    again = calibrate_model(CalibrateConfig(src, tmp_path / "b.onnx", cache=first.cache, method="minmax",
                                            preset="lowbit-sim", preset_options=options))
    feeds = _feeds(models["swinir-torchscript"], 7)
    np.testing.assert_array_equal(run(str(first.output), feeds)["y"], run(str(again.output), feeds)["y"])
