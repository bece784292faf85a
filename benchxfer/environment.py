"""Every environment variable benchxfer reads, checked once at start-up (``benchxfer.cli``'s group).

A bad value ends the command with one line naming the variable, its value and what is allowed, before any
command reads it. The table is also docs/errors.md's list of variables (``tests/test_environment.py`` checks
that every variable the package reads is here and there).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchxfer.errors import BenchxferError

URI_RE = re.compile(r"^(?:(?:https?)://[^\s/:]+(?::\d{1,5})?(?:/\S*)?|file:\S+|sqlite:///\S+|"
                    r"(?:postgresql|mysql|mssql)(?:\+\w+)?://\S+|databricks(?:-uc)?(?:://\S*)?)$")


@dataclass(frozen=True)
class Variable:
    name: str
    allowed: str  # what is allowed, for the one line and docs/errors.md
    check: Callable[[str], str | None]  # the problem with a value, or None


READ_ONLY = False  # set by the command line for a command that only reads (status, report, compare)


def _folder(value: str) -> str | None:
    from benchxfer.paths import dangling_link, expand_user, folder_problem

    if not value.strip():
        return "it is set but empty"
    try:
        path = expand_user(value)
    except ValueError as err:
        return str(err)
    return dangling_link(path) or folder_problem(path, write=not READ_ONLY)


def _positive_seconds(value: str) -> str | None:
    try:
        seconds = float(value)
    except ValueError:
        return "not a number"
    return None if math.isfinite(seconds) and seconds > 0 else "not a positive number of seconds"


def _tracking_uri(value: str) -> str | None:
    if not URI_RE.match(value.strip()):
        return "not a tracking URI"
    if value.strip().startswith("sqlite:///"):  # MLflow would retry a database it cannot open for minutes
        db = Path(value.strip()[len("sqlite:///"):])  # sqlite:////abs/path or sqlite:///relative/path
        if db.is_dir():
            return f"{db} is a folder, not an SQLite database file (give sqlite:///FOLDER/mlflow.db)"
        if not db.parent.is_dir():
            return f"the folder of {db} does not exist"
    return None


def _ray_address(value: str) -> str | None:
    from benchxfer.plan.schema import ADDRESS_RE

    m = ADDRESS_RE.match(value.strip())
    if m is None or (m.group("port") is not None and not 0 < int(m.group("port")) < 65536):
        return "not a Ray address"
    return None


VARIABLES: tuple[Variable, ...] = (
    Variable("BENCHXFER_HOME", "a writable folder (or one that can be made); default ~/.benchxfer",
             _folder),
    Variable("BENCHXFER_ZOO", "a writable folder for the init zoo; default <home>/zoo", _folder),
    Variable("BENCHXFER_CACHE", "a writable folder for the preprocessed image cache; default <home>/cache",
             _folder),
    Variable("BENCHXFER_PLACEMENT_TIMEOUT_S", "a positive number of seconds (default 600): how long a trial may "
             "wait for resources before the sweep names it and stops", _positive_seconds),
    Variable("MLFLOW_TRACKING_URI", "an MLflow tracking URI: http(s)://HOST[:PORT], file:PATH, sqlite:///PATH, "
             "postgresql://..., mysql://..., databricks", _tracking_uri),
    Variable("RAY_ADDRESS", "a Ray cluster: 'auto', HOST:PORT or ray://HOST:PORT, with a port in 1-65535",
             _ray_address),
)


def check(environ: os._Environ | dict[str, str] | None = None, read_only: bool = False) -> None:
    """Refuse the first variable whose value is not allowed (in ``VARIABLES`` order); ``read_only``: the command
    only reads, so a folder it cannot write is allowed."""
    global READ_ONLY
    READ_ONLY = read_only
    environ = os.environ if environ is None else environ
    for var in VARIABLES:
        value = environ.get(var.name)
        if value is None:
            continue
        problem = var.check(value)
        if problem:
            raise BenchxferError(f"${var.name}={value!r}: {problem}; allowed: {var.allowed}")
