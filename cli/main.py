"""The ``qdeploy`` command: a thin click group; every subcommand maps options to a library call.

Errors raised as :class:`qdeploy.errors.QDeployError` are printed as one readable message plus a hint and
turn into a non-zero exit code; anything else is a bug and keeps its traceback (``--verbose`` shows more logs).
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

__all__ = ["cli", "main"]

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
            return self.commands[cmd_name]
        for module, attr, name in _COMMANDS:
            if name == cmd_name:
                try:
                    return getattr(importlib.import_module(module), attr)
                except ImportError as exc:  # Polygraphy's MissingTool idea: fail only when used
                    return _missing_command(name, exc)
        return None


def _missing_command(name: str, exc: ImportError) -> click.Command:
    """A stand-in for a subcommand whose imports fail; it explains the failure when invoked."""

    def run() -> None:
        from qdeploy.errors import BackendUnavailableError

        raise BackendUnavailableError(f"`qdeploy {name}` cannot load: {exc}",
                                      "reinstall qdeploy (pip install -e .) or install the missing package")

    return click.Command(name, callback=run, help=f"(unavailable: {exc})", short_help="(unavailable)")


class _ErrorHandlingGroup(_LazyGroup):
    """Turns QDeployError into `error: ...` + `hint: ...` on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context):
        from qdeploy.errors import QDeployError

        try:
            return super().invoke(ctx)
        except QDeployError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_ErrorHandlingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="qdeploy")
def cli(verbose: int) -> None:
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
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qdeploy")


if __name__ == "__main__":
    main()
