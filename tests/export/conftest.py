"""Fixtures for export tests: tiny model sources written to tmp_path, and single-threaded torch.

The model files are real Python files so SPEC resolution runs exactly as it does for users.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

TINY_NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def build():
    torch.manual_seed(0)
    return Net()


def build_with_inputs():
    torch.manual_seed(0)
    return Net(), torch.rand(1, 3, 6, 10)


def build_not_a_module():
    return 42


def build_bad_inputs():
    return Net(), "not a tensor"


def build_raises():
    raise RuntimeError("weights server is down")


class Branchy(nn.Module):
    # Python control flow on a tensor VALUE: torch.export cannot capture it, TorchScript tracing can.
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x) * 2
        return self.conv(x) - 1


def build_branchy():
    torch.manual_seed(0)
    return Branchy()


class Noisy(nn.Module):
    # Random numbers inside forward: ONNX Runtime draws different ones, so parity must fail.
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + torch.rand_like(x)


def build_noisy():
    torch.manual_seed(0)
    return Noisy()


class TwoInputs(nn.Module):
    def forward(self, image, gain):
        return image * gain, image.mean()


def build_two_inputs():
    return TwoInputs()
"""


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """The test machine is shared: keep torch to one thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """A Python file with several build functions (good and bad) for SPEC tests."""
    path = tmp_path / "user_models.py"
    path.write_text(textwrap.dedent(TINY_NET))
    return path


@pytest.fixture
def module_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """``make(name)``: TINY_NET as package ``name`` in tmp_path/site, on sys.path; returns ``name.nets``."""

    def make(name: str) -> str:
        pkg = tmp_path / "site" / name
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "nets.py").write_text(textwrap.dedent(TINY_NET))
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        return f"{name}.nets"

    return make
