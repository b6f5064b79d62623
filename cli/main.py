"""The ``qdeploy`` command: a thin click group; every subcommand maps options to a library call.

Errors raised as :class:`qdeploy.errors.QDeployError` are printed as one readable message plus a hint and
turn into a non-zero exit code; anything else is a bug and keeps its traceback (``--verbose`` shows more logs).
With ``--json`` a script reads stdout, so there the error (and a usage error) is also one JSON object on
stdout, ``{"error": ..., "hint": ..., "exit_code": ..., "kind": ...}``, with the same exit code.
``-v/--verbose`` works before or after the subcommand (``qdeploy -v profile`` = ``qdeploy profile -v``).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from typing import Any

import click

__all__ = ["ARGV_KEY", "cli", "command_line", "main"]

# (module, attribute, command name): imported lazily so `qdeploy --help` stays fast and one broken
# optional dependency does not take the whole CLI down.
_COMMANDS = (
    ("qdeploy_cli.export", "export_cmd", "export"),
    ("qdeploy_cli.calibrate", "calibrate_cmd", "calibrate"),
    ("qdeploy_cli.weights", "quantize_weights_cmd", "quantize-weights"),
    ("qdeploy_cli.profile", "profile_cmd", "profile"),
    ("qdeploy_cli.eval", "eval_group", "eval"),
    ("qdeploy_cli.demo", "demo_cmd", "demo"),
    ("qdeploy_cli.build", "build_cmd", "build"),
    ("qdeploy_cli.check", "check_cmd", "check"),
    ("qdeploy_cli.analyze", "analyze_cmd", "analyze"),
)


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (commands added with ``add_command`` also work)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for _, _, name in _COMMANDS]
        return lazy + [name for name in self.commands if name not in lazy]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return _with_verbose(self.commands[cmd_name])
        for module, attr, name in _COMMANDS:
            if name == cmd_name:
                try:
                    return _with_verbose(getattr(importlib.import_module(module), attr))
                except ImportError as exc:  # Polygraphy's MissingTool idea: fail only when used
                    return _with_verbose(_missing_command(name, exc))
        return None


_VERBOSE_KEY = "qdeploy.verbose"


def _set_verbosity(ctx: click.Context, verbose: int) -> None:
    """Add ``verbose`` to the level counted so far in this invocation and apply it to the root logger."""
    total = ctx.meta.get(_VERBOSE_KEY, 0) + verbose
    ctx.meta[_VERBOSE_KEY] = total
    level = logging.WARNING - 10 * min(total, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if total:
        logging.getLogger().setLevel(level)  # basicConfig is a no-op once logging is configured


def _verbose_callback(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        _set_verbosity(ctx, value)


def _with_verbose(cmd: click.Command) -> click.Command:
    """Give ``cmd`` (and a group's subcommands) its own ``-v/--verbose``, so the flag also works after
    the subcommand, where users type it. Idempotent: the command objects are module-level singletons."""
    if not any(p.name == "verbose" for p in cmd.params):
        cmd.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                       callback=_verbose_callback,
                                       help="More log output (-vv for debug); also accepted before the command."))
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _with_verbose(sub)
    return cmd


def _missing_command(name: str, exc: ImportError) -> click.Command:
    """A stand-in for a subcommand whose imports fail; it explains the failure when invoked."""

    def run() -> None:
        from qdeploy.errors import BackendUnavailableError

        raise BackendUnavailableError(f"`qdeploy {name}` cannot load: {exc}",
                                      "reinstall qdeploy (pip install -e .) or install the missing package")

    return click.Command(name, callback=run, help=f"(unavailable: {exc})", short_help="(unavailable)")


_JSON_KEY = "qdeploy.json"
ARGV_KEY = "qdeploy.argv"
"""``ctx.meta`` key of the arguments the ``qdeploy`` group was invoked with (see :func:`command_line`)."""


class _ErrorHandlingGroup(_LazyGroup):
    """Turns QDeployError into `error: ...` + `hint: ...` on stderr and the error's exit code; with
    ``--json`` also into one JSON error object on stdout (usage errors too)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Every token after the group's own options belongs to the subcommand; "--json" among them (before
        # a "--") means the caller parses stdout as JSON, errors included.
        given = args[: args.index("--")] if "--" in args else args
        ctx.meta[_JSON_KEY] = "--json" in given
        ctx.meta[ARGV_KEY] = list(args)  # what reports quote as the command that produced them
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from qdeploy.errors import QDeployError

        try:
            return super().invoke(ctx)
        except QDeployError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            if ctx.meta.get(_JSON_KEY):
                _print_json_error(exc.message, exc.hint, exc.exit_code, type(exc).__name__)
            ctx.exit(exc.exit_code)
        except click.ClickException as exc:
            if not ctx.meta.get(_JSON_KEY):
                raise
            exc.show()
            command = ctx.invoked_subcommand or "COMMAND"
            _print_json_error(exc.format_message(), f"see `qdeploy {command} --help`", exc.exit_code,
                              type(exc).__name__)
            ctx.exit(exc.exit_code)


def _print_json_error(message: str, hint: str | None, exit_code: int, kind: str) -> None:
    """One JSON error object on stdout (what a ``--json`` caller parses instead of a result)."""
    error = {"error": message, "hint": hint or None, "exit_code": exit_code, "kind": kind}
    click.echo(json.dumps(error, indent=2))


@click.group(cls=_ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="qdeploy")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """qdeploy: float PyTorch model -> fast, accurate low-bit deployment.

    \b
    The path, one command per step:
      qdeploy export    SPEC -o exports/net/model.onnx          PyTorch -> ONNX, parity-checked
      qdeploy calibrate MODEL.onnx --data DIR -o model.qdq.onnx calibrated QDQ (INT8) graph
      qdeploy quantize-weights MODEL.onnx -o model.int4w.onnx   INT4 block-wise weights, no data
      qdeploy profile   MODEL.onnx MODEL.qdq.onnx               latency + accuracy side by side
      qdeploy eval sr   MODEL.onnx ... --dataset DIR --scale 3  standard SR PSNR/SSIM (Y channel)
      qdeploy demo                                              all of the above on the bundled ABPN x3
    Run `qdeploy COMMAND --help` for each command's options and examples.
    """
    from qdeploy_cli._progress import install_announcements

    _set_verbosity(ctx, verbose)
    install_announcements(quiet=bool(ctx.meta.get(_JSON_KEY)))


def command_line() -> str:
    """The running command as a user would retype it: ``qdeploy analyze a.onnx b.onnx --data d/ ...``."""
    import shlex

    ctx = click.get_current_context(silent=True)
    args = ctx.meta.get(ARGV_KEY) if ctx is not None else None
    return "qdeploy " + shlex.join(sys.argv[1:] if args is None else args)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qdeploy")


if __name__ == "__main__":
    main()
