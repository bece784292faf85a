"""Fault 1: the Ray Train worker of a running trial is killed with SIGKILL. Ray Train restarts the worker
group (``failure.max_retries``); the trial continues from its last epoch checkpoint and finishes, redoing at
most the one epoch that was cut short, in the same MLflow run."""

import json
import os
import signal

import pytest
from click.testing import CliRunner
from e2e_support import (
    epoch_log,
    metric_steps,
    only_trial,
    progress_epoch,
    runs_by_key,
    wait_for,
    write_sweep,
)

from benchxfer.cli import main

pytestmark = pytest.mark.e2e

EPOCHS = 3


def test_killed_worker_is_retried_from_its_checkpoint(tmp_path, ray_session, mlflow_uri):
    import threading

    path = write_sweep(tmp_path, "workerkill", epochs=EPOCHS, n_train=256, trainer="torch", retries=1)
    killed = {}

    def kill_worker_in_epoch_1():
        trial = wait_for(lambda: only_trial("workerkill"), "the trial folder")
        # epoch 0's checkpoint is written and epoch 1 has started: kill the process that trains it
        started = wait_for(lambda: progress_epoch(trial) >= 0 and [e for e in epoch_log(trial) if e["epoch"] == 1],
                           "epoch 1 to start")
        pid = started[0]["pid"]
        assert pid != os.getpid()  # a Ray Train worker, not this driver
        os.kill(pid, signal.SIGKILL)
        killed.update(pid=pid, trial=trial)

    killer = threading.Thread(target=kill_worker_in_epoch_1, daemon=True)
    killer.start()
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    killer.join(timeout=5)
    assert killed, "the worker was not killed"
    assert res.exit_code == 0, res.output
    assert "1 of 1 trials finished." in res.output

    trial = killed["trial"]
    log = epoch_log(trial)
    started = [e["epoch"] for e in log]
    assert started == [0, 1, 1, 2]  # epoch 1 cut short and redone from epoch 0's checkpoint, nothing else
    assert {e["pid"] for e in log if e["epoch"] >= 2}.isdisjoint({killed["pid"]})  # a new worker finished it
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs_run"] == EPOCHS
    assert result["epochs_started"] - result["epochs_run"] <= 1

    runs = runs_by_key(mlflow_uri, "workerkill")
    (key, rs), = runs.items()
    assert key == trial.name and len(rs) == 1 and rs[0].info.status == "FINISHED"
    assert metric_steps(mlflow_uri, rs[0].info.run_id, "val_loss") == list(range(EPOCHS))
