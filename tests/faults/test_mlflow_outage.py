"""Fault 3: the MLflow server is stopped while a trial trains, then started again on the same port and
store. Training does not crash, no trial is lost, and the metrics logged while the server was down are
delivered once it is back (the run says how many times it was unreachable)."""

import json

import pytest
from e2e_support import (
    metric_steps,
    only_trial,
    progress_epoch,
    runs_by_key,
    start_driver,
    wait_for,
    write_sweep,
)

from benchxfer.tracking import LocalServer

pytestmark = pytest.mark.e2e

EPOCHS = 4  # epoch 0 logged, 1 and 2 end with the server down, 3 after it is back


def test_server_down_mid_trial_loses_nothing(tmp_path, ray_session):
    server = LocalServer(home=tmp_path / "mlflow")
    uri = server.start()
    path = write_sweep(tmp_path, "outage", epochs=EPOCHS, n_train=256)
    proc = start_driver(["sweep", str(path), "--tracking-uri", uri], ray_session)
    try:
        trial = wait_for(lambda: only_trial("outage"), "the trial folder", proc)
        wait_for(lambda: progress_epoch(trial) >= 0, "epoch 0 to be logged", proc)
        server.stop()
        # epochs 1 and 2 end while nobody listens
        wait_for(lambda: progress_epoch(trial) >= 2, "two epochs with the server down", proc)
        assert proc.poll() is None, "training crashed while MLflow was down"
        server = LocalServer(home=tmp_path / "mlflow", port=server.port)
        server.start()
        assert proc.wait(timeout=300) == 0

        result = json.loads((trial / "result.json").read_text())
        assert result["status"] == "finished" and result["epochs_run"] == EPOCHS
        (key, runs), = runs_by_key(uri, "outage").items()
        run = runs[0]
        assert len(runs) == 1 and run.info.status == "FINISHED"
        assert result["mlflow_run_id"] == run.info.run_id
        for name in ("train_loss", "val_loss", "val_auroc"):
            assert metric_steps(uri, run.info.run_id, name) == list(range(EPOCHS)), name
        assert run.data.metrics["test_auroc"] == pytest.approx(result["test"]["auroc"])
        assert int(run.data.tags["benchxfer.mlflow_outages"]) >= 2  # the gap is stated on the run
        assert not (trial / "mlflow_undelivered.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
