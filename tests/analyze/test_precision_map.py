"""ApplyPrecisionMapPass and the precision map in the calibration cache: round trips and exactness."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest
from analyze_models import run

from qdeploy.analyze.search import apply_precision_map
from qdeploy.analyze.sensitivity import output_sqnr
from qdeploy.calib.cache import CalibrationCache, load_cache, save_cache
from qdeploy.errors import InputError
from qdeploy.graph.io import model_to_bytes
from qdeploy.graph.passes import ApplyPrecisionMapPass
from qdeploy.graph.passes.precision_map import parse_precision, quantized_tensors
from qdeploy.types import QuantTarget


def _labels(model: ir.Model) -> dict[str, str]:
    return {t.name: t.label for t in quantized_tensors(model.graph)}


def _cache(ranges: dict, precision_map: dict[str, str] | None) -> CalibrationCache:
    return CalibrationCache(
        "0" * 64,
        "minmax",
        {},
        QuantTarget(4, False),
        "data",
        6,
        "1" * 64,
        ranges,
        {"preset": "ort-cpu-int8"},
        precision_map,
    )


def test_bits_are_read_back_from_the_graph(w8a8, w4a4) -> None:
    assert set(_labels(w8a8[0]).values()) == {"int8"}
    assert set(_labels(w4a4[0]).values()) == {"int4"}


def test_w4a4_mapped_to_int8_equals_direct_w8a8(float_model, w8a8, w4a4, heldout) -> None:
    """Re-quantizing every tensor from the calibrated ranges and float weights rebuilds W8A8 exactly."""
    low, ranges = w4a4
    mapped = apply_precision_map(low, dict.fromkeys(_labels(low), "int8"), float_model, ranges)
    assert set(_labels(mapped).values()) == {"int8"}
    for feed in heldout:
        np.testing.assert_array_equal(run(mapped, feed)["y"], run(w8a8[0], feed)["y"])


def test_float_entries_remove_pairs_and_weight_dqs(float_model, w8a8, heldout) -> None:
    qdq_model, ranges = w8a8
    labels = _labels(qdq_model)
    act = next(n for n, _ in labels.items() if n.startswith("/Relu"))
    weight = "c2.weight"
    mapped = apply_precision_map(
        qdq_model, {act: "float", weight: "float", "y": "float"}, float_model, ranges
    )
    assert set(_labels(mapped)) == set(labels) - {act, weight, "y"}
    assert [o.name for o in mapped.graph.outputs] == ["y"]  # the output keeps its name without its pair
    everything = apply_precision_map(qdq_model, dict.fromkeys(labels, "float"), float_model, ranges)
    assert not _labels(everything)
    ref = [run(float_model, f, "all") for f in heldout]
    assert output_sqnr(ref, [run(everything, f) for f in heldout]) > 70.0  # float but int32-free biases


def test_reapplying_a_map_is_idempotent(float_model, w4a4) -> None:
    low, ranges = w4a4
    pmap = {name: ("int8" if i % 2 else "float") for i, name in enumerate(_labels(low))}
    once = apply_precision_map(low, pmap, float_model, ranges)
    assert _labels(once) == {n: v for n, v in pmap.items() if v != "float"}
    twice = apply_precision_map(once, {n: v for n, v in pmap.items() if v != "float"}, float_model, ranges)
    assert model_to_bytes(twice) == model_to_bytes(once)


def test_cache_round_trip_and_reapply(tmp_path, float_model, w4a4, heldout) -> None:
    low, ranges = w4a4
    pmap = dict.fromkeys(_labels(low), "int4") | {"x": "int8", "c1.weight": "float"}
    path = save_cache(tmp_path / "calib.json", _cache(ranges, pmap))
    loaded = load_cache(path)
    assert loaded.precision_map == pmap and loaded == _cache(ranges, pmap)
    doc = json.loads(path.read_text())
    doc["precision_map"]["c1.weight"] = "int8"  # a hand edit
    path.write_text(json.dumps(doc))
    edited = load_cache(path)
    model = low.clone()
    ApplyPrecisionMapPass(edited.precision_map, edited.ranges, float_model)(model)
    assert _labels(model) == edited.precision_map
    run(model, heldout[0])  # still a valid, runnable model


def test_cache_without_map_stays_backward_compatible(tmp_path, w4a4) -> None:
    path = save_cache(tmp_path / "old.json", _cache(w4a4[1], None))
    assert "precision_map" not in json.loads(path.read_text())
    assert load_cache(path).precision_map is None
    doc = json.loads(path.read_text()) | {"precision_map": {"x": 8}}
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="damaged"):
        load_cache(path)


def test_bad_maps_raise_input_errors(w8a8) -> None:
    with pytest.raises(InputError, match="does not quantize"):
        ApplyPrecisionMapPass({"nope": "int8"})(w8a8[0].clone())
    with pytest.raises(InputError, match="unknown precision"):
        parse_precision("int12")
    assert parse_precision("FLOAT") is None and parse_precision("int4") == 4
