"""(a) of the sensitivity analysis: each quantized tensor's own error, from one exposed run per sample.

Split from :mod:`qdeploy.analyze.sensitivity`: streaming power sums (no tensor kept across samples except a
bounded random subsample per tensor for the report's histograms), the grid limits of an activation, and
the same statistics for weights from their float initializers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.analyze.switch import MASK_INPUT, SwitchGraph
from qdeploy.graph.qdq_inventory import FloatLookup, QuantizedTensor, dequantized

__all__ = ["Stats", "db", "grid_limits", "tensor_stats", "weight_stats"]


class Stats:
    """Streaming (a) statistics of one tensor: power sums, clip count and a histogram subsample."""

    def __init__(self) -> None:
        self.signal = self.noise = self.local_signal = self.local_noise = 0.0
        self.clipped = self.count = 0
        self.values: list[np.ndarray] = []

    def add(
        self,
        ref: np.ndarray | None,
        src: np.ndarray,
        dq: np.ndarray,
        grid: tuple[float, float] | None,
        keep: int,
        rng: np.random.Generator,
    ) -> None:
        # float32 BLAS dots: these run on every exposed tensor (attention maps of millions of values), and
        # a relative error ~1e-6 in a power sum is irrelevant at dB resolution
        src, dq = np.ravel(src).astype(np.float32, copy=False), np.ravel(dq).astype(np.float32, copy=False)
        diff = src - dq
        self.local_signal += float(np.dot(src, src))
        self.local_noise += float(np.dot(diff, diff))
        if ref is not None:
            ref = np.ravel(ref).astype(np.float32, copy=False)
            diff = ref - dq
            self.signal += float(np.dot(ref, ref))
            self.noise += float(np.dot(diff, diff))
        else:
            self.signal, self.noise = math.nan, math.nan
        if grid is not None:
            self.clipped += int(np.count_nonzero((src < grid[0]) | (src > grid[1])))
        self.count += src.size
        values = ref if ref is not None else src
        if keep and values.size > keep:
            values = values[rng.integers(0, values.size, keep)]  # with replacement: O(keep), not O(size)
        if keep:
            self.values.append(values.astype(np.float32))


def db(signal: float, noise: float) -> float:
    if math.isnan(noise):
        return math.nan
    return math.inf if noise == 0.0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


def grid_limits(t: QuantizedTensor) -> tuple[float, float] | None:
    """Float limits of an activation's grid: the grid Clip's bounds, else the storage dtype's."""
    from qdeploy.graph.select import constant_array

    if t.kind != "activation":
        return None
    if t.clips:
        return float(constant_array(t.clips[0].inputs[1])), float(constant_array(t.clips[0].inputs[2]))
    q = t.q_nodes[0]
    scale, zp_arr = constant_array(q.inputs[1]), constant_array(q.inputs[2])
    if scale is None or zp_arr is None or np.ndim(scale) != 0:
        return None
    info, zp = np.iinfo(zp_arr.dtype), int(zp_arr)
    return float((info.min - zp) * scale), float((info.max - zp) * scale)


def tensor_stats(
    float_model: ir.Model,
    switch: SwitchGraph,
    batches: Sequence[dict[str, np.ndarray]],
    open_session: Callable[[ir.Model, str | None], Any],
    histogram_values: int,
    seed: int,
) -> tuple[dict[str, Stats], list[dict[str, np.ndarray]]]:
    """(a) for every activation: one float run and one all-quantized run per sample, everything exposed."""
    from qdeploy.graph.passes import ExposeTensorsPass

    acts = [t for t in switch.tensors if t.kind == "activation"]
    float_names = {v.name for v in float_model.graph.inputs} | {
        o.name for n in float_model.graph for o in n.outputs
    }
    ref_names = [t.name for t in acts if t.name in float_names]
    out_names = [v.name for v in float_model.graph.outputs]
    float_sess = open_session(ExposeTensorsPass(ref_names)(float_model).model, "all")
    exposed = [switch.source_names[t.name] for t in acts] + [switch.dequantized_names[t.name] for t in acts]
    quant_sess = open_session(ExposeTensorsPass(exposed)(switch.model).model, None)
    stats = {t.name: Stats() for t in acts}
    grids = {t.name: grid_limits(t) for t in acts}
    rng = np.random.default_rng(seed)
    float_outputs = []
    for feeds in batches:
        ref = float_sess.run(feeds)
        float_outputs.append({n: ref[n] for n in out_names})
        got = quant_sess.run({**feeds, MASK_INPUT: switch.mask(True)})
        for t in acts:
            stats[t.name].add(
                ref.get(t.name),
                got[switch.source_names[t.name]],
                got[switch.dequantized_names[t.name]],
                grids[t.name],
                histogram_values,
                rng,
            )
        del ref, got
    return stats, float_outputs


def weight_stats(t: QuantizedTensor, floats: FloatLookup, keep: int, rng: np.random.Generator) -> Stats:
    stats = Stats()
    dq = dequantized(t.dq_nodes[0])
    w = floats.weight(t) if floats.model is not None else None
    stats.add(w if w is not None else dq, w if w is not None else dq, dq, None, keep, rng)
    return stats


