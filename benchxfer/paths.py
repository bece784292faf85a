"""Where benchxfer keeps its state on disk.

Everything lives under one home folder: ``$BENCHXFER_HOME``, or ``~/.benchxfer``.

    <home>/mlflow.db          the embedded MLflow store (SQLite)
    <home>/mlartifacts/       its artifacts
    <home>/runs/<sweep>/      one folder per sweep: the resolved sweep, the Ray Tune experiment,
                              and trials/<trial key>/ with epoch checkpoints and result.json
    <home>/zoo/               the init zoo (``$BENCHXFER_ZOO`` or ``--zoo`` override it)
    <home>/data/synthetic/    synthetic datasets written on first use
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("BENCHXFER_HOME", Path.home() / ".benchxfer")).expanduser().resolve()


def runs_dir() -> Path:
    return home() / "runs"


def sweep_dir(sweep: str) -> Path:
    return runs_dir() / sweep


def trial_dir(sweep: str, key: str) -> Path:
    return sweep_dir(sweep) / "trials" / key


def zoo_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("BENCHXFER_ZOO")
    return Path(env).expanduser().resolve() if env else home() / "zoo"


def synthetic_dir() -> Path:
    return home() / "data" / "synthetic"
