"""What a latency number depends on: CPU model, cores, INT8 dot-product ISA, runtime version, and RSS.

Profiles are only comparable on the same machine and runtime, so every report records these facts. VNNI
matters most: ONNX Runtime's INT8 convolutions are fast on CPUs with AVX512-VNNI / AVX-VNNI and can be
*slower* than float without them, which is the first thing to check when a QDQ model does not speed up.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PeakRss", "cpu_info", "machine_info", "read_rss_bytes"]

_STATM = Path("/proc/self/statm")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model name, logical cores (total and usable by this process) and INT8-relevant ISA flags.

    Reads ``/proc/cpuinfo`` (Linux); elsewhere the model falls back to ``platform.processor()`` and the
    flags are reported as unknown (None).
    """
    model: str | None = None
    flags: set[str] | None = None
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "avx2": None if flags is None else "avx2" in flags,
        "avx512f": None if flags is None else "avx512f" in flags,
        "vnni": None if flags is None else bool({"avx512_vnni", "avx_vnni"} & flags),
    }


def machine_info(backend: str, threads: int | None) -> dict[str, Any]:
    """Everything a profile needs to be compared fairly: CPU facts, runtime versions, backend and threads."""
    try:
        ort_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort_version = "absent"
    return {
        **cpu_info(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort_version,
        "backend": backend,
        "threads": threads if threads else "runtime default",
    }


def read_rss_bytes() -> int | None:
    """Resident set size of this process in bytes from ``/proc/self/statm`` (None off Linux)."""
    try:
        fields = _STATM.read_text().split()
    except OSError:
        return None
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Context manager that samples this process's RSS on a background thread and keeps the peak.

    ``increase_bytes`` is peak minus the RSS at entry: the memory a model's session added while it was
    created and run. It is process-wide RSS (Python, numpy and the runtime's allocator included), sampled
    every ``interval_s``, so short spikes between samples can be missed and memory freed by an earlier
    model but kept by the allocator can hide part of a later model's growth. Use it to compare models of
    very different footprint, not to count bytes.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.baseline: int | None = None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = read_rss_bytes()
        if self.baseline is not None:
            self._thread = threading.Thread(target=self._sample, name="qdeploy-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._update()

    @property
    def increase_bytes(self) -> int | None:
        """Peak RSS growth since entry (None where RSS cannot be read)."""
        if self.baseline is None or self.peak is None:
            return None
        return max(0, self.peak - self.baseline)

    def _update(self) -> None:
        rss = read_rss_bytes()
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._update()
            time.sleep(self.interval_s)
