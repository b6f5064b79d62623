"""``check_placement``: will each quantized layer really run in INT8 on the target, and if not, why?

A QDQ file only *permits* integer execution. TensorRT fuses a DequantizeLinear into the layer consuming
it, and ONNX Runtime's CPU provider rewrites ``DQ -> op -> Q`` into QLinearConv / QLinearMatMul / QGemm,
each only for specific placements. A misplaced Q/DQ silently costs speed (the layer runs in float between
extra quantize/dequantize steps), so this check reads the graph and states, per Conv / ConvTranspose /
MatMul / Gemm, whether the placement matches the target's rules, with a one-line reason for each miss.

Severity: a *miss* means the layer will not run as an integer kernel; a *warning* means it will, but an
adjacent fusion or reformat is lost (shared DQ, Q/DQ between a conv and its activation, a half-quantized
residual Add). For ORT the ops between layers are judged too (``qdeploy.trt.fusion_ops``): each Add, Mul,
Concat, LeakyRelu, Sigmoid, Split, MaxPool... that touches quantized data either runs on 8-bit data (a
QLinear kernel or uint8 data movement) or is a *float island* (DQ -> float op -> Q), listed with its
reason. The TensorRT rules follow NVIDIA's documented QDQ placement recommendations; the ORT rules follow
ORT's QDQ node-group selectors (checked against ORT 1.31's optimized graphs in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from qdeploy.graph.qdq_inventory import lowbit_grid
from qdeploy.graph.select import QUANTIZABLE_OP_TYPES
from qdeploy.trt.fusion_ops import ort_cpu_ops
from qdeploy.trt.fusion_rules import (
    dq_info,
    is_weight_only,
    ort_cpu_node,
    ort_cpu_weight_only,
    producer,
    roles,
    tensorrt_adds,
    tensorrt_node,
    tensorrt_weight_only,
)

__all__ = ["TARGETS", "FusionReport", "NodeVerdict", "check_placement"]

TARGETS = ("tensorrt", "ort-cpu")


@dataclass(frozen=True)
class NodeVerdict:
    """One node's result: ``quantized`` = it has any DQ input (meant to be INT8); ``int8`` = it will be.

    ``weight_only``: a MatMul/Gemm with a low-bit weight DQ and float activations (not meant to be INT8;
    ``quantized`` is False); its ``misses`` say why the target's weight-only kernel would not take it.
    """

    node: str
    op_type: str
    quantized: bool
    int8: bool
    misses: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    weight_only: bool = False

    @property
    def status(self) -> str:
        """ "int8", "int8 (warn)", "fallback", "float" (not quantized on purpose), "warn" (not a layer),
        "weight-only" or "weight-only fallback"."""
        if self.weight_only:
            return "weight-only fallback" if self.misses else "weight-only"
        if not self.quantized:
            return "warn" if self.warnings else "float"
        if not self.int8:
            return "fallback"
        return "int8 (warn)" if self.warnings else "int8"

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "node": self.node,
            "op_type": self.op_type,
            "status": self.status,
            "misses": list(self.misses),
            "warnings": list(self.warnings),
        }


def _by_reason(verdicts: Sequence[NodeVerdict], limit: int = 3) -> str:
    """``a, b, c and 2 more (reason); d (other reason)``: each reason said once, after the nodes it holds for.

    Why grouped: one cause usually hits many layers alike (a repair that left their outputs float), and
    a line that repeated the same long reason for every node buried the nodes it was about. At most
    ``limit`` nodes are named per reason and ``limit`` reasons shown; ``(+N more)`` counts the others.
    """
    groups: dict[str, list[str]] = {}
    for v in verdicts:
        groups.setdefault(v.misses[0], []).append(v.node)
    parts = []
    for reason, nodes in list(groups.items())[:limit]:
        more = f" and {len(nodes) - limit} more" if len(nodes) > limit else ""
        parts.append(f"{', '.join(nodes[:limit])}{more} ({reason})")
    hidden = sum(len(nodes) for nodes in list(groups.values())[limit:])
    return "; ".join(parts) + (f" (+{hidden} more)" if hidden else "")


@dataclass(frozen=True)
class FusionReport:
    """Per-node verdicts plus other placement warnings (e.g. residual Adds) for one target.

    ``others`` holds, for TensorRT, residual-Add warnings; for ORT CPU, one verdict per op between the
    layers that touches quantized data (``quantized`` True; ``int8`` False for a float island).
    """

    target: str
    nodes: tuple[NodeVerdict, ...]
    others: tuple[NodeVerdict, ...] = ()
    grid: str | None = None
    """``"W4A4"`` for a low-bit simulation graph (8-bit storage holding a narrower grid), else None."""

    @property
    def quantized(self) -> int:
        """M: quantizable nodes that carry Q/DQ."""
        return sum(v.quantized for v in self.nodes)

    @property
    def int8(self) -> int:
        """N: of those, the ones whose placement the target fuses."""
        return sum(v.quantized and v.int8 for v in self.nodes)

    @property
    def fallbacks(self) -> tuple[NodeVerdict, ...]:
        """Quantized nodes that will not run as integer kernels."""
        return tuple(v for v in self.nodes if v.quantized and not v.int8)

    @property
    def weight_only(self) -> tuple[NodeVerdict, ...]:
        """Weight-only layers (low-bit weight DQ, float activations), fused or not."""
        return tuple(v for v in self.nodes if v.weight_only)

    @property
    def weight_only_fallbacks(self) -> tuple[NodeVerdict, ...]:
        """Weight-only layers the target's weight-only kernels will not take."""
        return tuple(v for v in self.weight_only if v.misses)

    @property
    def integer_ops(self) -> tuple[NodeVerdict, ...]:
        """Non-layer ops the target runs on 8-bit data (ORT: QLinearAdd, QLinearConcat, uint8 Split...)."""
        return tuple(v for v in self.others if v.quantized and v.int8)

    @property
    def float_islands(self) -> tuple[NodeVerdict, ...]:
        """Non-layer ops that run in float between a DequantizeLinear and a QuantizeLinear."""
        return tuple(v for v in self.others if v.quantized and not v.int8)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning, prefixed with its node."""
        return tuple(f"{v.node}: {w}" for v in (*self.nodes, *self.others) for w in v.warnings)

    @property
    def fully_fused(self) -> bool:
        """True when every quantized (or weight-only) layer runs as intended and nothing was flagged."""
        return (not self.fallbacks and not self.weight_only_fallbacks and not self.warnings
                and not self.float_islands and self.quantized + len(self.weight_only) > 0)

    def summary_line(self) -> str:
        """ "N/M quantized layers will run INT8 on TARGET; K will fall back: node (reason), ..."."""
        if self.weight_only and not self.quantized:
            line = self._weight_only_line()
            return line + (f"; {len(self.warnings)} placement warning(s)" if self.warnings else "")
        line = f"{self.int8}/{self.quantized} quantized layers will run INT8 on {self.target}"
        if self.grid:  # a simulation: the kernels are 8-bit, the values on a narrower grid
            line = (f"{self.int8}/{self.quantized} quantized layers fuse as 8-bit kernels on {self.target}, "
                    f"holding {self.grid}-grid values (a simulation: no kernel computes at these bits)")
        falls = self.fallbacks
        if falls:
            line += f"; {len(falls)} will fall back: {_by_reason(falls)}"
        else:
            line += "; 0 will fall back"
        if self.weight_only:
            line += "; " + self._weight_only_line()
        line += self._ops_line()
        if self.warnings:
            line += f"; {len(self.warnings)} placement warning(s)"
        return line

    def _ops_line(self) -> str:
        ops, islands = self.integer_ops, self.float_islands
        if not ops and not islands:
            return ""
        line = f"; {len(ops)}/{len(ops) + len(islands)} ops between layers run on 8-bit data"
        if islands:
            line += f", {len(islands)} float island(s): {_by_reason(islands)}"
        return line

    def _weight_only_line(self) -> str:
        total, falls = len(self.weight_only), self.weight_only_fallbacks
        line = (f"{total - len(falls)}/{total} weight-only layers will use {self.target}'s low-bit "
                "weight kernels")
        if falls:
            line += f", {len(falls)} will dequantize in float: {_by_reason(falls)}"
        return line

    def summary(self) -> dict[str, Any]:
        """Counts and the summary line (what ``calibrate`` stores and prints)."""
        return {
            "target": self.target,
            "int8": self.int8,
            "quantized": self.quantized,
            "fallback": len(self.fallbacks),
            "warnings": len(self.warnings),
            "weight_only": len(self.weight_only),
            "weight_only_fallback": len(self.weight_only_fallbacks),
            "integer_ops": len(self.integer_ops),
            "float_islands": len(self.float_islands),
            "grid": self.grid,
            "line": self.summary_line(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON form: summary plus every node."""
        return {
            **self.summary(),
            "nodes": [v.to_dict() for v in self.nodes],
            "others": [v.to_dict() for v in self.others],
        }


def check_placement(model: ir.Model, target: str) -> FusionReport:
    """Check every Conv/ConvTranspose/MatMul/Gemm of ``model`` against ``target``'s QDQ fusion rules."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    rule = tensorrt_node if target == "tensorrt" else ort_cpu_node
    weight_only_rule = tensorrt_weight_only if target == "tensorrt" else ort_cpu_weight_only
    verdicts = []
    for node in model.graph:
        if node.domain != "" or node.op_type not in QUANTIZABLE_OP_TYPES:
            continue
        slots = roles(node)
        dqs = {i: producer(node.inputs[i], "DequantizeLinear") for i, _ in slots if i < len(node.inputs)}
        infos = {i: dq_info(d) for i, d in dqs.items() if d is not None}
        if is_weight_only(node, slots, infos):
            misses, _ = weight_only_rule(node, slots, infos)
            verdicts.append(NodeVerdict(node.name or node.op_type, node.op_type, False, False,
                                        tuple(misses), (), weight_only=True))
            continue
        quantized = any(dq is not None for dq in dqs.values())
        misses, warns = rule(node, slots, infos)
        verdicts.append(
            NodeVerdict(
                node.name or node.op_type,
                node.op_type,
                quantized,
                quantized and not misses,
                tuple(misses) if quantized else (),
                tuple(warns) if quantized else (),
            )
        )
    if target == "tensorrt":
        others = [NodeVerdict(name, "Add", False, True, (), (warning,)) for name, warning in tensorrt_adds(model.graph)]
    else:
        others = [NodeVerdict(v.node, v.op_type, True, v.int8, v.misses) for v in ort_cpu_ops(model.graph)]
    return FusionReport(target, tuple(verdicts), tuple(others), lowbit_grid(model.graph))
