"""ort-cuda in the multi-backend profile: fp32, fp16 and QDQ rows on the GPU, judged against ORT CPU.

Needs onnxruntime-gpu with a working CUDAExecutionProvider and an NVIDIA GPU; skips cleanly otherwise
(and ``-m 'not gpu'`` in the default addopts deselects it). Run with ``pytest -m gpu tests/gpu``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from qdeploy.evaluate.precision import CUDA_INT8_NOTE
from qdeploy.evaluate.profile import ModelProfile, ProfileConfig, profile_models
from qdeploy.evaluate.report import summary_rows
from qdeploy.graph.io import save_model


def _cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _cuda_available(), reason="needs onnxruntime-gpu with CUDAExecutionProvider"),
]

#: CUDA fp32 convs may run in TF32 (10-bit mantissa) on Ampere+: ~1e-3 relative error, well above this.
MIN_CUDA_FP32_SQNR_DB = 40.0
#: FP16 math with float32 I/O on a 3-layer conv net.
MIN_CUDA_FP16_SQNR_DB = 40.0
#: CPU runs QDQ as integer kernels, CUDA as float between Q/DQ: both approximate the same QDQ math.
MAX_QDQ_SQNR_GAP_DB = 6.0
MIN_QDQ_SQNR_DB = 25.0
C, H, W = 8, 32, 32


def _float_model(path: Path) -> tuple[Path, list[np.ndarray]]:
    """Three 3x3 convs (3 -> 8 -> 8 -> 3) with ReLUs; weights seeded."""
    rng = np.random.default_rng(0)
    ws = [rng.normal(0, 0.2, s).astype(np.float32) for s in ((C, 3, 3, 3), (C, C, 3, 3), (3, C, 3, 3))]
    inits = ", ".join(
        f"float[{','.join(map(str, w.shape))}] w{i} = {{{', '.join(repr(float(v)) for v in w.ravel())}}}"
        for i, w in enumerate(ws)
    )
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    net (float[1, 3, {H}, {W}] x) => (float[1, 3, {H}, {W}] y)
    <{inits}>
    {{
        c0 = Conv <pads = [1, 1, 1, 1]> (x, w0)
        r0 = Relu (c0)
        c1 = Conv <pads = [1, 1, 1, 1]> (r0, w1)
        r1 = Relu (c1)
        y = Conv <pads = [1, 1, 1, 1]> (r1, w2)
    }}"""
    return save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), path), ws


def _qdq_model(float_path: Path, path: Path) -> Path:
    """qdeploy's ort-cpu preset with min/max ranges measured on ORT CPU over a few random inputs."""
    from qdeploy.backends import SessionOptions, get_backend
    from qdeploy.graph.io import load_model
    from qdeploy.graph.passes import ExposeTensorsPass
    from qdeploy.quant.presets import get_preset
    from qdeploy.quant.quantize import quantize, tensors_to_calibrate
    from qdeploy.types import TensorRange

    model = load_model(float_path)
    config = get_preset("ort-cpu-int8")
    names = tensors_to_calibrate(model, config)
    exposed = ExposeTensorsPass(names)(model.clone()).model
    rng = np.random.default_rng(1)
    with get_backend("ort-cpu").open(exposed, SessionOptions(threads=1)) as session:
        outs = [session.run({"x": rng.uniform(0, 1, (1, 3, H, W)).astype(np.float32)}) for _ in range(4)]
    ranges = {}
    for name in names:
        lo, hi = float(min(o[name].min() for o in outs)), float(max(o[name].max() for o in outs))
        ranges[name] = TensorRange(name, lo, hi, lo, hi, 0.0, "minmax", len(outs))
    return save_model(quantize(model, ranges, config), path)


def _row(rows: tuple[ModelProfile, ...], name: str, backend: str) -> ModelProfile:
    return next(m for m in rows if m.name == name and m.backend == backend)


def test_ort_cuda_fp32_fp16_qdq_against_cpu(tmp_path: Path) -> None:
    fp32, _ = _float_model(tmp_path / "float.onnx")
    qdq = _qdq_model(fp32, tmp_path / "int8.onnx")
    config = ProfileConfig(backends=("ort-cpu", "ort-cuda"), fp16=True, warmup=3, iterations=20)
    report = profile_models([fp32, qdq], config)
    assert report.skipped == () and report.reference_backend == "ort-cpu"
    rows = report.models
    precisions = {(m.name, m.backend): m.precision for m in rows}
    assert precisions[("float.onnx", "ort-cuda")] == "fp32"
    assert precisions[("float.onnx (fp16)", "ort-cuda")] == "fp16"
    assert precisions[("int8.onnx", "ort-cuda")] == "int8-qdq"
    sqnr = {(m.name, m.backend): m.worst_accuracy()["sqnr_db"] for m in rows}
    assert sqnr[("float.onnx", "ort-cuda")] >= MIN_CUDA_FP32_SQNR_DB
    assert sqnr[("float.onnx (fp16)", "ort-cuda")] >= MIN_CUDA_FP16_SQNR_DB
    cpu_q, cuda_q = sqnr[("int8.onnx", "ort-cpu")], sqnr[("int8.onnx", "ort-cuda")]
    assert min(cpu_q, cuda_q) >= MIN_QDQ_SQNR_DB
    assert abs(cpu_q - cuda_q) <= MAX_QDQ_SQNR_GAP_DB
    cuda_qdq = _row(rows, "int8.onnx", "ort-cuda")
    assert cuda_qdq.coverage is not None and cuda_qdq.coverage.int8 == 0
    assert cuda_qdq.coverage.quantized == _row(rows, "int8.onnx", "ort-cpu").coverage.quantized == 3
    cells = {(r[0], r[1]): r[-1] for r in summary_rows(report)}
    assert cells[("int8.onnx", "ort-cuda")] == f"0/3 ({CUDA_INT8_NOTE})"
    for m in rows:
        assert 0 < m.latency_ms.p50 <= m.latency_ms.p99
