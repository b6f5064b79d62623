"""The default calibration checks itself: measure against the float model, repair what falls short.

Why: a user who gives only ``--data`` cannot know which range method suits a model nobody tuned for
(a user measured -8.98 dB Set5 with a global ``entropy`` on a gated SR net, 0.44 dB with ``mse``). So
``--method auto`` (the default) calibrates every method's bounds at once (:mod:`qdeploy.calib.auto`),
starts from the grid-aware MSE choice, and then this module

1. **verifies** the quantized model on held-out data through ONNX Runtime's real kernels
   (``ORT_ENABLE_ALL``, what a deployment runs) against a :class:`QualityBar`: output SQNR, or for a
   super-resolution model (detected from its output shape) the Y-PSNR loss on held-out HR crops;
2. when it falls short, **ranks** the quantized tensors by their share of the output noise
   (:func:`qdeploy.analyze.analyze_sensitivity`) and, for the few that carry most of it, **switches the
   range method** to whichever candidate (``minmax``, ``percentile``, ``entropy``) measures best *at the
   output* - the per-tensor choice that serves the output, not the tensor's own error;
3. if that is still short, **leaves float** the shortest ranked prefix that meets the bar
   (:func:`qdeploy.analyze.search.search_precision`, ladder int8 -> float).

A finer activation grid (16 bits) is not a step of the ladder on purpose: no ONNX Runtime CPU kernel
computes with 16-bit activations (a 16-bit Q/DQ pair runs the float kernel in between), and TensorRT has
no 16-bit integer path, so 16 bits would cost what float costs and keep a rounding error float does not.

Every change is recorded with its reason (:class:`Change`) for the summary, the cache and the manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from qdeploy.analyze.sensitivity import AnalyzeConfig, SensitivityResult, analyze_sensitivity, output_sqnr
from qdeploy.types import TensorRange

__all__ = ["Change", "QualityBar", "Verified", "verify_and_repair"]

_LOG = logging.getLogger(__name__)

#: ``rebuild(ranges, for_map)`` -> the QDQ model for these ranges; ``for_map`` asks for a graph whose
#: tensors can each be left float (no integer-only tails).
Rebuild = Callable[[Mapping[str, TensorRange], bool], ir.Model]
#: ``faster(model)`` -> (a faster kernel form of the model, a record of what changed), or None when there is none.
Faster = Callable[[ir.Model], "tuple[ir.Model, dict[str, Any]] | None"]

#: Output SQNR gain (dB) a method switch must bring to be kept: below it the change is measurement noise.
MIN_GAIN_DB = 0.05
#: Culprits are taken, most harmful first, until they carry this share of the (summed) output noise.
CULPRIT_SHARE = 0.9
#: Held-out samples the sensitivity ranking runs on (2N + 2 runs each); the checks use all of them.
RANKING_SAMPLES = 8
#: Fewer ranking samples than this is too noisy to trust: the repair is skipped instead.
MIN_RANKING_SAMPLES = 2
#: A range candidate within this share of the current span of the tensor is not worth a trial build.
SAME_RANGE = 0.01


@dataclass(frozen=True)
class QualityBar:
    """What the default calibration must reach on held-out data, or be repaired until it does.

    ``sqnr_db``: output SQNR vs the float model (40 dB: noise 1 % of the signal's amplitude; on the CNNs we
    measured, 40 dB of output SQNR left ImageNet-style top-1 agreement and SR PSNR within noise of float).
    ``sr_loss_db``: for super-resolution models, Y-PSNR loss on held-out HR crops. 0.05 dB, half the 0.1 dB
    a user accepts, because a held-out sample of a few dozen crops under-reads the loss on other test sets
    (measured: 0.085 dB held-out became 0.146 dB on Set5 for ABPN). ``max_culprits`` bounds step 2;
    ``max_repair_seconds`` the whole repair (estimated before it starts; over it, the model is kept as
    calibrated and the record says the bar was not met, rather than a default that runs for an hour).
    """

    sqnr_db: float = 40.0
    sr_loss_db: float = 0.05
    max_culprits: int = 8
    max_repair_seconds: float = 600.0

    def met(self, sqnr: float, loss: float | None) -> bool:
        """Whether a measurement meets the bar (the task loss decides when there is one)."""
        return loss <= self.sr_loss_db + 1e-12 if loss is not None else sqnr >= self.sqnr_db

    def text(self, task: bool) -> str:
        """The bar in words."""
        return f"Y-PSNR loss <= {self.sr_loss_db:g} dB" if task else f"output SQNR >= {self.sqnr_db:g} dB"


@dataclass(frozen=True)
class Change:
    """One repair: which tensor, produced by which node, from what to what, and the measured reason."""

    tensor: str
    producer: str
    before: str
    after: str
    why: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Verified:
    """The outcome: measurements before/after, the changes, and the repaired model and ranges."""

    bar: str
    measured_on: str
    met: bool
    before_sqnr_db: float
    after_sqnr_db: float
    before_loss_db: float | None
    after_loss_db: float | None
    changes: tuple[Change, ...]
    ranges: dict[str, TensorRange]
    precision_map: dict[str, str] | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    model: ir.Model | None = field(default=None, repr=False, compare=False)
    analysis: SensitivityResult | None = field(default=None, repr=False, compare=False)
    faster: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (model and analysis left out)."""
        return {"bar": self.bar, "measured_on": self.measured_on, "met": self.met,
                "before": {"sqnr_db": self.before_sqnr_db, "loss_db": self.before_loss_db},
                "after": {"sqnr_db": self.after_sqnr_db, "loss_db": self.after_loss_db},
                "changes": [c.to_dict() for c in self.changes], "seconds": self.seconds,
                "timings": dict(self.timings)} | ({"faster": self.faster} if self.faster is not None else {})


class _Meter:
    """Measures a QDQ model on the held-out batches through the real kernels (ORT_ENABLE_ALL)."""

    def __init__(self, float_model: ir.Model, heldout: Any, threads: int | None) -> None:
        self.heldout, self.config = heldout, AnalyzeConfig(threads=threads)
        session = self._open(float_model)
        self.names = [o.name for o in session.outputs]
        self.reference = [session.run(b) for b in heldout.batches]
        self.float_score = None if heldout.evaluator is None else float(heldout.evaluator(self.reference))

    def _open(self, model: ir.Model) -> Any:
        from qdeploy.backends import SessionOptions, get_backend

        return get_backend("ort-cpu").open(model, SessionOptions(threads=self.config.threads, graph_optimization="all"))

    def __call__(self, model: ir.Model) -> tuple[float, float | None]:
        """``(output SQNR dB, task loss dB or None)``."""
        session = self._open(model)
        outputs = [session.run(b, self.names) for b in self.heldout.batches]
        if self.heldout.evaluator is None or self.float_score is None:
            return output_sqnr(self.reference, outputs), None
        return output_sqnr(self.reference, outputs), self.float_score - float(self.heldout.evaluator(outputs))


def _producers(float_model: ir.Model) -> dict[str, str]:
    """Tensor name -> what computed it, as a reader finds it in the PyTorch source: ``body.2.c3 (Conv)``.

    From :func:`qdeploy.graph.names.labels` (``node_conv2d (Conv)`` when the export recorded no module
    path; weights ``<module>.weight``); graph inputs: ``"graph input"``.
    """
    from qdeploy.analyze.sensitivity import prepared_float
    from qdeploy.graph.names import labels

    out = labels(prepared_float(float_model))
    out |= {v.name: "graph input" for v in float_model.graph.inputs}
    return out


def _describe(r: TensorRange) -> str:
    return f"{r.details.get('chosen', r.method)} [{r.lo:.4g}, {r.hi:.4g}] clips {100 * r.clipped_fraction:.2f}%"


def _culprits(analysis: SensitivityResult, ranges: Mapping[str, TensorRange], limit: int) -> list[str]:
    """Activations with range candidates, most harmful first, until they carry CULPRIT_SHARE of the noise."""
    picked: list[str] = []
    share = 0.0
    for t in analysis.tensors:
        if share >= CULPRIT_SHARE or len(picked) >= limit:
            break
        share += max(t.contribution, 0.0)
        if t.kind == "activation" and "candidates" in ranges.get(t.name, _NO_RANGE).details:
            picked.append(t.name)
    return picked


_NO_RANGE = TensorRange("", 0.0, 0.0, 0.0, 0.0, 0.0, "", 0)


def _with_candidate(r: TensorRange, method: str) -> TensorRange:
    lo, hi, clipped = r.details["candidates"][method]
    return dataclasses.replace(r, lo=lo, hi=hi, clipped_fraction=clipped, details={**r.details, "chosen": method})


def _switch_methods(names: list[str], ranges: dict[str, TensorRange], rebuild: Rebuild, meter: _Meter,
                    sqnr: float, producers: Mapping[str, str]) -> tuple[dict[str, TensorRange], float, list[Change]]:
    """Step 2: per culprit, keep the range candidate with the best measured output SQNR."""
    changes: list[Change] = []
    for name in names:
        current = ranges[name]
        best, best_sqnr = current, sqnr
        span = max(current.hi - current.lo, 1e-30)
        for method, (lo, hi, _) in current.details["candidates"].items():
            same = max(abs(lo - current.lo), abs(hi - current.hi)) < SAME_RANGE * span
            if method == current.details.get("chosen") or same:
                continue
            trial = _with_candidate(current, method)
            trial_sqnr, _ = meter(rebuild({**ranges, name: trial}, False))
            if trial_sqnr > best_sqnr + MIN_GAIN_DB:
                best, best_sqnr = trial, trial_sqnr
        if best is not current:
            changes.append(Change(name, producers.get(name, "?"), _describe(current), _describe(best),
                                  f"best at the output: SQNR {sqnr:.2f} -> {best_sqnr:.2f} dB"))
            ranges, sqnr = {**ranges, name: best}, best_sqnr
    return ranges, sqnr, changes


def _leave_float(float_model: ir.Model, qmodel: ir.Model, ranges: Mapping[str, TensorRange], meter: _Meter,
                 bar: QualityBar, analysis: SensitivityResult, fusion_target: str,
                 producers: Mapping[str, str]) -> tuple[ir.Model, dict[str, str], list[Change]]:
    """Step 3: the shortest ranked prefix left float that meets the bar (bisection, measured)."""
    from qdeploy.analyze.search import PrecisionTarget, search_precision

    task = meter.heldout.evaluator is not None
    target = PrecisionTarget("loss", bar.sr_loss_db) if task else PrecisionTarget("sqnr", bar.sqnr_db)
    plan = search_precision(float_model, qmodel, meter.heldout.batches, target, meter.heldout.evaluator,
                            dict(ranges), analysis, meter.config, fusion_target)
    changes = []
    for name, label in plan.precision_map.items():
        if label != "float":
            continue
        entry = analysis.get(name)
        changes.append(Change(name, producers.get(name, "?"), f"int{entry.bits} {entry.kind}", "float",
                              f"noise rank {entry.rank} ({100 * max(entry.contribution, 0.0):.0f}% of the output "
                              "noise); float needed to meet the bar"))
    return plan.model, dict(plan.precision_map), changes


def verify_and_repair(float_model: ir.Model, qmodel: ir.Model, ranges: Mapping[str, TensorRange], rebuild: Rebuild,
                      heldout: Any, bar: QualityBar | None = None, fusion_target: str = "ort-cpu",
                      threads: int | None = None, progress: Callable[[int, int], None] | None = None,
                      faster: Faster | None = None) -> Verified:
    """Measure ``qmodel`` on ``heldout`` (a :class:`qdeploy.analyze.target.HeldOut`) and repair it to ``bar``.

    ``ranges`` are the ``auto`` observer's (each with ``details["candidates"]``); ``rebuild`` makes the QDQ
    model for other ranges. Returns the repaired model (``qmodel`` itself when the bar is met at once).
    ``faster``: a last step for a model that meets the bar: the faster kernel form it returns is measured
    too and kept only if it still meets the bar (the record says either way).
    """
    bar = bar or QualityBar()
    meter = _Meter(float_model, heldout, threads)
    verified = _check_and_repair(float_model, qmodel, ranges, rebuild, meter, bar, fusion_target, progress)
    if faster is None or not verified.met or verified.model is None:
        return verified
    return _try_faster(verified, faster, meter, bar)


def _try_faster(verified: Verified, faster: Faster, meter: _Meter, bar: QualityBar) -> Verified:
    """The faster form of the verified model if it still meets the bar (one more check), else the model as is."""
    start = time.perf_counter()
    made = faster(verified.model)  # type: ignore[arg-type]
    if made is None:
        return verified
    model, record = made
    sqnr, loss = meter(model)
    kept = bar.met(sqnr, loss)
    record = record | {"sqnr_db": sqnr, "loss_db": loss, "kept": kept,
                       "why": "still meets the bar" if kept else "misses the bar: the exact form is kept"}
    timings = verified.timings | {"faster_form": round(time.perf_counter() - start, 3)}
    if not kept:
        return dataclasses.replace(verified, faster=record, timings=timings)
    return dataclasses.replace(verified, faster=record, timings=timings, model=model, after_sqnr_db=sqnr,
                               after_loss_db=loss, seconds=verified.seconds + timings["faster_form"])


def _check_and_repair(float_model: ir.Model, qmodel: ir.Model, ranges: Mapping[str, TensorRange], rebuild: Rebuild,
                      meter: _Meter, bar: QualityBar, fusion_target: str,
                      progress: Callable[[int, int], None] | None) -> Verified:
    """Steps 1-3 of the module docstring."""
    clock = _Clock()
    heldout = meter.heldout
    sqnr0, loss0 = meter(qmodel)
    clock.lap("check")
    done = {"bar": bar.text(loss0 is not None), "measured_on": heldout.description, "before_sqnr_db": sqnr0,
            "before_loss_db": loss0}
    met = bar.met(sqnr0, loss0)  # the ranking's estimate (a warning) is only worth saying when it will run
    samples = 0 if met else _ranking_samples(qmodel, clock.laps["check"], len(heldout.batches), bar)
    if met or samples == 0:
        if not met:
            _LOG.warning("the check is not met (%s) and a repair would take longer than %.0f s here: model kept "
                         "as calibrated; rank and repair it with `qdeploy analyze` or `calibrate --target-loss/"
                         "--target-sqnr`, or raise the budget", _fmt(sqnr0, loss0), bar.max_repair_seconds)
            clock.laps["repair_skipped"] = 1.0
        return Verified(met=bar.met(sqnr0, loss0), after_sqnr_db=sqnr0, after_loss_db=loss0, changes=(),
                        ranges=dict(ranges), precision_map=None, seconds=clock.total(), timings=clock.laps,
                        model=qmodel, **done)
    producers = _producers(float_model)
    # the ranking needs few samples (it compares configurations of the same inputs); the checks use all
    few = heldout.batches[:samples]
    analysis = analyze_sensitivity(float_model, qmodel, few, heldout.evaluator, dict(ranges), meter.config,
                                   progress=progress)
    clock.lap("ranking")
    names = _culprits(analysis, ranges, bar.max_culprits)
    new_ranges, sqnr, changes = _switch_methods(names, dict(ranges), rebuild, meter, sqnr0, producers)
    model = rebuild(new_ranges, False) if changes else qmodel
    sqnr, loss = meter(model) if changes else (sqnr0, loss0)
    clock.lap("range_methods")
    pmap = None
    if not bar.met(sqnr, loss):
        # the first ranking is kept: re-ranking after the switches would double the cost, and the switched
        # tensors are the ones that ranked high, so they stay first in line for float
        model, pmap, floated = _leave_float(float_model, rebuild(new_ranges, True), new_ranges, meter, bar, analysis,
                                            fusion_target, producers)
        floated_names = {c.tensor for c in floated}
        changes = [c for c in changes if c.tensor not in floated_names] + floated  # the final state only
        sqnr, loss = meter(model)
        clock.lap("float_search")
    return Verified(met=bar.met(sqnr, loss), after_sqnr_db=sqnr, after_loss_db=loss, changes=tuple(changes),
                    ranges=new_ranges, precision_map=pmap, seconds=clock.total(), timings=clock.laps, model=model,
                    analysis=analysis, **done)


def _fmt(sqnr: float, loss: float | None) -> str:
    return f"output SQNR {sqnr:.2f} dB" + (f", Y-PSNR loss {loss:.3f} dB" if loss is not None else "")


def _ranking_samples(qmodel: ir.Model, check_seconds: float, batches: int, bar: QualityBar) -> int:
    """Held-out samples the ranking can afford within ``bar.max_repair_seconds`` (0: none, skip the repair).

    Estimated from the check just run (``check_seconds`` for the float + quantized run of every sample): the
    ranking runs 2N + 2 configurations per sample, and the repair's other steps cost about as much again.
    Said before it starts, because on a large transformer it is minutes, not seconds.
    """
    from qdeploy.graph.qdq_inventory import quantized_tensors

    n = len(quantized_tensors(qmodel.graph))
    per_run = check_seconds / max(2 * batches, 1)  # one model run on one sample
    affordable = int(bar.max_repair_seconds / (2 * (2 * n + 2) * per_run + 1e-9))
    samples = min(RANKING_SAMPLES, batches, affordable)
    if samples >= MIN_RANKING_SAMPLES:
        est = 2 * (2 * n + 2) * per_run * samples
        _LOG.warning("the check is not met yet: ranking %d quantized tensors on %d held-out samples to repair it "
                     "(about %.0f s estimated from the check's own run)", n, samples, est)
        return samples
    return 0


class _Clock:
    """Seconds per step, for the record (a user should see where the check's time went)."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start
