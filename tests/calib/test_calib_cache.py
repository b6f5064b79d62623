"""Calibration cache: lossless JSON round trip and clear errors for every unusable file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qdeploy.calib import make_observer
from qdeploy.calib.cache import CACHE_FORMAT, CACHE_VERSION, CalibrationCache, load_cache, save_cache
from qdeploy.errors import InputError
from qdeploy.types import QuantTarget


def make_cache() -> CalibrationCache:
    obs = make_observer("entropy", num_bins=1024)
    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    for p in range(obs.passes):
        obs.observe(x, p)
    target = QuantTarget(8, False)
    ranges = {"conv1_out": obs.compute_range("conv1_out", target)}
    return CalibrationCache(
        model_sha256="ab" * 32,
        method="entropy",
        observer_config=obs.config.to_dict(),
        target=target,
        data_source="calib_data/images",
        data_count=16,
        data_sha256="cd" * 32,
        ranges=ranges,
        extra={"note": "test"},
    )


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    cache = make_cache()
    path = save_cache(tmp_path / "sub" / "calib.json", cache)
    doc = json.loads(path.read_text())
    assert doc["format"] == CACHE_FORMAT and doc["version"] == CACHE_VERSION
    assert set(doc) == {"format", "version", "model_sha256", "method", "observer_config", "target", "data",
                        "tensors", "extra"}
    assert doc["data"] == {"source": "calib_data/images", "count": 16, "sha256": "cd" * 32}
    assert load_cache(path) == cache
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary behind


def test_mismatches_name_what_changed() -> None:
    cache = make_cache()
    same = {"model_sha256": cache.model_sha256, "method": "entropy", "observer_config": cache.observer_config,
                "target": cache.target, "data_sha256": cache.data_sha256}
    assert cache.mismatches(**same) == []
    changed = cache.mismatches(**{**same, "target": QuantTarget(4, False), "model_sha256": "00"})
    assert len(changed) == 2
    assert any(m.startswith("model") for m in changed) and any(m.startswith("target") for m in changed)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calib.json"
    path.write_text(text)
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist") as err:
        load_cache(tmp_path / "nope.json")
    assert "without --cache" in err.value.hint


def test_bad_json(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid JSON") as err:
        load_cache(write(tmp_path, "{not json"))
    assert "without --cache" in err.value.hint


@pytest.mark.parametrize("text", ['{"format": "onnxruntime-tensors"}', "[1, 2]"])
def test_wrong_format(tmp_path: Path, text: str) -> None:
    with pytest.raises(InputError, match="not a qdeploy calibration cache"):
        load_cache(write(tmp_path, text))


def test_unsupported_version(tmp_path: Path) -> None:
    doc = make_cache().to_dict()
    doc["version"] = CACHE_VERSION + 1
    with pytest.raises(InputError, match="version") as err:
        load_cache(write(tmp_path, json.dumps(doc)))
    assert "without --cache" in err.value.hint


def test_damaged_content(tmp_path: Path) -> None:
    doc = make_cache().to_dict()
    del doc["tensors"]["conv1_out"]["lo"]
    with pytest.raises(InputError, match="incomplete or damaged"):
        load_cache(write(tmp_path, json.dumps(doc)))


def test_raise_ranges_prefer_the_stored_8bit_bounds(tmp_path: Path) -> None:
    """A raised tensor takes the 8-bit bounds a search stored; without them the observer's own ranges."""
    from qdeploy.types import TensorRange

    low = {"x": TensorRange("x", -4.0, 4.0, -1.0, 1.0, 0.1, "dobi", 8)}
    wide = TensorRange("x", -4.0, 4.0, -3.5, 3.5, 0.001, "dobi", 8)
    plain = CalibrationCache("0" * 64, "dobi", {}, QuantTarget(4, True), "d", 8, "1" * 64, low)
    assert plain.raise_ranges() == low
    stored = CalibrationCache("0" * 64, "dobi", {}, QuantTarget(4, True), "d", 8, "1" * 64, low,
                              extra={"raise_ranges": {"x": wide.to_dict()}})
    again = load_cache(save_cache(tmp_path / "c.json", stored))
    assert again.raise_ranges() == {"x": wide} and again.ranges == low
