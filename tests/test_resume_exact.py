"""Kill and restart: a run interrupted after epoch k continues at k+1 with the same optimiser state and ends
with exactly the weights of an uninterrupted run with the same seed (CPU, deterministic)."""

import pytest
import torch

from benchxfer import data
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.loop import train_run
from benchxfer.train.session import Runtime

pytestmark = pytest.mark.fast


def config(root, epochs):
    knobs = get_recipe("systematic-cls").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 16, "epochs": epochs, "loader_workers": 0}, "test")
    return TrainConfig.from_dict({**knobs, "trial_key": "t", "dataset": "chestxray14", "root": str(root),
                                  "lr": 1e-3, "seed": 3}).to_dict()


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    root = data.synthetic.write("chestxray14", tmp_path / "cxr", n_train=48, n_val=16, n_test=16, size=32, seed=2)
    torch.set_num_threads(1)
    full = train_run(TrainConfig.from_dict(config(root, 3)), Runtime(trial_dir=str(tmp_path / "full")))

    part = tmp_path / "part"
    train_run(TrainConfig.from_dict(config(root, 2)), Runtime(trial_dir=str(part)))  # "killed" after epoch 1
    store = CheckpointStore(part / "checkpoints")
    assert store.epochs() == [0, 1]
    before = torch.load(store.path(1), weights_only=True)
    resumed = train_run(TrainConfig.from_dict(config(root, 3)), Runtime(trial_dir=str(part)))
    assert store.epochs() == [1, 2]  # continued at epoch 2, did not start again

    a = torch.load(CheckpointStore(tmp_path / "full" / "checkpoints").path(2), weights_only=True)
    b = torch.load(store.path(2), weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == before["optimizer"]["state"][0]["step"] * 3 / 2
    assert resumed.test == full.test
