"""Pre-training end to end on a real local Ray session and a real MLflow server (issue: pre-training).

A 2-worker CPU (gloo) TorchTrainer pre-trains a ResNet-18 on two synthetic sources in different layouts
(ChestX-ray14: list files of 14 labels; CheXpert: CSV with missing and uncertain labels), merged on their
common labels. Its driver is killed after the first epoch and the same command continues the run. The
backbone lands in the zoo with its checksum and provenance and loads through the zoo. (That a sweep fine-tuning
a ``benchxfer pretrain`` init beats ``scratch``: tests/test_demo.py, whose init is pre-trained the same way.)
(The merged label set and the loss mask on known rows: tests/test_data_readers.py.)"""

import json
import textwrap

import pytest
from click.testing import CliRunner
from e2e_support import epoch_log, kill_driver, start_driver, wait_for
from mlflow.tracking import MlflowClient

from benchxfer import paths, zoo
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

PRETRAIN = """
name: e2e-cxr
sources:
  - dataset: chestxray14
    root: synthetic
    synthetic: {n_train: 256, n_val: 32, n_test: 8, size: 48, seed: 7, family: cxr-source}
  - dataset: chexpert
    root: synthetic
    synthetic: {n_train: 256, n_val: 32, n_test: 8, size: 48, seed: 8, family: cxr-source}
arch: resnet18
start: scratch
lr: 0.001
overrides: {size: 48, batch_size: 32, epochs: EPOCHS, optimizer: adam, weight_decay: 0, warmup_epochs: 1,
            base_batch: 0, augment: plain, loader_workers: 0, schedule: warmup-cosine, agc: 0.0,
            normalization: imagenet, checkpoint_every_s: 0}
resources: {workers: 2, cpus_per_worker: 1}
failure: {max_retries: 0}
"""
EPOCHS = 3

def test_pretrain_killed_continued_and_registered(tmp_path, ray_session, mlflow_uri):

    pfile = tmp_path / "e2e_pretrain.yaml"
    pfile.write_text(textwrap.dedent(PRETRAIN).replace("EPOCHS", str(EPOCHS)))
    runs_dir = paths.sweep_dir("pretrain") / "trials"

    def trial():
        found = [t for t in runs_dir.glob("pretrain-e2e-cxr_*")]
        return found[0] if found else None

    proc = start_driver(["pretrain", str(pfile), "--tracking-uri", mlflow_uri], ray_session)
    tdir = wait_for(trial, "the pre-training folder", proc, timeout=300)
    wait_for(lambda: [e for e in epoch_log(tdir) if e["epoch"] == 1], "epoch 1 to start", proc, timeout=300)
    kill_driver(proc, tdir)
    assert not (tdir / "result.json").exists()

    res = CliRunner().invoke(main, ["pretrain", str(pfile), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Init 'e2e-cxr' is in the zoo" in res.output
    assert [e["epoch"] for e in epoch_log(tdir)] == [0, 1, *range(1, EPOCHS)]  # continued at epoch 1
    result = json.loads((tdir / "result.json").read_text())
    assert result["epochs_run"] == EPOCHS and result["dataset"] == "chestxray14+chexpert"

    # in the zoo: checksum and provenance; it loads as a resnet18 backbone
    cfg, path = zoo.resolve_init("e2e-cxr")
    assert cfg.arch == "resnet18"
    entry = zoo.store.read_index()["e2e-cxr"]
    res = CliRunner().invoke(main, ["zoo", "list"])
    assert "e2e-cxr" in res.output
    res = CliRunner().invoke(main, ["zoo", "verify", "e2e-cxr"])
    assert res.exit_code == 0, res.output
    prov = entry["provenance"]
    assert entry["local"] and len(entry["sha256"]) == 64
    assert [s["dataset"] for s in prov["sources"]] == ["chestxray14", "chexpert"]
    assert prov["epochs"] == EPOCHS and prov["start"] == "scratch"
    run = MlflowClient(mlflow_uri).get_run(prov["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == tdir.name
    backbone = zoo.load_backbone(path, arch="resnet18")
    assert backbone["conv1.weight"].shape == (64, 3, 7, 7) and not any(k.startswith("fc.") for k in backbone)

