"""The pieces behind profile_models: seeded inputs, machine facts, RSS sampling, JSON/table rendering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qdeploy.errors import InputError
from qdeploy.evaluate.inputs import make_inputs, megapixels
from qdeploy.evaluate.machine import PeakRss, cpu_info, read_rss_bytes
from qdeploy.evaluate.report import format_bytes, json_safe
from qdeploy.types import TensorSpec

# numpy allocations of this size must show up in RSS; the sampler may miss a little around it.
ALLOC_BYTES = 64 << 20
MIN_SEEN_FRACTION = 0.9

TWO_INPUTS = [TensorSpec("a", (1, 3, 4, 4), "float32"), TensorSpec("ids", (2, 5), "int64")]


def test_inputs_are_seeded_in_range_and_typed() -> None:
    first = make_inputs(TWO_INPUTS, None, seed=3, input_range=(-2.0, 5.0))
    again = make_inputs(TWO_INPUTS, None, seed=3, input_range=(-2.0, 5.0))
    other = make_inputs(TWO_INPUTS, None, seed=4, input_range=(-2.0, 5.0))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["a"], other["a"])
    assert first["a"].dtype == np.float32 and first["a"].shape == (1, 3, 4, 4)
    assert first["a"].min() >= -2.0 and first["a"].max() < 5.0
    assert first["ids"].dtype == np.int64 and first["ids"].min() >= -2 and first["ids"].max() <= 5


def test_input_shape_errors_name_the_problem() -> None:
    with pytest.raises(InputError, match="a bare shape is ambiguous"):
        make_inputs(TWO_INPUTS, (1, 3, 4, 4), 0, (0.0, 1.0))
    with pytest.raises(InputError, match=r"\['image'\]"):
        make_inputs(TWO_INPUTS, {"image": (1, 3, 4, 4)}, 0, (0.0, 1.0))
    dyn = [TensorSpec("x", ("batch", 3, None, None), "float32")]
    with pytest.raises(InputError, match=r"axis 0 \(batch\), axis 2 \(\?\), axis 3 \(\?\)") as info:
        make_inputs(dyn, None, 0, (0.0, 1.0))
    assert "--input-shape x:1,3,64,64" in info.value.hint
    assert make_inputs(dyn, {"x": (2, 3, 6, 7)}, 0, (0.0, 1.0))["x"].shape == (2, 3, 6, 7)


def test_megapixels_only_for_image_batches() -> None:
    assert megapixels({"x": np.zeros((2, 3, 100, 50), np.float32)}) == pytest.approx(0.01)
    assert megapixels({"x": np.zeros((2, 16, 100, 50), np.float32)}) is None
    assert megapixels({"x": np.zeros((2, 5), np.float32)}) is None


@pytest.mark.parametrize(("flags", "vnni"), [
    ("fpu avx2 avx512f avx512_vnni", True), ("fpu avx2 avx_vnni", True), ("fpu sse4_2 avx2", False),
])
def test_cpu_info_reads_model_and_vnni(tmp_path: Path, flags: str, vnni: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\n"
                       f"processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    info = cpu_info(cpuinfo)
    assert info["cpu_model"] == "Test CPU 9000"
    assert info["vnni"] is vnni
    assert info["avx2"] is True
    assert info["logical_cores"] >= 1


def test_cpu_info_without_proc_reports_unknown_flags(tmp_path: Path) -> None:
    assert cpu_info(tmp_path / "absent")["vnni"] is None


@pytest.mark.skipif(read_rss_bytes() is None, reason="needs /proc/self/statm (Linux)")
def test_peak_rss_sees_a_large_allocation() -> None:
    with PeakRss() as rss:
        block = np.ones(ALLOC_BYTES // 8)
        del block
    assert rss.increase_bytes is not None
    assert rss.increase_bytes >= MIN_SEEN_FRACTION * ALLOC_BYTES
    with PeakRss() as quiet:
        pass
    assert quiet.increase_bytes < ALLOC_BYTES // 4


def test_json_safe_makes_strict_json() -> None:
    data = {"a": float("inf"), "b": [float("-inf"), float("nan"), 1.5], "c": (1, 2), 3: None}
    safe = json_safe(data)
    assert safe == {"a": "inf", "b": ["-inf", "nan", 1.5], "c": [1, 2], "3": None}
    json.dumps(safe, allow_nan=False)


def test_format_bytes() -> None:
    assert format_bytes(None) == "n/a"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 << 30) == "3.0 GiB"
