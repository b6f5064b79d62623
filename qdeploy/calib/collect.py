"""Run calibration data through the float model and stream every needed activation into observers.

Why two passes for histogram methods: a histogram whose edges depend on the data seen so far gives
results that depend on batch order and batch size (a known complaint: NVIDIA/Model-Optimizer#619). Pass 0
records each tensor's global min/max; pass 1 fills a histogram with those fixed edges. Counts are integers,
so the ranges are identical whatever the batch size, and memory stays constant in the number of samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.backends import SessionOptions, get_backend
from qdeploy.errors import CalibrationError
from qdeploy.types import QuantTarget, TensorRange, TensorSpec

__all__ = ["CollectConfig", "batched", "collect_ranges"]

_LOG = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class CollectConfig:
    """How to run the float model while collecting: batch size, threads and backend."""

    batch_size: int = 1
    threads: int | None = None
    backend: str = "ort-cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def batched(samples: Iterable[Feeds], batch_size: int) -> Iterator[Feeds]:
    """Concatenate consecutive single-sample feeds into batches; a shape change starts a new batch."""
    pending: list[Feeds] = []

    def flush() -> Feeds:
        return {k: np.concatenate([p[k] for p in pending], axis=0) for k in pending[0]}

    for sample in samples:
        if pending and any(sample[k].shape[1:] != pending[0][k].shape[1:] for k in sample):
            yield flush()
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield flush()
            pending = []
    if pending:
        yield flush()


def _expose(model: ir.Model, names: list[str]) -> ir.Model:
    from qdeploy.graph.passes import ExposeTensorsPass

    return ExposeTensorsPass(names)(model).model


def _usable_batch_size(specs: list[TensorSpec], requested: int) -> int:
    """``requested``, or 1 when an input's batch axis is fixed to 1 (batches could not be fed).

    Why this is safe: ranges do not depend on the batch size (see the module docstring), so a static-batch
    export calibrates to the same result one sample at a time instead of failing on ``--batch-size``.
    """
    if requested > 1 and any(s.shape and s.shape[0] == 1 for s in specs):
        _LOG.info("model input batch axis is fixed to 1; calibrating one sample at a time")
        return 1
    return requested


def _observe_all(observers: dict, values: dict[str, np.ndarray], pass_index: int) -> None:
    """Feed each tensor to its observer; name the tensor when an observer refuses the data (NaN/Inf)."""
    for name, obs in observers.items():
        if pass_index < obs.passes:
            try:
                obs.observe(values[name], pass_index)
            except CalibrationError as exc:
                raise CalibrationError(f"tensor {name!r}: {exc.message}", exc.hint) from exc


def collect_ranges(
    model: ir.Model,
    tensor_names: list[str],
    make_data: Callable[[], Iterable[Feeds]],
    make_observer: Callable[[], object],
    target: QuantTarget,
    config: CollectConfig | None = None,
    progress: Progress | None = None,
) -> dict[str, TensorRange]:
    """Calibrate ``tensor_names`` of ``model`` on the samples ``make_data()`` yields (called once per pass).

    ``make_observer`` builds one fresh observer per tensor (see :mod:`qdeploy.calib`). ``progress`` is called
    with the number of samples processed so far after each batch, counted across passes (a two-pass
    observer on N samples ends at 2N).
    """
    config = config or CollectConfig()
    input_names = {v.name for v in model.graph.inputs}
    exposed = [n for n in tensor_names if n not in input_names]
    observers = {name: make_observer() for name in tensor_names}
    n_passes = max((getattr(o, "passes", 1) for o in observers.values()), default=1)
    session = get_backend(config.backend).open(_expose(model, exposed), SessionOptions(threads=config.threads))
    batch_size = _usable_batch_size(session.inputs, config.batch_size)
    done = 0  # samples processed in earlier passes
    with session:
        for pass_index in range(n_passes):
            seen = 0
            for feeds in batched(make_data(), batch_size):
                outs = session.run(feeds, exposed) if exposed else {}
                values = {**{k: v for k, v in feeds.items() if k in observers}, **outs}
                _observe_all(observers, values, pass_index)
                seen += next(iter(feeds.values())).shape[0]
                if progress:
                    progress(done + seen)
            done += seen
            if seen == 0:
                raise CalibrationError("the calibration data yielded no samples",
                                       "point --data at a folder of images or a .npy/.npz file with samples")
    return {name: obs.compute_range(name, target) for name, obs in observers.items()}
