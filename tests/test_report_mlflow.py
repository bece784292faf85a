"""results.load_runs from a real MLflow server, populated in the layout the sweep writes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from test_results import result_record, write_sweep

from benchxfer.cli import main
from benchxfer.report.results import RUN_COLUMNS, RUN_DTYPES, collect, load_runs

SWEEP = "mlflow-report"
VALUES = {"imagenet": [0.81, 0.83, 0.82], "scratch": [0.71, 0.70, 0.72]}


def add_trial(client: MlflowClient, exp: str, parent: str, key: str, init: str, seed: int, value: float | None,
              status: str, error: str | None = None, shot: str = "full") -> str:
    tags = {"mlflow.parentRunId": parent, "benchxfer.role": "trial", "benchxfer.sweep": SWEEP,
            "benchxfer.trial_key": key, "benchxfer.task": "multilabel", "benchxfer.metric": "auroc",
            "benchxfer.status": status, "benchxfer.version": "0.1.0", "benchxfer.git_commit": "abc1234"}
    if error:
        tags["benchxfer.error"] = error
    run = client.create_run(exp, tags=tags, run_name=key)
    rid = run.info.run_id
    params = [Param(k, v) for k, v in {"init": init, "dataset": "chestxray14", "recipe": "systematic-cls",
                                       "lr": "0.0002", "seed": str(seed), "shot": shot, "batch_size": "32"}.items()]
    now = int(time.time() * 1000)
    metrics = [Metric(name, v, now, epoch) for epoch in range(3)
               for name, v in (("train_loss", 1.0 / (epoch + 1)), ("val_auroc", 0.6 + 0.05 * epoch))]
    if value is not None:
        metrics += [Metric(name, v, now, 0) for name, v in {
            "test_auroc": value, "best_epoch": 2, "epochs_run": 3, "wall_seconds": 30.0,
            "accelerator_hours": 0.0}.items()]
    client.log_batch(rid, metrics=metrics, params=params)
    if status in ("finished", "failed"):
        client.set_terminated(rid, status=status.upper())
    return rid


@pytest.fixture(scope="module")
def populated(mlflow_uri):
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.create_experiment(SWEEP)
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep", "benchxfer.sweep": SWEEP},
                               run_name=SWEEP).info.run_id
    ids = {}
    for init, vals in VALUES.items():
        for seed, v in enumerate(vals):
            ids[f"{init}-s{seed}"] = add_trial(client, exp, parent, f"{init}-s{seed}", init, seed, v, "finished")
    ids["scratch-s3"] = add_trial(client, exp, parent, "scratch-s3", "scratch", 3, None, "failed",
                                  error="ValueError: loss is NaN")
    ids["scratch-s4"] = add_trial(client, exp, parent, "scratch-s4", "scratch", 4, None, "running")
    return mlflow_uri, ids


def test_load_runs_reads_the_trial_runs(populated, home):
    uri, ids = populated
    # result files with other values exist too: MLflow, being reachable, must win
    write_sweep(SWEEP, [result_record(SWEEP, "imagenet-s0", "imagenet", "chestxray14", 0, 0.11)])
    df = load_runs(SWEEP, uri)
    assert tuple(df.columns) == RUN_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == RUN_DTYPES
    assert df.attrs["source"] == f"MLflow {uri}"
    assert len(df) == 8  # the parent run is not a trial
    d = df.set_index("trial_key")
    assert d.loc["imagenet-s0", "value"] == 0.81 and d.loc["imagenet-s0", "mlflow_run_id"] == ids["imagenet-s0"]
    assert d.loc["imagenet-s0", "lr"] == 2e-4 and d.loc["imagenet-s0", "seed"] == 0
    assert pd.isna(d.loc["imagenet-s0", "shot"]) and d.loc["imagenet-s0", "epochs_run"] == 3
    assert d.loc["imagenet-s0", "task"] == "multilabel" and d.loc["imagenet-s0", "metric"] == "auroc"
    assert d.loc["scratch-s3", "status"] == "failed" and pd.isna(d.loc["scratch-s3", "value"])
    assert d.loc["scratch-s4", "status"] == "running"
    assert collect(SWEEP, uri).errors == {f"{SWEEP}/scratch-s3": "ValueError: loss is NaN"}


def test_report_from_mlflow(populated, home):
    uri, _ = populated
    res = CliRunner().invoke(main, ["report", SWEEP, "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    assert f"Source: MLflow {uri}" in res.output
    im = np.array(VALUES["imagenet"]) * 100  # the ± is np.std (ddof 0), as the studies computed it
    assert f"**{im.mean():.2f} ± {im.std():.2f}**" in res.output
    assert "6 finished trials averaged; not averaged: 1 failed, 1 unfinished" in res.output
    assert "loss is NaN" in (home.parent / "reports" / SWEEP / "report.html").read_text()


def test_unknown_experiment_falls_back_then_fails_with_the_places(populated, home):
    uri, _ = populated
    res = CliRunner().invoke(main, ["report", "not-there", "--tracking-uri", uri])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"MLflow experiment 'not-there' at {uri}" in res.output


@pytest.mark.fast
def test_embedded_store_is_the_default(home):
    """With no URI and no $MLFLOW_TRACKING_URI, the runs come from <home>/mlflow.db (the embedded store)."""
    home.mkdir(parents=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.create_experiment(SWEEP)
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep"}, run_name=SWEEP).info.run_id
    add_trial(client, exp, parent, "imagenet-s0", "imagenet", 0, 0.875, "finished", shot="5")
    runs = collect(SWEEP)
    assert runs.source == f"MLflow sqlite:///{home / 'mlflow.db'}"
    assert runs.frame["value"].tolist() == [0.875] and runs.frame["shot"].tolist() == [5]


@pytest.mark.fast
def test_report_of_the_embedded_store_starts_no_server(home):
    """The home's embedded store, laid out as its local server writes it (experiments' artifacts under
    ``mlflow-artifacts:/``, files in ``<home>/mlartifacts``): ``benchxfer report`` reads the runs, their learning
    curves and publishes the report without starting a server (the tier guard fails a fast test that starts one)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from benchxfer.report.publish import TABLE_FILE
    from benchxfer.report.results import load_curves
    from benchxfer.tracking import REPORT, local_artifact_dir

    home.mkdir(parents=True)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(SWEEP, artifact_location="mlflow-artifacts:/7")  # as the server names it
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep"}, run_name=SWEEP).info.run_id
    curves = {}
    for init, vals in VALUES.items():
        for seed, v in enumerate(vals):
            rid = add_trial(client, exp, parent, f"{init}-s{seed}", init, seed, v, "finished")
            folder = home / "mlartifacts" / "7" / rid / "artifacts"
            assert local_artifact_dir(uri, client.get_run(rid).info.artifact_uri) == folder
            curves[f"{init}-s{seed}"] = [0.9 - 0.1 * e - seed / 100 for e in range(3)]
            text = "epoch,train_loss,val_loss,lr,val_auroc\n" + "".join(
                f"{e},{loss},{loss + 0.1},0.001,{v - 0.1 / (e + 1)}\n" for e, loss in enumerate(curves[f"{init}-s{seed}"]))
            (home / "learning_curves.csv").write_text(text)
            LocalArtifactRepository(str(folder)).log_artifact(str(home / "learning_curves.csv"))

    runs = collect(SWEEP)
    history = load_curves(runs)
    assert sorted(history["trial_key"].unique()) == sorted(curves)
    for key, losses in curves.items():
        assert history[history["trial_key"] == key].sort_values("epoch")["train_loss"].tolist() == losses

    res = CliRunner().invoke(main, ["report", SWEEP])
    assert res.exit_code == 0, res.output
    assert "local server" not in res.output
    out = home.parent / "reports" / SWEEP
    assert (out / "curves_chestxray14-auroc.png").is_file()
    published = home / "mlartifacts" / "7" / parent / "artifacts"
    assert sorted(p.name for p in (published / "report").iterdir()) == sorted(p.name for p in out.iterdir()
                                                                              if not p.name.startswith("."))
    table = pd.read_json(published / TABLE_FILE, orient="split").set_index("init")
    assert table.loc["imagenet", "mean"] == pytest.approx(82.0) and table.loc["scratch", "n"] == 3
    tags = client.get_run(parent).data.tags
    assert tags[REPORT] == "report/report.html"
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [{"path": TABLE_FILE, "type": "table"}]
    res = CliRunner().invoke(main, ["report", SWEEP])  # again: the table replaced, not appended to
    assert res.exit_code == 0, res.output
    assert len(pd.read_json(published / TABLE_FILE, orient="split")) == 2
    assert json.loads(client.get_run(parent).data.tags["mlflow.loggedArtifacts"]) == [
        {"path": TABLE_FILE, "type": "table"}]


@pytest.mark.fast
def test_local_artifact_dir(home):
    """Which artifact URIs are files on this machine: the embedded store's (by its SQLite file or the home's
    running server's URI), file: URIs; not another server's or an object store's."""
    from benchxfer.tracking import LocalServer, local_artifact_dir

    home.mkdir(parents=True)
    arts = "mlflow-artifacts:/3/abc/artifacts"
    assert local_artifact_dir(f"sqlite:///{home / 'mlflow.db'}", arts) == home / "mlartifacts" / "3/abc/artifacts"
    assert local_artifact_dir("sqlite:////elsewhere/mlflow.db", arts) is None
    assert local_artifact_dir("http://127.0.0.1:5123", arts) is None  # no server of the home's
    (home / LocalServer.STATE).write_text(json.dumps({"pid": 1, "port": 5123, "uri": "http://127.0.0.1:5123"}))
    assert local_artifact_dir("http://127.0.0.1:5123", arts) == home / "mlartifacts" / "3/abc/artifacts"
    assert local_artifact_dir("http://127.0.0.1:5124", arts) is None
    assert local_artifact_dir(f"sqlite:///{home / 'mlflow.db'}", "mlflow-artifacts://host:5000/3/abc") is None
    assert local_artifact_dir("http://x", "file:///data/mlruns/1/abc/artifacts") == Path("/data/mlruns/1/abc/artifacts")
    assert local_artifact_dir("http://x", "s3://bucket/1/abc/artifacts") is None
    # a sqlite store made by MLflow's client without a server names its runs' folders by path
    assert local_artifact_dir("sqlite:///x.db", "/data/mlruns/1/abc/artifacts") == Path("/data/mlruns/1/abc/artifacts")
    assert local_artifact_dir("http://x", "/data/mlruns/1/abc/artifacts") is None  # the server's machine's
