"""NGswin: the released size, strict loading of the authors' weights, the N-Gram context against a literal port
of the reference code, in-model padding, zoo weights handling, and a dynamic-H/W ONNX export.

The authors' weights are read in place from ``../shared/weights/ngswin`` (never copied into the project);
those tests skip when that folder is absent. The export test uses a small configuration of the same code:
exporting the full network with symbolic shapes takes minutes on two cores (the slow CLI test does that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from qdeploy_models import zoo
from qdeploy_models.ngswin import NGswin, ngswin, symmetric_pad
from qdeploy_models.ngswin_blocks import NGramContext
from qdeploy_models.swinir import _window_partition, _window_reverse

from qdeploy.errors import InputError

PAPER_PARAMS = {2: 998_384, 3: 1_007_039}
"""Parameters of the released ``NGswin_x2.pth`` / ``NGswin_x3.pth`` (the paper's "998K" at x2)."""

RELEASED_TENSORS = 504
"""Tensors in each released state dict (parameters only: index buffers and masks are derived)."""

MAX_ABS_REFERENCE = 1e-5
"""Float tolerance between the gather-based N-Gram context and the reference's unfold/slice version."""

MAX_ABS_PAD = 1e-5
"""Float tolerance between in-model padding and padding the input outside the model."""

MIN_EXPORT_SQNR_DB = 60.0
"""ONNX Runtime vs PyTorch, as ``qdeploy export``'s parity check demands."""

MAX_ABS_EXPORT = 1e-4
"""ONNX Runtime vs PyTorch, largest absolute difference on [0, 1] images."""

WEIGHTS = zoo.SHARED_WEIGHTS / "ngswin"


def _small() -> NGswin:
    """Every NGswin part (two encoder stages, merging, cascade, SCDP, shifted blocks) at export-test size."""
    torch.manual_seed(0)
    return NGswin(scale=2, dim=16, depths=(2, 1), heads=(2, 2), dec_depth=1, dec_heads=2, window=4).eval()


def _reference_context(ctx: NGramContext, x: torch.Tensor) -> torch.Tensor:
    """The reference ``NGramContext.forward``: sequential padding by slice assignment, ``unfold`` sliding
    windows, window attention, ``AvgPool2d(n)``, merge (rami0205/NGramSwin, ``win_partition.py``)."""
    n = ctx.ngram
    unigram = ctx.unigram_embed(x)

    def pad(u: torch.Tensor, back: bool) -> torch.Tensor:
        u = F.pad(u, (n - 1, 0, n - 1, 0) if back else (0, n - 1, 0, n - 1))
        if back:
            u[:, :, : n - 1, :] = u[:, :, n: 2 * n - 1, :]
            u[:, :, :, : n - 1] = u[:, :, :, n: 2 * n - 1]
        else:
            u[:, :, -(n - 1):, :] = u[:, :, -2 * n + 1: -n, :]
            u[:, :, :, -(n - 1):] = u[:, :, :, -2 * n + 1: -n]
        return u

    def slide(u: torch.Tensor) -> torch.Tensor:
        b, c = u.shape[:2]
        s = u.unfold(3, n, 1).unfold(2, n, 1)  # (b, c, h, w, n_w, n_h)
        h, w = s.shape[2], s.shape[3]
        s = s.permute(0, 2, 5, 3, 4, 1).reshape(b, h * n, w * n, c)
        out = _window_reverse(ctx.ngram_attn(_window_partition(s, n)), n, b, h * n, w * n)
        return F.avg_pool2d(out.permute(0, 3, 1, 2), n)

    both = torch.cat([slide(pad(unigram, False)), slide(pad(unigram, True))], dim=1)
    return ctx.merge(both).permute(0, 2, 3, 1)


@pytest.mark.parametrize("scale", [2, 3])
def test_parameter_count_is_the_released_one(scale: int) -> None:
    assert sum(p.numel() for p in ngswin(scale).parameters()) == PAPER_PARAMS[scale]


@pytest.mark.parametrize("scale", [2, 3])
def test_released_weights_load_strictly(scale: int) -> None:
    path = WEIGHTS / f"NGswin_x{scale}.pth"
    if not path.is_file():
        pytest.skip(f"{path} not present (the authors' weights are not shipped with qdeploy)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = ngswin(scale)
    model.load_state_dict(state, strict=True)
    assert len(state) == RELEASED_TENSORS
    assert set(model.state_dict()) == set(state)


@pytest.mark.parametrize(("ngram", "size"), [(2, (24, 40)), (2, (16, 16)), (3, (24, 32))])
def test_ngram_context_matches_the_reference_code(ngram: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    ctx = NGramContext(dim=16, window=8, ngram=ngram, heads=2).eval()
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        torch.testing.assert_close(ctx(x), _reference_context(ctx, x), rtol=0, atol=MAX_ABS_REFERENCE)


@pytest.mark.parametrize(("h", "w"), [(27, 31), (32, 64), (5, 40)])
def test_symmetric_pad_is_numpys(h: int, w: int) -> None:
    x = torch.rand(1, 3, h, w)
    want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, -h % 32), (0, -w % 32)), mode="symmetric")
    np.testing.assert_array_equal(symmetric_pad(x, 32).numpy(), want)


def test_any_size_equals_padding_outside() -> None:
    """In-model symmetric padding + crop is what the authors' test script does outside the model."""
    model = _small()
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        y = model(x)
        y_ref = model(torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (0, 6), (0, 3)), mode="symmetric")))
    assert tuple(y.shape) == (1, 3, 20, 26)
    assert float((y - y_ref[:, :, :20, :26]).abs().max()) <= MAX_ABS_PAD


def test_missing_weights_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "SHARED_WEIGHTS", tmp_path)
    with pytest.raises(InputError) as info:
        zoo.build_module("ngswin-x2")
    assert str(tmp_path / "ngswin" / "NGswin_x2.pth") in str(info.value)
    assert "rami0205/NGramSwin" in str(info.value)
    assert "--weights PATH" in info.value.hint
    with pytest.raises(InputError, match="not found"):
        zoo.build_module("ngswin-x2", weights=tmp_path / "nope.pth")


def test_weights_path_overrides_the_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "SHARED_WEIGHTS", tmp_path)  # the given file must be enough
    torch.manual_seed(1)
    state = ngswin(3).state_dict()
    torch.save(state, tmp_path / "mine.pth")
    loaded = zoo.build_module("ngswin-x3", weights=tmp_path / "mine.pth").state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    torch.save(ngswin(2).state_dict(), tmp_path / "x2.pth")
    with pytest.raises(InputError, match="cannot load"):
        zoo.build_module("ngswin-x3", weights=tmp_path / "x2.pth")


def test_weights_option_is_for_zoo_models_only(tmp_path: Path) -> None:
    from qdeploy.export import resolve_spec

    with pytest.raises(InputError, match="zoo models only"):
        resolve_spec(f"{tmp_path / 'net.py'}:build", weights=tmp_path / "w.pth")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model exported once with dynamic H/W at 24x24 (whole windows at every stage)."""
    path = tmp_path_factory.mktemp("ngswin") / "ngswin_small.onnx"
    dim = torch.export.Dim.DYNAMIC
    torch.onnx.export(_small(), (torch.rand(1, 3, 24, 24),), str(path), dynamo=True, input_names=["input"],
                      output_names=["output"], dynamic_shapes={"x": {2: dim, 3: dim}})
    return path


@pytest.mark.parametrize("shape", [(1, 3, 24, 24), (1, 3, 27, 31), (1, 3, 7, 41)])
def test_dynamic_hw_export_matches_pytorch(small_onnx: Path, shape: tuple[int, ...]) -> None:
    """One ONNX file, several sizes: a multiple of the window, sizes that are not, and one whose coarsest stage
    is a single window high (where the reference code raises; here the N-gram padding repeats the edge)."""
    import onnxruntime as ort

    from qdeploy.evaluate.metrics import sqnr_db

    sess = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"])
    x = torch.rand(shape)
    with torch.no_grad():
        ref = _small()(x).numpy()
    out = sess.run(None, {"input": x.numpy()})[0]
    assert out.shape == ref.shape == (1, 3, 2 * shape[2], 2 * shape[3])
    assert sqnr_db(ref, out) >= MIN_EXPORT_SQNR_DB
    assert float(np.abs(out - ref).max()) <= MAX_ABS_EXPORT


@pytest.mark.slow
def test_cli_export_of_the_released_model(tmp_path: Path) -> None:
    """``qdeploy export ngswin-x2 --dynamic-hw`` with the authors' weights (minutes: the full network)."""
    from click.testing import CliRunner
    from qdeploy_cli.export import export_cmd

    if not (WEIGHTS / "NGswin_x2.pth").is_file():
        pytest.skip("the authors' NGswin weights are not present")
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(export_cmd, ["ngswin-x2", "--dynamic-hw", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["passed"] is True
