"""The first study's segmentation protocol end to end: a DRIVE trial trains to a result (issue 22).

The study scores DRIVE by Dice over all test pixels and the mean Dice per image (Version1/engine.py,
``segmentation_engine``: ``dice`` and ``mean_dice_coef`` after thresholding at 0.5); both are recomputed here
from the saved weights by that rule.
"""

import numpy as np
import pytest
import torch

from benchxfer import data, models
from benchxfer.data.catalog import register_dataset
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.tasks import TASKS
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.data_setup import build_data
from benchxfer.train.loop import train_run
from benchxfer.train.metrics import METRICS
from benchxfer.train.session import Runtime

pytestmark = pytest.mark.fast


def _study_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Version1/utils.py ``dice``: binarised at 0.5, 2|A and B| / (|A| + |B|), 1.0 when both are empty."""
    a, b = pred > 0.5, truth > 0.5
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def test_drive_trial_finishes_with_the_studys_dice(tmp_path):
    root = data.synthetic.write("drive", tmp_path / "drive", n_train=6, n_val=0, n_test=3, size=48, seed=0)
    knobs = get_recipe("systematic-seg").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 2, "epochs": 2, "loader_workers": 0, "amp": False,
         "loss": "bce", "max_train_batches": 1}, "test")
    cfg = TrainConfig.from_dict({**knobs, "recipe": "systematic-seg", "trial_key": "drive", "dataset": "drive",
                                 "root": str(root), "lr": 1e-3, "seed": 0})
    torch.set_num_threads(1)
    res = train_run(cfg, Runtime(trial_dir=str(tmp_path / "run")))
    assert set(res.test) == set(data.get_dataset("drive").metrics) == {"dice", "dice_per_image", "iou"}
    assert res.metric == "dice" and res.value == res.test["dice"]

    # the tested weights (the best val epoch's) through the study's Dice rule
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    state = torch.load(store.path(store.epochs()[-1]), weights_only=True)
    model = models.build_model("resnet18", "segmentation", 1)
    model.load_state_dict(state["best_model"] or state["model"])
    model.eval()
    test = build_data(cfg).test
    xs = torch.stack([test[i][0] for i in range(len(test))])
    ys = np.stack([np.asarray(test[i][1]).reshape(32, 32) for i in range(len(test))])
    with torch.no_grad():
        probs = model(xs).sigmoid().numpy().reshape(ys.shape)
    assert res.test["dice"] == pytest.approx(_study_dice(probs, ys), abs=1e-6)
    assert res.test["dice_per_image"] == pytest.approx(np.mean([_study_dice(p, y) for p, y in zip(probs, ys)]),
                                                       abs=1e-6)


def test_every_dataset_lists_only_metrics_its_task_can_compute():
    for name in data.list_datasets():
        cfg = data.get_dataset(name)
        assert {cfg.metric, *cfg.metrics} <= set(TASKS.get(cfg.task).metrics), name
    for _, task in TASKS.items():
        assert set(task.metrics) <= set(METRICS.names())
    with pytest.raises(ValueError, match="'auroc' cannot be computed for a segmentation task"):
        register_dataset("bad-seg", task="segmentation", classes=("x",), metric="dice", metrics=("dice", "auroc"))(
            lambda root, split, ctx: None)
