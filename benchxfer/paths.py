"""Where benchxfer keeps its state on disk.

Everything lives under one home folder: ``$BENCHXFER_HOME``, or ``~/.benchxfer``.

    <home>/mlflow.db          the embedded MLflow store (SQLite)
    <home>/mlartifacts/       its artifacts
    <home>/runs/<sweep>/      one folder per sweep: the resolved sweep, the Ray Tune experiment,
                              and trials/<trial key>/ with epoch checkpoints and result.json
    <home>/zoo/               the init zoo (``$BENCHXFER_ZOO`` or ``--zoo`` override it)
    <home>/data/synthetic/    synthetic datasets written on first use
    <home>/logs/              the traceback of any unexpected error (the CLI names the file)

The command line calls :func:`pin` once at start-up: a relative ``$BENCHXFER_HOME`` (or ``$BENCHXFER_ZOO``,
``$BENCHXFER_CACHE``) is resolved against the current folder and written back as an absolute path, so every path
handed to Ray (whose workers run in folders of their own, and receive exactly these variables) is absolute. A
``~user`` that names no user, and a symbolic link to nothing (an unmounted share), are named, never followed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from benchxfer.errors import BenchxferError

PINNED = ("BENCHXFER_HOME", "BENCHXFER_ZOO", "BENCHXFER_CACHE")  # made absolute once; passed to every Ray worker


def expand_user(value: str) -> Path:
    """``value`` with a leading ``~`` or ``~user`` expanded; a ``~user`` naming no user on this machine is a
    ``ValueError`` saying so (Python's own is ``RuntimeError: Could not determine home directory.``)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        head = value.split("/", 1)[0]
        raise ValueError(f"{head!r} names no user on this machine, so it cannot be expanded; give the "
                         "folder's full path") from None


def dangling_link(path: Path) -> str | None:
    """The first part of ``path`` that is a symbolic link to nothing (an unmounted share, a moved folder), said in
    words; None when there is none."""
    probe = Path(os.path.abspath(path))
    for p in (probe, *probe.parents):
        if os.path.islink(p) and not os.path.exists(p) and not _loops(p):
            return (f"{p} is a symbolic link to {os.readlink(p)}, which does not exist (an unmounted share?); "
                    "mount it, or give a folder")
    return None


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var)
    if value is None:
        return None
    if not value.strip():
        raise BenchxferError(f"${var} is set but empty; unset it or give a folder")
    try:
        path = expand_user(value)
    except ValueError as err:
        raise BenchxferError(f"${var}={value!r}: {err}") from None
    if (problem := dangling_link(path)) is not None:  # never followed: its target would be made a local folder
        raise BenchxferError(f"${var}={value!r}: {problem}")
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError for a symlink loop
        raise BenchxferError(f"${var}={value!r}: {folder_problem(path)}; give a folder") from None


def pin(write: bool = True) -> None:
    """Resolve the home (and zoo) folder once, to absolute paths, for this process and every child of it.
    ``write`` False: the command only reads (``status``, ``report``), so a read-only home is fine."""
    for var in PINNED:
        path = _env_path(var)
        if path is not None:
            os.environ[var] = str(path)
    check_folder(home(), "$BENCHXFER_HOME" if "BENCHXFER_HOME" in os.environ else "the home folder", write)
    if "BENCHXFER_ZOO" in os.environ:
        check_folder(zoo_dir(), "$BENCHXFER_ZOO", write)


def check_folder(path: Path, what: str, write: bool = True) -> None:
    """A folder benchxfer writes into must be a folder (or not exist yet, under a folder) and writable."""
    problem = folder_problem(path, write)
    if problem:
        raise BenchxferError(f"{what} {path}: {problem}")


def folder_problem(path: Path, write: bool = True) -> str | None:
    """Why ``path`` cannot be a folder benchxfer writes into (None: it can): its first existing ancestor is a
    file, not writable (only asked with ``write``), a symlink loop or a link to nothing."""
    probe = Path(os.path.abspath(path))
    while True:
        try:
            os.stat(probe)
            break
        except FileNotFoundError:
            if os.path.islink(probe):
                return f"{probe} is a symbolic link to {os.readlink(probe)}, which does not exist"
        except OSError as err:
            if err.errno == errno.ELOOP:
                return f"{next(p for p in (*reversed(probe.parents), probe) if _loops(p))} is a symbolic link loop"
            if not isinstance(err, NotADirectoryError):
                return f"{probe}: {err.strerror or err}"
        if probe == probe.parent:
            return None
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if write and not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _loops(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


def home() -> Path:
    return _env_path("BENCHXFER_HOME") or (Path.home() / ".benchxfer").resolve()


def runs_dir() -> Path:
    return home() / "runs"


def sweep_dir(sweep: str) -> Path:
    """``<home>/runs/<sweep>``; a link there that leads nowhere (a loop, or to nothing) is named, never read as "no
    such sweep" nor followed to a new folder."""
    path = runs_dir() / sweep
    if os.path.islink(path) and not os.path.exists(path):
        what = (f"{path} is a symbolic link loop" if _loops(path) else
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist")
        raise BenchxferError(f"sweep {sweep!r}: {what}; restore the sweep's folder there, or remove the link")
    return path


def trial_dir(sweep: str, key: str) -> Path:
    return sweep_dir(sweep) / "trials" / key


def logs_dir() -> Path:
    return home() / "logs"


def zoo_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    return _env_path("BENCHXFER_ZOO") or home() / "zoo"


def synthetic_dir() -> Path:
    return home() / "data" / "synthetic"
