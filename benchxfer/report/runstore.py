"""A sweep's MLflow runs as ``report.results`` and ``report.publish`` read them, and the tags a report sets: one small
interface, two stores.

- :class:`SqliteRuns`: a ``sqlite:`` tracking URI (the home's embedded store, ``<home>/mlflow.db``) is a file on
  this machine. It is read, and a run's tag set, with Python's ``sqlite3`` on MLflow's own tables (``experiments``,
  ``runs``, ``tags``, ``params``, ``latest_metrics``), without importing MLflow: its client with the SQLAlchemy store
  takes about 2 s of CPU to import and open, more than the rest of ``benchxfer report`` but its figures (issue 31:
  the report under 3 s). These tables are MLflow's schema, not its API: ``tests/test_runstore.py`` reads and writes
  a store made by the installed MLflow's client through both classes and compares them.
- :class:`ClientRuns`: any other URI (a tracking server), through MLflow's client (``tracking.client``).

:func:`open_store` picks one. Both return runs shaped as MLflow's ``Run`` (``info.run_id``, ``info.run_name``,
``info.status``, ``info.start_time``, ``info.artifact_uri``; ``data.tags``, ``data.params``, ``data.metrics``, the
latest value of each metric), the active runs only, newest first.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchxfer.errors import BenchxferError
from benchxfer.tracking import ROLE

SQLITE = "sqlite:///"
LOCK_WAIT_S = 30.0  # a server writing the same file holds its lock this long at most


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_name: str | None
    status: str
    start_time: int | None
    artifact_uri: str | None


@dataclass(frozen=True)
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    info: RunInfo
    data: RunData


class RunStore(Protocol):
    uri: str  # the tracking URI, for messages

    def has_experiment(self, name: str) -> bool: ...

    def runs(self, experiment: str, role: str) -> list[Any]:
        """The active runs tagged ``benchxfer.role=role`` in the experiment named ``experiment``, newest first
        (none when there is no such experiment)."""

    def run(self, run_id: str) -> Any: ...

    def set_tag(self, run_id: str, key: str, value: str) -> None: ...


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` tracking URI (``PATH`` absolute or relative, as SQLAlchemy reads it), else
    None (a server, an in-memory database)."""
    if not uri.startswith(SQLITE):
        return None
    path = uri[len(SQLITE):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def open_store(uri: str) -> RunStore:
    """The store the runs at ``uri`` are read and tagged through (see the module docstring)."""
    db = sqlite_file(uri)
    if db is not None:
        return SqliteRuns(db, uri)
    from benchxfer.tracking import client

    return ClientRuns(client(uri))


def errors() -> tuple[type[BaseException], ...]:
    """What reading or tagging runs raises when the store is away or refuses: MLflow's errors (imported only when
    one is being matched), requests' (OSErrors) and SQLite's."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError, sqlite3.Error)


class ClientRuns:
    """The runs through MLflow's client (any tracking URI)."""

    PAGE = 1000

    def __init__(self, client: Any):
        self.client = client
        self.uri = client.tracking_uri

    def has_experiment(self, name: str) -> bool:
        return self.client.get_experiment_by_name(name) is not None

    def runs(self, experiment: str, role: str) -> list[Any]:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE}` = '{role}'",
                                           order_by=["attributes.start_time DESC"], max_results=self.PAGE,
                                           page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)


class SqliteRuns:
    """The runs of a ``sqlite:`` store, read and tagged as its file (see the module docstring)."""

    def __init__(self, db: Path, uri: str | None = None):
        self.db = db
        self.uri = uri or f"{SQLITE}{db}"

    def _connect(self, write: bool = False) -> sqlite3.Connection:
        if not self.db.is_file():  # sqlite3 would make an empty database
            raise FileNotFoundError(f"no MLflow store at {self.db}")
        return sqlite3.connect(f"{self.db.resolve().as_uri()}?mode={'rw' if write else 'ro'}", uri=True,
                               timeout=LOCK_WAIT_S)

    @staticmethod
    def _experiment(con: sqlite3.Connection, name: str) -> list[int]:
        # MLflow's default workspace: the one its client names an experiment in
        return [r[0] for r in con.execute(
            "SELECT experiment_id FROM experiments WHERE name = ? AND workspace = 'default'", (name,))]

    def has_experiment(self, name: str) -> bool:
        with closing(self._connect()) as con:
            return bool(self._experiment(con, name))

    def runs(self, experiment: str, role: str) -> list[Run]:
        with closing(self._connect()) as con:
            ids = self._experiment(con, experiment)
            if not ids:
                return []
            uuids = [r[0] for r in con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' AND t.value = ? "
                "ORDER BY r.start_time DESC, r.run_uuid", (ROLE, ids[0], role))]
            return self._read(con, uuids)

    def run(self, run_id: str) -> Run:
        with closing(self._connect()) as con:
            found = self._read(con, [run_id])
        if not found:
            raise BenchxferError(f"no MLflow run {run_id} in {self.db}")
        return found[0]

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        """As MLflow's ``set_tag`` on its SQLAlchemy store: the run must be active; the tag is replaced."""
        con = self._connect(write=True)
        try:
            with con:
                stage = con.execute("SELECT lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
                if stage is None or stage[0] != "active":
                    raise BenchxferError(f"MLflow run {run_id} in {self.db}: "
                                         f"{'no such run' if stage is None else 'deleted'}; its tag {key} not set")
                con.execute("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                            "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value", (key, value, run_id))
        finally:
            con.close()

    @staticmethod
    def _read(con: sqlite3.Connection, uuids: list[str]) -> list[Run]:
        """The runs ``uuids``, in that order (those the store has)."""
        wanted = (json.dumps(uuids),)
        among = "WHERE run_uuid IN (SELECT value FROM json_each(?))"
        tags: dict[str, dict[str, str]] = {u: {} for u in uuids}
        params: dict[str, dict[str, str]] = {u: {} for u in uuids}
        metrics: dict[str, dict[str, float]] = {u: {} for u in uuids}
        for u, k, v in con.execute(f"SELECT run_uuid, key, value FROM tags {among}", wanted):
            tags[u][k] = v
        for u, k, v in con.execute(f"SELECT run_uuid, key, value FROM params {among}", wanted):
            params[u][k] = v
        for u, k, v, nan in con.execute(f"SELECT run_uuid, key, value, is_nan FROM latest_metrics {among}", wanted):
            metrics[u][k] = math.nan if nan else float(v)
        info = {u: RunInfo(u, name, status, start, art) for u, name, status, start, art in con.execute(
            f"SELECT run_uuid, name, status, start_time, artifact_uri FROM runs {among}", wanted)}
        return [Run(info[u], RunData(tags[u], params[u], metrics[u])) for u in uuids if u in info]
