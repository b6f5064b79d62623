"""Per-channel minima, maxima and means of Linear inputs on calibration data (for ``qdeploy.quant.smoothing``).

One streamed pass of the float model in ONNX Runtime with the tensors exposed; the channel axis is the
last one (a Linear reads ``[..., K]``). Only running min/max/sum per channel are kept, so memory does not
grow with the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.calib.collect import CollectConfig, _usable_batch_size, batched
from qdeploy.errors import CalibrationError
from qdeploy.graph.passes import ExposeTensorsPass

__all__ = ["ChannelStats", "collect_channel_stats"]

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel (last axis) minimum, maximum and mean of one tensor; float32 ``[K]`` each."""

    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray


def collect_channel_stats(
    model: ir.Model,
    names: list[str],
    make_data: Callable[[], Iterable[Feeds]],
    config: CollectConfig | None = None,
) -> dict[str, ChannelStats]:
    """Per-channel (last axis) min, max and mean of each tensor in ``names`` over ``make_data()``.

    Raises:
        CalibrationError: no samples, or a tensor with NaN/Inf values.
    """
    config = config or CollectConfig()
    inputs = {v.name for v in model.graph.inputs}
    exposed = [n for n in names if n not in inputs]
    session = get_backend(config.backend).open(ExposeTensorsPass(exposed)(model.clone()).model,
                                               SessionOptions(threads=config.threads))
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = dict.fromkeys(names, 0)
    seen = 0
    with session:
        for feeds in batched(make_data(), _usable_batch_size(session.inputs, config.batch_size)):
            outs = {**feeds, **(session.run(feeds, exposed) if exposed else {})}
            for name in names:
                flat = np.asarray(outs[name], np.float32).reshape(-1, outs[name].shape[-1])
                lo[name] = np.minimum(lo[name], flat.min(0)) if name in lo else flat.min(0)
                hi[name] = np.maximum(hi[name], flat.max(0)) if name in hi else flat.max(0)
                part = flat.sum(0, dtype=np.float64)
                sums[name] = sums[name] + part if name in sums else part
                rows[name] += flat.shape[0]
            seen += next(iter(feeds.values())).shape[0]
    if seen == 0:
        raise CalibrationError("the calibration data yielded no samples",
                               "point --data at a folder of images or a .npy/.npz file with samples")
    bad = [n for n in names if not (np.isfinite(lo[n]).all() and np.isfinite(hi[n]).all())]
    if bad:
        raise CalibrationError(f"{len(bad)} Linear input(s) produced NaN or Inf on the calibration data, "
                               f"e.g. {bad[0]!r}", "check the calibration data and the float model")
    return {n: ChannelStats(lo[n], hi[n], (sums[n] / rows[n]).astype(np.float32)) for n in names}
