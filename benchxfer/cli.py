"""The ``benchxfer`` command line: a thin click group.

Each command lives in the module that owns its work and is imported only when it is used, so that
``benchxfer --help`` stays fast (torch and ray are heavy imports). A :class:`BenchxferError` raised
anywhere below becomes one line on stderr and exit code 1, without a traceback. Any other exception is a
bug: it becomes one line too, naming the command and a log file under ``<home>/logs/`` that holds the
traceback; ``benchxfer --debug COMMAND`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import tempfile
import traceback
from pathlib import Path

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
    "report": "benchxfer.report.cli:report",
    "compare": "benchxfer.report.cli:compare",
}

READ_ONLY = ("status", "report", "compare")  # commands that only read the home: it need not be writable


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

    def _command_words(self, ctx: click.Context) -> list[str]:
        """The command and sub-command names the user typed (``data verify``), for the one line."""
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        words: list[str] = []
        group: click.Command | None = self
        for arg in args:
            if not isinstance(group, click.Group):
                break
            try:
                sub = group.get_command(ctx, arg)
            except Exception:  # noqa: BLE001 - a command module that fails to import: reported by invoke
                sub = None
            if sub is None:
                break
            words.append(arg)
            group = sub
        return words

    def invoke(self, ctx: click.Context):
        words = self._command_words(ctx)
        try:
            return super().invoke(ctx)
        except BenchxferError as err:
            raise click.ClickException(str(err)) from None
        except click.UsageError as err:  # a bad option or argument: one line too, and where to look
            where = f" (see `{err.ctx.command_path} --help`)" if err.ctx is not None else ""
            raise UsageLine(err.format_message() + where) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, KeyboardInterrupt):
            raise
        except Exception as err:  # a bug: one line naming the command and the log holding the traceback
            if ctx.meta.get("benchxfer.debug"):
                raise
            command = " ".join(["benchxfer", *words])
            log = write_log(command, err)
            first = " ".join(f"{type(err).__name__}: {err}".split())[:300]
            raise click.ClickException(
                f"`{command}` failed unexpectedly ({first}); the traceback is in {log} "
                f"(rerun with `benchxfer --debug` to see it here)") from None


def write_log(command: str, err: BaseException) -> Path:
    """The traceback of ``err`` in ``<home>/logs/`` (or a temporary folder when the home is unusable)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = f"{command}\n{''.join(traceback.format_exception(err))}"
    folders = []
    with contextlib.suppress(Exception):  # the home itself may be the problem
        from benchxfer.paths import logs_dir

        folders.append(logs_dir())
    folders.append(Path(tempfile.gettempdir()) / "benchxfer-logs")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"{stamp}-", suffix=".log", dir=folder)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return Path(name)
        except OSError:
            continue
    return Path("(no writable folder for the log)")


class UsageLine(click.ClickException):
    """A usage error shown as one line (click's default prints the usage and a hint first)."""

    exit_code = 2


@click.group(cls=BenchxferGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="benchxfer")
@click.option("--debug", is_flag=True, default=False,
              help="Show the full traceback of an unexpected error (instead of one line and a log file).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
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
    from benchxfer.environment import check
    from benchxfer.paths import pin

    ctx.meta["benchxfer.debug"] = debug
    read_only = ctx.invoked_subcommand in READ_ONLY  # a read-only home serves them
    pin(write=not read_only)  # a relative or empty $BENCHXFER_HOME is settled here, once, before any command reads it
    check(read_only=read_only)  # every variable benchxfer reads: one line naming a bad one, before any command reads it
    from benchxfer.launch.cluster import token_auth_env  # after check(): cluster reads a checked variable on import

    token_auth_env()  # before any command imports Ray, which reads it once


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="benchxfer")
