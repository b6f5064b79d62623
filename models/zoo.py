"""The model zoo: named float models that ``qdeploy export NAME`` (and Python users) can build.

An entry knows how to build its network, which input shape and value range it expects and where its
weights live. Weights qdeploy trained ship inside the package (``weights/``), found with
:mod:`importlib.resources`, so an installed qdeploy never downloads anything; when such a file is missing
the network is still built (with a fixed-seed random init, so exports stay reproducible) and a warning says
the numbers are meaningless.

Public checkpoints that are not shipped (licence or size), e.g. NGswin's, are *external*: they are read
from :data:`SHARED_WEIGHTS` (``../shared/weights`` beside the repository) or from a path the caller gives
(``qdeploy export NAME --weights PATH``, ``build_module(NAME, weights=PATH)``), and a missing file is an
error that says where to put it, never a silent random init. torch is imported inside functions so that
listing the zoo costs nothing at CLI start-up.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qdeploy.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["SHARED_WEIGHTS", "ZOO", "ZooEntry", "build", "build_module", "example_inputs", "external_weights_path",
           "get_entry", "zoo_names"]

_LOG = logging.getLogger(__name__)
_INIT_SEED = 0

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
"""Where external (not shipped) checkpoints are looked up: ``../shared/weights`` beside the repository."""


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: Zoo name, e.g. ``abpn-x3`` (what users type).
        builder: Returns the network with random (seeded) initial weights.
        description: One line for listings and ``--help``.
        default_input_shape: Shape of the single input used when the user gives no ``--input-shape``.
        weights: File name under ``qdeploy_models/weights/`` with a ``state_dict``, or None (random net).
        input_range: (low, high) value range the network expects; random parity inputs use it because
            a network trained on [0, 255] pixels and fed [0, 1] noise exercises almost none of its range.
        external_weights: Path under :data:`SHARED_WEIGHTS` of a public checkpoint that is not shipped
            (e.g. ``ngswin/NGswin_x2.pth``); required: building fails with an InputError when it is absent
            and no other path is given.
        weights_origin: Where the external checkpoint comes from (named in the missing-file error).
    """

    name: str
    builder: Callable[[], torch.nn.Module]
    description: str
    default_input_shape: tuple[int, ...]
    weights: str | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    external_weights: str | None = None
    weights_origin: str = ""

    def __post_init__(self) -> None:
        if not self.default_input_shape or any(d <= 0 for d in self.default_input_shape):
            raise ValueError(f"zoo entry {self.name!r}: default_input_shape must be positive, "
                             f"got {self.default_input_shape}")
        if not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"zoo entry {self.name!r}: input_range low must be below high, "
                             f"got {self.input_range}")
        if self.weights is not None and self.external_weights is not None:
            raise ValueError(f"zoo entry {self.name!r}: give shipped weights or external weights, not both")


def _abpn_x3() -> torch.nn.Module:
    from qdeploy_models.abpn import ABPN

    return ABPN(scale=3, features=28, colors=3)


def _swinir_light_x2() -> torch.nn.Module:
    from qdeploy_models.swinir import swinir_light

    return swinir_light(scale=2)


def _tiny_sr() -> torch.nn.Module:
    from qdeploy_models.tiny import TinySR

    return TinySR(scale=2, features=8)


def _imdn_x2() -> torch.nn.Module:
    from qdeploy_models.imdn import IMDN

    return IMDN(scale=2, channels=32, blocks=4)


def _pan_x3() -> torch.nn.Module:
    from qdeploy_models.pan import PAN

    return PAN(scale=3, channels=32, up_channels=16, blocks=6)


def _esa_x4() -> torch.nn.Module:
    from qdeploy_models.rfdn import RFDN

    return RFDN(scale=4, channels=32, blocks=4)


def _fsrcnn_y_x2() -> torch.nn.Module:
    from qdeploy_models.fsrcnn import FSRCNN

    return FSRCNN(scale=2, d=56, s=12, m=4)


def _ngswin(scale: int) -> torch.nn.Module:
    from qdeploy_models.ngswin import ngswin

    return ngswin(scale=scale)


def _tinycls() -> torch.nn.Module:
    from qdeploy_models.tinycls import TinyCls

    return TinyCls(classes=10)


ZOO: Registry[ZooEntry] = Registry("zoo model")
ZOO.add("abpn-x3", ZooEntry(
    "abpn-x3", _abpn_x3,
    "ABPN x3 super-resolution (42.5k params, RGB in [0, 255]); weights trained by qdeploy",
    (1, 3, 64, 64), weights="abpn_x3.pt", input_range=(0.0, 255.0)))
ZOO.add("swinir-light-x2", ZooEntry(
    "swinir-light-x2", _swinir_light_x2,
    "SwinIR-light x2 (paper architecture, 910k params, RGB in [0, 1], any H/W); weights trained by qdeploy",
    (1, 3, 64, 64), weights="swinir_light_x2.pt", input_range=(0.0, 1.0)))
ZOO.add("imdn-x2", ZooEntry(
    "imdn-x2", _imdn_x2,
    "IMDN-style x2 (distillation blocks + contrast-aware channel attention, 122k params, RGB in [0, 1]); "
    "weights trained by qdeploy",
    (1, 3, 64, 64), weights="imdn_x2.pt", input_range=(0.0, 1.0)))
ZOO.add("pan-x3", ZooEntry(
    "pan-x3", _pan_x3,
    "PAN-style x3 (pixel attention, nearest-resize upsampler, bilinear skip, 73k params, RGB in [0, 1]); "
    "weights trained by qdeploy",
    (1, 3, 64, 64), weights="pan_x3.pt", input_range=(0.0, 1.0)))
ZOO.add("esa-x4", ZooEntry(
    "esa-x4", _esa_x4,
    "RFDN/ESA-style x4 (enhanced spatial attention, 184k params, RGB in [0, 255], H/W >= 17); "
    "weights trained by qdeploy",
    (1, 3, 64, 64), weights="esa_x4.pt", input_range=(0.0, 255.0)))
ZOO.add("fsrcnn-y-x2", ZooEntry(
    "fsrcnn-y-x2", _fsrcnn_y_x2,
    "FSRCNN-style x2 on luma (PReLU, ConvTranspose upsampler, 12.8k params, Y in [0, 1]); "
    "weights trained by qdeploy",
    (1, 1, 64, 64), weights="fsrcnn_y_x2.pt", input_range=(0.0, 1.0)))
ZOO.add("tinycls", ZooEntry(
    "tinycls", _tinycls,
    "tiny 10-class image classifier (BatchNorm, depthwise conv, SiLU, residual, 18.6k params, RGB in [0, 1]); "
    "weights trained by qdeploy",
    (1, 3, 32, 32), weights="tinycls.pt", input_range=(0.0, 1.0)))
_NGSWIN_ORIGIN = ("the authors' release, github.com/rami0205/NGramSwin (Apache-2.0), file pretrain/{file}; "
                  "not shipped with qdeploy")
for _scale, _params in ((2, "998k"), (3, "1.0M")):
    ZOO.add(f"ngswin-x{_scale}", ZooEntry(
        f"ngswin-x{_scale}", functools.partial(_ngswin, _scale),
        f"NGswin x{_scale} (Choi et al., CVPR 2023; N-gram Swin, {_params} params, RGB in [0, 1], any H/W); the "
        "authors' weights, read from ../shared/weights/ngswin/ or --weights",
        (1, 3, 64, 64), input_range=(0.0, 1.0), external_weights=f"ngswin/NGswin_x{_scale}.pth",
        weights_origin=_NGSWIN_ORIGIN.format(file=f"NGswin_x{_scale}.pth")))
ZOO.add("tiny-sr", ZooEntry(
    "tiny-sr", _tiny_sr, "tiny 3-conv x2 SR net with fixed-seed random weights (tests and demos)",
    (1, 3, 16, 16), weights=None, input_range=(0.0, 1.0)))


def zoo_names() -> list[str]:
    """Names accepted by :func:`build` and as ``qdeploy export NAME``."""
    return ZOO.names()


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (InputError listing the zoo when unknown)."""
    return ZOO.get(name)


def _load_state(module: torch.nn.Module, entry: ZooEntry, source: str | Path | bytes, label: str,
                hint: str) -> None:
    """``load_state_dict(strict=True)`` from a file path or bytes; any failure is an InputError naming ``label``."""
    import io

    import torch

    from qdeploy.errors import InputError

    try:
        state = torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                           weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # corrupt file, or weights for another architecture
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"zoo model {entry.name!r}: cannot load {label} ({type(exc).__name__}: {first})",
                         hint) from exc


def _load_weights(module: torch.nn.Module, entry: ZooEntry) -> None:
    """Load ``entry.weights`` from the package into ``module``; warn and keep the random init if absent."""
    from importlib import resources

    resource = resources.files("qdeploy_models") / "weights" / str(entry.weights)
    if not resource.is_file():
        _LOG.warning("zoo model %r: weights file weights/%s is missing; using RANDOM weights (outputs are "
                     "meaningless, export and speed are still valid)", entry.name, entry.weights)
        return
    _load_state(module, entry, resource.read_bytes(), f"weights/{entry.weights}",
                "the weights file is corrupt or from another model version; retrain it "
                "(scripts/train_sr.py) or remove it to export with random weights")


def external_weights_path(name: str) -> Path | None:
    """Where zoo model ``name``'s external checkpoint is looked up (None: its weights ship with qdeploy)."""
    entry = get_entry(name)
    return None if entry.external_weights is None else SHARED_WEIGHTS / entry.external_weights


def _load_file(module: torch.nn.Module, entry: ZooEntry, path: Path, given: bool) -> None:
    """Load a checkpoint file (given by the user, or the entry's external one); missing -> InputError."""
    from qdeploy.errors import InputError

    flag = f"pass --weights PATH (Python: build_module({entry.name!r}, weights=PATH))"
    if not path.is_file():
        if given:
            raise InputError(f"zoo model {entry.name!r}: weights file not found: {path}",
                             "check the path given with --weights")
        origin = f" ({entry.weights_origin})" if entry.weights_origin else ""
        raise InputError(f"zoo model {entry.name!r} needs its weights file {path.name}{origin}; "
                         f"not found at {path}", f"put the file at {path}, or {flag}")
    _load_state(module, entry, path, str(path),
                f"{path} must be a plain state dict of {entry.name!r} (torch.save(model.state_dict(), ...))")


def build_module(name: str, weights: str | os.PathLike[str] | None = None) -> torch.nn.Module:
    """The zoo network ``name`` in eval mode with its weights: ``weights`` when given (a state-dict file),
    else its external checkpoint (required), else its shipped file (or a seeded random init)."""
    import torch

    entry = get_entry(name)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(_INIT_SEED)
        module = entry.builder()
    if weights is not None:
        _load_file(module, entry, Path(weights), given=True)
    elif entry.external_weights is not None:
        _load_file(module, entry, SHARED_WEIGHTS / entry.external_weights, given=False)
    elif entry.weights is not None:
        _load_weights(module, entry)
    return module.eval()


def example_inputs(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded uniform random inputs in the entry's default shape and value range."""
    import torch

    entry = get_entry(name)
    lo, hi = entry.input_range
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(entry.default_input_shape, generator=gen) * (hi - lo) + lo,)


def build(name: str, weights: str | os.PathLike[str] | None = None
          ) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """``(module, example_inputs)`` for zoo model ``name`` (the same contract as a user build function)."""
    return build_module(name, weights), example_inputs(name)
