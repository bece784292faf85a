"""report.publish on a real MLflow server: the summary table, figures, report.html and runs.parquet on the sweep's
parent run (a trial's own run: tests/test_tracking.py). Everything is read back through MlflowClient."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from benchxfer.cli import main
from benchxfer.report.publish import TABLE_FILE, list_artifact_names, publish
from benchxfer.report.results import read_runs

SWEEP = "publish-demo"
VALUES = {"imagenet": [0.81, 0.83, 0.82], "scratch": [0.71, 0.70, 0.72]}
REPORT_FILES = {"report.html", "runs.parquet", "runs.csv", "summary.csv", "table.md", "bars_chestxray14.png",
                "curves_chestxray14-auroc.png", "heatmap_vs_baseline.png"}


def _trial(client, exp, parent, init, seed, value) -> str:
    key = f"{init}-s{seed}"
    rid = client.create_run(exp, run_name=key, tags={
        "mlflow.parentRunId": parent, "benchxfer.role": "trial", "benchxfer.trial_key": key,
        "benchxfer.task": "multilabel", "benchxfer.metric": "auroc", "benchxfer.status": "finished"}).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(rid, params=[Param(k, v) for k, v in {
        "init": init, "dataset": "chestxray14", "recipe": "systematic-cls", "lr": "0.001", "seed": str(seed),
        "shot": "full"}.items()], metrics=[Metric("test_auroc", value, now, 0)])
    # as the training loop logs it (TrialRun.attach)
    rows = [f"{e},{1 / (e + 1):.4f},{1.2 / (e + 1):.4f},0.001,{value - 0.1 / (e + 1):.4f}" for e in range(3)]
    client.log_text(rid, "\n".join(["epoch,train_loss,val_loss,lr,val_auroc", *rows]) + "\n", "learning_curves.csv")
    client.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture(scope="module")
def sweep(mlflow_uri):
    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.create_experiment(SWEEP)
    parent = client.create_run(exp, run_name=SWEEP, tags={"benchxfer.role": "sweep"}).info.run_id
    for init, vals in VALUES.items():
        for seed, v in enumerate(vals):
            _trial(client, exp, parent, init, seed, v)
    return client, parent


def _table(client, run_id, tmp_path) -> pd.DataFrame:
    local = client.download_artifacts(run_id, TABLE_FILE, str(tmp_path))
    return pd.read_json(local, orient="split").set_index("init")


def test_publish_puts_the_table_and_the_report_on_the_parent_run(sweep, mlflow_uri, home, tmp_path):
    client, parent = sweep
    pub = publish(SWEEP, mlflow_uri)
    assert pub.run_id == parent
    names = set(list_artifact_names(client, parent))
    assert names == {TABLE_FILE} | {f"report/{n}" for n in REPORT_FILES}
    t = _table(client, parent, tmp_path / "a")
    assert sorted(t.index) == ["imagenet", "scratch"]
    im, sc = t.loc["imagenet"], t.loc["scratch"]
    assert im["n"] == 3 and im["mean"] == pytest.approx(82.0)
    assert im["std"] == pytest.approx(100 * np.std(VALUES["imagenet"]), abs=5e-5)  # np.std: ddof 0 by default
    assert im["ddof"] == 0 and im["column"] == "chestxray14 (auroc)" and im["baseline"] == "imagenet"
    half = 4.302652729749464 * 1.0 / math.sqrt(3)  # t(0.975, df=2) * s / sqrt(n)
    assert (im["ci95_low"], im["ci95_high"]) == pytest.approx((82.0 - half, 82.0 + half), abs=5e-5)
    # Welch with equal variances and n: t = 11 / sqrt(2/3), df = 4
    p = 2 * stats.t.sf(11 / math.sqrt(2 / 3), 4)
    assert sc["p_value"] == pytest.approx(p, rel=1e-6) and sc["stars"] == "***"  # p = 1.8e-4
    assert pd.isna(im["p_value"])
    runs = read_runs(client.download_artifacts(parent, "report/runs.parquet", str(tmp_path / "b")))
    assert sorted(runs["value"]) == pytest.approx(sorted(VALUES["imagenet"] + VALUES["scratch"]))
    html = Path(client.download_artifacts(parent, "report/report.html", str(tmp_path / "c"))).read_text()
    assert "curves_chestxray14-auroc.png" in html
    assert client.get_run(parent).data.tags["benchxfer.report"] == "report/report.html"
    # publishing again replaces the table (log_table alone appends) and the report
    publish(SWEEP, mlflow_uri, ddof=1)
    t2 = _table(client, parent, tmp_path / "d")
    assert len(t2) == 2 and t2.loc["imagenet", "ddof"] == 1
    assert t2.loc["imagenet", "std"] == pytest.approx(1.0, abs=5e-5)  # the sample std of 81, 82, 83
    assert set(list_artifact_names(client, parent)) == names


def test_report_command_publishes_and_names_its_std(sweep, mlflow_uri, home):
    _, parent = sweep
    res = CliRunner().invoke(main, ["report", SWEEP, "--tracking-uri", mlflow_uri, "--ddof", "1"])
    assert res.exit_code == 0, res.output
    assert "sample std (ddof=1)" in res.output
    assert (f"MLflow: the summary table (summary_table.json), report.html, 3 figures and runs.parquet are on "
            f"the sweep run {parent}") in res.output
    assert (home.parent / "reports" / SWEEP / "curves_chestxray14-auroc.png").is_file()
    res = CliRunner().invoke(main, ["report", SWEEP, "--tracking-uri", mlflow_uri, "--no-publish"])
    assert res.exit_code == 0 and "MLflow:" not in res.output


def test_publish_without_a_sweep_run_is_one_line(mlflow_uri, home):
    from benchxfer.errors import BenchxferError

    with pytest.raises(BenchxferError, match="no MLflow experiment"):
        publish("never-ran", mlflow_uri)
    said = []  # as the sweep runner calls it: a failure is one line, never an exception
    assert publish("never-ran", mlflow_uri, echo=said.append) is None
    assert said == [(f"MLflow: report not published (sweep 'never-ran': no MLflow experiment of that name at "
                     f"{mlflow_uri})")]
