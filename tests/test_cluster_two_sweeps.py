"""Two `benchxfer sweep` processes at once on one machine, with the same BENCHXFER_HOME and no `--address`: each starts
a local Ray session of its own; the first's trial is a TorchTrainer, whose Ray Train clean-up finds its own session
among the two; both finish; the second uses the home's MLflow server that the first started (one server, one SQLite
file), and the server is gone once both have ended. The home is given relative to the sweeps' working folder
(``BENCHXFER_HOME=home``): each trial's result lands in that folder's home (before the home was made absolute at
start-up, a trial's result landed in Ray's working folder and the sweep said "0 of 1 trials finished"). Run it
under the Ray lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from e2e_support import runs_by_key, write_sweep

from benchxfer.tracking import LocalServer

pytestmark = pytest.mark.e2e


def test_two_sweeps_at_once_both_finish_with_one_mlflow_server(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "BENCHXFER_HOME": "home", "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "BENCHXFER_ZOO"):
        env.pop(k, None)
    procs, logs = {}, {}
    for name, trainer in (("first", "torch"), ("second", "direct")):
        # the first's trial is a TorchTrainer: its start and Ray Train's clean-up after it run while the second
        # sweep's Ray session is up beside it (the clean-up must find its own session among the two)
        path = write_sweep(tmp_path, name, seeds=1, epochs=1, n_train=32, trainer=trainer)
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = subprocess.Popen([sys.executable, "-m", "benchxfer.cli", "sweep", str(path)], env=env,
                                       cwd=tmp_path, stdout=logs[name].open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(3)  # the second starts while the first starts Ray and MLflow
    try:
        for name, proc in procs.items():
            assert proc.wait(timeout=400) == 0, logs[name].read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    out = {n: p.read_text() for n, p in logs.items()}
    for text in out.values():
        assert "1 of 1 trials finished." in text, text[-3000:]
        assert "multiple active Ray instances" not in text
    named = {t.split("MLflow: the local server on ")[1].split()[0] for t in out.values()}
    uris = {n: t.split("MLflow runs: ")[1].split("/#/")[0] for n, t in out.items()}
    assert uris["first"] == uris["second"]  # one server for the home
    assert LocalServer(home=home).running() is None  # stopped by the last of its users
    # both sweeps' runs are in the one store: one run per trial (read by MLflow from the store the server kept)
    store = f"sqlite:///{home / 'mlflow.db'}"
    for name in ("first", "second"):
        runs = runs_by_key(store, name)
        assert len(runs) == 1 and all(len(r) == 1 and r[0].info.status == "FINISHED" for r in runs.values())
    assert named == {uris["first"]}  # each said which local server it used: the same one
    for name in ("first", "second"):  # the relative home's results
        results = list((home / "runs" / name / "trials").glob("*/result.json"))
        assert len(results) == 1 and json.loads(results[0].read_text())["trial_key"] == results[0].parent.name
