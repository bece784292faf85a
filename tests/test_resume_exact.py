"""Kill and restart: a run interrupted after epoch k continues after its last checkpoint with the same optimiser
state and ends with exactly the weights of an uninterrupted run with the same seed (CPU, deterministic).
Checkpoints are written by time (``checkpoint_every_s``) and always at the run's end, so a kill redoes exactly
the epochs since the last one; the loader's processes live for the whole run and the inputs stay the same."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest
import torch

from benchxfer import data
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.loop import train_run
from benchxfer.train.session import Runtime
from benchxfer.trialdir import TrialDir

pytestmark = pytest.mark.fast


def config(root, epochs, **knobs):
    knobs = get_recipe("systematic-cls").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 16, "epochs": epochs, "loader_workers": 0, **knobs}, "test")
    return TrainConfig.from_dict({**knobs, "trial_key": "t", "dataset": "chestxray14", "root": str(root),
                                  "lr": 1e-3, "seed": 3}).to_dict()


def fewshot(root, **knobs):
    """The second study's few-shot shape: 5 shots per class, full batches drawn from them, one step an epoch."""
    knobs = get_recipe("bit-hyperrule").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 64, "max_steps": 12, "loader_workers": 0, **knobs}, "test")
    return TrainConfig.from_dict({**knobs, "trial_key": "f", "dataset": "cifar10", "root": str(root),
                                  "lr": 1e-3, "seed": 5, "shot": 5}).to_dict()


def weights(folder, epoch):
    return torch.load(CheckpointStore(folder / "checkpoints").path(epoch), weights_only=True)


def assert_same_weights(a, b):
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_interrupted_run_resumes_to_identical_weights(scratch_path):
    root = data.synthetic.write("chestxray14", scratch_path / "cxr", n_train=48, n_val=16, n_test=16, size=32, seed=2)
    torch.set_num_threads(1)
    full = train_run(TrainConfig.from_dict(config(root, 3)), Runtime(trial_dir=str(scratch_path / "full")))
    assert CheckpointStore(scratch_path / "full" / "checkpoints").epochs() == [2]  # 300 s not passed: the end only

    part = scratch_path / "part"
    train_run(TrainConfig.from_dict(config(root, 2)), Runtime(trial_dir=str(part)))  # "killed" after epoch 1
    store = CheckpointStore(part / "checkpoints")
    assert store.epochs() == [1]  # the run's last epoch is always saved
    before = torch.load(store.path(1), weights_only=True)
    resumed = train_run(TrainConfig.from_dict(config(root, 3)), Runtime(trial_dir=str(part)))
    assert store.epochs() == [1, 2]  # continued at epoch 2, did not start again
    assert TrialDir(part).epochs_started() == [0, 1, 2]

    a, b = weights(scratch_path / "full", 2), store.path(2)
    b = torch.load(b, weights_only=True)
    assert_same_weights(a, b)
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == before["optimizer"]["state"][0]["step"] * 3 / 2
    assert resumed.test == full.test


def test_checkpoint_cadence_zero_saves_every_epoch(scratch_path):
    root = data.synthetic.write("chestxray14", scratch_path / "cxr", n_train=32, n_val=16, n_test=16, size=32, seed=2)
    trial = scratch_path / "t"
    train_run(TrainConfig.from_dict(config(root, 3, checkpoint_every_s=0.0, max_train_batches=1)),
              Runtime(trial_dir=str(trial)))
    assert CheckpointStore(trial / "checkpoints").epochs() == [1, 2]  # every epoch saved, the last two kept
    assert TrialDir(trial).progress().checkpoint == 2


def test_no_good_checkpoint_restarts_from_epoch_0(scratch_path):
    """Every checkpoint damaged: the run starts over, with one message per file and the restart stated (fault 4's
    other case, tests/faults/test_corrupt_checkpoint.py; it needs no Ray)."""
    root = data.synthetic.write("chestxray14", scratch_path / "cxr", n_train=32, n_val=16, n_test=16, size=32, seed=2)
    cfg = config(root, 2, checkpoint_every_s=0.0)  # a checkpoint every epoch
    tdir = scratch_path / "trial"
    train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=str(tdir)))
    store = CheckpointStore(tdir / "checkpoints")
    assert store.epochs() == [0, 1]
    for e in store.epochs():
        with open(store.path(e), "r+b") as f:
            f.truncate(100)
    state, notes = store.load_latest()
    assert state is None
    assert len(notes) == 3 and "epoch_0001.pt is unreadable" in notes[0] and "epoch_0000.pt" in notes[1]
    assert notes[2] == "no readable checkpoint left: restarting from epoch 0"
    (tdir / "result.json").unlink()
    result = train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=str(tdir)))
    assert result.epochs_run == 2
    assert TrialDir(tdir).epochs_started() == [0, 1, 0, 1]

def test_loader_processes_do_not_change_the_inputs(scratch_path):
    """The loader's processes live for the whole run and load ahead across epochs; each sample's augmentation
    is seeded by (seed, epoch, rank, position), so 0 or 2 loader processes train exactly the same weights."""
    root = data.synthetic.write("cifar10", scratch_path / "c10", n_train=60, n_val=0, n_test=20, size=32, seed=4)
    torch.set_num_threads(1)
    runs = {}
    for workers in (0, 2):
        folder = scratch_path / f"w{workers}"
        runs[workers] = train_run(TrainConfig.from_dict(fewshot(root, max_steps=4, loader_workers=workers)),
                                  Runtime(trial_dir=str(folder)))
    assert_same_weights(weights(scratch_path / "w0", 3), weights(scratch_path / "w2", 3))
    assert runs[0].test == runs[2].test


def _train_until_killed(cfg: dict, trial_dir: str) -> None:
    torch.set_num_threads(1)
    train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=trial_dir))


def test_killed_fewshot_run_redoes_only_the_steps_since_its_last_checkpoint(scratch_path):
    """A few-shot run (one step an epoch) saves by time, not every step. Killed with SIGKILL in the middle, it
    continues after the last checkpoint that progress.json names, redoes exactly the epochs since, and ends
    with the weights and test scores of an uninterrupted run."""
    root = data.synthetic.write("cifar10", scratch_path / "c10", n_train=60, n_val=0, n_test=20, size=32, seed=4)
    torch.set_num_threads(1)
    steps = 16
    full = train_run(TrainConfig.from_dict(fewshot(root, max_steps=steps)),
                     Runtime(trial_dir=str(scratch_path / "full")))
    assert CheckpointStore(scratch_path / "full" / "checkpoints").epochs() == [steps - 1]  # the end only

    part = scratch_path / "part"
    cfg = fewshot(root, max_steps=steps, checkpoint_every_s=2.0)
    proc = mp.get_context("spawn").Process(target=_train_until_killed, args=(cfg, str(part)))
    proc.start()
    folder = TrialDir(part)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.is_alive():
        prog = folder.progress() if (part / "progress.json").exists() else None
        if prog is not None and 0 <= prog.checkpoint < prog.epoch:
            break  # a checkpoint, and an epoch done since it
        time.sleep(0.02)
    assert proc.is_alive(), "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    killed_in = folder.epochs_started()[-1]
    last_saved = CheckpointStore(part / "checkpoints").epochs()[-1]
    assert 0 <= last_saved <= killed_in < steps - 1
    assert folder.progress().checkpoint == last_saved  # progress.json says where a retry continues

    resumed = train_run(TrainConfig.from_dict(cfg), Runtime(trial_dir=str(part)))
    started = folder.epochs_started()
    assert started == list(range(killed_in + 1)) + list(range(last_saved + 1, steps))  # only those redone
    assert resumed.epochs_started - resumed.epochs_run == killed_in - last_saved
    assert_same_weights(weights(scratch_path / "full", steps - 1), weights(part, steps - 1))
    assert resumed.test == full.test
    assert json.loads((part / "progress.json").read_text())["checkpoint"] == steps - 1


def test_the_checkpoint_cadence_is_not_part_of_a_trials_identity():
    """Changing ``checkpoint_every_s`` continues the same trials (same keys, same folders); a protocol knob does not."""
    from benchxfer.trial import trial_key

    def key(**over):
        knobs = get_recipe("systematic-cls").resolve(over, "test")
        return trial_key("scratch", "chestxray14", 0.001, 0, None, "systematic-cls", knobs, {})

    assert key() == key(checkpoint_every_s=30.0) == key(checkpoint_every_s=0.0)
    assert key() != key(epochs=3)
