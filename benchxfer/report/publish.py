"""The result inside MLflow, where users look.

Sweep level, :func:`publish`: the sweep's parent run (tag ``benchxfer.role=sweep``) gets

- ``summary_table.json``, the summary as an MLflow table (the file and tag ``MlflowClient.log_table`` writes, so the
  UI's artifact view renders it): per init and column mean, std (and its ddof), n, the 95 % CI and the p-value against the baseline;
- ``report/``: report.html, the PNG figures, runs.parquet (and runs.csv, summary.csv, table.md).

Publishing again replaces both (never appends rows to the old table, as ``log_table`` would). A trial's own run
is written by :class:`benchxfer.tracking.TrialRun` alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchxfer.errors import BenchxferError
from benchxfer.tracking import REPORT, ROLE

TABLE_FILE = "summary_table.json"
REPORT_DIR = "report"
# the numbers first: the UI shows the leftmost columns of a table
TABLE_COLUMNS = ("init", "column", "mean", "std", "n", "ci95_low", "ci95_high", "p_value", "stars", "ddof",
                 "baseline", "test", "dataset", "metric", "recipe", "shot", "lr", "n_failed", "n_unfinished")


@dataclass
class Published:
    """What :func:`publish` put on the parent run."""

    run_id: str
    table_file: str
    artifacts: list[str] = field(default_factory=list)  # run-relative paths


# ------------------------------------------------------------------ sweep level

def publish(sweep_name: str, tracking_uri: str | None = None, *, report: Any = None, baseline: str | None = "auto",
            test: str = "welch", ddof: int | None = None, echo: Callable[[str], None] | None = None) -> Published | None:
    """Put the sweep's summary table, figures, report.html and runs.parquet on its MLflow parent run.

    ``report``: a :class:`benchxfer.report.write.Report` already written (``benchxfer report`` passes its own);
    without it the runs are read from MLflow, with their learning curves, and a report is written to a
    temporary folder first. ``baseline="auto"``: ``imagenet`` when the sweep has it, else no tests.
    ``echo``: say what was published in one line, and turn a failure (MLflow away, no sweep run) into one
    line and ``None`` instead of an exception (the end of a sweep must not fail on its report).
    """
    if echo is None:
        return _publish(sweep_name, tracking_uri, report, baseline, test, ddof)
    from benchxfer.report.results import _mlflow_errors

    try:
        pub = _publish(sweep_name, tracking_uri, report, baseline, test, ddof)
    except (BenchxferError, *_mlflow_errors()) as err:
        echo(f"MLflow: report not published ({' '.join(str(err).split())[:200]})")
        return None
    n_png = sum(a.endswith(".png") for a in pub.artifacts)
    echo(f"MLflow: the summary table ({pub.table_file}), report.html, {n_png} figures and runs.parquet are on "
         f"the sweep run {pub.run_id}")
    return pub


def _publish(sweep_name: str, tracking_uri: str | None, report: Any, baseline: str | None, test: str,
             ddof: int | None) -> Published:
    from benchxfer.report.results import default_tracking_uri
    from benchxfer.report.summary import DEFAULT_DDOF

    ddof = DEFAULT_DDOF if ddof is None else ddof
    uri = tracking_uri or default_tracking_uri()
    if not uri:
        raise BenchxferError(f"sweep {sweep_name!r}: no MLflow to publish to (no tracking URI, no embedded store)")
    from benchxfer.report.runstore import open_store

    store = open_store(uri)
    parent = parent_run_id(store, sweep_name)
    if report is not None:
        return _upload(store, uri, parent, report)
    from benchxfer.report.results import collect, default_baseline, load_curves
    from benchxfer.report.write import write_report

    runs = collect(sweep_name, uri)
    if baseline == "auto":
        baseline = default_baseline(runs.frame)
    with tempfile.TemporaryDirectory(prefix="benchxfer-report-") as tmp:
        rep = write_report(runs, tmp, baseline=baseline, test=test, ddof=ddof,
                           title=f"benchxfer report: {sweep_name}", history=load_curves(runs, uri))
        return _upload(store, uri, parent, rep)


def parent_run_id(store: Any, sweep: str) -> str:
    """The run tagged ``benchxfer.role=sweep`` in the experiment named ``sweep`` (the latest if several), read
    through ``store`` (``runstore.open_store``)."""
    runs = store.runs(sweep, "sweep")
    if runs:
        return runs[0].info.run_id
    if not store.has_experiment(sweep):
        raise BenchxferError(f"sweep {sweep!r}: no MLflow experiment of that name at {store.uri}")
    raise BenchxferError(f"sweep {sweep!r}: its MLflow experiment has no sweep run (tag {ROLE}=sweep)")


def summary_table(summary: Any):
    """The rows logged as the MLflow table: one per init and column (see TABLE_COLUMNS)."""
    t = summary.table.loc[:, list(TABLE_COLUMNS)].copy()
    for col in ("mean", "std", "ci95_low", "ci95_high"):  # in the printed scale: 4 decimals are plenty
        t[col] = t[col].round(4)
    t["shot"] = t["shot"].astype("object").where(t["shot"].notna(), None)
    return t


def _upload(store: Any, uri: str, run_id: str, report: Any) -> Published:
    from benchxfer.tracking import LOGGED_ARTIFACTS

    run = store.run(run_id)
    files = _artifacts(uri, run.info.artifact_uri)
    present = files.names()
    for old in (TABLE_FILE, REPORT_DIR):  # replace, never append to, an earlier publication
        if old in present:
            files.delete(old)
    with tempfile.TemporaryDirectory(prefix="benchxfer-table-") as tmp:
        # as MlflowClient.log_table writes a new table (it needs a server for the embedded store's artifacts)
        table = Path(tmp) / TABLE_FILE
        summary_table(report.summary).to_json(table, orient="split", index=False, date_format="iso")
        files.log(table)
    logged = json.loads(run.data.tags.get(LOGGED_ARTIFACTS, "[]"))
    if {"path": TABLE_FILE, "type": "table"} not in logged:  # how the UI knows to render it as a table
        store.set_tag(run_id, LOGGED_ARTIFACTS, json.dumps([*logged, {"path": TABLE_FILE, "type": "table"}]))
    names = [TABLE_FILE]
    for path in report.files:
        files.log(Path(path), REPORT_DIR)
        names.append(f"{REPORT_DIR}/{Path(path).name}")
    store.set_tag(run_id, REPORT, f"{REPORT_DIR}/report.html")
    return Published(run_id, TABLE_FILE, names)


def _artifacts(uri: str, artifact_uri: str) -> _LocalArtifacts | _RepoArtifacts:
    """A run's artifacts: its folder on this machine, written as files (the embedded store's; no server, no
    MLflow import), else MLflow's artifact repository for ``artifact_uri``."""
    from benchxfer.tracking import local_artifact_dir

    folder = local_artifact_dir(uri, artifact_uri)
    if folder is not None:
        return _LocalArtifacts(folder)
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return _RepoArtifacts(get_artifact_repository(artifact_uri, tracking_uri=uri))


class _LocalArtifacts:
    """A run's artifact folder, as MLflow's local artifact repository writes it: each file copied whole under a
    temporary name, then renamed into place (:func:`benchxfer.trialdir.write_atomically`)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def names(self) -> set[str]:
        return {p.name for p in self.folder.iterdir()} if self.folder.is_dir() else set()

    def delete(self, name: str) -> None:
        path = self.folder / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def log(self, file: Path, under: str | None = None) -> None:
        from benchxfer.trialdir import write_atomically

        dest = self.folder / under if under else self.folder
        dest.mkdir(parents=True, exist_ok=True)
        write_atomically(dest / file.name, lambda tmp: shutil.copy2(file, tmp))


class _RepoArtifacts:
    """A run's artifacts through MLflow's artifact repository (a server's, an object store)."""

    def __init__(self, repo: Any):
        self.repo = repo

    def names(self) -> set[str]:
        return {f.path for f in self.repo.list_artifacts()}

    def delete(self, name: str) -> None:
        self.repo.delete_artifacts(name)

    def log(self, file: Path, under: str | None = None) -> None:
        self.repo.log_artifact(str(file), under)


def list_artifact_names(client: Any, run_id: str, path: str | None = None) -> Iterable[str]:
    """Every file path under ``path`` of the run's artifacts (recursive)."""
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            yield from list_artifact_names(client, run_id, f.path)
        else:
            yield f.path
