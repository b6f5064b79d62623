"""Demo data for qdeploy: calibration and evaluation images made on demand (see README.md here).

Nothing is stored in git: :func:`demo_calibration_dir` and :func:`demo_eval_dir` write PNGs taken from
scikit-image's bundled sample photos (or, without scikit-image, deterministic synthetic ones) into a
folder you choose. Standard benchmarks (Set5, Set14, ...) are not bundled; point ``--dataset`` at them.
"""

from __future__ import annotations

from qdeploy_calib_data.demo import (
    CALIBRATION_IMAGES,
    EVAL_IMAGES,
    MAX_SIDE,
    demo_calibration_dir,
    demo_eval_dir,
    demo_image_source,
    read_marker,
    render_procedural,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "EVAL_IMAGES",
    "MAX_SIDE",
    "demo_calibration_dir",
    "demo_eval_dir",
    "demo_image_source",
    "read_marker",
    "render_procedural",
]
