"""The model zoo: named float models that ``qdeploy export NAME`` (and Python users) can build.

An entry knows how to build its network, which input shape and value range it expects and where its
weights live. Weights ship inside the package (``weights/``), found with :mod:`importlib.resources`, so
an installed qdeploy never downloads anything; when a file is missing the network is still built (with a
fixed-seed random init, so exports stay reproducible) and a warning says the numbers are meaningless.
torch is imported inside functions so that listing the zoo costs nothing at CLI start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qdeploy.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["ZOO", "ZooEntry", "build", "build_module", "example_inputs", "get_entry", "zoo_names"]

_LOG = logging.getLogger(__name__)
_INIT_SEED = 0


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
    """

    name: str
    builder: Callable[[], torch.nn.Module]
    description: str
    default_input_shape: tuple[int, ...]
    weights: str | None = None
    input_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not self.default_input_shape or any(d <= 0 for d in self.default_input_shape):
            raise ValueError(f"zoo entry {self.name!r}: default_input_shape must be positive, "
                             f"got {self.default_input_shape}")
        if not self.input_range[0] < self.input_range[1]:
            raise ValueError(f"zoo entry {self.name!r}: input_range low must be below high, "
                             f"got {self.input_range}")


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
ZOO.add("tiny-sr", ZooEntry(
    "tiny-sr", _tiny_sr, "tiny 3-conv x2 SR net with fixed-seed random weights (tests and demos)",
    (1, 3, 16, 16), weights=None, input_range=(0.0, 1.0)))


def zoo_names() -> list[str]:
    """Names accepted by :func:`build` and as ``qdeploy export NAME``."""
    return ZOO.names()


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (InputError listing the zoo when unknown)."""
    return ZOO.get(name)


def _load_weights(module: torch.nn.Module, entry: ZooEntry) -> None:
    """Load ``entry.weights`` from the package into ``module``; warn and keep the random init if absent."""
    import io
    from importlib import resources

    import torch

    from qdeploy.errors import InputError

    resource = resources.files("qdeploy_models") / "weights" / str(entry.weights)
    if not resource.is_file():
        _LOG.warning("zoo model %r: weights file weights/%s is missing; using RANDOM weights (outputs are "
                     "meaningless, export and speed are still valid)", entry.name, entry.weights)
        return
    try:
        state = torch.load(io.BytesIO(resource.read_bytes()), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # corrupt file, or weights for another architecture
        first = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"zoo model {entry.name!r}: cannot load weights/{entry.weights} "
                         f"({type(exc).__name__}: {first})",
                         "the weights file is corrupt or from another model version; retrain it "
                         "(scripts/train_sr.py) or remove it to export with random weights") from exc


def build_module(name: str) -> torch.nn.Module:
    """The zoo network ``name`` in eval mode, with its shipped weights (or a seeded random init)."""
    import torch

    entry = get_entry(name)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(_INIT_SEED)
        module = entry.builder()
    if entry.weights is not None:
        _load_weights(module, entry)
    return module.eval()


def example_inputs(name: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Seeded uniform random inputs in the entry's default shape and value range."""
    import torch

    entry = get_entry(name)
    lo, hi = entry.input_range
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(entry.default_input_shape, generator=gen) * (hi - lo) + lo,)


def build(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """``(module, example_inputs)`` for zoo model ``name`` (the same contract as a user build function)."""
    return build_module(name), example_inputs(name)
