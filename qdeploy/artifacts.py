"""The one place that writes files: atomic writes, content hashes and ``manifest.json``.

Every output is written to a temporary name in the destination folder and renamed into place, so an
error half-way (or Ctrl-C) never leaves a truncated model or report behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "export_record", "exported_pixel_range", "file_sha256", "json_safe", "package_versions",
           "write_json", "write_manifest"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; artifacts are meant to be shared/read
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(dest: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically; returns the destination path."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(dest)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions(names: tuple[str, ...] = ("qdeploy", "torch", "onnx", "onnxruntime", "onnx-ir",
                                                 "onnxscript", "onnxsim", "numpy")) -> dict[str, str]:
    """Installed versions of the packages that decide an artifact's numbers ("absent" if missing)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def write_manifest(artifact: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write ``manifest.json`` beside ``artifact``, merging with an existing manifest there.

    Entries are keyed by artifact file name, each with its sha256, size, versions and ``info``.
    """
    artifact = Path(artifact)
    manifest_path = artifact.parent / "manifest.json"
    data: dict[str, Any] = {}
    if manifest_path.exists():
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(manifest_path.read_text())
    data.setdefault("format", "qdeploy-manifest")
    data.setdefault("version", 1)
    artifacts = data.setdefault("artifacts", {})
    artifacts[artifact.name] = {
        "sha256": file_sha256(artifact),
        "bytes": artifact.stat().st_size,
        "versions": package_versions(),
        **info,
    }
    return write_json(manifest_path, data)


def export_record(model: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``qdeploy export`` manifest entry of ``model`` (same file name *and* sha256), or None.

    Why the hash: a manifest lists what was exported there; a file replaced since then is another model,
    and facts about the old one (its input range) must not be applied to it.
    """
    model = Path(model)
    manifest = model.parent / "manifest.json"
    try:
        entry = json.loads(manifest.read_text())["artifacts"][model.name]
        if entry.get("stage") == "export" and entry.get("sha256") == file_sha256(model):
            return dict(entry)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def exported_pixel_range(model: str | os.PathLike[str]) -> str | None:
    """``"0-1"`` or ``"0-255"`` when ``qdeploy export`` recorded that input range for ``model``, else None."""
    record = export_record(model) or {}
    span = record.get("input_range")
    if isinstance(span, list) and len(span) == 2 and span[0] == 0:
        return {1: "0-1", 255: "0-255"}.get(span[1])
    return None


def json_safe(data: Any) -> Any:
    """Recursively replace non-finite floats by the strings "inf", "-inf", "nan" (strict JSON has none).

    Strings rather than null keep "identical outputs" (SQNR inf) apart from "not measured" (null), and
    Python's ``float()`` reads them back. Tuples become lists; other values pass through.
    """
    if isinstance(data, float) and not math.isfinite(data):
        return "nan" if math.isnan(data) else ("inf" if data > 0 else "-inf")
    if isinstance(data, dict):
        return {str(k): json_safe(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [json_safe(v) for v in data]
    return data
