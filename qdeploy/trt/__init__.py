"""TensorRT and TensorRT-RTX: engine builds (:mod:`.build`) and the QDQ placement check (:mod:`.fusion`).

Importing this package never imports TensorRT; :func:`qdeploy.trt.loader.import_trt` does, when a build
or a session needs it.
"""

from __future__ import annotations

from qdeploy.trt.build import (
    PRECISIONS,
    BuildConfig,
    BuildResult,
    build_engine,
    engine_cache_key,
    is_qdq_model,
)
from qdeploy.trt.fusion import TARGETS, FusionReport, NodeVerdict, check_placement
from qdeploy.trt.loader import FLAVORS, gpu_name, import_trt
from qdeploy.trt.shapes import ShapeRange, parse_shape_range, parse_shape_ranges

__all__ = [
    "FLAVORS",
    "PRECISIONS",
    "TARGETS",
    "BuildConfig",
    "BuildResult",
    "FusionReport",
    "NodeVerdict",
    "ShapeRange",
    "build_engine",
    "check_placement",
    "engine_cache_key",
    "gpu_name",
    "import_trt",
    "is_qdq_model",
    "parse_shape_range",
    "parse_shape_ranges",
]
