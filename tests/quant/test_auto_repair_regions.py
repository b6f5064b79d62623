"""``auto``'s float step on a placement with integer regions (regression: a Split's outputs had no range).

With integer regions a channel Split runs on uint8 and its outputs reuse the input's grid, so they are not
calibrated; leaving tensors float rebuilds the graph without the regions, where those outputs feed convs
and need ranges of their own. The repair must calibrate them and keep them in the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
from gated_models import cca_net, feeds

from qdeploy.analyze.verify import QualityBar
from qdeploy.calib.data import DataConfig
from qdeploy.pipeline import CalibrateConfig, calibrate_model

UNREACHABLE_SQNR_DB = 90.0  # forces the float step (8-bit grids stay far below it)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_float_step_on_a_split_region_calibrates_what_it_needs(tmp_path: Path) -> None:
    model = tmp_path / "cca.onnx"
    ir.save(cca_net(), model)
    data = tmp_path / "data.npy"
    np.save(data, np.concatenate([f["x"] for f in feeds((1, 3, 16, 16), 16, seed=5)]))
    res = calibrate_model(CalibrateConfig(model=model, output=tmp_path / "q.onnx", threads=1,
                                          data=DataConfig(source=data, holdout=0.25),
                                          quality=QualityBar(sqnr_db=UNREACHABLE_SQNR_DB)))
    v = res.verified
    assert v.precision_map is not None and any(c.after == "float" for c in v.changes)
    assert v.after_sqnr_db > v.before_sqnr_db
    again = calibrate_model(CalibrateConfig(model=model, output=tmp_path / "again.onnx", cache=res.cache))
    x = np.load(data)[:2]
    for i in range(2):
        np.testing.assert_array_equal(_run(again.output, x[i:i + 1]), _run(res.output, x[i:i + 1]))
