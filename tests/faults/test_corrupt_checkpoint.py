"""Fault 4: a checkpoint is truncated before a resume. The trial falls back to the previous good checkpoint
(and says so on its MLflow run); with no good checkpoint left it restarts from epoch 0 with a clear message (that
case needs no Ray: tests/test_resume_exact.py, fast tier). It never crashes the sweep."""

import json

import pytest
from click.testing import CliRunner
from e2e_support import (
    epoch_log,
    kill_driver,
    only_trial,
    progress_epoch,
    runs_by_key,
    start_driver,
    wait_for,
    write_sweep,
)

from benchxfer.cli import main
from benchxfer.train.checkpoint import CheckpointStore

pytestmark = pytest.mark.e2e

EPOCHS = 4


def truncate(path, keep=100):
    with open(path, "r+b") as f:
        f.truncate(keep)


def test_truncated_checkpoint_falls_back_on_resume(tmp_path, ray_session, mlflow_uri):
    path = write_sweep(tmp_path, "corrupt", epochs=EPOCHS, n_train=256)
    proc = start_driver(["sweep", str(path), "--tracking-uri", mlflow_uri], ray_session)
    trial = wait_for(lambda: only_trial("corrupt"), "the trial folder", proc)
    wait_for(lambda: progress_epoch(trial) >= 1, "two epoch checkpoints", proc)
    kill_driver(proc, trial)
    store = CheckpointStore(trial / "checkpoints")
    *_, previous, newest = store.epochs()
    assert not (trial / "result.json").exists()
    truncate(store.path(newest))

    res = CliRunner().invoke(main, ["resume", "corrupt", "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "1 of 1 trials finished." in res.output
    started = [e["epoch"] for e in epoch_log(trial)]
    resumed_at = started[len(started) - (EPOCHS - previous - 1):]
    assert resumed_at == list(range(previous + 1, EPOCHS))  # continued after the good checkpoint
    result = json.loads((trial / "result.json").read_text())
    assert result["status"] == "finished" and result["epochs_run"] == EPOCHS
    (key, runs), = runs_by_key(mlflow_uri, "corrupt").items()
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    note = runs[0].data.tags["benchxfer.checkpoint_note"]
    assert f"epoch_{newest:04d}.pt is unreadable" in note and "falling back" in note

