"""SwinIR-light: the paper's size, the reference shift mask, any-size inputs, and a dynamic-H/W ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from qdeploy_models.swinir import SwinIR, _shift_mask, swinir_light

PAPER_PARAMS_X2 = 910_152
"""SwinIR-light x2 parameter count of the reference implementation (the paper rounds it to 910K)."""

MAX_ABS_PAD = 1e-5
"""Float tolerance between in-model padding and padding the input outside the model."""

MIN_EXPORT_SQNR_DB = 60.0


def _reference_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """The mask exactly as SwinIR's reference ``calculate_mask`` builds it (slicing over a fixed size)."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = img.view(1, h // ws, ws, w // ws, ws, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def _small() -> SwinIR:
    torch.manual_seed(0)
    return SwinIR(scale=2, dim=12, depths=(2,), heads=2, window=4).eval()


def test_swinir_light_has_the_paper_size() -> None:
    assert sum(p.numel() for p in swinir_light(2).parameters()) == PAPER_PARAMS_X2


@pytest.mark.parametrize(("h", "w", "ws"), [(16, 16, 8), (24, 40, 8), (8, 12, 4)])
def test_shift_mask_matches_reference(h: int, w: int, ws: int) -> None:
    torch.testing.assert_close(_shift_mask(h, w, ws, ws // 2, torch.device("cpu")),
                               _reference_mask(h, w, ws, ws // 2), rtol=0, atol=0)


def test_any_size_equals_padding_outside() -> None:
    """In-model reflect padding + crop is what the authors' test script does outside the model."""
    model = _small()
    x = torch.rand(1, 3, 10, 13)
    with torch.no_grad():
        y = model(x)
        padded = F.pad(x, (0, 3, 0, 2), mode="reflect")
        y_ref = model(padded)[:, :, :20, :26]
    assert tuple(y.shape) == (1, 3, 20, 26)
    assert float((y - y_ref).abs().max()) <= MAX_ABS_PAD


def test_dynamic_hw_export_runs_at_other_sizes(tmp_path: Path) -> None:
    import onnxruntime as ort

    from qdeploy.evaluate.metrics import sqnr_db

    model = _small()
    path = tmp_path / "swin.onnx"
    x0 = torch.rand(1, 3, 16, 16)
    torch.onnx.export(model, (x0,), str(path), dynamo=True, input_names=["input"], output_names=["output"],
                      dynamic_shapes={"x": {2: torch.export.Dim("h", min=4, max=256),
                                            3: torch.export.Dim("w", min=4, max=256)}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 16, 16), (1, 3, 12, 20), (1, 3, 9, 14)]:  # multiples of the window, and not
        x = torch.rand(shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == ref.shape
        assert sqnr_db(ref, out) >= MIN_EXPORT_SQNR_DB, shape
    assert np.isfinite(out).all()
