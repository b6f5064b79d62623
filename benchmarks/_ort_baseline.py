"""ONNX Runtime's own ``quantize_static`` as the baseline qdeploy is compared against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["ort_quantize_static"]


class _Reader:
    """A CalibrationDataReader over a list of feed dicts (ORT's required interface)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def ort_quantize_static(float_path: Path, out_path: Path, feeds: list[dict[str, np.ndarray]], method: str,
                        reduce_range: bool = False, skip_symbolic_shape: bool = False) -> Path:
    """Quantize with ORT's recipe: QDQ, per-channel int8 weights, uint8 activations, ``method`` calibration.

    ``method`` is MinMax, Entropy or Percentile (ORT's defaults for bins/percentile, which
    ``quantize_static`` cannot change). The model is pre-processed first, as ORT's docs ask;
    ``skip_symbolic_shape`` is the pre-processing option ORT's docs give for graphs its symbolic shape
    inference cannot handle ("Incomplete symbolic shape inference", e.g. SwinIR with dynamic H/W).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=skip_symbolic_shape)
    quantize_static(
        str(pre), str(out_path), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    pre.unlink(missing_ok=True)
    return out_path
