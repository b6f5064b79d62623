"""Hand-built QDQ graphs (ONNX text) with good and bad placements for the fusion-check tests."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from qdq_models import from_text

__all__ = ["qdq_conv"]


def _init(dtype: str, name: str, values: np.ndarray) -> str:
    flat = ", ".join(
        str(int(v)) if dtype.startswith(("int", "uint")) else f"{float(v):.4f}" for v in values.ravel()
    )
    dims = ",".join(str(d) for d in values.shape)
    return f"{dtype}[{dims}] {name} = {{{flat}}}" if values.shape else f"{dtype} {name} = {{{flat}}}"


def qdq_conv(
    *,
    act_dtype: str = "int8",
    act_zp: int = 0,
    w_axis: int | None = 0,
    w_dq: bool = True,
    w_zp: int = 0,
    op: str = "Conv",
    out: str = "relu",
    consumers: int = 1,
    dedicated: bool = True,
    residual: bool = False,
) -> ir.Model:
    """x -> Q/DQ -> Conv(s) with a DQ'd int8 weight, then an output tail chosen by ``out``.

    ``out``: "relu" (Conv -> Relu), "qdq_relu" (Conv -> Q -> DQ -> Relu, the bad TensorRT placement),
    "q" (Conv -> Q -> DQ, ORT's form), "relu_q" (Conv -> Relu -> Q -> DQ), "none" (Conv is the output).
    ``consumers`` > 1 adds convs reading the same input, through one shared DQ (``dedicated=False``) or a
    private Q/DQ pair each. ``residual`` adds ``Add(DQ(x), conv_out)``, half-quantized.
    """
    rng = np.random.default_rng(0)
    wshape = (3, 2, 1, 1) if op == "Conv" else (2, 3, 1, 1)
    inits = [_init("float", "xs", np.array(0.05)), _init(act_dtype, "xz", np.array(act_zp))]
    wq = rng.integers(-100, 100, wshape)
    if w_dq:
        inits.append(_init("int8", "w", wq))
        nscale = 1 if w_axis is None else wshape[w_axis]
        scale = np.full((nscale,), 0.01) if w_axis is not None else np.array(0.01)
        inits += [_init("float", "ws", scale), _init("int8", "wz", np.full(scale.shape, w_zp))]
    else:
        inits.append(_init("float", "w", wq * 0.01))
    body = ["xq = QuantizeLinear(x, xs, xz)", "xd = DequantizeLinear(xq, xs, xz)"]
    if w_dq:
        axis = f"<axis={w_axis}>" if w_axis is not None else ""
        body.append(f"wd = DequantizeLinear{axis}(w, ws, wz)")
    wname = "wd" if w_dq else "w"
    outs = []
    for k in range(consumers):
        xin = "xd"
        if k and dedicated:
            body += [f"xq{k} = QuantizeLinear(x, xs, xz)", f"xd{k} = DequantizeLinear(xq{k}, xs, xz)"]
            xin = f"xd{k}"
        body.append(f"c{k} = {op}({xin}, {wname})")
        outs.append(_tail(body, k, out, act_dtype))
    if residual:
        body += [
            "rq = QuantizeLinear(x, xs, xz)",
            "rd = DequantizeLinear(rq, xs, xz)",
            f"sum = Add(rd, {outs[0]})",
        ]
        outs[0] = "sum"
    outputs = ", ".join(f"float[1,3,4,4] {o}" if op == "Conv" else f"float {o}" for o in outs)
    text = (
        f'<ir_version: 8, opset_import: ["" : 17]>\ng (float[1,2,4,4] x) => ({outputs})\n'
        f"<{', '.join(inits)}>\n{{\n  " + "\n  ".join(body) + "\n}\n"
    )
    return from_text(text)


def _tail(body: list[str], k: int, out: str, act_dtype: str) -> str:
    c, y = f"c{k}", f"y{k}"
    if out == "relu":
        body.append(f"{y} = Relu({c})")
    elif out == "qdq_relu":
        body += [
            f"oq{k} = QuantizeLinear({c}, xs, xz)",
            f"od{k} = DequantizeLinear(oq{k}, xs, xz)",
            f"{y} = Relu(od{k})",
        ]
    elif out == "q":
        body += [f"oq{k} = QuantizeLinear({c}, xs, xz)", f"{y} = DequantizeLinear(oq{k}, xs, xz)"]
    elif out == "relu_q":
        body += [
            f"r{k} = Relu({c})",
            f"oq{k} = QuantizeLinear(r{k}, xs, xz)",
            f"{y} = DequantizeLinear(oq{k}, xs, xz)",
        ]
    else:
        return c
    return y
