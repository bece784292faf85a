"""A trial's MLflow run through its one writer, ``tracking.TrialRun``, on the embedded SQLite store (no server):
opened once by key, its dataset input, the kept weights' link, its state through a failure, a retry and an
interruption (the driver's ``sweep.settle``: a Ctrl-C is no failure). Everything is read back through MlflowClient."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from benchxfer.commands import trial_states
from benchxfer.data import synthetic
from benchxfer.data.facts import describe_dataset
from benchxfer.launch.sweep import settle
from benchxfer.report.publish import list_artifact_names
from benchxfer.tracking import BEST_CHECKPOINT, BEST_CHECKPOINT_EPOCH, ERROR, STATUS, SweepRecorder, TrialRun
from benchxfer.trialdir import TRIALS, Progress, SweepDir, TrialState, write_json

pytestmark = pytest.mark.fast

PARAMS = {"init": "imagenet", "dataset": "chestxray14", "lr": "0.001", "seed": "0"}


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory) -> str:
    """One SQLite store for the module (making one takes seconds); each test uses sweeps of its own names."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def store(shared_store, home) -> str:
    """The store, with the test's own home and folder (where the store's experiments keep their artifacts)."""
    home.mkdir(parents=True)
    return shared_store


def _open(uri: str, sweep: str, key: str, folder=None) -> TrialRun:
    return TrialRun.open(SweepRecorder(uri, sweep), key, PARAMS, task="multilabel", metric="auroc", spill_dir=folder)


def test_a_trial_has_one_run_found_again_by_its_key(store):
    run = _open(store, "runs", "k1")
    again = _open(store, "runs", "k1")
    other = _open(store, "runs", "k2")
    assert again.run_id == run.run_id != other.run_id
    client = MlflowClient(tracking_uri=store)
    got = client.get_run(run.run_id)
    assert got.data.tags[STATUS] == TrialState.PENDING and got.data.params == PARAMS
    assert got.data.tags["benchxfer.task"] == "multilabel" and got.data.tags["benchxfer.metric"] == "auroc"
    assert got.data.tags["mlflow.parentRunId"] == SweepRecorder(store, "runs").parent_run_id
    run.mark_running("node-a")
    assert client.get_run(run.run_id).data.tags[STATUS] == TrialState.RUNNING
    assert client.get_run(run.run_id).data.tags["benchxfer.node_id"] == "node-a"


def test_dataset_input_and_kept_weights(store, tmp_path):
    root = synthetic.write("chestxray14", tmp_path / "cx", n_train=12, n_val=6, n_test=5, size=32, seed=0)
    run = _open(store, "inputs", "k")
    client = MlflowClient(tracking_uri=store)
    facts = describe_dataset("chestxray14", root)
    run.log_dataset(facts)
    _open(store, "inputs", "k").log_dataset(facts)  # a resumed trial logs it again: still one input
    # the split lists as the owner distributes them: their lines are the split sizes
    lists = sorted(p.name for p in root.glob("Xray14_*_official.txt"))
    h = hashlib.sha256()
    for name in lists:
        h.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    inputs = client.get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    ds = inputs[0].dataset
    assert ds.name == "chestxray14" and ds.digest == h.hexdigest()[:16]
    assert [(t.key, t.value) for t in inputs[0].tags] == [("mlflow.data.context", "train")]
    assert str(root.resolve()) in ds.source
    profile = pd.read_json(pd.io.common.StringIO(ds.profile), typ="series")
    sizes = {s: len((root / f"Xray14_{s}_official.txt").read_text().splitlines()) for s in ("train", "val", "test")}
    assert profile["splits"] == sizes == {"train": 12, "val": 6, "test": 5}
    assert profile["list_files"] == lists and profile["sha256"] == h.hexdigest()
    # the few-shot train split is what the trial uses: 1 image per class at most
    assert describe_dataset("chestxray14", root, shot=1).splits["train"] < 12

    # keep: selected -- the path of the file in the trial's folder, not uploaded; no epoch for the last step's
    selected = tmp_path / "selected.safetensors"
    selected.write_bytes(b"weights")
    assert run.link_weights(selected) == str(selected.resolve())
    tags = client.get_run(run.run_id).data.tags
    assert tags[BEST_CHECKPOINT] == str(selected.resolve()) and BEST_CHECKPOINT_EPOCH not in tags
    assert list(list_artifact_names(client, run.run_id)) == []
    # keep: checkpoint -- the tested weights uploaded, the tag their artifact URI, with the best epoch
    best = tmp_path / "best_model.pt"
    torch.save({"w": torch.arange(4.0)}, best)
    where = run.link_weights(best, best_epoch=2, upload=True)
    assert list(list_artifact_names(client, run.run_id)) == ["checkpoint/best_model.pt"]
    tags = client.get_run(run.run_id).data.tags
    assert tags[BEST_CHECKPOINT] == where and where.endswith("/checkpoint/best_model.pt")
    assert tags[BEST_CHECKPOINT_EPOCH] == "2"
    back = torch.load(client.download_artifacts(run.run_id, "checkpoint/best_model.pt", str(tmp_path / "dl")),
                      weights_only=True)
    assert torch.equal(back["w"], torch.arange(4.0))


def test_dataset_input_of_a_set_without_val_describes_its_own_splits(tmp_path):
    """Tuberculosis (second study) has train and test only; the per-folder split is RandomState(42), 85 % train."""
    root = synthetic.write("tuberculosis", tmp_path / "tb", n_train=20, n_val=0, n_test=0, size=32, seed=0)
    pngs = sorted(root.glob("*/CXR_png/*.png"))
    facts = describe_dataset("tuberculosis", root)
    folders = {p.parent for p in pngs}
    want_train = sum(int(0.85 * len([p for p in pngs if p.parent == f])) for f in folders)
    assert facts.splits == {"train": want_train, "test": len(pngs) - want_train}
    assert set(describe_dataset("tuberculosis", root, val_fraction=0.25).splits) == {"train", "val", "test"}


def _sweep(name: str, key: str):
    """A started sweep of one trial that ran an epoch (its progress written), and the trial's folder."""
    sdir = SweepDir(name)
    write_json(sdir.path / TRIALS, [{"trial_key": key}])
    tdir = sdir.trial(key)
    tdir.write_progress(Progress(epoch=0, best_epoch=0, epochs_max=3))
    return tdir


def _state(name: str) -> str:
    (row,) = trial_states(name)
    return row["state"]


def test_an_interrupted_trial_is_no_failure_and_stays_resumable(store):
    """Ctrl-C during ``benchxfer sweep``: Tune stops the running trials, whose training thread ends in
    ``SystemExit(0)`` at its next report. The driver records no failure: the trial stays pending (``resume`` runs it,
    ``status`` shows it interrupted), and its run says pending, ended KILLED, with no error."""
    tdir = _sweep("ctrlc", "k")
    run = _open(store, "ctrlc", "k", tdir.path)
    run.mark_running("node-a")
    settle(tdir, run, SystemExit(0), "ctrlc-01")
    assert tdir.failure() is None and tdir.state() is TrialState.PENDING
    assert _state("ctrlc") == TrialState.INTERRUPTED
    got = MlflowClient(tracking_uri=store).get_run(run.run_id)
    assert got.data.tags[STATUS] == TrialState.PENDING and ERROR not in got.data.tags
    assert got.info.status == "KILLED"
    settle(tdir, run, KeyboardInterrupt(), "ctrlc-01")  # a Ctrl-C that reaches the process itself: the same
    assert tdir.failure() is None and _state("ctrlc") == TrialState.INTERRUPTED


def test_a_failure_is_recorded_and_a_retry_clears_its_error(store):
    """The same path with an error that is not an interruption records a retryable failure (the contrast that
    shows the interruption test can fail); the retry's run is running again, without the old error line."""
    tdir = _sweep("fails", "k")
    run = _open(store, "fails", "k", tdir.path)
    run.mark_running()
    settle(tdir, run, RuntimeError("worker died"), "fails-01")
    assert tdir.failure().reason == "RuntimeError: worker died" and tdir.failure().retryable
    assert tdir.state() is TrialState.RETRYABLE and _state("fails") == TrialState.RETRYABLE  # status: resume runs it again
    client = MlflowClient(tracking_uri=store)
    got = client.get_run(run.run_id)
    assert (got.data.tags[STATUS], got.data.tags[ERROR], got.info.status) == ("failed", "RuntimeError: worker died",
                                                                              "FAILED")
    retry = _open(store, "fails", "k", tdir.path)
    assert retry.run_id == run.run_id
    retry.mark_running()
    got = client.get_run(run.run_id)
    assert got.data.tags[STATUS] == TrialState.RUNNING and ERROR not in got.data.tags
    assert got.info.status == "RUNNING"


def test_the_loop_writes_its_run_through_trial_run(store, home, tmp_path):
    """One real trial (ResNet-18, 32 px, synthetic ChestX-ray14) trained twice, deterministically, each into a run
    of its own: its epochs, test scores, texts, state and environment reach the run, and the kept weights' link is
    the sweep's ``keep``: the path of ``selected.safetensors``, or the same weights uploaded as the checkpoint."""
    from safetensors.torch import load_file
    from test_disk import small_trial

    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime
    from benchxfer.trialdir import SELECTED

    cfg = small_trial(tmp_path)
    client, results, runs = MlflowClient(tracking_uri=store), {}, {}
    for keep in ("selected", "checkpoint"):
        folder = tmp_path / keep
        runs[keep] = _open(store, f"loop-{keep}", "k", folder).run_id
        results[keep] = train_run(cfg, Runtime(trial_dir=str(folder), tracking_uri=store, run_id=runs[keep],
                                               keep=keep))
    assert results["selected"].test == results["checkpoint"].test
    for keep, rid in runs.items():
        got, result = client.get_run(rid), results[keep]
        assert got.info.status == "FINISHED" and got.data.tags[STATUS] == TrialState.FINISHED
        assert got.data.tags["env.threads"] == "1" and got.data.tags["env.torch"] == torch.__version__
        assert got.data.metrics["test_auroc"] == pytest.approx(result.test["auroc"])
        assert [m.step for m in client.get_metric_history(rid, "train_loss")] == [0, 1]
        assert result.selected == "best-val" and got.data.tags[BEST_CHECKPOINT_EPOCH] == str(result.best_epoch)
        texts = {"learning_curves.csv", "trial_config.json"}
        assert set(list_artifact_names(client, rid)) == texts | ({"checkpoint/best_model.pt"} if keep == "checkpoint"
                                                                 else set())
    selected = tmp_path / "selected" / SELECTED
    assert client.get_run(runs["selected"]).data.tags[BEST_CHECKPOINT] == str(selected.resolve())
    link = client.get_run(runs["checkpoint"]).data.tags[BEST_CHECKPOINT]
    assert link.endswith("/checkpoint/best_model.pt") and not (tmp_path / "checkpoint" / SELECTED).exists()
    uploaded = torch.load(client.download_artifacts(runs["checkpoint"], "checkpoint/best_model.pt",
                                                    str(tmp_path / "dl")), weights_only=True)
    tested = load_file(selected)
    assert uploaded.keys() == tested.keys() and all(torch.equal(uploaded[k], tested[k]) for k in tested)


def test_a_trial_the_search_stopped_is_tagged_stopped(store):
    """The lr search's scheduler stopped a trial that had failed once: ``cellsearch.settle_stopped`` finds its run and
    marks it stopped at its rung, without the old error, ended KILLED; again, nothing changes; an unknown key has no
    run to mark."""
    from benchxfer.launch.cellsearch import settle_stopped
    from benchxfer.trialdir import Stopped

    tdir = _sweep("stops", "k")
    run = _open(store, "stops", "k", tdir.path)
    run.mark_running()
    settle(tdir, run, RuntimeError("worker died"), "stops-01")
    for _ in range(2):
        settle_stopped("stops", "k", Stopped(rung=2, epoch=1), store)
        got = MlflowClient(tracking_uri=store).get_run(run.run_id)
        assert (got.data.tags[STATUS], got.data.tags["benchxfer.rung"], got.info.status) == ("stopped", "2", "KILLED")
        assert ERROR not in got.data.tags
    assert TrialRun.find(store, "stops", "other") is None and TrialRun.find(store, "never-ran", "k") is None
