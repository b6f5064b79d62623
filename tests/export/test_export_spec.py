"""SPEC resolution: every form, and a readable InputError for every way a SPEC can be wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qdeploy.errors import InputError
from qdeploy.export import resolve_spec


def test_file_spec_returns_module_without_inputs(model_file: Path) -> None:
    resolved = resolve_spec(f"{model_file}:build")
    assert resolved.kind == "file"
    assert isinstance(resolved.module, torch.nn.Module)
    assert resolved.example_inputs is None
    assert resolved.source == f"{model_file}:build"
    assert not resolved.module.training


def test_file_spec_with_example_inputs(model_file: Path) -> None:
    resolved = resolve_spec(f"{model_file}:build_with_inputs")
    assert resolved.example_inputs is not None
    assert [tuple(t.shape) for t in resolved.example_inputs] == [(1, 3, 6, 10)]


def test_module_spec(module_on_path: Callable[[str], str]) -> None:
    resolved = resolve_spec(f"{module_on_path('specpkg_a')}:build")
    assert resolved.kind == "module"
    assert isinstance(resolved.module, torch.nn.Module)


def test_zoo_spec_carries_shape_and_range() -> None:
    resolved = resolve_spec("tiny-sr")
    assert resolved.kind == "zoo"
    assert resolved.default_input_shapes == ((1, 3, 16, 16),)
    assert resolved.input_range == (0.0, 1.0)
    assert resolved.example_inputs is not None


def test_pt2_spec(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1)).eval()
    x = torch.rand(1, 3, 5, 5)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), path)
    resolved = resolve_spec(str(path))
    assert resolved.kind == "pt2"
    assert resolved.example_inputs is not None
    torch.testing.assert_close(resolved.module(x), net(x))


@pytest.mark.parametrize(("spec", "message", "hint"), [
    ("missing_dir/nope.py:build", "model file not found", "check the path"),
    ("no_such_package_xyz.mod:build", "cannot import module 'no_such_package_xyz.mod'", "PYTHONPATH"),
    ("not-a-zoo-model", "unknown model SPEC", "tiny-sr"),
    ("", "empty model SPEC", "zoo names"),
    ("missing.pt2", ".pt2 file not found", "torch.export.save"),
])
def test_bad_spec_errors(spec: str, message: str, hint: str) -> None:
    with pytest.raises(InputError) as info:
        resolve_spec(spec)
    assert message in info.value.message
    assert hint in info.value.hint


def test_import_error_shows_first_line(module_on_path: Callable[[str], str], tmp_path: Path) -> None:
    module_on_path("specpkg_b")
    (tmp_path / "site" / "specpkg_b" / "broken.py").write_text("import definitely_not_installed_pkg\n")
    with pytest.raises(InputError) as info:
        resolve_spec("specpkg_b.broken:build")
    assert "ModuleNotFoundError: No module named 'definitely_not_installed_pkg'" in info.value.message


def test_missing_function_lists_callables(model_file: Path) -> None:
    with pytest.raises(InputError) as info:
        resolve_spec(f"{model_file}:buidl")
    assert "no function 'buidl'" in info.value.message
    assert "build" in info.value.hint and "build_with_inputs" in info.value.hint
    assert "torch" not in info.value.hint.split(", ")  # imported names are not offered


def test_py_file_without_function(model_file: Path) -> None:
    with pytest.raises(InputError, match="no build function") as info:
        resolve_spec(str(model_file))
    assert info.value.hint.endswith(":build")


@pytest.mark.parametrize(("func", "message"), [
    ("build_not_a_module", "returned int, not a torch.nn.Module"),
    ("build_bad_inputs", "example inputs of type str"),
    ("build_raises", "RuntimeError: weights server is down"),
])
def test_bad_build_functions(model_file: Path, func: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        resolve_spec(f"{model_file}:{func}")
    assert message in info.value.message


def test_file_that_fails_to_run(tmp_path: Path) -> None:
    path = tmp_path / "crash.py"
    path.write_text("x = 1 / 0\n")
    with pytest.raises(InputError, match="ZeroDivisionError"):
        resolve_spec(f"{path}:build")


def test_corrupt_pt2(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt2"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(InputError, match=r"not a readable torch\.export program") as info:
        resolve_spec(str(path))
    assert "torch.export.save" in info.value.hint
