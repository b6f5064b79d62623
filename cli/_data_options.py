"""Data options of ``qdeploy calibrate``: ``--crop PIXELS|none`` and the bounded image defaults.

Kept apart from the command module so the option parsing and the one line saying what will be read
are testable on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["CropType", "data_defaults"]


class CropType(click.ParamType):
    """``--crop``: a positive pixel count, or ``none`` (returned as 0) for whole images."""

    name = "crop"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif str(value).strip().lower() in ("none", "whole"):
            return 0
        else:
            try:
                number = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is neither a crop size in pixels nor 'none'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not a valid crop size (>= 1 pixel, or 'none' for whole images)", param, ctx)
        return number


def data_defaults(model: Path, data_cfg: Any, crop_given: bool, num_samples_given: bool, quiet: bool) -> Any:
    """Bounded image defaults (``qdeploy.calib.data.with_image_defaults``) and the line saying what is read.

    Why here: the defaults depend on the model's inputs, read from its file header; a model that cannot
    be read is left to the pipeline, which reports it properly.
    """
    from qdeploy.calib.data import with_image_defaults

    specs = _input_specs(model)
    if specs is None:
        return data_cfg
    data_cfg, summary = with_image_defaults(data_cfg, specs, crop_given, num_samples_given)
    if summary is not None and not quiet:
        click.echo(summary.line(), err=True)  # one unwrapped line: it is read in logs
    if num_samples_given and not quiet:
        _say_fewer_samples(data_cfg, specs)
    return data_cfg


def _say_fewer_samples(data_cfg: Any, specs: list[Any]) -> None:
    """One line when ``--num-samples`` asks for more than the data holds (all of it is used then).

    Why: calibrating on 6 samples where 32 were asked for is a different calibration, and the user
    should not have to count the files to learn it.
    """
    from qdeploy.calib.data import count_samples
    from qdeploy.errors import InputError

    try:
        available = count_samples(data_cfg, specs)
    except InputError:  # unreadable or empty data: the pipeline reports it, with its hint
        return
    if data_cfg.num_samples is not None and available < data_cfg.num_samples:
        part = f"the part of the data left after --holdout {data_cfg.holdout:g}" if data_cfg.holdout else "the data"
        click.echo(f"--num-samples {data_cfg.num_samples}: {part} gives {available} sample"
                   f"{'' if available == 1 else 's'}; using {available}", err=True)


def _input_specs(model: Path) -> list[Any] | None:
    """The graph inputs of an ONNX file (initializers excluded), or None if it cannot be read."""
    import onnx

    from qdeploy.types import TensorSpec

    try:
        proto = onnx.load(str(model), load_external_data=False)
    except Exception:  # any unreadable model is reported by the pipeline, with a hint
        return None
    initializers = {t.name for t in proto.graph.initializer}
    return [TensorSpec(v.name, tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                     for d in v.type.tensor_type.shape.dim))
            for v in proto.graph.input if v.name not in initializers]
