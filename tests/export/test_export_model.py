"""export_model end to end: each SPEC form, dynamic axes through ORT, fallback, parity failures, manifest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from qdeploy_models import build

from qdeploy.artifacts import file_sha256
from qdeploy.backends import SessionOptions, get_backend
from qdeploy.errors import ExportError, InputError
from qdeploy.evaluate.metrics import sqnr_db
from qdeploy.export import ExportConfig, ParityTolerance, export_model

# A float32 export of a small conv net agrees with PyTorch to far better than this.
MIN_SQNR_DB = 80.0


def _run_onnx(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    with get_backend("ort-cpu").open(path, SessionOptions(threads=1)) as session:
        feeds = {s.name: t.numpy() for s, t in zip(session.inputs, inputs)}
        out = session.run(feeds)
        return [out[s.name] for s in session.outputs]


def _config(spec: str, out: Path, **kw: object) -> ExportConfig:
    return ExportConfig(spec=spec, output=out, threads=1, **kw)  # type: ignore[arg-type]


def test_file_spec_exports_with_dynamo(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "net" / "model.onnx"
    result = export_model(_config(f"{model_file}:build", out, input_shapes=[(1, 3, 8, 8)]))
    assert out.is_file() and result.path == out
    assert (result.exporter_used, result.fallback_reason) == ("dynamo", None)
    assert [(s.name, s.shape) for s in result.input_specs] == [("input", (1, 3, 8, 8))]
    assert result.parity.passed and result.parity.worst_sqnr_db >= MIN_SQNR_DB
    assert result.simplified and result.opset == 18
    x = torch.rand(1, 3, 8, 8)
    from qdeploy.export import resolve_spec

    ref = resolve_spec(f"{model_file}:build").module(x).detach().numpy()
    assert sqnr_db(ref, _run_onnx(out, x)[0]) >= MIN_SQNR_DB


def test_builder_inputs_set_the_shape(model_file: Path, tmp_path: Path) -> None:
    result = export_model(_config(f"{model_file}:build_with_inputs", tmp_path / "m.onnx", simplify=False))
    assert result.input_specs[0].shape == (1, 3, 6, 10)
    assert not result.simplified


def test_module_spec(module_on_path: Callable[[str], str], tmp_path: Path) -> None:
    result = export_model(_config(f"{module_on_path('exportpkg')}:build", tmp_path / "m.onnx",
                                  input_shapes=[(1, 3, 4, 4)]))
    assert result.kind == "module" and result.parity.passed


def test_zoo_dynamic_hw_runs_at_two_sizes(tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    result = export_model(_config("tiny-sr", out, dynamic_hw=True))
    assert result.input_specs[0].shape == (1, 3, "height", "width")
    assert result.output_specs[0].shape == (1, 3, "2*height", "2*width")
    assert {c.input_shapes for c in result.parity.checks} == {((1, 3, 16, 16),), ((1, 3, 32, 48),)}
    module, _ = build("tiny-sr")
    for h, w in ((9, 13), (20, 7)):
        x = torch.rand(1, 3, h, w)
        y = _run_onnx(out, x)[0]
        assert y.shape == (1, 3, 2 * h, 2 * w)
        assert sqnr_db(module(x).detach().numpy(), y) >= MIN_SQNR_DB


def test_dynamic_batch(tmp_path: Path) -> None:
    result = export_model(_config("tiny-sr", tmp_path / "b.onnx", dynamic_batch=True,
                                  input_shapes=[(1, 3, 8, 8)]))
    assert result.input_specs[0].shape == ("batch", 3, 8, 8)
    assert ((2, 3, 8, 8),) in {c.input_shapes for c in result.parity.checks}
    assert _run_onnx(result.path, torch.rand(3, 3, 8, 8))[0].shape == (3, 3, 16, 16)


def test_pt2_spec(tmp_path: Path) -> None:
    module, (x,) = build("tiny-sr")
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(module, (x,), dynamic_shapes=({2: torch.export.Dim.DYNAMIC,
                                                                         3: torch.export.Dim.DYNAMIC},)), pt2)
    result = export_model(_config(str(pt2), tmp_path / "pt2.onnx", dynamic_hw=True))
    assert result.kind == "pt2" and result.exporter_used == "dynamo"
    assert result.input_specs[0].shape == (1, 3, "height", "width")


def test_static_pt2_cannot_become_dynamic(tmp_path: Path) -> None:
    module, (x,) = build("tiny-sr")
    pt2 = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(module, (x,)), pt2)
    with pytest.raises(ExportError) as info:
        export_model(_config(str(pt2), tmp_path / "s.onnx", dynamic_hw=True))
    assert "both exporters failed" in info.value.message
    assert "inferred a static shape of 16" in info.value.message
    assert not (tmp_path / "s.onnx").exists()


def test_fallback_to_torchscript_names_the_reason(model_file: Path, tmp_path: Path) -> None:
    result = export_model(_config(f"{model_file}:build_branchy", tmp_path / "b.onnx",
                                  input_shapes=[(1, 3, 8, 8)]))
    assert result.exporter_used == "torchscript"
    assert result.fallback_reason is not None
    assert "GuardOnDataDependentSymNode" in result.fallback_reason
    assert "user_models.py" in result.fallback_reason and "x.sum() > 0" in result.fallback_reason
    assert result.parity.passed


def test_dynamo_only_raises_instead_of_falling_back(model_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"the dynamo exporter failed: .*GuardOnDataDependentSymNode"):
        export_model(_config(f"{model_file}:build_branchy", tmp_path / "b.onnx", input_shapes=[(1, 3, 8, 8)],
                             exporter="dynamo"))


def test_torchscript_exporter_with_dynamic_hw(tmp_path: Path) -> None:
    result = export_model(_config("tiny-sr", tmp_path / "ts.onnx", exporter="torchscript", dynamic_hw=True,
                                  opset=17))
    assert (result.exporter_used, result.fallback_reason, result.opset) == ("torchscript", None, 17)
    assert result.input_specs[0].shape == (1, 3, "height", "width")
    assert _run_onnx(result.path, torch.rand(1, 3, 5, 11))[0].shape == (1, 3, 10, 22)


def test_parity_fails_on_random_forward(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ExportError) as info:
        export_model(_config(f"{model_file}:build_noisy", out, input_shapes=[(1, 3, 8, 8)]))
    assert "does not match PyTorch" in info.value.message
    assert "SQNR" in info.value.message and "need >= 60" in info.value.message
    assert not out.exists() and not (tmp_path / "manifest.json").exists()


def test_parity_fails_with_impossible_tolerance(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"need >= 1e\+06"):
        export_model(_config("tiny-sr", tmp_path / "t.onnx", parity=ParityTolerance(min_sqnr_db=1e6)))


def test_several_inputs_and_outputs(model_file: Path, tmp_path: Path) -> None:
    result = export_model(_config(f"{model_file}:build_two_inputs", tmp_path / "two.onnx",
                                  input_shapes=[(1, 3, 4, 4), (1, 1, 1, 1)]))
    assert [s.name for s in result.input_specs] == ["input_0", "input_1"]
    assert [s.name for s in result.output_specs] == ["output_0", "output_1"]
    assert len(result.parity.checks) == 2 and result.parity.passed


def test_manifest_records_export(tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    result = export_model(_config("tiny-sr", out, dynamic_hw=True, seed=3))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["artifacts"]["tiny.onnx"]
    assert result.manifest == tmp_path / "manifest.json"
    assert entry["sha256"] == file_sha256(out) and entry["bytes"] == out.stat().st_size
    assert entry["source_spec"] == "tiny-sr" and entry["source_kind"] == "zoo"
    assert entry["exporter"] == "dynamo" and entry["opset"] == 18 and entry["seed"] == 3
    assert entry["inputs"] == [{"name": "input", "shape": [1, 3, "height", "width"], "dtype": "float32"}]
    assert entry["simplify"] is True and entry["dynamic_hw"] is True
    assert entry["parity"]["passed"] is True and entry["parity"]["min_sqnr_db"] == 60.0
    assert len(entry["parity"]["checks"]) == 2
    assert "torch" in entry["versions"]


@pytest.mark.parametrize(("spec", "kw", "error", "text"), [
    ("FILE:build", {}, InputError, "comes without example inputs"),
    ("FILE:build", {"input_shapes": [(1, 1, 8, 8)]}, InputError,
     "the model fails on inputs of shape (1, 1, 8, 8)"),
    ("tiny-sr", {"output": "model.txt"}, InputError, "must be an .onnx file"),
    ("FILE:build", {"input_shapes": [(5,)], "dynamic_hw": True}, InputError, "need an input of rank"),
])
def test_bad_inputs(model_file: Path, tmp_path: Path, spec: str, kw: dict, error: type, text: str) -> None:
    kw = dict(kw)
    out = tmp_path / str(kw.pop("output", "m.onnx"))
    with pytest.raises(error) as info:
        export_model(_config(spec.replace("FILE", str(model_file)), out, **kw))
    assert text in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("kw", [{"opset": 16}, {"exporter": "onnx"}, {"input_shapes": [(1, 0, 4)]},
                                {"input_range": (1.0, 0.0)}])
def test_config_validation(kw: dict) -> None:
    with pytest.raises(ValueError):
        ExportConfig(spec="tiny-sr", output=Path("m.onnx"), **kw)


def test_onnxsim_failure_keeps_the_model_and_says_why() -> None:
    import onnx_ir as ir

    from qdeploy.export.torch_export import _simplify

    # onnxsim rejects a graph without a name (the ONNX spec requires one): a real simplifier failure.
    x = ir.Value(name="input", shape=ir.Shape([1, 2]), type=ir.TensorType(ir.DataType.FLOAT))
    node = ir.node("Relu", [x], outputs=[ir.Value(name="output")])
    model = ir.Model(ir.Graph([x], node.outputs, nodes=[node], opset_imports={"": 18}), ir_version=10)
    simplified, note = _simplify(model, (torch.rand(1, 2),), ({},))
    assert simplified is None
    assert note is not None and note.startswith("onnxsim failed (") and "kept the unsimplified model" in note
