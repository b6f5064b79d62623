"""Exact float rewrites into ops that ONNX Runtime CPU has integer kernels for (applied before quantizing).

ORT 1.31's CPU provider has no QDQ fusion for ``ConvTranspose`` or ``PRelu``: quantized, they run as
``DQ -> float op -> Q``. Both have an exact equivalent that does fuse:

- :class:`ConvTransposeToConvPass`: a stride-``s`` ConvTranspose equals ``Conv -> DepthToSpace(s)``
  (sub-pixel convolution: each of the ``s x s`` output phases is an ordinary convolution of the input
  with a subset of the kernel taps), followed by a ``Slice`` when the phases overshoot the output size.
  The Conv becomes QLinearConv; DepthToSpace and Slice then move uint8 (``IntegerTailPass``).
- :class:`UniformPReluToLeakyReluPass`: a PRelu whose slope is one number everywhere *is* LeakyRelu,
  which becomes QLinearLeakyRelu. A per-channel PRelu has no integer kernel and stays float.

Both keep every existing tensor name, so ranges calibrated on the original model still apply; the one
new tensor per ConvTranspose (the conv's phase output) holds the same values as the ConvTranspose output
(rearranged, plus cropped border), so it takes that tensor's range (:attr:`ConvTransposeToConvPass.aliases`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from qdeploy.graph.passes._qdq import NameSet, add_initializer
from qdeploy.graph.select import constant_array

__all__ = ["ConvTransposeToConvPass", "UniformPReluToLeakyReluPass", "subpixel_weights"]


def _axis_plan(k: int, s: int, pad_begin: int, pad_end: int, out_pad: int) -> tuple[int, int, int, int] | None:
    """(conv kernel, conv pad begin, conv pad end, crop at the end) for one spatial axis, or None.

    Phase ``r`` of the output (``o = s*i + r``) reads input ``j = i + d`` through tap
    ``t = r + pad_begin - s*d``; ``d`` spans ``[ceil((pb-k+1)/s), floor((s-1+pb)/s)]`` over all phases.
    The output length is ``s*L + c`` with ``c = k - s - pb - pe + op``, so every phase needs
    ``L + ceil(c/s)`` conv outputs and ``s*ceil(c/s) - c`` trailing rows are cropped.
    """
    d_lo = -((k - 1 - pad_begin) // s)  # ceil((pb - k + 1) / s)
    d_hi = (s - 1 + pad_begin) // s
    kernel, pad = d_hi - d_lo + 1, -d_lo
    c = k - s - pad_begin - pad_end + out_pad
    extra = -(-c // s)
    pad_after = extra - pad + kernel - 1
    if pad < 0 or pad_after < 0:
        return None
    return kernel, pad, pad_after, s * extra - c


def subpixel_weights(weight: np.ndarray, stride: int, ct_pads: tuple[int, int], conv_pads: tuple[int, int],
                     kernels: tuple[int, int]) -> np.ndarray:
    """Conv weights ``[s*s*Cout, Cin, Ky, Kx]`` (DepthToSpace DCR channel order) equal to a ConvTranspose.

    ``weight`` is ConvTranspose's ``[Cin, Cout, ky, kx]`` (group 1), ``ct_pads`` its begin pads (y, x),
    ``conv_pads`` and ``kernels`` the conv's begin pads and kernel sizes from :func:`_axis_plan`. Phase
    ``(ry, rx)`` tap ``(uy, ux)`` is ConvTranspose tap ``t = r + ct_pad - s*(u - conv_pad)`` (zero if outside).
    """
    c_in, c_out, ky, kx = weight.shape
    s = stride
    out = np.zeros((s, s, c_out, c_in, kernels[0], kernels[1]), weight.dtype)
    for ry in range(s):
        for uy in range(kernels[0]):
            ty = ry + ct_pads[0] - s * (uy - conv_pads[0])
            if not 0 <= ty < ky:
                continue
            for rx in range(s):
                for ux in range(kernels[1]):
                    tx = rx + ct_pads[1] - s * (ux - conv_pads[1])
                    if 0 <= tx < kx:
                        out[ry, rx, :, :, uy, ux] = weight[:, :, ty, tx].T
    return out.reshape(s * s * c_out, c_in, kernels[0], kernels[1])


def _ints(node: ir.Node, name: str, default: list[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else default


class ConvTransposeToConvPass(ir.passes.InPlacePass):
    """Replace each eligible ConvTranspose with ``Conv -> DepthToSpace(DCR) [-> Slice]`` (exact in float).

    Eligible: standard domain, 4-D constant weight, group 1, dilations 1, equal strides, no
    ``output_shape`` and no ``auto_pad``, constant (or absent) bias, and pads that the sub-pixel form can
    express without negative conv padding. Others are left alone (they stay float under the ORT presets).
    ``aliases`` maps each new phase tensor to the ConvTranspose output whose calibrated range it uses.
    """

    def __init__(self) -> None:
        super().__init__()
        self.aliases: dict[str, str] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite in place."""
        graph = model.graph
        names = NameSet(graph)
        modified = False
        for node in list(graph):
            if node.op_type == "ConvTranspose" and node.domain == "":
                modified |= self._rewrite(graph, names, node)
        return ir.passes.PassResult(model, modified=modified)

    def _rewrite(self, graph: ir.Graph, names: NameSet, node: ir.Node) -> bool:
        weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        plan = self._plan(node, weight, bias, len(node.inputs) > 2 and node.inputs[2] is not None)
        if plan is None or weight is None:
            return False
        (ky, py, qy, ey), (kx, px, qx, ex), s = plan
        pads = _ints(node, "pads", [0, 0, 0, 0])
        w = subpixel_weights(weight, s, (pads[0], pads[1]), (py, px), (ky, kx))
        out = node.outputs[0]
        base = out.name or node.name or "convtranspose"
        inputs = [node.inputs[0], add_initializer(graph, names, f"{base}_subpixel_weight", w)]
        if bias is not None:
            inputs.append(add_initializer(graph, names, f"{base}_subpixel_bias", np.tile(bias, s * s)))
        conv = ir.node("Conv", inputs, {"pads": [py, px, qy, qx], "kernel_shape": [ky, kx]},
                       name=names.fresh(f"{node.name or base}_subpixel_conv"))
        phases = conv.outputs[0]
        phases.name, phases.type = names.fresh(f"{base}_phases"), out.type
        new_nodes = [conv]
        last = phases
        if s > 1:
            d2s = ir.node("DepthToSpace", [phases], {"blocksize": s, "mode": "DCR"},
                          name=names.fresh(f"{node.name or base}_depth_to_space"))
            new_nodes.append(d2s)
            last = d2s.outputs[0]
        if ey or ex:
            new_nodes.append(self._crop(graph, names, base, last, ey, ex))
            last = new_nodes[-1].outputs[0]
        graph.insert_after(node, new_nodes)
        self._take_identity(graph, out, last)
        out.replace_all_uses_with(last)
        graph.remove(node, safe=True)
        self.aliases[phases.name] = last.name  # type: ignore[index]
        return True

    @staticmethod
    def _plan(node: ir.Node, weight: np.ndarray | None, bias: np.ndarray | None, has_bias: bool
              ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], int] | None:
        if weight is None or weight.ndim != 4 or (has_bias and bias is None):
            return None
        if node.attributes.get_int("group", 1) != 1 or "output_shape" in node.attributes:
            return None
        if node.attributes.get_string("auto_pad", "NOTSET") != "NOTSET":
            return None
        strides = _ints(node, "strides", [1, 1])
        if _ints(node, "dilations", [1, 1]) != [1, 1] or strides[0] != strides[1]:
            return None
        pads = _ints(node, "pads", [0, 0, 0, 0])
        out_pad = _ints(node, "output_padding", [0, 0])
        s = strides[0]
        plan_y = _axis_plan(weight.shape[2], s, pads[0], pads[2], out_pad[0])
        plan_x = _axis_plan(weight.shape[3], s, pads[1], pads[3], out_pad[1])
        if plan_y is None or plan_x is None:
            return None
        return plan_y, plan_x, s

    @staticmethod
    def _crop(graph: ir.Graph, names: NameSet, base: str, value: ir.Value, ey: int, ex: int) -> ir.Node:
        """``Slice`` dropping ``ey`` trailing rows and ``ex`` trailing columns (negative ends: any size)."""
        big = np.iinfo(np.int64).max
        starts = add_initializer(graph, names, f"{base}_crop_starts", np.array([0, 0], np.int64))
        ends = add_initializer(graph, names, f"{base}_crop_ends",
                               np.array([-ey if ey else big, -ex if ex else big], np.int64))
        axes = add_initializer(graph, names, f"{base}_crop_axes", np.array([2, 3], np.int64))
        return ir.node("Slice", [value, starts, ends, axes], name=names.fresh(f"{base}_crop"))

    @staticmethod
    def _take_identity(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
        """``new`` takes ``old``'s name, type, shape and graph-output slot (ranges are keyed by name)."""
        for i, graph_out in enumerate(graph.outputs):
            if graph_out is old:
                graph.outputs[i] = new
        name = old.name
        old.name = f"{name}_convtranspose_replaced"
        new.name, new.type, new.shape = name, old.type, old.shape


class UniformPReluToLeakyReluPass(ir.passes.InPlacePass):
    """Replace ``PRelu(x, slope)`` by ``LeakyRelu(x, alpha=slope)`` when the constant slope is one number.

    Cases: per-channel slopes that differ, or a computed slope, are left alone. The node keeps its output
    value (same name), so calibrated ranges still apply.
    """

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        """Rewrite in place."""
        graph = model.graph
        modified = False
        for node in list(graph):
            if node.op_type != "PRelu" or node.domain != "" or len(node.inputs) != 2:
                continue
            slope = constant_array(node.inputs[1])
            if slope is None or slope.size == 0 or not np.all(slope == slope.reshape(-1)[0]):
                continue
            leaky = ir.node("LeakyRelu", [node.inputs[0]], {"alpha": float(slope.reshape(-1)[0])},
                            name=node.name)
            out = node.outputs[0]
            graph.insert_after(node, leaky)
            ConvTransposeToConvPass._take_identity(graph, out, leaky.outputs[0])
            out.replace_all_uses_with(leaky.outputs[0])
            graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)
