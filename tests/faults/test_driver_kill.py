"""Fault 2: the sweep's driver is killed with SIGKILL at a random point, then ``benchxfer resume``. Every
trial finishes, no finished trial runs again, an interrupted trial redoes at most the epoch it was in, and
each trial key has exactly one MLflow run, FINISHED."""

import json
import random

import pytest
from click.testing import CliRunner
from e2e_support import (
    epoch_log,
    kill_driver,
    runs_by_key,
    start_driver,
    wait_for,
    write_sweep,
)

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

SEEDS, EPOCHS = 2, 3


def test_driver_killed_at_a_random_point_then_resume(tmp_path, ray_session, mlflow_uri):
    path = write_sweep(tmp_path, "killme", seeds=SEEDS, epochs=EPOCHS)
    trials = paths.sweep_dir("killme") / "trials"
    kill_after = random.Random().randint(2, SEEDS * EPOCHS - 2)  # epochs started, over all trials
    print(f"killing the driver once {kill_after} epochs have started")

    def started():
        return sum(len(epoch_log(t)) for t in trials.glob("*")) >= kill_after and sorted(trials.glob("*"))

    proc = start_driver(["sweep", str(path), "--tracking-uri", mlflow_uri], ray_session)
    running = wait_for(started, f"{kill_after} epochs to start", proc)
    kill_driver(proc, max(running, key=lambda t: epoch_log(t)[-1]["time"] if epoch_log(t) else 0))
    finished_before = {p.parent.name: p.stat().st_mtime_ns for p in trials.glob("*/result.json")}
    assert len(finished_before) < SEEDS

    res = CliRunner().invoke(main, ["resume", "killme", "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"{SEEDS} of {SEEDS} trials finished." in res.output
    for key, mtime in finished_before.items():  # not run again
        assert (trials / key / "result.json").stat().st_mtime_ns == mtime
    for trial in trials.glob("*"):
        started_epochs = [e["epoch"] for e in epoch_log(trial)]
        assert sorted(set(started_epochs)) == list(range(EPOCHS))
        assert len(started_epochs) - EPOCHS <= 1, started_epochs  # at most the interrupted epoch is redone
    runs = runs_by_key(mlflow_uri, "killme")
    assert len(runs) == SEEDS
    for key, rs in runs.items():
        assert len(rs) == 1 and rs[0].info.status == "FINISHED", key
        assert json.loads((trials / key / "result.json").read_text())["mlflow_run_id"] == rs[0].info.run_id
