"""The built wheel and the public API: what users get from ``pip install qdeploy``.

The wheel is built offline (``pip wheel --no-build-isolation``, setuptools from the venv) from a copy of the
source tree in a temporary folder, so the test never writes ``build/`` into the repository.
"""

from __future__ import annotations

import configparser
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# source folder -> import name in the wheel (pyproject's package-dir mapping)
PACKAGE_DIRS = {"qdeploy": "qdeploy", "cli": "qdeploy_cli", "models": "qdeploy_models",
                "calib_data": "qdeploy_calib_data"}
DATA_FILES = ("qdeploy/py.typed", "models/weights/abpn_x3.pt", "calib_data/README.md")
BUILD_TIMEOUT_S = 300
PUBLIC_API = ("export_model", "ExportConfig", "calibrate_model", "CalibrateConfig", "profile_models",
              "ProfileConfig", "evaluate_sr", "SREvalConfig", "get_preset", "make_observer", "get_backend")
HEAVY_MODULES = ("torch", "onnxruntime", "onnx", "onnx_ir", "onnxscript", "onnxsim", "numpy", "rich")


def _wheel_name(source: str) -> str:
    """``models/weights/abpn_x3.pt`` -> ``qdeploy_models/weights/abpn_x3.pt``."""
    top, _, rest = source.partition("/")
    return f"{PACKAGE_DIRS[top]}/{rest}"


def _source_files() -> list[str]:
    """Every .py module of the four packages, as repo-relative POSIX paths."""
    return sorted(p.relative_to(REPO).as_posix() for top in PACKAGE_DIRS for p in (REPO / top).rglob("*.py")
                  if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files a wheel is built from, copied (the weights file may be rewritten by training meanwhile)."""
    dest = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for top in PACKAGE_DIRS:
        shutil.copytree(REPO / top, dest / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def wheel(source_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
           "-w", str(out), str(source_copy)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=source_copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("qdeploy-*.whl")
    return zipfile.ZipFile(path)


def test_every_module_and_data_file_is_in_the_wheel(wheel: zipfile.ZipFile, source_copy: Path) -> None:
    names = set(wheel.namelist())
    missing = [f for f in (*_source_files(), *DATA_FILES) if _wheel_name(f) not in names]
    assert not missing, f"not in the wheel (add the package to pyproject's `packages`): {missing}"
    weights = wheel.read(_wheel_name("models/weights/abpn_x3.pt"))
    assert hashlib.sha256(weights).digest() == hashlib.sha256(
        (source_copy / "models/weights/abpn_x3.pt").read_bytes()).digest()


def test_no_bare_top_level_packages(wheel: zipfile.ZipFile) -> None:
    """`cli` and `models` would clash with other distributions; only the mapped import names ship."""
    tops = {n.split("/", 1)[0] for n in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == set(PACKAGE_DIRS.values())
    assert not {"cli", "models", "calib_data", "tests", "benchmarks", "scripts"} & tops


def test_console_script_and_metadata(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {"qdeploy": "qdeploy_cli.main:cli"}
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert "Name: qdeploy" in text and "Requires-Python: >=3.10" in text
    for dep in ("onnxruntime", "onnx-ir", "torch", "click"):
        assert f"Requires-Dist: {dep}" in text, dep


def test_console_script_target_is_the_click_group() -> None:
    import click
    from qdeploy_cli.main import cli

    assert isinstance(cli, click.Group)


def test_public_api_names_exist() -> None:
    import qdeploy

    assert sorted(qdeploy.__all__) == sorted(PUBLIC_API)
    for name in qdeploy.__all__:
        assert callable(getattr(qdeploy, name)), name
    assert qdeploy.calibrate_model is __import__("qdeploy.pipeline", fromlist=["x"]).calibrate_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        qdeploy.nope  # noqa: B018


def test_import_qdeploy_is_light() -> None:
    code = f"import sys, qdeploy; print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_module_imports_first() -> None:
    """Each qdeploy module imports on its own (a fresh qdeploy each time): catches import cycles that only
    bite when a user imports that module before the package that usually loads first."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, sys\n"
        "import qdeploy\n"
        "names = [m.name for m in pkgutil.walk_packages(qdeploy.__path__, 'qdeploy.')]\n"
        "bad = []\n"
        "for name in names:\n"
        "    for key in [k for k in sys.modules if k == 'qdeploy' or k.startswith('qdeploy.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        bad.append(f'{name}: {exc}')\n"
        "print(len(names)); print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(result.stdout.split()[0]) > 40
