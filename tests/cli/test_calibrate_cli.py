"""`qdeploy calibrate` through the real CLI group: success paths, --json purity, and every bad input.

A bad input must give a non-zero exit code, one ``error:`` line plus a ``hint:``, no traceback, and no
output left behind (neither the -o file nor a temporary file beside it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner, Result
from PIL import Image
from qdeploy_calib_data import render_procedural
from qdeploy_cli.main import cli

from qdeploy.artifacts import file_sha256
from qdeploy.graph.io import save_model

JSON_KEYS = {"output", "cache", "method", "preset", "reused_cache", "seconds", "summary", "integer_kernels",
             "tensors"}
IMAGE_HW = (40, 48)  # larger than --crop 32


def _floats(a: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in a.ravel())


def _two_conv_text(shape: str, out_shape: str) -> str:
    """ONNX text: Conv(3->4) -> Relu -> Conv(4->3), weights scaled for inputs in [0, 255]."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.02, (4, 3, 3, 3)), rng.normal(0, 0.2, (3, 4, 3, 3))
    return f"""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[{shape}] x) => (float[{out_shape}] y)
    <float[4, 3, 3, 3] w1 = {{{_floats(w1)}}}, float[3, 4, 3, 3] w2 = {{{_floats(w2)}}}>
    {{
        c = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w1)
        r = Relu (c)
        y = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (r, w2)
    }}
    """


def _write_text_model(path: Path, text: str) -> Path:
    return save_model(ir.serde.deserialize_model(onnx.parser.parse_model(text)), path)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Two convs, dynamic batch and H/W (any --crop fits)."""
    return _write_text_model(tmp_path / "in" / "model.onnx", _two_conv_text("N, 3, H, W", "N, 3, H, W"))


@pytest.fixture
def static_model(tmp_path: Path) -> Path:
    """The same net with a fixed 1x3x16x16 input."""
    return _write_text_model(tmp_path / "in" / "static.onnx", _two_conv_text("1, 3, 16, 16", "1, 3, 16, 16"))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(render_procedural(i, *IMAGE_HW)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out" / "model.qdq.onnx"


def _invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)])


def test_image_folder_success_writes_model_cache_and_manifest(model: Path, images: Path, out: Path) -> None:
    result = _invoke(model, "--data", images, "--range", "0-255", "--crop", "32", "--method", "minmax",
                     "--threads", "1", "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["manifest.json", "model.qdq.calib.json",
                                                            "model.qdq.onnx"]  # no temp files left
    onnx.checker.check_model(str(out), full_check=True)
    manifest = json.loads((out.parent / "manifest.json").read_text())["artifacts"]["model.qdq.onnx"]
    assert manifest["sha256"] == file_sha256(out) and manifest["source_sha256"] == file_sha256(model)
    assert manifest["data"]["count"] == 3
    for text in ("calibrated 3 activation tensors", "minmax", "QLinearConv", "wrote", out.name):
        assert text in result.stdout, text
    cache = json.loads((out.parent / "model.qdq.calib.json").read_text())
    assert cache["data"]["count"] == 3 and cache["method"] == "minmax"
    assert cache["tensors"]["x"]["observed_max"] > 200  # --range 0-255 reached the model


def test_json_output_is_one_document_with_the_keys(model: Path, images: Path, out: Path) -> None:
    result = _invoke(model, "--data", images, "--range", "0-255", "--crop", "32", "--preset", "tensorrt-int8",
                     "--method", "percentile", "--method-option", "percentile=99.9", "--json", "-o", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # nothing but the JSON document on stdout
    assert set(doc) >= JSON_KEYS, JSON_KEYS - set(doc)
    assert doc["output"] == str(out) and Path(doc["cache"]).is_file()
    assert doc["method"] == "percentile" and doc["preset"] == "tensorrt-int8" and doc["reused_cache"] is False
    assert doc["summary"]["quantized_nodes"] == {"Conv": 2}
    assert set(doc["tensors"]) == {"x", "r"}  # tensorrt-int8: inputs of the two convs only
    assert all(t["method"] == "percentile" for t in doc["tensors"].values())


def test_cache_reuse_through_the_cli(model: Path, images: Path, out: Path, tmp_path: Path) -> None:
    first = _invoke(model, "--data", images, "--crop", "32", "--method", "mse", "-o", out)
    assert first.exit_code == 0, first.output
    again_out = tmp_path / "again" / "q.onnx"
    again = _invoke(model, "--cache", out.with_name("model.qdq.calib.json"), "--json", "-o", again_out)
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert doc["reused_cache"] is True and doc["method"] == "mse"
    assert again_out.read_bytes() == out.read_bytes()


def test_batch_size_option_does_not_change_the_output(model: Path, images: Path, tmp_path: Path) -> None:
    outs = [tmp_path / f"b{bs}" / "q.onnx" for bs in (1, 2)]
    for bs, path in zip((1, 2), outs, strict=True):
        result = _invoke(model, "--data", images, "--crop", "32", "--batch-size", bs, "-o", path)
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


# ------------------------------------------------------------------------------------------- bad inputs

Case = Callable[[Path, Path, Path, Path], list[str | Path]]  # (model, static_model, images, tmp) -> args


def _corrupt(tmp: Path) -> Path:
    path = tmp / "corrupt.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(512))
    return path


def _fails_checker(tmp: Path) -> Path:
    """A model whose Relu reads a tensor nothing produces (parses fine, the ONNX checker refuses it)."""
    proto = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[1, 3, 4, 4] x) => (float[1, 3, 4, 4] y) { y = Relu (undefined) }
    """)
    path = tmp / "unchecked.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


def _nothing_to_quantize(tmp: Path) -> Path:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    net (float[N, 3, H, W] x) => (float[N, 3, H, W] y) { r = Relu (x)
        y = Add (r, x) }
    """
    return _write_text_model(tmp / "plain.onnx", text)


def _npz(tmp: Path, name: str, array: np.ndarray, key: str = "x") -> Path:
    path = tmp / name
    np.savez(path, **{key: array})
    return path


def _with_nan(tmp: Path) -> Path:
    data = np.random.default_rng(0).uniform(0, 1, (4, 3, 16, 16)).astype(np.float32)
    data[2, 1, 5, 5] = np.nan
    return _npz(tmp, "nan.npz", data)


def _empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


BAD_INPUTS: dict[str, tuple[Case, str]] = {
    "missing model": (lambda m, s, i, t: [t / "nope.onnx", "--data", i], "not found"),
    "corrupt onnx": (lambda m, s, i, t: [_corrupt(t), "--data", i], "not a readable ONNX model"),
    "fails checker": (lambda m, s, i, t: [_fails_checker(t), "--data", i], "fails the ONNX checker"),
    "crop vs static shape": (lambda m, s, i, t: [s, "--data", i, "--crop", "32"], "--crop 32 does not match"),
    "npz wrong shape": (lambda m, s, i, t: [m, "--data", _npz(t, "flat.npz", np.zeros((2, 3, 8)))],
                        "has shape (2, 3, 8)"),
    "npz wrong key": (lambda m, s, i, t: [m, "--data", _npz(t, "k.npz", np.zeros((2, 3, 8, 8)), key="img")],
                      "lacks model input(s) x"),
    "nan in data": (lambda m, s, i, t: [m, "--data", _with_nan(t)], "array 'x' has 1 NaN/Inf"),
    "empty data folder": (lambda m, s, i, t: [m, "--data", _empty_dir(t)], "has no supported files"),
    "missing data": (lambda m, s, i, t: [m, "--data", t / "no_such_dir"], "does not exist"),
    "no data at all": (lambda m, s, i, t: [m], "no calibration data"),
    "unknown method": (lambda m, s, i, t: [m, "--data", i, "--method", "kmeans"], "unknown calibration"),
    "unknown preset": (lambda m, s, i, t: [m, "--data", i, "--preset", "tflite"], "unknown quantization"),
    "bad method option key": (lambda m, s, i, t: [m, "--data", i, "--method-option", "bins=12"],
                              "has no option(s) bins"),
    "bad method option value": (lambda m, s, i, t: [m, "--data", i, "--method-option", "num_bins=3"],
                                "bad option for calibration method"),
    "method option without =": (lambda m, s, i, t: [m, "--data", i, "--method-option", "num_bins"],
                                "expects key=value"),
    "nothing to quantize": (lambda m, s, i, t: [_nothing_to_quantize(t), "--data", i], "nothing to quantize"),
    "unknown op type": (lambda m, s, i, t: [m, "--data", i, "--op-types", "Softmax"], "cannot be quantized"),
    "bad include regex": (lambda m, s, i, t: [m, "--data", i, "--include", "conv("], "invalid node-name"),
    "missing cache": (lambda m, s, i, t: [m, "--cache", t / "none.calib.json"], "does not exist"),
    "output is the input": (lambda m, s, i, t: [m, "--data", i, "-o", m], "overwrite the input model"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_with_a_hint_and_leaves_nothing(
    case: str, model: Path, static_model: Path, images: Path, out: Path, tmp_path: Path
) -> None:
    make_args, expected = BAD_INPUTS[case]
    args = make_args(model, static_model, images, tmp_path)
    before = file_sha256(model)
    result = _invoke(*args, *(["-o", out] if "-o" not in args else []))
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an escaped exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert any(line.strip().startswith("hint: ") and len(line.strip()) > len("hint: ")
               for line in result.stderr.splitlines())
    assert "Traceback" not in result.output
    assert not out.exists() and not out.parent.exists()  # no output, not even an empty folder
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.calib.json"))
    assert file_sha256(model) == before


def test_nan_message_names_the_tensor(model: Path, out: Path, tmp_path: Path) -> None:
    result = _invoke(model, "--data", _with_nan(tmp_path), "-o", out)
    assert "'x'" in result.stderr and "nan.npz" in result.stderr


@pytest.mark.parametrize("args", [
    ["--batch-size", "0"], ["--crop", "0"], ["--num-samples", "0"], ["--threads", "0"], ["--seed", "-1"],
    ["--range", "0-2"], ["--color", "cmyk"],
])
def test_out_of_range_options_are_usage_errors(model: Path, images: Path, out: Path, args: list[str]) -> None:
    result = _invoke(model, "--data", images, *args, "-o", out)
    assert result.exit_code == 2 and "Invalid value" in result.stderr, result.output
    assert "Traceback" not in result.output and not out.parent.exists()


def test_help_shows_examples_and_options() -> None:
    result = CliRunner().invoke(cli, ["calibrate", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "qdeploy calibrate model.onnx --cache" in result.output
    for option in ("--data", "--method", "--preset", "--range", "--crop", "--cache", "--json",
                   "--batch-size"):
        assert option in result.output



# ------------------------------------------------------------------------------- defaults from the export


def _record_export(model: Path, input_range: list[float]) -> None:
    from qdeploy.artifacts import write_manifest

    write_manifest(model, {"stage": "export", "input_range": input_range})


def test_pixel_range_defaults_to_what_the_export_recorded(model: Path, images: Path, tmp_path: Path) -> None:
    from qdeploy.calib.cache import load_cache

    _record_export(model, [0.0, 255.0])
    res = _invoke(model, "--data", images, "--crop", "32", "--no-verify", "-o", tmp_path / "a" / "q.onnx")
    assert res.exit_code == 0, res.output
    assert "pixel range 0-255 (recorded by qdeploy export" in res.output
    explicit = _invoke(model, "--data", images, "--crop", "32", "--no-verify", "--range", "0-255",
                       "-o", tmp_path / "b" / "q.onnx")
    assert explicit.exit_code == 0, explicit.output
    got, want = (load_cache(tmp_path / d / "q.calib.json").ranges for d in ("a", "b"))
    assert {n: (r.lo, r.hi) for n, r in got.items()} == {n: (r.lo, r.hi) for n, r in want.items()}


def test_a_replaced_model_does_not_inherit_the_recorded_range(model: Path, images: Path, tmp_path: Path) -> None:
    _record_export(model, [0.0, 255.0])
    _write_text_model(model, _two_conv_text("N, 3, 32, 32", "N, 3, 32, 32"))  # another model, same file name
    res = _invoke(model, "--data", images, "--crop", "32", "--no-verify", "-o", tmp_path / "q.onnx")
    assert res.exit_code == 0, res.output
    assert "pixel range" not in res.output
