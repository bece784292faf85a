"""runstore: the embedded store read and tagged as its SQLite file, held to what the installed MLflow's own client
reads and writes on the same store (the tables are MLflow's schema, not its API); a report of the embedded store
imports no MLflow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS
from test_report_mlflow import add_trial

from benchxfer.errors import BenchxferError
from benchxfer.report.runstore import ClientRuns, SqliteRuns, open_store, sqlite_file
from benchxfer.tracking import LOGGED_ARTIFACTS

pytestmark = pytest.mark.fast
SWEEP = "mlflow-report"  # add_trial's sweep tag


def view(run) -> tuple:
    """What report.results and report.publish read of a run (NaN as a string: NaN != NaN)."""
    i, d = run.info, run.data
    metrics = {k: "nan" if math.isnan(v) else v for k, v in d.metrics.items()}
    return i.run_id, i.run_name, i.status, i.start_time, i.artifact_uri, d.tags, d.params, metrics


@pytest.fixture
def store(tmp_path):
    """A sqlite store written by MLflow's client: a sweep's parent and trials (finished, failed, running, a NaN
    metric, a deleted run, a second sweep whose runs must not show)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(SWEEP)
    other = client.create_experiment("other")
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep"}, run_name=SWEEP).info.run_id
    ids = [add_trial(client, exp, parent, f"k{s}", "scratch", s, 0.5 + s / 10, st)
           for s, st in enumerate(["finished", "failed", "running"])]
    time.sleep(0.01)  # distinct start times: the newest first
    ids.append(add_trial(client, exp, parent, "k3", "imagenet", 3, None, "finished"))
    client.log_metric(ids[-1], "test_auroc", math.nan)
    gone = add_trial(client, exp, parent, "k4", "imagenet", 4, 0.9, "finished")
    client.delete_run(gone)
    add_trial(client, other, parent, "k5", "imagenet", 5, 0.9, "finished")
    return uri, client, parent, ids, gone


def test_sqlite_reads_what_mlflows_client_reads(store):
    uri, client, parent, ids, gone = store
    direct, through = SqliteRuns(sqlite_file(uri)), ClientRuns(client)
    assert isinstance(open_store(uri), SqliteRuns) and isinstance(open_store("http://127.0.0.1:1"), ClientRuns)
    for role in ("trial", "sweep"):
        runs = direct.runs(SWEEP, role)
        assert [view(r) for r in runs] == [view(r) for r in through.runs(SWEEP, role)]
    trials = direct.runs(SWEEP, "trial")
    assert {r.info.run_id for r in trials} == set(ids) and gone not in {r.info.run_id for r in trials}
    assert [r.info.start_time for r in trials] == sorted((r.info.start_time for r in trials), reverse=True)
    assert math.isnan(direct.run(ids[-1]).data.metrics["test_auroc"])
    assert direct.runs("no-such-sweep", "trial") == []
    assert direct.has_experiment(SWEEP) and through.has_experiment(SWEEP) and not direct.has_experiment("no-such-sweep")
    assert direct.uri == uri and through.uri == uri
    assert view(direct.run(parent)) == view(client.get_run(parent))


def test_a_tag_set_on_the_file_is_what_mlflows_client_reads(store):
    uri, client, parent, _, gone = store
    direct = SqliteRuns(sqlite_file(uri))
    assert LOGGED_ARTIFACTS == MLFLOW_LOGGED_ARTIFACTS
    direct.set_tag(parent, LOGGED_ARTIFACTS, json.dumps([{"path": "t.json", "type": "table"}]))
    direct.set_tag(parent, "benchxfer.report", "report/a.html")
    direct.set_tag(parent, "benchxfer.report", "report/report.html")  # replaced, as MLflow's set_tag does
    tags = client.get_run(parent).data.tags
    assert tags["benchxfer.report"] == "report/report.html"
    assert json.loads(tags[MLFLOW_LOGGED_ARTIFACTS]) == [{"path": "t.json", "type": "table"}]
    client.log_batch(parent, metrics=[Metric("m", 1.0, 0, 0)])  # MLflow still writes the store after us
    with pytest.raises(BenchxferError, match="deleted"):
        direct.set_tag(gone, "benchxfer.report", "x")
    with pytest.raises(BenchxferError, match="no such run"):
        direct.set_tag("0" * 32, "benchxfer.report", "x")
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        SqliteRuns(sqlite_file(uri).parent / "none.db").runs(SWEEP, "trial")


def test_sqlite_file_of_a_uri():
    assert str(sqlite_file("sqlite:////abs/mlflow.db")) == "/abs/mlflow.db"
    assert str(sqlite_file("sqlite:///rel.db?timeout=5")) == "rel.db"
    assert sqlite_file("sqlite:///:memory:") is None and sqlite_file("http://127.0.0.1:5000") is None


def test_report_of_the_embedded_store_imports_no_mlflow_and_no_scipy_stats(home, tmp_path):
    """``benchxfer report`` of the home's embedded store, with no baseline (no t-test), in a process of its own:
    neither MLflow nor SQLAlchemy nor scipy.stats is imported, and the report is published on the sweep's run."""
    home.mkdir(parents=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(SWEEP)
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep"}, run_name=SWEEP).info.run_id
    for s in range(3):
        add_trial(client, exp, parent, f"scratch-s{s}", "scratch", s, 0.7 + s / 100, "finished")
    code = ("import sys; from benchxfer.cli import main\n"
            "try:\n    main(['report', 'mlflow-report'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('LOADED', sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
            "('mlflow', 'sqlalchemy', 'alembic')} | ({'scipy.stats'} & set(sys.modules))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []"
    assert client.get_run(parent).data.tags["benchxfer.report"] == "report/report.html"
    assert (tmp_path / "reports" / SWEEP / "report.html").is_file()
