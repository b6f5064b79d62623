"""ShiftOneSidedActivationsPass: quantize ``t - c`` instead of a one-sided ``t``, exactly (symmetric grids).

Why: a symmetric int8 grid (zero point 0, TensorRT's only kind) over a tensor that is never negative
(RGB in [0, 255], a ReLU output in [0, M]) spends its 127 negative codes on values that never occur.
Feeding the linear consumers ``t - c`` with ``c = (lo + hi) / 2`` centres the tensor on zero, so the grid
covers ``[lo - c, hi - c]`` with half the step: one bit gained, post-training, with no retraining.

Exactness: a consumer that is linear in ``t`` with a constant weight absorbs the shift into its bias,
``op(t) = op(t - c) + c * op(1)`` minus the bias term, so the float graph computes the same function:

- Conv: ``b'[oc] = b[oc] + c * sum(W[oc])`` over (Cin/g, k...). Every output channel of a group only
  reads input channels of its group, all shifted by the same (per-tensor) ``c``, so any ``group`` works.
- Gemm (t is A): ``C' = C + (alpha / beta) * c * sum_k B'[k, :]`` with ``B' = B^T`` when transB;
  transA does not matter (a transpose commutes with an elementwise shift).
- MatMul (t is A, constant B): no bias input, so an ``Add(y, c * sum_k B[..., k, :])`` follows it; the
  MatMul's output name moves to the Add so calibrated ranges keyed by it still apply.

Padding (the subtle case): a Conv zero-pads its input, and a zero of ``t - c`` is ``t = c``, not ``t = 0``,
so with the bias correction alone every output pixel whose window overlaps the border would be off by
``c * (sum of the padded taps)``. The rewrite is therefore ``Conv(pads=p)(t)`` ->
``Conv(pads=0)(Pad(t - c, pads=p, value=-c))``: the padded tensor equals ``Pad(t, 0) - c`` element for
element, so the compensation is exact everywhere. The activation Q/DQ pair then sits on the Pad output
(the conv's input), whose values include ``-c``; the shifted range is widened so ``-c`` is on the grid
(``c`` is computed from ``[min(lo, 0), hi]`` for tensors with a padded consumer: the padding zeros are
part of what that conv reads). Rejected alternatives: restricting the shift to unpadded convs (ABPN's
convs are all padded, so nothing would be gained); a position-dependent border correction (needs a
second conv over a ones-image at run time). Cost: one explicit Pad per padded conv. TensorRT fuses a Pad
into the following conv only for zero padding, so on TensorRT this is an extra (cheap, memory-bound)
layer per conv; ONNX Runtime runs it as a separate op too. Measure latency before enabling it where
speed matters more than the accuracy gained.

Other consumers of ``t`` (those ``consumers`` rejects, e.g. ABPN's anchor path, or ops without a constant
weight) keep reading the original tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer, place_at_start
from qdeploy.graph.select import constant_array
from qdeploy.types import TensorRange

__all__ = [
    "ShiftOneSidedActivationsPass", "WeightRounding", "conv_pads", "effective_weight", "one_sided_bounds",
]


def one_sided_bounds(r: TensorRange) -> tuple[float, float] | None:
    """The ``[lo, hi]`` a one-sided tensor is really quantized over, or None if it is not one-sided.

    One-sidedness is read from the *observed* extremes: symmetric observers report ``lo = -hi`` for a ReLU
    output, so the calibrated ``lo`` alone cannot tell. The clipping bound chosen on the populated side is
    kept (``hi`` for a non-negative tensor), the empty side is cut at the observed extreme.
    """
    if r.observed_min >= 0:
        lo, hi = max(r.lo, r.observed_min), r.hi
    elif r.observed_max <= 0:
        lo, hi = r.lo, min(r.hi, r.observed_max)
    else:
        return None
    return (float(lo), float(hi)) if np.isfinite([lo, hi]).all() and hi > lo else None


def conv_pads(node: ir.Node, spatial: int) -> list[int] | None:
    """Explicit ``[begin..., end...]`` pads of a Conv, or None when they depend on the input size.

    ``SAME_UPPER``/``SAME_LOWER`` are static only with unit strides (total ``dilation * (k - 1)``).
    """
    auto = node.attributes.get_string("auto_pad", "NOTSET")
    if auto == "VALID":
        return [0] * (2 * spatial)
    if auto == "NOTSET":
        pads = list(node.attributes.get_ints("pads", [0] * (2 * spatial)))
        return pads if len(pads) == 2 * spatial else None
    strides = list(node.attributes.get_ints("strides", [1] * spatial))
    kernel = node.attributes.get_ints("kernel_shape", None)
    if any(s != 1 for s in strides) or kernel is None:
        return None
    dilations = list(node.attributes.get_ints("dilations", [1] * spatial))
    totals = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
    small = [t // 2 for t in totals]
    big = [t - s for t, s in zip(totals, small, strict=True)]
    return small + big if auto == "SAME_UPPER" else big + small


@dataclass(frozen=True)
class _Use:
    """One shiftable use: ``node.inputs[0]`` is the tensor; ``pads`` non-empty for a padded Conv."""

    node: ir.Node
    weight: np.ndarray
    pads: tuple[int, ...] = ()


def _float_const(value: ir.Value | None) -> np.ndarray | None:
    array = constant_array(value)
    return array if array is not None and np.issubdtype(array.dtype, np.floating) else None


def effective_weight(value: ir.Value | None) -> np.ndarray | None:
    """The float weight a consumer really multiplies by: a float constant, or ``DQ(constant)`` evaluated.

    The compensation must use the *rounded* weights when weights are already quantized: with float
    weights it would be off by ``c * sum(W - DQ(Q(W)))`` per output channel, a constant error that on
    ABPN (``c`` ~ 100, 252 taps) cost more than the shift gained.
    Returns None when ``value`` is neither.
    """
    array = _float_const(value)
    producer = value.producer() if value is not None and array is None else None
    if producer is None or producer.op_type != "DequantizeLinear" or producer.domain != "":
        return array
    q, scale = constant_array(producer.inputs[0]), constant_array(producer.inputs[1])
    zp_value = producer.inputs[2] if len(producer.inputs) > 2 else None
    zp = constant_array(zp_value) if zp_value is not None else np.zeros((), np.int64)
    if q is None or scale is None or zp is None or producer.attributes.get_int("block_size", 0):
        return None
    if scale.ndim == 1 and q.ndim > 0:
        shape = [1] * q.ndim
        shape[producer.attributes.get_int("axis", 1) % q.ndim] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q.astype(np.int64) - zp.astype(np.int64)) * scale.astype(np.float32)).astype(np.float32)


#: ``(consumer node, its float weight) -> the weight it will really multiply by`` (e.g. quantized and
#: dequantized again by the weight quantizer that runs later).
WeightRounding = Callable[[ir.Node, np.ndarray], np.ndarray]


def _shiftable(node: ir.Node, index: int, rounding: WeightRounding | None) -> _Use | None:
    """The use ``node.inputs[index]`` if its op can absorb a shift of that input into a bias."""
    if node.domain != "" or index != 0 or len(node.inputs) < 2 or node.inputs[1] is node.inputs[0]:
        return None
    weight = effective_weight(node.inputs[1])
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if weight is None or (bias is not None and _float_const(bias) is None):
        return None
    if rounding is not None and _float_const(node.inputs[1]) is not None:
        weight = np.asarray(rounding(node, weight), weight.dtype)
    if node.op_type == "Conv" and weight.ndim >= 3:
        pads = conv_pads(node, weight.ndim - 2)
        return None if pads is None else _Use(node, weight, tuple(pads) if any(pads) else ())
    if node.op_type == "Gemm" and weight.ndim == 2:
        return _Use(node, weight)
    if node.op_type == "MatMul" and len(node.inputs) == 2:
        return _Use(node, weight)
    return None


class ShiftOneSidedActivationsPass(ir.passes.InPlacePass):
    """Feed the linear consumers of each one-sided tensor ``t - c`` and fold ``c`` into their biases.

    Args:
        ranges: Calibrated ranges by tensor name; tensors without a range are left alone.
        consumers: Which nodes will be quantized (e.g. ``NodeFilter.matches``); only their uses move to
            the shifted tensor, every other use keeps ``t``.
        weight_rounding: When weights are quantized *after* this pass, the values they will have; the
            compensation must use the rounded weights, or it is off by ``c * sum(W - DQ(Q(W)))`` per
            output channel (on ABPN, ``c`` ~ 100 over 252 taps, that cost more than the shift gained).

    After ``call``, :attr:`shifted_ranges` maps each new tensor a consumer now reads (the Sub output, and
    the Pad outputs of padded convs) to its range ``[lo - c, hi - c]`` (observed bounds shifted too,
    ``details["shift"] = c``, ``details["source"]`` = the original name), ready for activation QDQ.

    Cases:
      - not one-sided (:func:`one_sided_bounds`), no range, constant, or no shiftable use -> untouched;
      - shiftable uses: input 0 of a Conv with constant weight (and constant or no bias) whose pads are
        static, of a Gemm with constant B, of a MatMul with constant B (see the module docstring); a
        weight already quantized, ``DQ(constant)``, counts as constant and its rounded values are used;
        a float weight goes through ``weight_rounding`` when given;
      - a Conv without bias gets one; a Gemm with ``beta == 0`` gets ``beta = 1`` and a fresh C;
      - shared weights/biases are never modified in place: every compensated bias is a new initializer;
      - padded convs with equal pads share one Pad node.
    """

    def __init__(self, ranges: Mapping[str, TensorRange], consumers: Callable[[ir.Node], bool],
                 weight_rounding: WeightRounding | None = None) -> None:
        super().__init__()
        self.ranges = dict(ranges)
        self.consumers = consumers
        self.weight_rounding = weight_rounding
        self.shifted_ranges: dict[str, TensorRange] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Shift every eligible tensor in place."""
        graph = model.graph
        names = NameSet(graph)
        self.shifted_ranges = {}
        values = [*graph.inputs, *(out for node in list(graph) for out in node.outputs)]
        modified = False
        for value in values:
            r = self.ranges.get(value.name or "")
            bounds = one_sided_bounds(r) if r is not None and constant_array(value) is None else None
            if bounds is None:
                continue
            candidates = [_shiftable(use.node, use.idx, self.weight_rounding) for use in value.uses()
                          if self.consumers(use.node)]
            uses = [u for u in candidates if u is not None]
            if uses:
                self._shift(graph, names, value, r, bounds, uses)  # type: ignore[arg-type]
                modified = True
        return ir.passes.PassResult(model, modified=modified)

    def _shift(self, graph: ir.Graph, names: NameSet, value: ir.Value, r: TensorRange,
               bounds: tuple[float, float], uses: list[_Use]) -> None:
        lo, hi = bounds
        if any(u.pads for u in uses):  # padded convs also read the padding zeros
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        c = (lo + hi) / 2.0
        base = value.name or "tensor"
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        offset = add_initializer(graph, names, f"{base}_shift", np.asarray(c, dtype))
        sub = ir.node("Sub", [value, offset], name=names.fresh(f"{base}_Shift"))
        shifted = sub.outputs[0]
        shifted.name, shifted.type, shifted.shape = names.fresh(f"{base}_shifted"), value.type, value.shape
        place_at_start(graph, [sub], value.producer())
        self._record(shifted, r, lo, hi, c, base)
        pads: dict[tuple[int, ...], ir.Value] = {}
        for use in uses:
            source = shifted
            if use.pads:
                if use.pads not in pads:
                    pads[use.pads] = self._pad(graph, names, sub, use.pads, c, dtype)
                    self._record(pads[use.pads], r, lo, hi, c, base)
                source = pads[use.pads]
                use.node.attributes["pads"] = ir.AttrInt64s("pads", [0] * len(use.pads))
                use.node.attributes["auto_pad"] = ir.AttrString("auto_pad", "NOTSET")
            use.node.replace_input_with(0, source)
            _compensate(graph, names, use, c)

    def _pad(self, graph: ir.Graph, names: NameSet, sub: ir.Node, pads: tuple[int, ...], c: float,
             dtype: np.dtype) -> ir.Value:
        """``Pad(t - c, pads, value=-c)``: equal to ``Pad(t, 0) - c`` element for element."""
        half = len(pads) // 2
        full = [0, 0, *pads[:half], 0, 0, *pads[half:]]
        base = sub.outputs[0].name or "shifted"
        pads_value = add_initializer(graph, names, f"{base}_pads", np.asarray(full, np.int64))
        fill = add_initializer(graph, names, f"{base}_pad_value", np.asarray(-c, dtype))
        node = ir.node("Pad", [sub.outputs[0], pads_value, fill], {"mode": "constant"},
                       name=names.fresh(f"{base}_Pad"))
        out = node.outputs[0]
        out.name, out.type = names.fresh(f"{base}_padded"), sub.outputs[0].type
        shape = sub.outputs[0].shape
        if shape is not None and len(shape) == len(full) // 2:
            begins, ends = full[:len(shape)], full[len(shape):]
            out.shape = ir.Shape([d + b + e if isinstance(d, int) else None
                                  for d, b, e in zip(shape, begins, ends, strict=True)])
        graph.insert_after(sub, [node])
        return out

    def _record(self, value: ir.Value, r: TensorRange, lo: float, hi: float, c: float, source: str) -> None:
        self.shifted_ranges[value.name or ""] = dataclasses.replace(
            r, name=value.name or "", lo=lo - c, hi=hi - c, observed_min=min(r.observed_min, lo) - c,
            observed_max=max(r.observed_max, hi) - c, details={**r.details, "shift": c, "source": source})


def _compensate(graph: ir.Graph, names: NameSet, use: _Use, c: float) -> None:
    """Add ``c * op(ones)`` to the consumer's bias (a new Add after a MatMul, which has no bias)."""
    node, w, dtype = use.node, use.weight.astype(np.float64), use.weight.dtype
    if node.op_type == "Conv":
        _set_bias(graph, names, node, 2, c * w.reshape(w.shape[0], -1).sum(axis=1), dtype)
    elif node.op_type == "Gemm":
        b = w.T if node.attributes.get_int("transB", 0) else w
        alpha, beta = node.attributes.get_float("alpha", 1.0), node.attributes.get_float("beta", 1.0)
        comp = alpha * c * b.sum(axis=0)
        if beta == 0.0:
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                node.replace_input_with(2, None)  # beta = 0 ignored C; it is replaced, not summed
        else:
            comp = comp / beta
        _set_bias(graph, names, node, 2, comp, dtype)
    else:
        comp = c * (w.sum(axis=-2, keepdims=True) if w.ndim >= 2 else w.sum())
        _add_after_matmul(graph, names, node, np.asarray(comp, dtype))


def _set_bias(graph: ir.Graph, names: NameSet, node: ir.Node, index: int, comp: np.ndarray,
              dtype: np.dtype) -> None:
    old = node.inputs[index] if len(node.inputs) > index else None
    array = _float_const(old)
    total = comp if array is None else array.astype(np.float64) + comp
    base = old.name if old is not None and old.name else f"{node.name or node.op_type}_bias"
    new = add_initializer(graph, names, f"{base}_shift_compensated", total.astype(dtype))
    if len(node.inputs) <= index:
        node.resize_inputs(index + 1)
    node.replace_input_with(index, new)


def _add_after_matmul(graph: ir.Graph, names: NameSet, node: ir.Node, comp: np.ndarray) -> None:
    """``y = MatMul(...) + comp``; the Add's output takes ``y``'s name (and place among graph outputs)."""
    out = node.outputs[0]
    uses = list(out.uses())
    base = out.name or "matmul"
    comp_value = add_initializer(graph, names, f"{base}_shift_compensation", comp)
    add = ir.node("Add", [out, comp_value], name=names.fresh(f"{node.name or base}_ShiftCompensation"))
    new = add.outputs[0]
    new.type, new.shape = out.type, out.shape
    graph.insert_after(node, [add])
    for use in uses:
        use.node.replace_input_with(use.idx, new)
    for i, graph_out in enumerate(graph.outputs):
        if graph_out is out:
            graph.outputs[i] = new
    out.name = names.fresh(f"{base}_uncompensated")
    new.name = base
