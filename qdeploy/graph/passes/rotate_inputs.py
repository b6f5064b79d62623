"""RotateLinearInputsPass: an orthogonal rotation of each Linear's input, undone in its weight (exact in float).

Why: a per-tensor low-bit grid over an input whose channels differ by 100x (NGswin's post-norm residual
stream feeds ``qkv`` and ``ffn.fc1`` directly; channel maxima 56-991 in one block) spends almost all
its codes on a few channels. With ``R`` orthogonal, ``x @ W == (x @ R) @ (R^T @ W)``; a randomized
Hadamard ``R`` (random signs, then a Walsh-Hadamard transform, scaled by ``1/sqrt(K)``) mixes every
channel into every other, so one outlier channel is spread over all ``K`` and the rotated tensor is far
closer to one grid (QuaRot, Ashkboos et al. 2024; the same trick for weights: the rows of ``R^T W``
mix too). When ``K`` is not a power of two ``R`` is a seeded random orthogonal matrix (QR of a Gaussian).

What changes in the graph: for each eligible ``Gemm``/``MatMul`` ``y = x W (+ b)`` with a constant 2-D
weight, float ops are inserted in front of it, ``x -> [Mul(1/s) -> Add(-z/s) ->] MatMul(R)``, the last one
named ``<node>/rotate`` (the optional affine part, :class:`ChannelAffine`, ``<node>/rotate_mul`` and
``<node>/rotate_add``), and the weight becomes ``R^T diag(s) W`` (``W diag(s) R`` for ``Gemm`` with
``transB=1``), the Gemm bias ``b + z W``. The inserted nodes are *not* layers to quantize: selection skips
them by :func:`is_rotation`. They stay float ops at run time (``K x K`` extra multiply-adds per token).

Determinism: ``R`` depends only on ``K`` and ``seed``; every Linear with the same ``K`` shares one ``R``
initializer. Skipped: weights that are shared by several nodes, batched (3-D+) weights, ``K < 2``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.select import constant_array

__all__ = ["ROTATION_SUFFIX", "ChannelAffine", "RotateLinearInputsPass", "is_rotation", "linear_weight",
           "rotation_matrix"]

ROTATION_SUFFIX = "/rotate"


_ROTATION_NAME = re.compile(re.escape(ROTATION_SUFFIX) + r"(_mul|_add)?(_\d+)?$")


def is_rotation(node: ir.Node) -> bool:
    """True for the float ops this pass (and ``rotate_attention``) inserts: never layers to quantize."""
    return _ROTATION_NAME.search(node.name or "") is not None


def _hadamard(k: int) -> np.ndarray:
    h = np.ones((1, 1), np.float64)
    while h.shape[0] < k:
        h = np.block([[h, h], [h, -h]])
    return h


def rotation_matrix(k: int, seed: int = 0) -> np.ndarray:
    """A ``k x k`` orthogonal float32 matrix: randomized Hadamard for powers of two, seeded QR otherwise."""
    rng = np.random.default_rng(seed + k)
    if k & (k - 1) == 0:
        signs = rng.choice([-1.0, 1.0], size=k)
        r = signs[:, None] * _hadamard(k) / np.sqrt(k)
    else:
        q, upper = np.linalg.qr(rng.standard_normal((k, k)))
        r = q * np.sign(np.diag(upper))[None, :]
    return r.astype(np.float32)


def linear_weight(node: ir.Node) -> tuple[np.ndarray, bool] | None:
    """(weight, transposed) of a Linear with a private constant 2-D weight; None when not eligible."""
    if node.domain != "" or node.op_type not in ("Gemm", "MatMul") or len(node.inputs) < 2:
        return None
    w = constant_array(node.inputs[1])
    if w is None or w.ndim != 2 or w.dtype != np.float32 or len(node.inputs[1].uses()) != 1:
        return None
    if constant_array(node.inputs[0]) is not None or is_rotation(node):
        return None
    producer = node.inputs[0].producer()
    if producer is not None and is_rotation(producer):  # already rotated (the pass is idempotent)
        return None
    trans_b = node.op_type == "Gemm" and node.attributes.get_int("transB", 0) == 1
    if node.op_type == "Gemm" and node.attributes.get_int("transA", 0) == 1:
        return None
    return w, trans_b


@dataclass(frozen=True)
class ChannelAffine:
    """Per-input-channel ``shift`` and ``scale``: the Linear then reads ``(x - shift) / scale`` (then rotated).

    Folded back exactly: the weight rows are multiplied by ``scale`` and ``shift @ W`` is added to the bias
    (Outlier Suppression+, Wei et al. 2023: the shift centres a channel that sits far from zero, the
    scale moves a wide channel's range into the weight). Shifts apply to ``Gemm`` only (its bias input).
    """

    shift: np.ndarray
    scale: np.ndarray


class RotateLinearInputsPass(ir.passes.InPlacePass):
    """Rotate the input of every eligible Linear that ``select`` accepts; ``rotated`` lists their names.

    ``affine`` (optional, by input tensor name): per-channel shift/scale applied before the rotation and
    folded into the weight and bias. ``rotate=False`` applies only the affine part (a ``Mul``/``Add``).
    """

    def __init__(self, select: Callable[[ir.Node], bool] | None = None, seed: int = 0,
                 affine: Mapping[str, ChannelAffine] | None = None, rotate: bool = True) -> None:
        super().__init__()
        self.select = select
        self.seed = seed
        self.affine = dict(affine or {})
        self.rotate = rotate
        self.rotated: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Insert the rotations and rewrite the weights in place."""
        self.rotated = []
        graph, names = model.graph, NameSet(model.graph)
        shared: dict[int, ir.Value] = {}
        for node in list(graph):
            found = linear_weight(node)
            if found is None or (self.select is not None and not self.select(node)):
                continue
            w, trans_b = found
            k = w.shape[1] if trans_b else w.shape[0]
            affine = self.affine.get(node.inputs[0].name or "")
            if k < 2 or (affine is None and not self.rotate):
                continue
            if not node.name:
                node.name = names.fresh(node.op_type)
            self._rewrite(graph, names, node, (w, trans_b), affine, shared)
        return ir.passes.PassResult(model, modified=bool(self.rotated))

    def _online(self, graph: ir.Graph, names: NameSet, node: ir.Node, k: int, affine: ChannelAffine | None,
                shared: dict[int, ir.Value]) -> tuple[list[tuple[str, ir.Value]], np.ndarray]:
        """The float ops in front of the Linear (op type, constant operand) and the weight's left factor.

        ``x -> Mul(1/s) -> Add(-z/s) -> MatMul(R)``: the rotation ``R`` is one shared initializer per ``K``
        (the per-Linear part is two vectors), and the weight becomes ``R^T diag(s) W``.
        """
        steps: list[tuple[str, ir.Value]] = []
        left = np.eye(k, dtype=np.float32)
        if affine is not None:
            s = np.asarray(affine.scale, np.float32).reshape(k)
            z = np.asarray(affine.shift, np.float32).reshape(k) if node.op_type == "Gemm" else np.zeros(k, np.float32)
            steps.append(("Mul", add_initializer(graph, names, f"{node.name}_smooth_scale", 1 / s)))
            if np.any(z):
                steps.append(("Add", add_initializer(graph, names, f"{node.name}_smooth_shift", -z / s)))
            left = np.diag(s).astype(np.float32)
        if self.rotate:
            r = rotation_matrix(k, self.seed)
            if k not in shared:
                shared[k] = add_initializer(graph, names, f"qdeploy_rotation_{k}", r)
            steps.append(("MatMul", shared[k]))
            left = r.T @ left
        return steps, left

    def _rewrite(self, graph: ir.Graph, names: NameSet, node: ir.Node, weight: tuple[np.ndarray, bool],
                 affine: ChannelAffine | None, shared: dict[int, ir.Value]) -> None:
        (w, trans_b), x = weight, node.inputs[0]
        k = w.shape[1] if trans_b else w.shape[0]
        steps, left = self._online(graph, names, node, k, affine, shared)
        new_w = (w @ left.T) if trans_b else (left @ w)
        if affine is not None and any(op == "Add" for op, _ in steps):
            self._fold_shift(graph, names, node, w if not trans_b else w.T, affine.shift)
        nodes, current = [], x
        for i, (op, operand) in enumerate(steps):
            suffix = ROTATION_SUFFIX if i == len(steps) - 1 else f"{ROTATION_SUFFIX}_{op.lower()}"
            nodes.append(ir.node(op, [current, operand], name=names.fresh(f"{node.name}{suffix}")))
            current = nodes[-1].outputs[0]
            current.name, current.type, current.shape = names.fresh(f"{x.name}_{op.lower()}ed"), x.type, x.shape
        current.name = names.fresh(f"{x.name}_rotated")
        graph.insert_before(node, nodes)
        node.replace_input_with(0, current)
        node.replace_input_with(1, add_initializer(graph, names, f"{node.inputs[1].name}_rotated",
                                                   new_w.astype(np.float32)))
        self.rotated.append(node.name or "")

    @staticmethod
    def _fold_shift(graph: ir.Graph, names: NameSet, node: ir.Node, w_kn: np.ndarray, shift: np.ndarray) -> None:
        """Gemm bias += shift @ W (the part of ``x W`` the shifted input no longer carries)."""
        extra = np.asarray(shift, np.float32).reshape(-1) @ w_kn
        old = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        bias = extra if old is None else old + extra
        value = add_initializer(graph, names, f"{node.name}_bias_shifted", bias.astype(np.float32))
        if len(node.inputs) > 2:
            node.replace_input_with(2, value)
        else:
            node.resize_inputs(3)
            node.replace_input_with(2, value)
