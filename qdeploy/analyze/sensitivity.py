"""Per-tensor sensitivity of a QDQ model: which quantized tensor hurts the output, and by how much.

For every quantized tensor (activation Q->DQ pair or weight DQ) three measurements, on a few
calibration-held-out samples:

(a) ``sqnr_db``: its dequantized value against the float model's tensor (error accumulated from upstream
    plus its own), and ``local_sqnr_db``: against its own input in the same QDQ run (its own rounding and
    clipping only), from one run of each graph with all those tensors exposed as outputs;
(b) output SQNR (and the task score) when *only* this tensor is quantized;
(c) output SQNR (and score) when *only* this tensor is left float.

How it is made fast (measured numbers are in :attr:`SensitivityResult.timings`):

- one switchable graph (:mod:`qdeploy.analyze.switch`): (b) and (c) for all N tensors are 2N + 2 runs of
  *one* ORT session that differ only in a boolean mask feed; no model is rebuilt, serialized or loaded
  per tensor (a session creation costs more than a small inference);
- (a) takes one extra pass with everything exposed, kept separate so that the 2N + 2 sweep runs copy out
  only the model outputs; statistics are streamed per sample (no tensor is kept across samples except a
  bounded random subsample per tensor for the histograms);
- ``graph_optimization="basic"``: constant folding and dead-code removal, but no QDQ fusion, so the sweep
  measures plain Q/DQ math (fused-kernel effects such as AVX2 int16 saturation are *not* included: judge
  those with ``qdeploy profile``); ``"disable"`` gives the same numbers, slower;
- prefix reuse (:mod:`qdeploy.analyze.segments`): "only tensor i quantized" shares its float prefix with
  every tensor after it, "only tensor i float" its all-quantized prefix; each run starts at the last cut
  point before tensor i (a suffix model fed from values cached by the two baseline runs), so on a deep
  model a run does on average about half the work; same results as full runs (tested).

Ranking: quantization noise adds roughly in power at the output, so both (b) and (c) estimate one thing,
the tensor's share of the output noise: ``noise(b)`` directly (only it is noisy), ``noise(all) -
noise(c)`` with the interactions with the other tensors. ``contribution`` is the larger of the two as a
fraction of ``noise(all)`` (or, with an evaluator, the larger of the score drop (b) and score gain (c)),
so a tensor is ranked high when either view says it matters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.analyze.segments import PrefixRunner
from qdeploy.analyze.switch import SwitchGraph, build_switch_graph
from qdeploy.analyze.tensor_stats import Stats, db, grid_limits, tensor_stats, weight_stats
from qdeploy.errors import InputError
from qdeploy.graph.names import merged_labels
from qdeploy.graph.qdq_inventory import FloatLookup
from qdeploy.progress import staged

__all__ = [
    "AnalyzeConfig",
    "Evaluator",
    "SensitivityResult",
    "TensorSensitivity",
    "analyze_sensitivity",
    "output_sqnr",
    "prepared_float",
]

#: ``evaluator(outputs) -> score`` (higher is better); ``outputs`` holds one ``{output name: array}`` per
#: analysis sample, in the order the batches were given (the evaluator knows their ground truth).
Evaluator = Callable[[list[dict[str, np.ndarray]]], float]


@dataclass(frozen=True)
class AnalyzeConfig:
    """Run options of the analysis.

    Attributes:
        threads: ORT intra-op threads (None: ORT's default).
        graph_optimization: ORT level for the sweep; "basic" or "disable" keep plain Q/DQ math.
        histogram_values: float values kept per tensor and sample for the histograms.
        seed: seed of that subsample.
        reuse_prefix: start each sweep run at the last cut before its tensor, on cached prefix values
            (:mod:`qdeploy.analyze.segments`; same results, about half the work on deep models).
        max_cache_mb: memory budget of those cached values (above it: full runs).
    """

    threads: int | None = 1
    graph_optimization: str = "basic"
    histogram_values: int = 4096
    seed: int = 0
    reuse_prefix: bool = True
    max_cache_mb: int = 1024

    def __post_init__(self) -> None:
        if self.graph_optimization not in ("basic", "disable"):
            raise ValueError(
                "graph_optimization must be 'basic' or 'disable' (higher levels fuse Q/DQ), "
                f"got {self.graph_optimization!r}"
            )
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.histogram_values < 0:
            raise ValueError(f"histogram_values must be >= 0, got {self.histogram_values}")


@dataclass(frozen=True)
class TensorSensitivity:
    """Measurements of one quantized tensor (see the module docstring for (a), (b), (c)).

    ``rank`` is 1 for the most harmful tensor; ``index`` is the tensor's position in graph order.
    ``grid`` is the float span of an activation's grid, ``calib_range`` the calibration cache's [lo, hi].
    ``label``: what a reader finds in the PyTorch source (``blocks.1.conv (Conv)``, ``attn.qkv.weight``;
    :func:`qdeploy.graph.names.labels`), for display only: ``name`` stays the key everywhere.
    """

    name: str
    kind: str
    bits: int
    consumers: tuple[str, ...]
    sqnr_db: float
    local_sqnr_db: float
    clipped_fraction: float
    only_quantized_sqnr_db: float
    only_float_sqnr_db: float
    contribution: float
    rank: int = 0
    index: int = 0
    only_quantized_score: float | None = None
    only_float_score: float | None = None
    grid: tuple[float, float] | None = None
    calib_range: tuple[float, float] | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class SensitivityResult:
    """Ranked per-tensor sensitivities plus the baselines they are relative to.

    ``tensors`` is sorted most harmful first. ``quantized_sqnr_db``: output SQNR of the QDQ model vs float;
    ``all_float_sqnr_db``: with every switch off (only int32 biases stay quantized, so this is ~float).
    ``histograms`` (not in :meth:`to_dict`): float-value subsamples per tensor, for the report.
    """

    tensors: tuple[TensorSensitivity, ...]
    quantized_sqnr_db: float
    all_float_sqnr_db: float
    samples: int
    timings: dict[str, float]
    metric: str = "output_sqnr"
    float_score: float | None = None
    quantized_score: float | None = None
    histograms: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def ranking(self) -> list[str]:
        """Tensor names, most harmful first."""
        return [t.name for t in self.tensors]

    def get(self, name: str) -> TensorSensitivity:
        """The entry of tensor ``name`` (KeyError if absent)."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (histograms left out)."""
        return {
            "metric": self.metric,
            "samples": self.samples,
            "quantized_sqnr_db": self.quantized_sqnr_db,
            "all_float_sqnr_db": self.all_float_sqnr_db,
            "float_score": self.float_score,
            "quantized_score": self.quantized_score,
            "timings": dict(self.timings),
            "tensors": [t.to_dict() for t in self.tensors],
        }


def prepared_float(float_model: ir.Model) -> ir.Model:
    """A copy of the float model named and sorted as ``quantize`` prepared it (so tensor names match)."""
    from qdeploy.graph.passes import PREPARE_PIPELINE

    model = float_model.clone()
    for pass_cls in PREPARE_PIPELINE:
        pass_cls()(model)
    return model


def output_sqnr(ref: Sequence[dict[str, np.ndarray]], out: Sequence[dict[str, np.ndarray]]) -> float:
    """SQNR (dB) of all outputs of all samples taken together (noise and signal power summed)."""
    signal = noise = 0.0
    for r, o in zip(ref, out, strict=True):
        for name, value in r.items():
            ref64 = np.asarray(value, np.float64)
            signal += float(np.sum(ref64**2))
            noise += float(np.sum((ref64 - np.asarray(o[name], np.float64)) ** 2))
    return math.inf if noise == 0.0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


def _open(model: ir.Model, config: AnalyzeConfig, level: str | None = None) -> Any:
    from qdeploy.backends import SessionOptions, get_backend

    options = SessionOptions(threads=config.threads, graph_optimization=level or config.graph_optimization)
    return get_backend("ort-cpu").open(model, options)


def analyze_sensitivity(
    float_model: ir.Model,
    qdq_model: ir.Model,
    batches: Sequence[dict[str, np.ndarray]],
    evaluator: Evaluator | None = None,
    ranges: dict[str, Any] | None = None,
    config: AnalyzeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SensitivityResult:
    """Measure (a), (b), (c) for every quantized tensor of ``qdq_model`` and rank them.

    Args:
        float_model: the float model ``qdq_model`` was made from.
        qdq_model: a QDQ model from ``qdeploy calibrate`` / :func:`qdeploy.quant.quantize`.
        batches: feed dicts, ideally held out from calibration (2-8 small samples are plenty: the runs
            compare configurations of the same inputs).
        evaluator: optional task metric, ``evaluator(outputs) -> score`` (higher is better).
        ranges: calibration ranges by tensor name (``TensorRange``), only shown in the result/report.
        progress: ``progress(done_runs, total_runs)``; a reporter with stages draws it as "sensitivity sweep"
            (:func:`qdeploy.progress.staged`), whoever made it.

    Raises:
        InputError: no batches, or a model without quantized tensors.
    """
    config = config or AnalyzeConfig()
    if not batches:
        raise InputError(
            "no analysis samples given", "pass a few held-out inputs (--data DIR --num-samples 4)"
        )
    start = time.perf_counter()
    float_model = prepared_float(float_model)
    switch = build_switch_graph(qdq_model, float_model)
    if not switch.tensors:
        raise InputError(
            "the model has no quantized tensors (no Q->DQ pair, no weight DQ)",
            "pass the QDQ model written by `qdeploy calibrate` as the second model",
        )
    built = time.perf_counter()
    stats, float_outputs = tensor_stats(float_model, switch, batches, lambda m, level: _open(m, config, level),
                                        config.histogram_values, config.seed)
    floats, rng = FloatLookup(float_model), np.random.default_rng(config.seed + 1)
    for t in switch.tensors:
        if t.kind == "weight":
            stats[t.name] = weight_stats(t, floats, config.histogram_values * len(batches), rng)
    measured = time.perf_counter()
    runner = PrefixRunner(switch, batches, lambda m: _open(m, config), max_cuts=32 if config.reuse_prefix else 0,
                          max_cache_bytes=config.max_cache_mb << 20)
    progress = staged(progress, "sensitivity sweep", "runs")  # not under the label of whoever made the callback
    sweep = _Sweep(switch, runner, batches, float_outputs, evaluator, progress)
    result = sweep.run()
    done = time.perf_counter()
    runs = (2 * len(switch.tensors) + 2) * len(batches)
    timings = {
        "build_s": built - start,
        "tensor_stats_s": measured - built,
        "sweep_s": done - measured,
        "total_s": done - start,
        "sweep_runs": float(runs),
        "ms_per_run": 1e3 * (done - measured) / runs,
        "prefix_cuts": float(len(runner.cuts)),
        "prefix_cache_mb": runner.cache_bytes / 2**20,
    }
    shown = merged_labels(float_model, qdq_model)
    return _assemble(switch, stats, result, ranges or {}, timings, len(batches), shown)


class _Sweep:
    """(b) and (c): 2N + 2 mask configurations, each run from the last cut before its tensor."""

    def __init__(
        self,
        switch: SwitchGraph,
        runner: PrefixRunner,
        batches: Sequence[dict[str, np.ndarray]],
        float_outputs: list[dict[str, np.ndarray]],
        evaluator: Evaluator | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.switch, self.runner, self.batches = switch, runner, batches
        self.float_outputs, self.evaluator, self.progress = float_outputs, evaluator, progress
        self.done = 0
        self.total = (2 * len(switch.tensors) + 2) * len(batches)

    def _tick(self, n: int = 1) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)

    def _score(self, outputs: list[dict[str, np.ndarray]]) -> tuple[float, float | None]:
        score = None if self.evaluator is None else float(self.evaluator(outputs))
        return output_sqnr(self.float_outputs, outputs), score

    def baseline(self, on: bool) -> tuple[float, float | None]:
        """All tensors ``on`` (quantized) or off: full runs that also fill the prefix cache."""
        outputs = self.runner.fill(on)
        self._tick(len(self.batches))
        return self._score(outputs)

    def measure(self, i: int, on: bool) -> tuple[float, float | None]:
        """Mask all ``on`` except tensor ``i``, over all samples."""
        mask = self.switch.mask(on, i)
        outputs = []
        for b in range(len(self.batches)):
            outputs.append(self.runner.run(mask, i, on, b))
            self._tick()
        return self._score(outputs)

    def run(self) -> dict[str, Any]:
        """Baselines and per-tensor (b)/(c) values; the whole sweep's estimate is announced after tensor 0."""
        n, start = len(self.switch.tensors), time.perf_counter()
        result: dict[str, Any] = {"all_on": self.baseline(True), "all_off": self.baseline(False)}
        result["float_score"] = None if self.evaluator is None else float(self.evaluator(self.float_outputs))
        result["only_q"] = [self.measure(0, False)] if n else []
        if n > 1:  # timed on tensor 1: tensor 0's runs pay the runtime's first-run warm-up (measured ~25x over)
            second, opened = time.perf_counter(), len(self.runner.open_seconds)
            result["only_q"].append(self.measure(1, False))
            opening = sum(self.runner.open_seconds[opened:])
            self._announce(time.perf_counter() - second - opening, time.perf_counter() - start)
        result["only_q"] += [self.measure(i, False) for i in range(2, n)]
        result["only_f"] = [self.measure(i, True) for i in range(n)]
        return result

    def _announce(self, second_s: float, elapsed_s: float) -> None:
        """Estimate of the sweep from its second tensor's runs (the first pays the runtime's warm-up;
        ``second_s`` excludes opening a session): later tensors' runs start at later cuts and do the share of
        a full run's nodes :meth:`PrefixRunner.share` counts, and each cut not yet opened costs one session
        opening (the mean of those opened so far; on a large graph they dominate)."""
        from qdeploy.progress import announce, estimate_line

        n = len(self.switch.tensors)
        full_s = second_s / max(self.runner.share(1), 1e-3)
        opens = self.runner.open_seconds
        left_s = full_s * sum(self.runner.share(i) * (1 if i < 2 else 2) for i in range(n))
        left_s += (sum(opens) / len(opens) if opens else 0.0) * self.runner.unopened_cuts(n)
        configs = 2 * n + 2
        announce(estimate_line(f"sensitivity sweep of {n} quantized tensors", configs,
                               f"configurations x {len(self.batches)} samples", (elapsed_s + left_s) / configs,
                               "second tensor measured"))


def _noise(db: float) -> float:
    return 0.0 if math.isinf(db) and db > 0 else 10.0 ** (-db / 10.0)


def _contribution(
    b: tuple[float, float | None], c: tuple[float, float | None], sweep: dict[str, Any]
) -> float:
    if sweep["float_score"] is not None:
        return max(sweep["float_score"] - b[1], c[1] - sweep["all_on"][1])
    total = _noise(sweep["all_on"][0])
    if total == 0.0:
        return 0.0
    return max(_noise(b[0]), total - _noise(c[0])) / total


def _assemble(
    switch: SwitchGraph,
    stats: dict[str, Stats],
    sweep: dict[str, Any],
    ranges: dict[str, Any],
    timings: dict[str, float],
    samples: int,
    shown: dict[str, str] | None = None,
) -> SensitivityResult:
    entries = []
    for i, t in enumerate(switch.tensors):
        s, b, c = stats[t.name], sweep["only_q"][i], sweep["only_f"][i]
        r = ranges.get(t.name)
        entries.append(TensorSensitivity(
            t.name, t.kind, t.bits, t.consumers, db(s.signal, s.noise), db(s.local_signal, s.local_noise),
            s.clipped / s.count if s.count else 0.0, b[0], c[0], _contribution(b, c, sweep), index=i,
            only_quantized_score=b[1], only_float_score=c[1], grid=grid_limits(t),
            calib_range=None if r is None else (float(r.lo), float(r.hi)), label=(shown or {}).get(t.name, t.name)))
    order = sorted(
        range(len(entries)), key=lambda k: (-entries[k].contribution, entries[k].only_quantized_sqnr_db)
    )
    ranked = tuple(_with_rank(entries[k], pos + 1) for pos, k in enumerate(order))
    histograms = {name: np.concatenate(s.values) for name, s in stats.items() if s.values}
    return SensitivityResult(
        ranked,
        sweep["all_on"][0],
        sweep["all_off"][0],
        samples,
        timings,
        "evaluator" if sweep["float_score"] is not None else "output_sqnr",
        sweep["float_score"],
        sweep["all_on"][1],
        histograms,
    )


def _with_rank(entry: TensorSensitivity, rank: int) -> TensorSensitivity:
    from dataclasses import replace

    return replace(entry, rank=rank)
