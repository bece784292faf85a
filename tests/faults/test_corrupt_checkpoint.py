"""Fault 4: a checkpoint is truncated before a resume. The trial falls back to the previous good checkpoint
(and says so on its MLflow run); with no good checkpoint left it restarts from epoch 0 with a clear message.
It never crashes the sweep."""

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


def test_no_good_checkpoint_restarts_from_epoch_0(tmp_path):
    """Every checkpoint damaged: the run starts over, with one message per file and the restart stated."""
    from benchxfer import data
    from benchxfer.recipes import TrainConfig, get_recipe
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime

    root = data.synthetic.write("chestxray14", tmp_path / "cxr", n_train=32, n_val=16, n_test=16, size=32, seed=2)
    knobs = get_recipe("systematic-cls").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 16, "epochs": 2, "loader_workers": 0,
         "checkpoint_every_s": 0.0}, "test")  # a checkpoint every epoch
    cfg = TrainConfig.from_dict({**knobs, "trial_key": "t", "dataset": "chestxray14", "root": str(root),
                                 "lr": 1e-3, "seed": 3}).to_dict()
    tdir = tmp_path / "trial"
    train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=str(tdir)))
    store = CheckpointStore(tdir / "checkpoints")
    assert store.epochs() == [0, 1]
    for e in store.epochs():
        truncate(store.path(e))
    state, notes = store.load_latest()
    assert state is None
    assert len(notes) == 3 and "epoch_0001.pt is unreadable" in notes[0] and "epoch_0000.pt" in notes[1]
    assert notes[2] == "no readable checkpoint left: restarting from epoch 0"
    (tdir / "result.json").unlink()
    result = train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=str(tdir)))
    assert result.epochs_run == 2
    assert [e["epoch"] for e in epoch_log(tdir)] == [0, 1, 0, 1]
