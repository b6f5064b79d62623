"""The `qdeploy` group itself: help for every command, version, error mapping, lazy (light) start-up."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from qdeploy_cli.main import _COMMANDS, _ErrorHandlingGroup, _missing_command, cli

from qdeploy.errors import BackendUnavailableError, CalibrationError, InputError

SUBCOMMANDS = [name for _, _, name in _COMMANDS]
PATH_STEPS = ("export", "calibrate", "profile", "eval sr", "demo")  # the group help walks through these
HEAVY_MODULES = ("torch", "onnxruntime", "onnxsim", "onnxscript", "matplotlib")


def test_group_help_lists_every_command_and_walks_the_path() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:", 1)[1].split()
    for name in SUBCOMMANDS:
        assert name in listed, name
    for step in PATH_STEPS:
        assert f"qdeploy {step}" in result.output, step  # the example line of each step
    assert "Run `qdeploy COMMAND --help`" in result.output


@pytest.mark.parametrize("path", [[name] for name in SUBCOMMANDS] + [["eval", "sr"]])
def test_every_subcommand_help_exits_zero_and_shows_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "(unavailable" not in result.output  # the command module imported
    examples = [line.strip() for line in result.output.splitlines() if line.strip().startswith("qdeploy ")]
    if path != ["eval"]:  # the eval group lists its subcommands; `eval sr --help` has the examples
        assert examples, f"`qdeploy {' '.join(path)} --help` shows no example command"
    assert "-h, --help" in result.output


def test_short_help_flag_and_version() -> None:
    assert CliRunner().invoke(cli, ["-h"]).exit_code == 0
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "version" in result.output


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["quantise"])
    assert result.exit_code == 2 and "No such command" in result.output


def _group_with(callback: object) -> click.Group:
    """A group with the real error handling and one command ``boom`` that runs ``callback``."""
    group = _ErrorHandlingGroup("qdeploy")
    group.add_command(click.Command("boom", callback=callback))
    return group


@pytest.mark.parametrize(("error", "code"), [
    (InputError("bad file x.onnx", "check the path"), 2),
    (CalibrationError("tensor 'r': NaN", "fix the data"), 2),
    (BackendUnavailableError("ort-cuda is not installed", "pip install onnxruntime-gpu"), 3),
])
def test_qdeploy_errors_become_error_and_hint_lines(error: Exception, code: int) -> None:
    def boom() -> None:
        raise error

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == code
    assert result.stderr.splitlines() == [f"error: {error.message}", f"  hint: {error.hint}"]
    assert result.stdout == ""


def test_a_bug_keeps_its_traceback() -> None:
    def boom() -> None:
        raise ZeroDivisionError("a real bug")

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, ZeroDivisionError)


def test_a_command_whose_imports_fail_explains_itself() -> None:
    command = _missing_command("profile", ImportError("No module named 'rich'"))
    group = _ErrorHandlingGroup("qdeploy")
    group.add_command(command)
    result = CliRunner().invoke(group, ["profile"])
    assert result.exit_code == BackendUnavailableError.exit_code
    assert "cannot load: No module named 'rich'" in result.stderr and "hint: reinstall" in result.stderr


def test_help_does_not_import_heavy_packages() -> None:
    """`qdeploy --help` and `qdeploy calibrate --help` must not pay for torch/onnxruntime imports."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from qdeploy_cli.main import cli\n"
        "for args in (['--help'], ['calibrate', '--help'], ['profile', '--help'],\n"
        "             ['eval', 'sr', '--help']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
