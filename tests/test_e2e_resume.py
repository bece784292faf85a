"""A sweep whose driver is killed with SIGKILL mid-way, then `benchxfer resume`: every trial finishes, finished
trials are not run again, and each trial key has exactly one MLflow run, FINISHED. Also: a NaN loss fails
only its own trial, with the reason."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

SWEEP = """
name: {name}
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {{n_train: 64, n_val: 32, n_test: 32, size: 32, seed: 5}}
lr: {lr}
seeds: 3
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: {epochs}, loader_workers: 0}}
resources: {{workers: 1, cpus_per_worker: 1, max_concurrent: 1}}
failure: {{max_retries: 0}}
"""


def runs_by_key(uri, sweep):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(sweep)
    out: dict[str, list] = {}
    for r in c.search_runs([exp.experiment_id], max_results=200):
        if r.data.tags.get("benchxfer.role") == "trial":
            out.setdefault(r.data.tags["benchxfer.trial_key"], []).append(r)
    return out


def test_driver_killed_then_resume(tmp_path, ray_session, mlflow_uri):
    path = tmp_path / "killme.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(name="killme", lr="[0.001]", epochs=3)))
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "benchxfer.cli", "sweep", str(path), "--tracking-uri", mlflow_uri,
                             "--address", address], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    trials = paths.sweep_dir("killme") / "trials"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(trials.glob("*/result.json")):
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.5)
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert finished_before, "no trial finished in time"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(finished_before) < 3

    res = CliRunner().invoke(main, ["resume", "killme", "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "3 of 3 trials finished." in res.output
    for key, mtime in finished_before.items():  # not run again
        assert (trials / key / "result.json").stat().st_mtime_ns == mtime
    runs = runs_by_key(mlflow_uri, "killme")
    assert len(runs) == 3
    for key, rs in runs.items():
        assert len(rs) == 1 and rs[0].info.status == "FINISHED", key
        assert json.loads((trials / key / "result.json").read_text())["mlflow_run_id"] == rs[0].info.run_id


def test_nan_loss_fails_only_its_trial(tmp_path, ray_session, mlflow_uri):
    path = tmp_path / "nan.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(name="nanlr", lr="[0.001, 1.0e+30]", epochs=1)))
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert "3 of 6 trials finished, 3 failed or unfinished" in res.output, res.output
    runs = runs_by_key(mlflow_uri, "nanlr")
    for key, rs in runs.items():
        assert len(rs) == 1
        if "_lr1e+30_" in key:
            assert rs[0].info.status == "FAILED"
            assert "loss became nan" in rs[0].data.tags["benchxfer.error"].lower()
        else:
            assert rs[0].info.status == "FINISHED"
    res = CliRunner().invoke(main, ["status", "nanlr"])
    assert "3 finished, 3 failed" in res.output
