"""Resumable DQC: a run killed mid-way and restarted with the same checkpoint ends where an unbroken run ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from refine_models import SWIN_SHAPE, W4A4, qdq, samples

from qdeploy.errors import InputError
from qdeploy.refine.dqc import DQCConfig, refine_dqc

ITERATIONS, KILL_AT = 6, 4


class KilledError(Exception):
    """Stands in for a session that dies mid-refinement."""


def _arrays(model: ir.Model) -> dict[str, np.ndarray]:
    return {n: v.const_value.numpy() for n, v in model.graph.initializers.items() if v.const_value is not None}


@pytest.fixture(scope="module")
def setup(swin: ir.Model) -> tuple[ir.Model, ir.Model, list[dict]]:
    calib = samples(swin, SWIN_SHAPE, 1.0, 6, seed=0)
    return swin, qdq(swin, W4A4, calib), calib


def _config(path: Path | None, every: int = 2) -> DQCConfig:
    return DQCConfig(iterations=ITERATIONS, batch_size=2, device="cpu", seed=0,
                     checkpoint=str(path) if path else None, checkpoint_every=every)


def test_killed_then_resumed_run_equals_an_unbroken_one(setup: tuple, tmp_path: Path) -> None:
    swin, qmodel, calib = setup
    unbroken, report = refine_dqc(swin, qmodel, calib, _config(None), show_progress=False)
    ckpt = tmp_path / "dqc.pt"

    def kill(done: int, total: int) -> None:
        if done == KILL_AT:
            raise KilledError

    with pytest.raises(KilledError):
        refine_dqc(swin, qmodel, calib, _config(ckpt), show_progress=False, progress=kill)
    assert ckpt.exists()
    resumed, again = refine_dqc(swin, qmodel, calib, _config(ckpt), show_progress=False)
    assert again.resumed_at == KILL_AT
    np.testing.assert_allclose(again.losses, report.losses, rtol=1e-6)
    for name, array in _arrays(unbroken).items():
        np.testing.assert_allclose(_arrays(resumed)[name], array, rtol=1e-6, atol=0, err_msg=name)


def test_a_checkpoint_of_other_settings_is_refused(setup: tuple, tmp_path: Path) -> None:
    swin, qmodel, calib = setup
    ckpt = tmp_path / "dqc.pt"
    refine_dqc(swin, qmodel, calib, _config(ckpt), show_progress=False)
    other = DQCConfig(iterations=ITERATIONS, batch_size=2, device="cpu", seed=1, checkpoint=str(ckpt))
    with pytest.raises(InputError, match="another model or other DQC settings"):
        refine_dqc(swin, qmodel, calib, other, show_progress=False)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        refine_dqc(swin, qmodel, calib, _config(ckpt), show_progress=False)
