"""Result objects of an SR evaluation: per-image and per-model scores, JSON form and rich tables.

Kept apart from the runner so that reports can be built, serialized and rendered without onnxruntime,
and so that the numbers a table shows are exactly the numbers ``--json`` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["ImageScore", "ModelScore", "SREvalReport", "render_per_image_table", "render_table"]


def _num(x: float | None, digits: int = 6) -> float | None:
    """Rounded for reading; infinite PSNR (identical images) stays inf (the CLI writes it as "inf")."""
    if x is None:
        return None
    return round(float(x), digits) if math.isfinite(x) else float(x)


@dataclass(frozen=True)
class ImageScore:
    """Scores of one output image; ``note`` says when SR and HR were cropped to a common size."""

    name: str
    psnr_y: float
    ssim_y: float
    psnr_rgb: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``psnr_rgb`` only when measured, ``note`` only when set)."""
        out: dict[str, Any] = {"name": self.name, "psnr_y": _num(self.psnr_y), "ssim_y": _num(self.ssim_y)}
        if self.psnr_rgb is not None:
            out["psnr_rgb"] = _num(self.psnr_rgb)
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class ModelScore:
    """Mean scores of one model (or of the bicubic baseline) over the dataset.

    ``delta_*`` are this row minus the first model's row (the float reference), so a quantized model's
    accuracy cost reads directly as a negative dB number. ``color`` is ``"y"`` for a Y-channel model (Y in,
    Y out, scored on its Y plane); ``note`` says when that was auto-detected.
    """

    label: str
    kind: str  # "model" | "bicubic"
    psnr_y: float
    ssim_y: float
    images: tuple[ImageScore, ...]
    psnr_rgb: float | None = None
    delta_psnr_y: float | None = None
    delta_ssim_y: float | None = None
    seconds: float = 0.0
    color: str = "rgb"
    note: str = ""

    @property
    def ms_per_image(self) -> float:
        """Mean wall time per image in milliseconds (inference only for models)."""
        return 1000.0 * self.seconds / max(len(self.images), 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, per-image scores included."""
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "color": self.color,
                               "psnr_y": _num(self.psnr_y), "ssim_y": _num(self.ssim_y)}
        if self.note:
            out["note"] = self.note
        if self.psnr_rgb is not None:
            out["psnr_rgb"] = _num(self.psnr_rgb)
        out["delta_psnr_y"] = _num(self.delta_psnr_y)
        out["delta_ssim_y"] = _num(self.delta_ssim_y)
        out["ms_per_image"] = _num(self.ms_per_image, 3)
        out["images"] = [s.to_dict() for s in self.images]
        return out


@dataclass(frozen=True)
class SREvalReport:
    """Everything ``qdeploy eval sr`` measured: models in the order given, then the bicubic baseline."""

    dataset: str
    scale: int
    value_range: int
    backend: str
    models: tuple[ModelScore, ...]
    bicubic: ModelScore
    lr_sources: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> tuple[ModelScore, ...]:
        """Model rows followed by the bicubic row (the table's order)."""
        return (*self.models, self.bicubic)

    @property
    def rgb_psnr(self) -> bool:
        """Whether RGB PSNR was measured."""
        return self.bicubic.psnr_rgb is not None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form (infinite PSNR of identical images stays inf; ``print_json`` writes "inf")."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "value_range": self.value_range,
            "backend": self.backend,
            "protocol": {
                "psnr_ssim": "Y channel of BT.601 YCbCr (Y in [16, 235], float64, not rounded)",
                "shave": self.scale,
                "ssim": "Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03, L 255, valid filtering",
                "hr": f"modcropped to a multiple of {self.scale}",
                "rgb_psnr_shave": 1 if self.rgb_psnr else None,
                **({"y_models": _Y_PROTOCOL} if any(m.color == "y" for m in self.models) else {}),
            },
            "n_images": len(self.bicubic.images),
            "lr_sources": dict(self.lr_sources),
            "models": [m.to_dict() for m in self.models],
            "bicubic": self.bicubic.to_dict(),
        }


_Y_PROTOCOL = ("input: Y of the LR image (BT.601 as MATLAB rgb2ycbcr, not rounded); output Y rounded to "
               "uint8 and scored directly; RGB (saved images, RGB PSNR) takes Cb/Cr from bicubic upscaling "
               "of the LR image")


def _fmt(x: float | None, digits: int, signed: bool = False) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _lr_caption(report: SREvalReport) -> str:
    n_file = sum(1 for v in report.lr_sources.values() if v == "file")
    n_made = len(report.lr_sources) - n_file
    parts = []
    if n_file:
        parts.append(f"{n_file} LR from files")
    if n_made:
        parts.append(f"{n_made} LR made with MATLAB-bicubic")
    notes = sorted({f"{s.name}: {s.note}" for r in report.rows for s in r.images if s.note})
    text = f"Y channel, shave {report.scale}; " + ", ".join(parts)
    return text + ("\n" + "\n".join(notes) if notes else "")


def render_table(report: SREvalReport) -> Table:
    """One row per model plus the bicubic baseline: PSNR-Y, SSIM-Y, delta vs the first model, time."""
    from rich.table import Table

    name = report.dataset.rstrip("/").split("/")[-1] or report.dataset
    table = Table(title=f"{name} x{report.scale} ({len(report.bicubic.images)} images)",
                  caption=_lr_caption(report))
    table.add_column("model", no_wrap=True)
    table.add_column("PSNR-Y (dB)", justify="right")
    table.add_column("SSIM-Y", justify="right")
    table.add_column("ΔPSNR vs first (dB)", justify="right")
    if report.rgb_psnr:
        table.add_column("RGB PSNR (dB)", justify="right")
    table.add_column("ms/img", justify="right")
    for row in report.rows:
        label = f"{row.label} (baseline)" if row.kind == "bicubic" else row.label
        label += " (Y)" if row.color == "y" else ""
        cells = [label, _fmt(row.psnr_y, 3), _fmt(row.ssim_y, 4), _fmt(row.delta_psnr_y, 3, signed=True)]
        if report.rgb_psnr:
            cells.append(_fmt(row.psnr_rgb, 3))
        cells.append(_fmt(row.ms_per_image, 1))
        table.add_row(*cells, style="dim" if row.kind == "bicubic" else None)
    return table


def render_per_image_table(report: SREvalReport) -> Table:
    """Per-image PSNR-Y / SSIM-Y, one column pair per row of :func:`render_table`."""
    from rich.table import Table

    table = Table(title="per image: PSNR-Y (dB) / SSIM-Y")
    table.add_column("image")
    for row in report.rows:
        table.add_column(row.label, justify="right")
    for i, image in enumerate(report.bicubic.images):
        cells = [image.name]
        for row in report.rows:
            s = row.images[i]
            cells.append(f"{_fmt(s.psnr_y, 2)} / {_fmt(s.ssim_y, 4)}")
        table.add_row(*cells)
    return table
