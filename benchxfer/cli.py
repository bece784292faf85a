"""The ``benchxfer`` command line: a thin click group.

Each command lives in the module that owns its work and is imported only when it is used, so that
``benchxfer --help`` stays fast (torch and ray are heavy imports). A :class:`BenchxferError` raised
anywhere below becomes one line on stderr and exit code 1, without a traceback.
"""

from __future__ import annotations

import importlib

import click

from benchxfer import __version__
from benchxfer.errors import BenchxferError

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "sweep": "benchxfer.commands:sweep",
    "resume": "benchxfer.commands:resume",
    "status": "benchxfer.commands:status",
    "train": "benchxfer.commands:train",
    "pretrain": "benchxfer.commands:pretrain",
    "ui": "benchxfer.commands:ui",
    "zoo": "benchxfer.zoo.cli:zoo",
    "data": "benchxfer.data.cli:data",
    "report": "benchxfer.report_cli:report",
    "compare": "benchxfer.report_cli:compare",
}


class BenchxferGroup(click.Group):
    """A group whose commands are imported on first use, and which turns user errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BenchxferError as err:
            raise click.ClickException(str(err)) from None
        except click.UsageError as err:  # a bad option or argument: one line too, and where to look
            where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
            raise UsageLine(err.format_message() + where) from None


class UsageLine(click.ClickException):
    """A usage error shown as one line (click's default prints the usage and a hint first)."""

    exit_code = 2


@click.group(cls=BenchxferGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchxfer")
def main() -> None:
    """Which pretrained initialisation transfers best to your medical imaging task?

    benchxfer runs the whole grid (init x dataset x lr x seed) as one fault-tolerant sweep on a Ray
    cluster, records every run in MLflow, and turns the runs into the papers' tables and figures.

    \b
    Start here:
      benchxfer sweep sweeps/demo.yaml --dry-run   list the trials of a sweep
      benchxfer sweep sweeps/demo.yaml             run it (local Ray + local MLflow by default)
      benchxfer report demo                        tables, statistics and figures
      benchxfer ui                                 open the MLflow UI on the local store
    """


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="benchxfer")
