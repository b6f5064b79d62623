"""Run calibration data through the float model and stream every needed activation into observers.

Why two passes for histogram methods: a histogram whose edges depend on the data seen so far gives
results that depend on batch order and batch size (a known complaint: NVIDIA/Model-Optimizer#619). Pass 0
records each tensor's global min/max; pass 1 fills a histogram with those fixed edges. Counts are integers,
so the ranges are identical whatever the batch size.

Why pass 1 usually does not run the model: the activations of pass 0 are kept in memory, up to
``CollectConfig.replay_bytes``, and replayed (the same arrays, so the same ranges); only batches beyond
that budget are recomputed, which keeps memory bounded for large models or data sets. Running the model
and reading the images again was half of the calibration time on ABPN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.backends import Session, SessionOptions, get_backend
from qdeploy.errors import CalibrationError
from qdeploy.types import QuantTarget, TensorRange, TensorSpec

__all__ = ["CLIP_WARN_FRACTION", "LOW_BIT_CLIP_WARN_FRACTION", "REPLAY_BYTES", "CollectConfig", "batched",
           "clip_warning_threshold", "collect_ranges"]

_LOG = logging.getLogger(__name__)
Feeds = dict[str, np.ndarray]
Progress = Callable[[int], None]

REPLAY_BYTES = 1 << 30
"""Default memory for pass-0 activations replayed in later passes (1 GiB: 64 ABPN crops of 96x96 take 0.5)."""

CLIP_WARN_FRACTION = 0.01
"""A range that clips more than this share of its calibration values (8-bit and wider grids) is logged.

Why 1 %: at 8 bits a well-chosen bound clips a tail, not the distribution. The MSE-optimal clip of a
Gaussian clips about 1e-4 of it (Banner et al., ACIQ), percentile's default 99.99 clips 1e-4 per side,
and on ABPN x3 every method clipped at most 0.5 % of any tensor; the failures this catches clipped 99.7 %.
"""

LOW_BIT_CLIP_WARN_FRACTION = 0.5
"""The same for grids below 8 bits, where clipping is the method's trade-off, not a failure: mse on a
4-bit grid clipped 28.5 % of a SwinIR post-GELU tensor (its negative lobe, by design), and the
MSE-optimal clip of a Gaussian on a 2-bit grid is 8.7 % (ACIQ). Clipping more than half the values
clips the typical value, not a tail (the collapses this catches clipped 99.99 %)."""


def clip_warning_threshold(bits: int) -> float:
    """Clipped share above which a range is reported (see :data:`CLIP_WARN_FRACTION`)."""
    return CLIP_WARN_FRACTION if bits >= 8 else LOW_BIT_CLIP_WARN_FRACTION


@dataclass(frozen=True)
class CollectConfig:
    """How to run the float model while collecting: batch size, threads, backend, replay memory (bytes)."""

    batch_size: int = 1
    threads: int | None = None
    backend: str = "ort-cpu"
    replay_bytes: int = REPLAY_BYTES

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.replay_bytes < 0:
            raise ValueError(f"replay_bytes must be >= 0, got {self.replay_bytes}")


def batched(samples: Iterable[Feeds] | Callable[[], Iterable[Feeds]], batch_size: int) -> Iterator[Feeds]:
    """Concatenate consecutive single-sample feeds into batches; a shape change starts a new batch.

    ``samples`` may be a factory (called when the first batch is wanted), so that a pass replayed from
    memory does not even open the data.
    """
    if callable(samples):
        samples = samples()
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
    """Calibrate ``tensor_names`` of ``model`` on the samples ``make_data()`` yields (called once per pass
    that cannot be replayed from memory).

    ``make_observer`` builds one fresh observer per tensor (see :mod:`qdeploy.calib`). ``progress`` is called
    with the number of samples processed so far after each batch, counted across passes (a two-pass
    observer on N samples ends at 2N). A range clipping more than :func:`clip_warning_threshold` of its
    values is logged as a warning naming the tensor.
    """
    config = config or CollectConfig()
    input_names = {v.name for v in model.graph.inputs}
    exposed = [n for n in tensor_names if n not in input_names]
    observers = {name: make_observer() for name in tensor_names}
    n_passes = max((getattr(o, "passes", 1) for o in observers.values()), default=1)
    session = get_backend(config.backend).open(_expose(model, exposed), SessionOptions(threads=config.threads))
    batch_size = _usable_batch_size(session.inputs, config.batch_size)
    replay = _Replay(config.replay_bytes if n_passes > 1 else 0)
    done = 0  # samples processed in earlier passes
    with session:
        for pass_index in range(n_passes):
            seen = 0
            for values, n in _pass_values(session, exposed, observers, batched(make_data, batch_size), replay,
                                          pass_index):
                _observe_all(observers, values, pass_index)
                seen += n
                if progress:
                    progress(done + seen)
            done += seen
            if seen == 0:
                raise CalibrationError("the calibration data yielded no samples",
                                       "point --data at a folder of images or a .npy/.npz file with samples")
    replay.batches.clear()  # free the activations before the searches
    ranges = {name: obs.compute_range(name, target) for name, obs in observers.items()}
    _warn_clipping(ranges, target)
    return ranges


class _Replay:
    """Pass-0 activation batches kept for later passes, while they fit in ``budget`` bytes.

    Only a prefix of the batches is kept (the first batch that does not fit stops the recording), so a
    later pass replays that prefix and recomputes the rest: the same values either way.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.batches: list[tuple[dict[str, np.ndarray], int]] = []
        self.used = 0
        self.recording = budget > 0
        self.complete = False  # every pass-0 batch was kept: later passes need no data at all

    def record(self, values: dict[str, np.ndarray], n: int) -> None:
        """Keep one pass-0 batch if it still fits."""
        if not self.recording:
            return
        size = sum(v.nbytes for v in values.values())
        if self.used + size > self.budget:
            self.recording = False
            return
        self.batches.append((values, n))
        self.used += size


def _pass_values(session: Session, exposed: list[str], observers: dict, batches: Iterator[Feeds],
                 replay: _Replay, pass_index: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """``(tensor values, samples)`` per batch of one pass: replayed from pass 0 where kept, else computed.

    Batches beyond the replayed prefix are read again (skipping the prefix costs reading, not running).
    """
    skip = 0
    if pass_index > 0:
        yield from replay.batches
        if replay.complete:
            return
        skip = len(replay.batches)
    for k, feeds in enumerate(batches):
        if k < skip:
            continue
        outs = session.run(feeds, exposed) if exposed else {}
        values = {**{key: v for key, v in feeds.items() if key in observers}, **outs}
        n = next(iter(feeds.values())).shape[0]
        if pass_index == 0:
            replay.record(values, n)
        yield values, n
    if pass_index == 0:
        replay.complete, replay.recording = replay.recording, False


def _warn_clipping(ranges: dict[str, TensorRange], target: QuantTarget) -> None:
    """Log every range that clips more of its values than the grid's threshold (names the tensor)."""
    limit = clip_warning_threshold(target.bits)
    for r in ranges.values():
        if r.clipped_fraction > limit:
            _LOG.warning("tensor %r: %s bounds [%.4g, %.4g] clip %.1f%% of its %d calibration values "
                         "(observed [%.4g, %.4g]; more than %.0f%% is unusual on a %d-bit grid): check the "
                         "calibration data, or try another --method", r.name, r.method, r.lo, r.hi,
                         100 * r.clipped_fraction, r.count, r.observed_min, r.observed_max, 100 * limit,
                         target.bits)
