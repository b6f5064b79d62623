"""DQC on a W4A4 SwinIR export: lowers its loss, touches only QDQ initializers, helps in ORT, is seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from refine_models import ABPN_SHAPE, SWIN_SHAPE, W4A4, qdq, samples

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.errors import InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.quant import get_preset
from qdeploy.refine import refine
from qdeploy.refine.dqc import DQCConfig, DQCReport, refine_dqc

ITERATIONS = 30
CALIB, HELD_OUT = 8, 4
#: DQC must cut its own calibration loss by at least this fraction in ITERATIONS steps (seen: ~25%).
MIN_LOSS_DROP = 0.10
#: ... and raise the held-out output SQNR vs float in ORT by at least this much (seen: ~+1.5 dB).
MIN_SQNR_GAIN_DB = 0.5
CONFIG = DQCConfig(iterations=ITERATIONS, batch_size=4, device="cpu", seed=0)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="module")
def setup(swin: ir.Model) -> tuple[ir.Model, ir.Model, list[dict]]:
    calib = samples(swin, SWIN_SHAPE, 1.0, CALIB, seed=0)
    return swin, qdq(swin, W4A4, calib), calib


@pytest.fixture(scope="module")
def refined(setup: tuple) -> tuple[ir.Model, DQCReport]:
    swin, qmodel, calib = setup
    return refine_dqc(swin, qmodel, calib, CONFIG, show_progress=False)


def _arrays(model: ir.Model) -> dict[str, np.ndarray]:
    return {n: v.const_value.numpy() for n, v in model.graph.initializers.items()}


def test_dqc_lowers_its_loss(refined: tuple) -> None:
    _, report = refined
    assert report.applied
    assert len(report.losses) == ITERATIONS
    assert report.final_loss < (1 - MIN_LOSS_DROP) * report.initial_loss, report
    assert report.scales > 0 and report.weights > 0 and report.weights == report.weights_from_float_model
    assert report.feature_tensors  # "auto" found intermediate layers


def _quantization_inputs(model: ir.Model) -> set[str]:
    """Initializers read by Q/DQ nodes, plus the bounds of grid Clips that feed a Q."""
    names = set()
    for node in model.graph:
        feeds_q = any(u.node.op_type == "QuantizeLinear" for o in node.outputs for u in o.uses())
        if node.op_type in QDQ_OPS or (node.op_type == "Clip" and feeds_q):
            names.update(v.name for v in node.inputs[1 if node.op_type == "Clip" else 0:] if v is not None)
    return names


def test_dqc_changes_only_quantization_initializers(setup: tuple, refined: tuple) -> None:
    _, qmodel, _ = setup
    before, after = _arrays(qmodel), _arrays(refined[0])
    assert before.keys() == after.keys()
    changed = {n for n in before if before[n].tobytes() != after[n].tobytes()}
    assert changed, "nothing was refined"
    assert changed <= _quantization_inputs(qmodel)
    for name in before:  # same dtypes and shapes everywhere: the graph still reads the same types
        assert (before[name].dtype, before[name].shape) == (after[name].dtype, after[name].shape)
    float_params = {n for n in before if n not in _quantization_inputs(qmodel)}
    assert float_params, "the model has float parameters (biases, LayerNorm) that must stay bit-identical"


def test_refined_model_improves_sqnr_in_ort(setup: tuple, refined: tuple) -> None:
    swin, qmodel, _ = setup
    held_out = samples(swin, SWIN_SHAPE, 1.0, HELD_OUT, seed=1)
    reference = get_backend("ort-cpu").open(swin, SessionOptions(threads=1))

    def sqnr(model: ir.Model) -> float:
        session = get_backend("ort-cpu").open(model, SessionOptions(threads=1, graph_optimization="disable"))
        name = reference.outputs[0].name
        return float(np.mean([sqnr_db(reference.run(f)[name], session.run(f)[name]) for f in held_out]))

    before, after = sqnr(qmodel), sqnr(refined[0])
    assert after >= before + MIN_SQNR_GAIN_DB, f"SQNR {before:.2f} -> {after:.2f} dB"


def test_dqc_is_deterministic(setup: tuple) -> None:
    swin, qmodel, calib = setup
    config = DQCConfig(iterations=4, batch_size=2, device="cpu", seed=3)
    first, report1 = refine_dqc(swin, qmodel, calib, config, show_progress=False)
    second, report2 = refine_dqc(swin, qmodel, calib, config, show_progress=False)
    assert report1.losses == report2.losses
    a, b = _arrays(first), _arrays(second)
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    other, _ = refine_dqc(swin, qmodel, calib, DQCConfig(iterations=4, batch_size=2, device="cpu", seed=4),
                          show_progress=False)
    assert any(a[n].tobytes() != v.tobytes() for n, v in _arrays(other).items())  # the seed matters


def test_written_values_are_what_was_optimised(abpn: ir.Model) -> None:
    """Perturbed parameters, written back: ORT on the written model equals the torch graph with overrides,
    and every int32 bias sits at act_scale * weight_scale (what ORT's QLinearConv assumes)."""
    import torch

    from qdeploy.refine.dqc import _write_back
    from qdeploy.refine.learnable import LearnableQDQ
    from qdeploy.refine.quantizers import find_quantizers
    from qdeploy.torchexec import TorchGraph

    calib = samples(abpn, ABPN_SHAPE, 255.0, 2, seed=0)
    qmodel = qdq(abpn, get_preset("ort-cpu-int8"), calib)
    learn = LearnableQDQ(qmodel, find_quantizers(qmodel, abpn, True), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in learn.log_scales.values():
            param.copy_(0.05 * torch.randn(param.shape, generator=generator))
        for param in learn.zero_points.values():
            param.add_(2.0 * torch.rand(param.shape, generator=generator))
        expected = TorchGraph(qmodel).run(calib[0], learn.overrides())
    written = _write_back(qmodel, learn.arrays())
    session = get_backend("ort-cpu").open(written, SessionOptions(threads=1, graph_optimization="disable"))
    for name, value in session.run(calib[0]).items():
        np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-3 * np.abs(value).max())
    arrays, checked = _arrays(written), 0
    for node in written.graph:
        if node.op_type != "Conv" or len(node.inputs) < 3:
            continue
        x_dq, w_dq, b_dq = (v.producer() for v in node.inputs[:3])
        if b_dq is None or b_dq.op_type != "DequantizeLinear":
            continue
        expected_scale = arrays[x_dq.inputs[1].name] * arrays[w_dq.inputs[1].name]
        np.testing.assert_allclose(arrays[b_dq.inputs[1].name], expected_scale, rtol=1e-6)
        checked += 1
    assert checked > 0
    assert any(arrays[n].tobytes() != v.tobytes() for n, v in _arrays(qmodel).items() if "bias" in n)


def test_config_and_inputs_are_validated(setup: tuple) -> None:
    swin, qmodel, calib = setup
    for bad in ({"iterations": 0}, {"lr": -1.0}, {"device": "tpu"}, {"feature_tensors": "all"},
                {"batch_size": True}):
        with pytest.raises(ValueError):
            DQCConfig(**bad)
    with pytest.raises(InputError, match="not in the float model"):
        refine_dqc(swin, qmodel, calib, DQCConfig(iterations=1, feature_tensors=("nope",), device="cpu"),
                   show_progress=False)
    with pytest.raises(InputError, match="invalid DQC option"):
        refine("dqc", swin, qmodel, calib, {"iterations": -2})
    with pytest.raises(InputError, match="unknown refinement method"):
        refine("nope", swin, qmodel, calib)


def test_calibrate_pipeline_refines(tmp_path: Path, abpn: ir.Model) -> None:
    from qdeploy.calib.data import DataConfig
    from qdeploy.graph.io import save_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model

    model_path, data = tmp_path / "abpn.onnx", tmp_path / "calib.npz"
    save_model(abpn, model_path)
    feeds = samples(abpn, ABPN_SHAPE, 255.0, 4, seed=0)
    name = abpn.graph.inputs[0].name
    np.savez(data, **{name: np.concatenate([f[name] for f in feeds])})
    result = calibrate_model(CalibrateConfig(
        model=model_path, output=tmp_path / "q.onnx", data=DataConfig(source=data), method="minmax",
        preset="ort-cpu-int8", refine="dqc", refine_options={"iterations": 2, "device": "cpu",
                                                             "show_progress": False}))
    assert result.refine["method"] == "dqc" and len(result.refine["losses"]) == 2
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = json.dumps(manifest)
    assert '"refine"' in entry and '"initial_loss"' in entry
    with pytest.raises(InputError, match="needs calibration data"):
        CalibrateConfig(model=model_path, output=tmp_path / "r.onnx", cache=tmp_path / "c.json", refine="dqc")


def test_dqc_device_cuda(setup: tuple) -> None:
    """On CUDA the same run starts from the same loss; without CUDA, asking for it is a clear error."""
    import torch

    swin, qmodel, calib = setup
    config = DQCConfig(iterations=2, batch_size=4, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            refine_dqc(swin, qmodel, calib, config, show_progress=False)
        return
    _, gpu = refine_dqc(swin, qmodel, calib, config, show_progress=False)
    _, cpu = refine_dqc(swin, qmodel, calib, DQCConfig(iterations=2, batch_size=4, device="cpu"),
                        show_progress=False)
    assert gpu.device.startswith("cuda")
    assert gpu.initial_loss == pytest.approx(cpu.initial_loss, rel=1e-3)
