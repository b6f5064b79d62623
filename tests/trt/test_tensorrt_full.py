"""Full TensorRT (``import tensorrt``): build and run on a GPU. Skipped where TensorRT is absent.

No machine available to this project can install full TensorRT, so these tests are written against
TensorRT 10's documented API and have never run here; they run on a user's GPU machine with
``pip install 'qdeploy[tensorrt]'`` via ``pytest -m tensorrt tests/trt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import qdq_models as qm

pytestmark = pytest.mark.tensorrt
trt = pytest.importorskip("tensorrt")

from qdeploy.graph.io import save_model  # noqa: E402
from qdeploy.quant import quantize, tensors_to_calibrate  # noqa: E402
from qdeploy.quant.presets import tensorrt_int8  # noqa: E402
from qdeploy.trt import BuildConfig, build_engine, gpu_name  # noqa: E402

#: INT8 conv net vs its own QDQ math on ORT (same rounding grid; kernel accumulation differs).
MIN_INT8_SQNR_DB = 25.0
MIN_FP16_SQNR_DB = 40.0


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - out) ** 2), 1e-30)))


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if gpu_name() is None:
        pytest.skip("full TensorRT needs an NVIDIA GPU")
    root = tmp_path_factory.mktemp("trt")
    model, config = qm.conv_net(), tensorrt_int8()
    feeds = [{"x": np.random.default_rng(i).random((1, 3, 12, 12)).astype(np.float32)} for i in range(3)]
    qmodel = quantize(model, qm.minmax_ranges(model, tensors_to_calibrate(model, config), feeds), config)
    return {"float": save_model(model, root / "net.onnx"), "qdq": save_model(qmodel, root / "net.qdq.onnx")}


@pytest.mark.parametrize(
    ("kind", "precision", "min_sqnr"),
    [("qdq", "int8", MIN_INT8_SQNR_DB), ("float", "fp16", MIN_FP16_SQNR_DB)],
)
def test_tensorrt_engine_runs_and_matches_ort(
    paths: dict[str, Path], kind: str, precision: str, min_sqnr: float
) -> None:
    from qdeploy.backends import get_backend

    result = build_engine(paths[kind], BuildConfig(precision=precision, flavor="tensorrt"))
    assert len(result.engine) > 0 and result.device != "cpu-aot"
    x = {"x": np.random.default_rng(7).random((1, 3, 12, 12)).astype(np.float32)}
    ref = qm.run(str(paths[kind]), x)["y"]
    with get_backend("tensorrt").open(paths[kind]) as session:
        out = session.run(x)["y"]
    assert _sqnr(ref, out) > min_sqnr


def test_weakly_typed_int8_uses_builder_flags(paths: dict[str, Path]) -> None:
    result = build_engine(
        paths["qdq"], BuildConfig(precision="best", flavor="tensorrt", strongly_typed=False)
    )
    assert not result.strongly_typed and not result.fp16_rewrite and len(result.engine) > 0
