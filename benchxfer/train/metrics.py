"""Metrics over a whole evaluation set: mean AUROC, accuracy, Dice (global and per image), IoU.

Evaluation gathers small per-sample records from every worker (scores and targets for classification;
intersection and sums per image for segmentation), so that the metric is computed on the whole set
exactly as a single process would. Each metric's entry also says how the papers print it (x100 or as is) and
which way is better; the report, its figures and the lr search's default mode read those facts here. numpy
only at import (scikit-learn loads when an AUROC is computed), so that the report can read the entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from benchxfer.registry import Registry


@dataclass(frozen=True)
class Metric:
    """A metric as data: how it is computed, how the papers print it, which way is better."""

    name: str
    compute: Callable[[dict[str, np.ndarray]], float]  # the gathered per-sample arrays (a dict) -> one float
    percent: bool  # the papers print it x100 (the report's tables and figures: "(x100)")
    higher_is_better: bool  # the best mean of a report's column; the lr search's default mode for val_<metric>


METRICS: Registry[Metric] = Registry("metric")


def register_metric(name: str, *, percent: bool, higher_is_better: bool) -> Callable[[Callable], Callable]:
    """Decorator on a compute function: ``@register_metric("auroc", percent=True, higher_is_better=True)``."""

    def deco(fn: Callable[[dict[str, np.ndarray]], float]) -> Callable[[dict[str, np.ndarray]], float]:
        METRICS.add(name, Metric(name, fn, percent, higher_is_better))
        return fn

    return deco


def scale(metric: object) -> int:
    """What the report multiplies a metric's values by: 100 for a percent metric, else 1 (also for a name that is
    not a metric, such as the missing metric of a run that never started)."""
    return 100 if isinstance(metric, str) and metric in METRICS and METRICS.get(metric).percent else 1


def higher_is_better(metric: object) -> bool:
    """Which way is better for ``metric`` (a name that is not a metric: higher)."""
    return not (isinstance(metric, str) and metric in METRICS and not METRICS.get(metric).higher_is_better)


def mean_auroc(scores: np.ndarray, targets: np.ndarray, columns: Sequence[int] | None = None,
               known: np.ndarray | None = None) -> float:
    """Mean AUROC over classes (columns). ``known`` (0/1 per cell) leaves out labels that are missing or
    uncertain; classes with only one label value among the known ones are skipped."""
    from sklearn.metrics import roc_auc_score

    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if scores.ndim == 1:
        scores, targets = scores[:, None], targets[:, None]
    if known is None:
        known = np.ones_like(targets, dtype=bool)
    known = np.asarray(known).reshape(targets.shape) > 0.5
    cols = range(scores.shape[1]) if columns is None else columns
    aucs = []
    for c in cols:
        k = known[:, c]
        y = targets[k, c] > 0.5
        if len(np.unique(y)) == 2:
            aucs.append(roc_auc_score(y, scores[k, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


@register_metric("auroc", percent=True, higher_is_better=True)
def _auroc(r: dict[str, np.ndarray]) -> float:
    if r["scores"].ndim == 2 and r["targets"].ndim == 1:  # multi-class: one-vs-rest on the probabilities
        onehot = np.eye(r["scores"].shape[1])[r["targets"].astype(int)]
        return mean_auroc(r["scores"], onehot)
    return mean_auroc(r["scores"], r["targets"], r.get("columns"), r.get("known"))


@register_metric("accuracy", percent=True, higher_is_better=True)
def _accuracy(r: dict[str, np.ndarray]) -> float:
    scores, targets = r["scores"], r["targets"]
    if scores.ndim == 2 and targets.ndim == 1:  # multi-class
        pred = scores.argmax(axis=1)
    else:  # binary or multi-label: threshold the probability at 0.5
        pred = (scores >= 0.5).astype(int)
        targets = (targets > 0.5).astype(int)
    return float(np.mean(pred.reshape(targets.shape) == targets))


def dice_from_counts(inter: np.ndarray, psum: np.ndarray, tsum: np.ndarray) -> tuple[float, float]:
    """Global Dice over all pixels, and the mean of per-image Dice (an empty prediction on an empty mask
    counts as 1)."""
    inter, psum, tsum = (np.asarray(a, dtype=np.float64) for a in (inter, psum, tsum))
    total = psum.sum() + tsum.sum()
    global_dice = 1.0 if total == 0 else 2.0 * inter.sum() / total
    denom = psum + tsum
    per_image = np.where(denom == 0, 1.0, 2.0 * inter / np.where(denom == 0, 1.0, denom))
    return float(global_dice), float(per_image.mean()) if len(per_image) else float("nan")


@register_metric("dice", percent=True, higher_is_better=True)
def _dice(r: dict[str, np.ndarray]) -> float:
    return dice_from_counts(r["inter"], r["psum"], r["tsum"])[0]


@register_metric("dice_per_image", percent=True, higher_is_better=True)
def _dice_per_image(r: dict[str, np.ndarray]) -> float:
    return dice_from_counts(r["inter"], r["psum"], r["tsum"])[1]


@register_metric("iou", percent=True, higher_is_better=True)
def _iou(r: dict[str, np.ndarray]) -> float:
    inter, union = r["inter"].sum(), r["psum"].sum() + r["tsum"].sum() - r["inter"].sum()
    return 1.0 if union == 0 else float(inter / union)


def compute(names: Sequence[str], records: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: METRICS.get(name).compute(records) for name in names}

