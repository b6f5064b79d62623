"""ShiftQKPass: quantize ``q - mu_q`` and ``k - mu_k`` in attention, compensated exactly (post-training).

Why: q and k of trained transformers carry large per-channel offsets (Q-SCI measured a query mean drift
of ~1.2; SwinIR's qkv biases do the same), and a per-tensor activation grid spends most of its codes
covering those offsets instead of the spread that decides attention. At 4 bits and below that is the
difference between a usable and a broken softmax. Q-SCI (ECCV 2024) learns a per-head scalar shift
during QAT and accepts that attention changes; this pass makes the shift exact, so it needs no training.

Exactness: with ``q' = q - mu_q`` and ``k' = k - mu_k`` (``mu`` one vector over head_dim per head)::

    q_i . k_j = q'_i . k'_j + q'_i . mu_k + mu_q . k_j

The middle term does not depend on the key ``j``: it is a constant along each softmax row and cancels
in the softmax. The last term varies with the key and is added back as a per-key bias computed in float
from the *unshifted* k. So the graph computes ``MatMul(q', k'^T) + mu_q . k^T`` where it computed
``MatMul(q, k^T)``: every softmax row is unchanged before any rounding, and the quantizer, which puts its
Q/DQ pairs on a MatMul's activation inputs, now quantizes ``q'`` and ``k'``.

Where the scale goes: the pass shifts the MatMul's own inputs. When the exporter scales q before the
MatMul (``MatMul(q * s, k^T)``, SwinIR / dynamo) the shifted tensor is the scaled q and its mean is the
scaled mean; when it scales the scores after (``Div(MatMul(q, k^T), sqrt(d))``, TorchScript) the bias is
added before the Div, so it is scaled like the scores. Either way the identity above holds as written.

The per-key bias is ``ReduceSum(Mul(k^T, mu_q^T), axis=-2)``, not ``MatMul(mu_q, k^T)``: a MatMul with
an activation input would itself be selected for quantization and re-quantize the unshifted k.

What counts as attention (:func:`find_attention`): ``MatMul(a, b)`` of two run-time tensors whose output
reaches a ``Softmax`` over its last axis through a single-consumer chain of ``Add`` (biases, masks),
``Sub`` (scores first), ``Mul``/``Div`` by a constant that is the same along the key axis (a scalar, or
a per-head/per-row scale with last dimension 1: cosine attention's ``logit_scale``) and ``Reshape`` that
keeps the last (key) dimension (row-major, so rows map to rows: SwinIR's shifted-window mask goes
through two), and whose
softmax feeds ``MatMul(softmax, v)``. Anything else, e.g. a scores tensor read twice, a softmax over
another axis, a ``Where`` mask, is left alone: the cancellation would not be provable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import CalibrationError
from qdeploy.graph.passes._qdq import NameSet, add_initializer, place_at_start
from qdeploy.graph.select import constant_array

__all__ = ["SHIFT_QK_MARK", "AttentionMatch", "QKMeans", "ShiftQKPass", "find_attention"]

_LOG = logging.getLogger(__name__)
#: ``metadata_props`` key set on rewritten score MatMuls, so the pass never shifts a block twice.
SHIFT_QK_MARK = "qdeploy.shift_qk"
_MAX_CHAIN = 8  # ops between the score MatMul and the Softmax (SwinIR: Add, Reshape, Add, Reshape)
_RECALIBRATE = ("collect the means on this model (qdeploy.calib.attention_stats.collect_qk_means) "
                "and recalibrate")


@dataclass(frozen=True)
class AttentionMatch:
    """One attention block: ``scores = MatMul(q, k_t)`` ... ``softmax`` ... ``MatMul(softmax, v)``."""

    scores: ir.Node
    softmax: ir.Node
    context: ir.Node

    @property
    def q(self) -> ir.Value:
        """The scores MatMul's first input, ``[..., heads, N, head_dim]`` (the scaled q if scaled before)."""
        return self.scores.inputs[0]  # type: ignore[return-value]

    @property
    def k(self) -> ir.Value:
        """The scores MatMul's second input, ``[..., heads, head_dim, N]`` (k transposed)."""
        return self.scores.inputs[1]  # type: ignore[return-value]


@dataclass(frozen=True)
class QKMeans:
    """Calibrated means of one attention block's MatMul inputs, keyed by their tensor names.

    ``q_mean``/``k_mean`` are ``[heads, head_dim]`` (float64). ``heads`` is 1 when the tensors have no
    head axis (rank < 4): one mean vector is then shared. ``count``: q vectors averaged per head.
    """

    q: str
    k: str
    q_mean: np.ndarray
    k_mean: np.ndarray
    count: int = 0

    def __post_init__(self) -> None:
        q_mean = np.asarray(self.q_mean, np.float64)
        k_mean = np.asarray(self.k_mean, np.float64)
        if q_mean.ndim != 2 or q_mean.shape != k_mean.shape:
            raise ValueError(f"q_mean and k_mean must both be [heads, head_dim], got {q_mean.shape} and "
                             f"{k_mean.shape}")
        if not (np.isfinite(q_mean).all() and np.isfinite(k_mean).all()):
            raise ValueError(f"q/k means of {self.q!r} are not finite")
        object.__setattr__(self, "q_mean", q_mean)
        object.__setattr__(self, "k_mean", k_mean)

    @property
    def heads(self) -> int:
        """Number of heads (1 when the means are shared)."""
        return int(self.q_mean.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (for the calibration cache): names, means, and per-head mean norms for reading."""
        return {"q": self.q, "k": self.k, "count": int(self.count),
                "q_mean": self.q_mean.tolist(), "k_mean": self.k_mean.tolist(),
                "q_head_norms": np.linalg.norm(self.q_mean, axis=1).round(6).tolist(),
                "k_head_norms": np.linalg.norm(self.k_mean, axis=1).round(6).tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QKMeans:
        """Inverse of :meth:`to_dict` (the norms are derived, so ignored)."""
        return cls(str(data["q"]), str(data["k"]), np.asarray(data["q_mean"], np.float64),
                   np.asarray(data["k_mean"], np.float64), int(data.get("count", 0)))


class _LastDims:
    """Last dimension of a value (int, or a symbolic name), from its shape or, lazily, shape inference.

    Why inference: TorchScript exports carry no intermediate shapes, and a ``Reshape`` can only be
    accepted on the scores path when its output's last dimension provably equals the key dimension.
    """

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self._inferred: dict[str, ir.Shape] | None = None

    def __call__(self, value: ir.Value) -> int | str | None:
        shape = value.shape
        if shape is None or len(shape) == 0:
            shape = self._infer().get(value.name or "")
        if shape is None or len(shape) == 0:
            return None
        dim = shape[-1]
        return dim if isinstance(dim, int) else getattr(dim, "value", None)

    def _infer(self) -> dict[str, ir.Shape]:
        if self._inferred is None:
            from onnx_ir.passes.common import ShapeInferencePass

            clone = self.model.clone()
            ShapeInferencePass()(clone)
            self._inferred = {out.name: out.shape for node in clone.graph for out in node.outputs
                              if out.name and out.shape is not None}
        return self._inferred


def _row_const(value: ir.Value | None) -> bool:
    """A constant that is the same along the key (last) axis: a scalar, or last dimension 1.

    Multiplying the scores by it scales each softmax row by one number (e.g. cosine attention's learned
    per-head ``logit_scale``, ``[heads, 1, 1]``), so a term constant along the row stays constant.
    """
    array = constant_array(value)
    return array is not None and (array.size == 1 or (array.ndim >= 1 and array.shape[-1] == 1))


def _keeps_rows(node: ir.Node, index: int, key: Callable[[], int | str | None], last_dims: _LastDims) -> bool:
    """Whether ``node`` maps ``S + r`` (``r`` constant along the last axis) to ``f(S) + r'`` the same way."""
    op, other = node.op_type, (node.inputs[1 - index] if len(node.inputs) == 2 else None)
    if op == "Add":
        return len(node.inputs) == 2
    if op == "Sub":
        return index == 0
    if op == "Mul":
        return _row_const(other)
    if op == "Div":
        return index == 0 and _row_const(other)
    if op == "Reshape":
        return index == 0 and key() is not None and last_dims(node.outputs[0]) == key()
    return False


def _softmax_over_last(node: ir.Node, value: ir.Value, opset: int) -> bool:
    axis = node.attributes.get_int("axis", -1 if opset >= 13 else 1)
    rank = len(value.shape) if value.shape is not None else None
    return axis == -1 or (rank is not None and axis == rank - 1)


def _softmax_after(scores: ir.Node, last_dims: _LastDims, opset: int) -> ir.Node | None:
    """The Softmax that ``scores``' output reaches through row-preserving single-consumer ops, if any."""
    value = scores.outputs[0]

    def key() -> int | str | None:  # the key dimension, looked up only if a Reshape needs it
        return last_dims(scores.outputs[0]) or last_dims(scores.inputs[1])  # type: ignore[arg-type]

    for _ in range(_MAX_CHAIN):
        uses = list(value.uses())
        if value.is_graph_output() or len(uses) != 1 or uses[0].node.domain != "":
            return None
        node, index = uses[0].node, uses[0].idx
        if node.op_type == "Softmax":
            return node if _softmax_over_last(node, value, opset) else None
        if not _keeps_rows(node, index, key, last_dims):
            return None
        value = node.outputs[0]
    return None


def find_attention(model: ir.Model) -> list[AttentionMatch]:
    """Every attention block of ``model``'s main graph, in graph order (see the module docstring).

    Score MatMuls already rewritten by :class:`ShiftQKPass` are skipped.
    """
    opset = model.opset_imports.get("", 18)
    last_dims = _LastDims(model)
    found = []
    for node in model.graph:
        if (node.op_type != "MatMul" or node.domain != "" or len(node.inputs) != 2
                or node.inputs[0] is None or node.inputs[1] is None or node.inputs[0] is node.inputs[1]
                or constant_array(node.inputs[0]) is not None or constant_array(node.inputs[1]) is not None
                or node.metadata_props.get(SHIFT_QK_MARK)):
            continue
        softmax = _softmax_after(node, last_dims, opset)
        if softmax is None:
            continue
        context = next((u.node for u in softmax.outputs[0].uses()
                        if u.node.op_type == "MatMul" and u.node.domain == "" and u.idx == 0), None)
        if context is not None:
            found.append(AttentionMatch(node, softmax, context))
    return found


class ShiftQKPass(ir.passes.InPlacePass):
    """Shift the q and k inputs of every attention block that has calibrated means, exactly.

    Args:
        means: :class:`QKMeans` by q tensor name (the scores MatMul's first input), e.g. from
            ``qdeploy.calib.attention_stats.collect_qk_means`` on the same model.

    After ``call``: :attr:`shifted` lists the q names rewritten, :attr:`missing` the q names of attention
    blocks that had no means (left unchanged; callers decide whether that is an error).

    Cases:
      - ``q' = Sub(q, mu_q)`` (``mu_q`` as ``[heads, 1, head_dim]``), ``k' = Sub(k_t, mu_k)``
        (``[heads, head_dim, 1]``); ``heads == 1`` uses rank-2 constants, which broadcast to any rank;
      - the scores MatMul reads ``q'``/``k'``, and an ``Add`` of ``ReduceSum(Mul(k_t, mu_q^T), -2)``
        follows it (``ReduceSum`` axes as an input from opset 13, as an attribute before);
      - the MatMul output is renamed ``<scores>_shifted``, the Add output is ``<scores>_compensated``:
        both hold new values (``S - q' . mu_k`` per row), so no old name keeps a changed meaning;
      - q/k read by other nodes too keep feeding those nodes unchanged;
      - means whose k name or head_dim does not match the block raise :class:`CalibrationError`.
    """

    def __init__(self, means: Mapping[str, QKMeans]) -> None:
        super().__init__()
        self.means = dict(means)
        self.shifted: list[str] = []
        self.missing: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite every matched block with means, in place."""
        self.shifted, self.missing = [], []
        matches = find_attention(model)
        names = NameSet(model.graph)
        opset = model.opset_imports.get("", 18)
        for match in matches:
            means = self.means.get(match.q.name or "")
            if means is None:
                self.missing.append(match.q.name or match.scores.name or "?")
                continue
            _check(match, means)
            self.shifted.append(match.q.name or "")
            _rewrite(model.graph, names, match, means, opset)
        if self.missing:
            _LOG.info("shift_qk: no means for %d attention block(s): %s", len(self.missing), self.missing)
        return ir.passes.PassResult(model, modified=bool(self.shifted))


def _check(match: AttentionMatch, means: QKMeans) -> None:
    if means.k != match.k.name:
        raise CalibrationError(f"q/k means for {means.q!r} were collected with k {means.k!r}, but the block "
                               f"reads {match.k.name!r}", _RECALIBRATE)
    head_dim = means.q_mean.shape[1]
    shape = match.q.shape
    if shape is not None and len(shape) and isinstance(shape[-1], int) and shape[-1] != head_dim:
        raise CalibrationError(f"q/k means for {means.q!r} have head_dim {head_dim}, the tensor has "
                               f"{shape[-1]}", _RECALIBRATE)


def _shifted_input(graph: ir.Graph, names: NameSet, value: ir.Value, mean: np.ndarray) -> ir.Value:
    """``Sub(value, mean)`` placed right after ``value``'s producer; typed like ``value``."""
    base = value.name or "tensor"
    offset = add_initializer(graph, names, f"{base}_qk_mean", mean)
    sub = ir.node("Sub", [value, offset], name=names.fresh(f"{base}_QKShift"))
    out = sub.outputs[0]
    out.name, out.type, out.shape = names.fresh(f"{base}_qk_shifted"), value.type, value.shape
    place_at_start(graph, [sub], value.producer())
    return out


def _rewrite(graph: ir.Graph, names: NameSet, match: AttentionMatch, means: QKMeans, opset: int) -> None:
    q, k, scores = match.q, match.k, match.scores
    dtype = q.dtype.numpy() if q.dtype is not None else np.dtype(np.float32)
    heads, head_dim = means.q_mean.shape
    lead = (heads,) if heads > 1 else ()
    q_mean = means.q_mean.reshape(*lead, 1, head_dim).astype(dtype)
    k_mean = means.k_mean.reshape(*lead, head_dim, 1).astype(dtype)
    q_shifted, k_shifted = _shifted_input(graph, names, q, q_mean), _shifted_input(graph, names, k, k_mean)
    base = scores.outputs[0].name or scores.name or "scores"
    q_mean_t = add_initializer(graph, names, f"{base}_qk_bias_weight", np.swapaxes(q_mean, -1, -2))
    product = ir.node("Mul", [k, q_mean_t], name=names.fresh(f"{base}_QKBiasMul"))
    product.outputs[0].name = names.fresh(f"{base}_qk_bias_terms")
    if opset >= 13:
        axes = add_initializer(graph, names, f"{base}_qk_bias_axes", np.asarray([-2], np.int64))
        reduce = ir.node("ReduceSum", [product.outputs[0], axes], {"keepdims": 1},
                         name=names.fresh(f"{base}_QKBias"))
    else:
        reduce = ir.node("ReduceSum", [product.outputs[0]], {"axes": [-2], "keepdims": 1},
                         name=names.fresh(f"{base}_QKBias"))
    bias = reduce.outputs[0]
    bias.name, bias.type = names.fresh(f"{base}_qk_bias"), scores.outputs[0].type
    graph.insert_after(k_shifted.producer(), [product, reduce])  # type: ignore[arg-type]
    _add_after(graph, names, scores, bias)
    scores.replace_input_with(0, q_shifted)
    scores.replace_input_with(1, k_shifted)
    scores.metadata_props[SHIFT_QK_MARK] = "1"


def _add_after(graph: ir.Graph, names: NameSet, scores: ir.Node, bias: ir.Value) -> None:
    """``Add(scores, bias)`` takes over every use of the scores; both get new names (new values)."""
    out = scores.outputs[0]
    uses = list(out.uses())
    base = out.name or "scores"
    add = ir.node("Add", [out, bias], name=names.fresh(f"{scores.name or base}_QKCompensation"))
    new = add.outputs[0]
    new.type, new.shape = out.type, out.shape
    graph.insert_after(scores, [add])
    for use in uses:
        use.node.replace_input_with(use.idx, new)
    out.name = names.fresh(f"{base}_shifted")
    new.name = names.fresh(f"{base}_compensated")
