"""README's "Worked example" must name real commands, options and values (checked with click, not run)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from qdeploy_cli.main import cli

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Worked example"
# option -> where its valid values live, for options whose values are registry names
REGISTRY_OPTIONS = {
    "--method": ("qdeploy.calib", "observer_names"),
    "--preset": ("qdeploy.quant", "preset_names"),
    "--backend": ("qdeploy.backends", "backend_names"),
}


def _worked_example_commands() -> list[list[str]]:
    """Token lists of the `qdeploy ...` commands in the first bash block after the section heading."""
    text = README.read_text()
    assert SECTION in text, f"README.md lost its {SECTION!r} section"
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S)
    assert block, "no ```bash block in the worked example"
    joined = block.group(1).replace("\\\n", " ")  # shell line continuations
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("qdeploy "):
            tokens = [t.strip("[]") for t in shlex.split(line)[1:]]  # `[--json]` marks an optional flag
            commands.append([t for t in tokens if t])
    return commands


COMMANDS = _worked_example_commands()


def _resolve(tokens: list[str]) -> tuple[click.Command, list[str], str]:
    """Walk the click groups: (leaf command, its arguments, "qdeploy sub ...")."""
    command: click.Command = cli
    path = ["qdeploy"]
    ctx = click.Context(cli)
    while isinstance(command, click.Group):
        assert tokens, f"`{' '.join(path)}` needs a subcommand"
        sub = command.get_command(ctx, tokens[0])
        assert sub is not None, f"`{' '.join(path)} {tokens[0]}` is not a command"
        assert "(unavailable" not in (sub.help or ""), f"`{tokens[0]}` cannot load"
        command, tokens, path = sub, tokens[1:], [*path, tokens[0]]
    return command, tokens, " ".join(path)


def _options(command: click.Command) -> dict[str, click.Option]:
    return {name: p for p in command.params if isinstance(p, click.Option)
            for name in (*p.opts, *p.secondary_opts)}


def test_worked_example_covers_the_whole_path() -> None:
    names = [_resolve(tokens)[2] for tokens in COMMANDS]
    assert names[:4] == ["qdeploy export", "qdeploy calibrate", "qdeploy profile", "qdeploy eval sr"]


@pytest.mark.parametrize("tokens", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_every_option_and_value_exists(tokens: list[str]) -> None:
    command, args, name = _resolve(tokens)
    options = _options(command)
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("-"):
            i += 1
            continue
        option = options.get(token.split("=", 1)[0])
        assert option is not None, f"`{name}` has no option {token} (it has {sorted(options)})"
        if option.is_flag or option.count:
            i += 1
            continue
        value = args[i + 1]
        if isinstance(option.type, click.Choice):
            assert value in option.type.choices, f"{name} {token} {value}: not one of {option.type.choices}"
        if token in REGISTRY_OPTIONS:
            module, func = REGISTRY_OPTIONS[token]
            valid = getattr(__import__(module, fromlist=[func]), func)()
            assert value in valid, f"{name} {token} {value}: not one of {valid}"
        if not isinstance(option.type, click.Path):  # paths need not exist here
            option.type.convert(value, option, None)
        if option.callback is not None:
            option.callback(click.Context(command), option, (value,) if option.multiple else value)
        i += 2


def test_every_positional_argument_is_given() -> None:
    for tokens in COMMANDS:
        command, args, name = _resolve(tokens)
        options = _options(command)
        positional, i = [], 0
        while i < len(args):
            option = options.get(args[i])
            if option is None:
                positional.append(args[i])
            i += 1 if option is None or option.is_flag or option.count else 2
        required = [p for p in command.params if isinstance(p, click.Argument) and p.required]
        assert len(positional) >= len(required), f"`{name}` lacks {[p.name for p in required]}"


def test_every_shell_block_fits_an_80_column_terminal() -> None:
    """A user copies these lines from a terminal of 80 columns: no line of a ```bash block is wider."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert blocks
    wide = [line for block in blocks for line in block.splitlines() if len(line) > 80]
    assert wide == [], wide
