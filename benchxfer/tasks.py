"""What each task means for training: head outputs, loss, metric, target type, scores from logits.

A dataset names its task (``benchxfer.data.catalog``); everything the model, the loop and evaluation do
differently per task is read from here, not from comparisons of the task's name. No torch import: the
score functions call tensor methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from benchxfer.registry import Registry

# The binary task's head: 2 outputs with cross-entropy (the second study's rule), or 1 logit with BCE (the first
# study's: Version1 trains Shenzhen with num_class 1, a sigmoid and BCELoss). A run picks one with the knob
# ``binary_outputs`` (recipe defaults: 2 for bit-hyperrule, 1 for systematic-cls); ``run_task`` maps it.
BINARY_HEADS = (1, 2)  # the values of ``binary_outputs``


def _sigmoid(logits: Any) -> Any:
    return logits.sigmoid()


def _softmax(logits: Any) -> Any:
    return logits.softmax(-1)


def _logit(prob: Any) -> Any:
    return prob.clamp(1e-6, 1 - 1e-6).logit()


def _log(prob: Any) -> Any:
    return prob.log()


@dataclass(frozen=True)
class Task:
    name: str
    outputs: Callable[[int], int]  # head outputs for a dataset of n classes
    loss: str  # what the loss "auto" means (a name in benchxfer.recipes.parts.LOSSES)
    metric: str  # the primary metric when nothing else says
    target: str  # "multi-hot" (float vector), "index" (class index), "mask" (per pixel)
    probs: Callable[[Any], Any]  # logits -> probabilities (averaged over TenCrop views)
    logits_of: Callable[[Any], Any]  # averaged probabilities -> logits again, for the loss
    score_column: int | None = None  # the column of the probabilities that scores the positive class
    dense: bool = False  # a mask per image (segmentation): scored by overlap counts, no MixUp
    # the metrics computable from what evaluation gathers for this task: scores and targets per sample, or (dense)
    # overlap counts per image; a dataset may list only these (``data.catalog.register_dataset`` checks)
    metrics: tuple[str, ...] = ("auroc", "accuracy")

    def scores(self, probs: Any) -> Any:
        """Per-sample scores for the metric: all columns, or the positive column flattened (binary)."""
        if self.target == "index" and self.score_column is not None:
            return probs.reshape(len(probs), -1)[:, self.score_column]
        return probs


TASKS: Registry[Task] = Registry("task")
TASKS.add("multilabel", Task("multilabel", lambda n: n, "bce", "auroc", "multi-hot", _sigmoid, _logit))
TASKS.add("multiclass", Task("multiclass", lambda n: n, "ce", "accuracy", "index", _softmax, _log))
TASKS.add("binary", Task("binary", lambda n: 2, "ce", "auroc", "index", _softmax, _log, score_column=1))
# the first study's binary head: one logit, BCE; its sigmoid scores the positive class
TASKS.add("binary-1", Task("binary-1", lambda n: 1, "bce", "auroc", "index", _sigmoid, _logit, score_column=0))
TASKS.add("segmentation", Task("segmentation", lambda n: 1, "dice", "dice", "mask", _sigmoid, _logit, dense=True,
                                metrics=("dice", "dice_per_image", "iou")))
CLASSIFICATION = tuple(n for n, t in TASKS.items() if not t.dense)  # the tasks a classifier head trains


def run_task(task: str, binary_outputs: int) -> str:
    """The task a run trains for a dataset's ``task``: "binary" with one output is "binary-1"."""
    return "binary-1" if task == "binary" and binary_outputs == 1 else task
# Pre-training merges sources on their common labels: one multi-label head.
PRETRAIN_TASK = TASKS.get("multilabel")


def get_task(name: str) -> Task:
    return TASKS.get(name)
