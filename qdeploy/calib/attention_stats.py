"""Per-head means of attention q and k on calibration data, for ``ShiftQKPass`` (config ``shift_qk``).

Why a separate pass over the data: the shifted tensors ``q - mu_q`` / ``k - mu_k`` only exist once the
means are known, and their ranges must be calibrated on them (an observer's clipping bound of ``q'`` is
not derivable from that of ``q``). So calibration with ``shift_qk`` is: this one streamed pass, the
exact float rewrite, then the usual observer passes on the rewritten model.

Means are exact float64 sums over every q/k vector divided by the count, accumulated batch by batch, so
memory is constant in the number of samples and the result does not depend on the batch size (up to
float64 summation order, ~1e-16 relative).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.calib.collect import CollectConfig, _usable_batch_size, batched
from qdeploy.errors import CalibrationError
from qdeploy.graph.passes import PREPARE_PIPELINE, ExposeTensorsPass
from qdeploy.graph.passes.shift_qk import QKMeans, find_attention

__all__ = ["collect_qk_means", "qk_means_from_json", "qk_means_to_json", "vector_sums"]

Feeds = dict[str, np.ndarray]


def vector_sums(array: np.ndarray, vector_axis: int) -> tuple[np.ndarray, int]:
    """Per-head sums of the vectors along ``vector_axis`` (-1 for q, -2 for k transposed), and how many
    vectors each head summed.

    Rank >= 4 tensors are ``[..., heads, ., .]`` (head axis -3) and give ``[heads, head_dim]``; lower
    ranks have no head axis and give ``[1, head_dim]``. Sums are float64.
    """
    rank = array.ndim
    if rank < 2:
        raise CalibrationError(f"attention operand of rank {rank} has no vector axis",
                               "shift_qk needs q/k of rank >= 2 ([..., N, head_dim])")
    keep = (rank - 3, rank + vector_axis) if rank >= 4 else (rank + vector_axis,)
    sums = np.sum(array, axis=tuple(i for i in range(rank) if i not in keep), dtype=np.float64)
    sums = sums.reshape(-1 if rank >= 4 else 1, array.shape[vector_axis])
    return sums, array.size // sums.size


def _prepared(model: ir.Model) -> ir.Model:
    """The model as ``quantize`` sees it (named, sorted), so tensor names agree with the rewrite."""
    model = model.clone()
    for pass_cls in PREPARE_PIPELINE:
        pass_cls()(model)
    return model


def collect_qk_means(
    model: ir.Model,
    make_data: Callable[[], Iterable[Feeds]],
    config: CollectConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, QKMeans]:
    """Means of every attention block's q and k (the scores MatMul's inputs) over ``make_data()``.

    Runs the float model once in ONNX Runtime with the q/k tensors exposed as outputs. Returns
    :class:`QKMeans` by q tensor name, ready for ``ShiftQKPass`` / ``quantize(..., qk_means=...)``; an
    empty dict when the model has no attention. ``progress`` gets the number of samples seen so far.

    Raises:
        CalibrationError: no samples, or non-finite q/k values.
    """
    config = config or CollectConfig()
    prepared = _prepared(model)
    matches = find_attention(prepared)
    if not matches:
        return {}
    pairs = {m.q.name or "": m.k.name or "" for m in matches}
    names = list(dict.fromkeys([*pairs, *pairs.values()]))
    inputs = {v.name for v in prepared.graph.inputs}
    exposed = [n for n in names if n not in inputs]  # graph inputs come straight from the feeds
    session = get_backend(config.backend).open(ExposeTensorsPass(exposed)(prepared).model,
                                               SessionOptions(threads=config.threads))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = dict.fromkeys(names, 0)
    seen = 0
    with session:
        for feeds in batched(make_data(), _usable_batch_size(session.inputs, config.batch_size)):
            outs = {**feeds, **(session.run(feeds, exposed) if exposed else {})}
            for name in names:
                part, count = vector_sums(outs[name], -1 if name in pairs else -2)
                sums[name] = sums[name] + part if name in sums else part
                counts[name] += count
            seen += next(iter(feeds.values())).shape[0]
            if progress:
                progress(seen)
    if seen == 0:
        raise CalibrationError("the calibration data yielded no samples",
                               "point --data at a folder of images or a .npy/.npz file with samples")
    return {q: _means(q, k, sums, counts) for q, k in pairs.items()}


def _means(q: str, k: str, sums: Mapping[str, np.ndarray], counts: Mapping[str, int]) -> QKMeans:
    q_mean, k_mean = sums[q] / counts[q], sums[k] / counts[k]
    if not (np.isfinite(q_mean).all() and np.isfinite(k_mean).all()):
        raise CalibrationError(f"attention tensors {q!r} / {k!r} produced NaN or Inf on the calibration data",
                               "check the calibration data and the float model")
    return QKMeans(q, k, q_mean, k_mean, counts[q])


def qk_means_to_json(means: Mapping[str, QKMeans]) -> dict[str, Any]:
    """``{q name: QKMeans.to_dict()}`` for the calibration cache's ``extra["shift_qk"]``."""
    return {name: m.to_dict() for name, m in means.items()}


def qk_means_from_json(data: Mapping[str, Any]) -> dict[str, QKMeans]:
    """Inverse of :func:`qk_means_to_json`."""
    return {str(name): QKMeans.from_dict(m) for name, m in data.items()}
