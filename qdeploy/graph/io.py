"""Loading and saving ONNX models: the only module that touches ONNX protobuf.

Everything else in qdeploy works on :class:`onnx_ir.Model`. Loading validates eagerly (file exists, parses,
passes ``onnx.checker``) so that users get one clear message instead of an ONNX Runtime stack trace later.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import onnx_ir as ir

from qdeploy.artifacts import atomic_path
from qdeploy.errors import InputError

__all__ = ["check_model", "load_model", "model_from_bytes", "model_to_bytes", "save_model"]


def _read_proto(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise InputError(f"ONNX file not found: {path}",
                         "check the path (relative paths are from the current directory)")
    if path.is_dir():
        raise InputError(f"expected an .onnx file, got a directory: {path}", "pass the model file itself")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})",
            "the file is corrupt or not ONNX; re-export it with `qdeploy export`",
        ) from exc


def check_model(proto: onnx.ModelProto, where: str = "model") -> None:
    """Run the ONNX checker and raise :class:`InputError` naming ``where`` if it fails."""
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InputError(
            f"{where} fails the ONNX checker: {first}",
            "fix or re-export the model; `python -m onnx.checker` shows the full report",
        ) from exc


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load, check and convert an ONNX file to the in-memory IR."""
    path = Path(path)
    proto = _read_proto(path)
    check_model(proto, str(path))
    return ir.serde.deserialize_model(proto)


def model_to_bytes(model: ir.Model) -> bytes:
    """Serialize an IR model to ONNX bytes (for ORT sessions and hashing)."""
    return ir.serde.serialize_model(model).SerializeToString()


def model_from_bytes(data: bytes) -> ir.Model:
    """Parse ONNX bytes into the IR (no checker run)."""
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    return ir.serde.deserialize_model(proto)


def save_model(model: ir.Model, path: str | os.PathLike[str], check: bool = True) -> Path:
    """Check and write ``model`` atomically (temp file + rename); returns the path."""
    proto = ir.serde.serialize_model(model)
    if check:
        check_model(proto, f"model to be written to {path}")
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)
