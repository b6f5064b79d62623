"""TensorRT network/config plumbing shared by both flavours: parser errors, profiles, timing cache, layers.

Split from :mod:`qdeploy.trt.build` so that module reads as the build *policy* (precision, typing, caches)
while this one holds the API calls; every function takes the already imported ``trt`` objects.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from qdeploy.artifacts import atomic_path
from qdeploy.errors import InputError, UnsupportedModelError
from qdeploy.trt.shapes import ShapeRange

__all__ = [
    "add_profile",
    "load_timing_cache",
    "network_layers",
    "parser_failure",
    "save_timing_cache",
    "write_bytes",
]


def write_bytes(dest: Path | str | None, data: bytes) -> Path | None:
    if dest is None:
        return None
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def parser_failure(parser: Any, onnx_path: Path, flavor: str) -> UnsupportedModelError:
    """One :class:`UnsupportedModelError` listing every parser error with its node and description."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = f"node {err.node()}" if err.node() >= 0 else "model"
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        detail = f" ({name or '?'}: {op})" if (name or op) else ""
        lines.append(f"{where}{detail}: {err.desc()} [{getattr(err.code(), 'name', err.code())}]")
    return UnsupportedModelError(
        f"{flavor} cannot parse {onnx_path} ({len(lines)} error(s)):\n  "
        + "\n  ".join(lines or ["(no detail)"]),
        "replace or remove the listed ops (re-export, or keep that part outside the engine)",
    )


def add_profile(builder: Any, bconfig: Any, network: Any, shapes: tuple[ShapeRange, ...]) -> None:
    """One optimisation profile covering every input with a dynamic (-1) dimension."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [t for t in inputs if any(d < 0 for d in t.shape)]
    by_name = {s.name: s for s in shapes}
    if None in by_name:
        if len(dynamic) > 1:
            raise InputError(
                f"the model has {len(dynamic)} dynamic inputs; a bare --input-shape is ambiguous",
                "name each input: --input-shape NAME:MIN-OPT-MAX",
            )
        if dynamic:
            by_name = {dynamic[0].name: by_name[None].with_name(dynamic[0].name)}
    unknown = sorted(set(by_name) - {t.name for t in inputs} - {None})
    if unknown:
        raise InputError(
            f"--input-shape names {unknown} are not model inputs", f"model inputs: {[t.name for t in inputs]}"
        )
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        rng = by_name.get(tensor.name)
        if rng is None:
            raise InputError(
                f"input {tensor.name!r} has dynamic shape {tuple(tensor.shape)}; TensorRT needs its range",
                f"pass --input-shape {tensor.name}:1x3x64x64-1x3x360x640-1x3x720x1280 "
                "(MIN-OPT-MAX) or one shape",
            )
        _check_fits(tensor, rng)
        profile.set_shape(tensor.name, rng.min, rng.opt, rng.max)
    bconfig.add_optimization_profile(profile)


def _check_fits(tensor: Any, rng: ShapeRange) -> None:
    dims = tuple(tensor.shape)
    ok = len(dims) == len(rng.min) and all(
        d < 0 or (lo == hi == d) for d, lo, hi in zip(dims, rng.min, rng.max, strict=False)
    )
    if not ok:
        raise InputError(
            f"--input-shape for {tensor.name!r} ({rng.min}..{rng.max}) does not fit the model's "
            f"shape {dims} (-1 = dynamic)",
            "keep the static dimensions and the rank",
        )


def load_timing_cache(bconfig: Any, path: Path | None) -> Any:
    """Attach the timing cache at ``path`` (empty when the file does not exist yet)."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TensorRT-RTX: timing caches are no-ops
        cache = bconfig.create_timing_cache(data)
        bconfig.set_timing_cache(cache, False)
    return cache


def save_timing_cache(bconfig: Any, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        data = bytes(memoryview(bconfig.get_timing_cache().serialize()))
    write_bytes(path, data)


def network_layers(network: Any) -> tuple[dict[str, str], ...]:
    out = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        dtype = layer.get_output(0).dtype if layer.num_outputs else None
        out.append(
            {
                "name": layer.name,
                "type": getattr(layer.type, "name", str(layer.type)),
                "dtype": getattr(dtype, "name", str(dtype)) if dtype is not None else "",
            }
        )
    return tuple(out)
