"""Mixed precision to an accuracy target: raise (or leave float) the most sensitive tensors until it is met.

Search: start from the QDQ model at its lowest precision (e.g. W4A4), rank tensors once with
:func:`qdeploy.analyze.analyze_sensitivity`, then for each precision step of the ladder (``int4 -> int8``,
then ``int8 -> float``) find the *shortest prefix of the ranking* whose raise meets the target, by
bisection over the prefix length, measuring each candidate end to end on the real graph that
:class:`ApplyPrecisionMapPass` produces.

Why bisection over the ranked prefix rather than greedy one-at-a-time with a re-check after each step:
output quantization noise adds (about) in power over tensors, so raising one more tensor of the ranking
never makes the output (noticeably) worse, i.e. the metric is monotone in the prefix length; bisection then
needs ``ceil(log2(N + 1))`` real evaluations per ladder step instead of up to N, and every accepted answer
is *measured*, not predicted (if interactions break monotonicity the answer is still a prefix that meets
the target, possibly a few tensors longer than the shortest). Greedy re-ranking after each step would
also need a new sensitivity sweep per step (2N runs each).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.analyze.sensitivity import (
    AnalyzeConfig,
    Evaluator,
    SensitivityResult,
    _open,
    analyze_sensitivity,
    output_sqnr,
    prepared_float,
)
from qdeploy.errors import InputError
from qdeploy.graph.passes.precision_map import (
    FLOAT,
    ApplyPrecisionMapPass,
    parse_precision,
    precision_label,
    quantized_tensors,
)

__all__ = ["PrecisionPlan", "PrecisionTarget", "apply_precision_map", "model_size_bytes", "search_precision"]


@dataclass(frozen=True)
class PrecisionTarget:
    """What "accurate enough" means.

    ``kind="sqnr"``: output SQNR vs the float model >= ``value`` dB (``--target-sqnr 35``).
    ``kind="loss"``: the evaluator's score (e.g. PSNR vs ground truth) may drop at most ``value`` below the
    float model's (``--target-loss 0.05dB``); needs an evaluator.
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("sqnr", "loss"):
            raise ValueError(f"kind must be 'sqnr' or 'loss', got {self.kind!r}")
        if not math.isfinite(self.value) or (self.kind == "loss" and self.value < 0):
            raise ValueError(f"target value must be finite (and >= 0 for a loss), got {self.value!r}")

    @classmethod
    def parse(cls, kind: str, text: str | float) -> PrecisionTarget:
        """``("loss", "0.05dB")`` or ``("sqnr", "35")``; a trailing ``dB`` is accepted."""
        raw = str(text).strip().lower().removesuffix("db").strip()
        try:
            return cls(kind, float(raw))
        except ValueError:
            raise InputError(f"target {text!r} is not a number of dB", "write it like 0.05dB or 35") from None

    def met(self, sqnr: float, score: float | None, float_score: float | None) -> bool:
        """Whether a candidate with this output SQNR / score meets the target."""
        if self.kind == "sqnr":
            return sqnr >= self.value
        return score is not None and float_score is not None and float_score - score <= self.value + 1e-12

    def __str__(self) -> str:
        return (
            f"output SQNR >= {self.value:g} dB" if self.kind == "sqnr" else f"score loss <= {self.value:g} dB"
        )


@dataclass(frozen=True)
class PrecisionPlan:
    """The search result: the precision map, whether it met the target, and what it costs.

    ``candidates`` lists every evaluated map as ``{stage, raised, sqnr_db, score, size_bytes, met}``
    (``raised`` = ranked prefix length). ``size_bytes`` counts weights at their bit width as packed
    storage would (int4 = half a byte; QDQ files store them in 8 bits) plus the other initializers.
    ``speed`` is :func:`qdeploy.trt.fusion.check_placement`'s summary on ``fusion_target`` plus the count of
    tensors left float; ``model`` (not in :meth:`to_dict`) is the final QDQ model; ``measured_on`` says what
    the target was measured on (which held-out inputs, how many), filled in by the caller that knows it.
    """

    precision_map: dict[str, str]
    target: PrecisionTarget
    met: bool
    sqnr_db: float
    score: float | None
    float_score: float | None
    size_bytes: int
    base_size_bytes: int
    float_size_bytes: int
    counts: dict[str, int]
    candidates: list[dict[str, Any]]
    speed: dict[str, Any]
    seconds: float
    model: ir.Model | None = field(default=None, repr=False, compare=False)
    measured_on: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "target": {"kind": self.target.kind, "value": self.target.value, "text": str(self.target)},
            "met": self.met,
            "sqnr_db": self.sqnr_db,
            "score": self.score,
            "float_score": self.float_score,
            "size_bytes": self.size_bytes,
            "base_size_bytes": self.base_size_bytes,
            "float_size_bytes": self.float_size_bytes,
            "counts": dict(self.counts),
            "precision_map": dict(self.precision_map),
            "candidates": list(self.candidates),
            "speed": dict(self.speed),
            "seconds": self.seconds,
            "measured_on": self.measured_on,
        }


def apply_precision_map(
    qdq_model: ir.Model,
    precision_map: Mapping[str, str],
    float_model: ir.Model | None = None,
    ranges: Mapping[str, Any] | None = None,
) -> ir.Model:
    """A copy of ``qdq_model`` with ``precision_map`` applied (see :class:`ApplyPrecisionMapPass`)."""
    model = qdq_model.clone()
    fm = prepared_float(float_model) if float_model is not None else None
    ApplyPrecisionMapPass(precision_map, ranges, fm)(model)
    return model


def model_size_bytes(model: ir.Model, precision_map: Mapping[str, str] | None = None) -> int:
    """Weight storage of ``model`` with each quantized weight at its bit width (packed), other
    initializers at their size; ``precision_map`` overrides the weights' labels (a candidate not built)."""
    weights = {t.name: t for t in quantized_tensors(model.graph) if t.kind == "weight"}
    counted: set[str] = set()
    total = 0.0
    for name, t in weights.items():
        label = (precision_map or {}).get(name, t.label)
        bits = parse_precision(label)
        numel = int(np.prod(t.dq_nodes[0].inputs[0].const_value.shape.numpy()))
        total += numel * (4.0 if bits is None else bits / 8.0)
        counted.add(t.dq_nodes[0].inputs[0].name)
    for name, value in model.graph.initializers.items():
        if name not in counted and value.const_value is not None:
            total += value.const_value.nbytes
    return math.ceil(total)


def _ladder(base_bits: Sequence[int]) -> list[str]:
    """Precision steps from the lowest requested bits up to float (``["int4", "int8", "float"]``)."""
    low = min(base_bits)
    return [precision_label(b) for b in sorted({low, 8})] + [FLOAT]


class _Evaluate:
    """Builds a candidate from a map and measures it end to end (real graph, plain Q/DQ math)."""

    def __init__(
        self,
        float_model: ir.Model,
        qdq_model: ir.Model,
        batches: Sequence[dict[str, np.ndarray]],
        ranges: Mapping[str, Any] | None,
        evaluator: Evaluator | None,
        config: AnalyzeConfig,
    ) -> None:
        self.float_model, self.qdq_model, self.batches = prepared_float(float_model), qdq_model, batches
        self.ranges, self.evaluator, self.config = ranges, evaluator, config
        session = _open(self.float_model, config, "all")
        self.out_names = [o.name for o in session.outputs]
        self.float_outputs = [session.run(b) for b in batches]
        self.float_score = None if evaluator is None else float(evaluator(self.float_outputs))

    def build(self, precision_map: Mapping[str, str]) -> ir.Model:
        model = self.qdq_model.clone()
        ApplyPrecisionMapPass(precision_map, self.ranges, self.float_model)(model)
        return model

    def __call__(self, precision_map: Mapping[str, str]) -> tuple[float, float | None]:
        self.last = self.build(precision_map)
        session = _open(self.last, self.config)
        outputs = [session.run(b, self.out_names) for b in self.batches]
        score = None if self.evaluator is None else float(self.evaluator(outputs))
        return output_sqnr(self.float_outputs, outputs), score


def search_precision(
    float_model: ir.Model,
    qdq_model: ir.Model,
    batches: Sequence[dict[str, np.ndarray]],
    target: PrecisionTarget,
    evaluator: Evaluator | None = None,
    ranges: Mapping[str, Any] | None = None,
    analysis: SensitivityResult | None = None,
    config: AnalyzeConfig | None = None,
    fusion_target: str = "ort-cpu",
) -> PrecisionPlan:
    """Find a per-tensor precision map of ``qdq_model`` that meets ``target`` with as few raised tensors
    as the ranked-prefix bisection finds (see the module docstring).

    Args:
        float_model: the float model.
        qdq_model: the QDQ model at the lowest precision to consider (e.g. ``--bits 4``).
        batches: held-out feed dicts the metric is measured on.
        target: the accuracy target; ``kind="loss"`` needs ``evaluator``.
        evaluator: task metric ``evaluator(outputs) -> score`` (higher is better).
        ranges: calibration ranges (``TensorRange`` by name) to re-quantize raised activations with;
            without them a raised activation keeps the span of its low-bit grid.
        analysis: a sensitivity result of ``qdq_model`` on the same batches (computed when None).
        fusion_target: ``"ort-cpu"`` or ``"tensorrt"`` for the predicted speed cost.

    Raises:
        InputError: a loss target without an evaluator.
    """
    if target.kind == "loss" and evaluator is None:
        raise InputError(
            "--target-loss needs a task metric (an evaluator), e.g. PSNR on held-out images",
            "use --target-sqnr DB to target the output SQNR vs the float model instead",
        )
    start = time.perf_counter()
    config = config or AnalyzeConfig()
    analysis = analysis or analyze_sensitivity(float_model, qdq_model, batches, evaluator, ranges, config)
    evaluate = _Evaluate(float_model, qdq_model, batches, ranges, evaluator, config)
    base = {t.name: t.label for t in quantized_tensors(qdq_model.graph)}
    order = [name for name in analysis.ranking if name in base]
    ladder = _ladder([parse_precision(v) or 32 for v in base.values()])
    candidates: list[dict[str, Any]] = []
    measure = _Measure(evaluate, target, candidates, fusion_target)
    current = dict(base)
    if not measure(ladder[0], 0, current):
        for level in ladder[1:]:
            current, ok = _bisect(order, current, level, ladder, measure)
            if ok:
                break
    return _plan(evaluate, qdq_model, current, target, candidates, fusion_target, time.perf_counter() - start)


class _Measure:
    """``measure(stage, k, map) -> met``: evaluates one candidate and records it."""

    def __init__(
        self,
        evaluate: _Evaluate,
        target: PrecisionTarget,
        candidates: list[dict[str, Any]],
        fusion_target: str,
    ) -> None:
        self.evaluate, self.target, self.candidates = evaluate, target, candidates
        self.fusion_target = fusion_target

    def __call__(self, stage: str, k: int, pmap: dict[str, str]) -> bool:
        from qdeploy.trt.fusion import check_placement

        sqnr, score = self.evaluate(pmap)
        ok = self.target.met(sqnr, score, self.evaluate.float_score)
        size = model_size_bytes(self.evaluate.last)
        placement = check_placement(self.evaluate.last, self.fusion_target)  # the predicted speed cost
        self.candidates.append(
            {
                "stage": stage,
                "raised": k,
                "sqnr_db": sqnr,
                "score": score,
                "size_bytes": size,
                "int8_layers": placement.int8,
                "quantized_layers": placement.quantized,
                "met": ok,
                "map": dict(pmap),
            }
        )
        return ok


def _raised(
    order: list[str], current: dict[str, str], level: str, ladder: list[str], k: int
) -> dict[str, str]:
    """``current`` with the first ``k`` ranked tensors raised to ``level`` (never lowered)."""
    rank = {label: i for i, label in enumerate(ladder)}
    pmap = dict(current)
    for name in order[:k]:
        if rank.get(pmap[name], -1) < rank[level]:
            pmap[name] = level
    return pmap


def _bisect(
    order: list[str], current: dict[str, str], level: str, ladder: list[str], measure: Any
) -> tuple[dict[str, str], bool]:
    """Shortest ranked prefix raised to ``level`` that meets the target (bisection; k=0 known to fail)."""
    n = len(order)
    if not measure(level, n, _raised(order, current, level, ladder, n)):
        return _raised(order, current, level, ladder, n), False
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(level, mid, _raised(order, current, level, ladder, mid)):
            hi = mid
        else:
            lo = mid
    return _raised(order, current, level, ladder, hi), True


def _plan(
    evaluate: _Evaluate,
    qdq_model: ir.Model,
    pmap: dict[str, str],
    target: PrecisionTarget,
    candidates: list[dict[str, Any]],
    fusion_target: str,
    seconds: float,
) -> PrecisionPlan:
    from qdeploy.trt.fusion import check_placement

    final = evaluate.build(pmap)
    chosen = next(c for c in reversed(candidates) if c["map"] == pmap)
    for c in candidates:
        c.pop("map")
    counts: dict[str, int] = {}
    for label in pmap.values():
        counts[label] = counts.get(label, 0) + 1
    placement = check_placement(final, fusion_target).summary()
    speed = {
        **placement,
        "tensors_float": counts.get(FLOAT, 0),
        "tensors_below_8bit": sum(
            n for lab, n in counts.items() if lab != FLOAT and parse_precision(lab) < 8
        ),
    }
    float_size = model_size_bytes(qdq_model, dict.fromkeys(pmap, FLOAT))
    return PrecisionPlan(
        pmap,
        target,
        bool(chosen["met"]),
        chosen["sqnr_db"],
        chosen["score"],
        evaluate.float_score,
        model_size_bytes(final),
        model_size_bytes(qdq_model),
        float_size,
        counts,
        candidates,
        speed,
        seconds,
        final,
    )
