"""Label policies and subsets: CheXpert uncertain labels, label fractions, k-shot subsets."""

from __future__ import annotations

import random

import numpy as np

from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry
from benchxfer.tasks import get_task

# policy name -> (value for an uncertain cell drawn from rng, or a constant); blank cells count as 0
UNCERTAIN: Registry[tuple[float, float]] = Registry("uncertain-label policy")
UNCERTAIN.add("ones", (1.0, 1.0))
UNCERTAIN.add("zeros", (0.0, 0.0))
UNCERTAIN.add("lsr-ones", (0.55, 0.85))
UNCERTAIN.add("lsr-zeros", (0.0, 0.3))


def apply_uncertain(raw: np.ndarray, policy: str, seed: int = 0) -> np.ndarray:
    """Raw multi-label cells (1, 0, -1 = uncertain, nan = never mentioned) -> float32 targets.

    Never-mentioned cells count as 0. Uncertain cells take the policy's value: U-Ones 1, U-Zeros 0,
    LSR-Ones uniform(0.55, 0.85), LSR-Zeros uniform(0, 0.3). Here the LSR values are drawn once per cell
    with ``seed`` (the ``targets`` a dataset reports); a dataset read for training draws them anew at each
    read, as the first study did (:func:`redraw_range`).
    """
    lo, hi = UNCERTAIN.get(policy)
    out = np.nan_to_num(raw.astype(np.float32), nan=0.0)
    unc = out == -1
    if unc.any():
        if lo == hi:
            out[unc] = lo
        else:
            out[unc] = np.random.default_rng(seed).uniform(lo, hi, size=int(unc.sum())).astype(np.float32)
    return out


def redraw_range(policy: str) -> tuple[float, float] | None:
    """(low, high) of a policy whose uncertain value is drawn at each read (LSR), else None."""
    lo, hi = UNCERTAIN.get(policy)
    return None if lo == hi else (lo, hi)


FRACTION_SEED = 99  # the first study's label-fraction draw: random.Random(99), the same for every run


def fraction_subset(n: int, fraction: float) -> np.ndarray:
    """The first study's label fraction (Version1/dataloader.py, ``annotation_percent``): ``n`` indices shuffled
    by ``random.Random(99)``, the first ``int(n * percent / 100.0)`` kept in that order (``percent`` = the
    fraction x 100, as the study's integer option: ``int(n * 0.7)`` would keep one fewer for 70 of the sizes up
    to 5000) -- one fixed subset for every run and seed."""
    if not 0 < fraction <= 1:
        raise BenchxferError(f"fraction {fraction!r} must be in (0, 1]")
    indices = np.arange(n)
    random.Random(FRACTION_SEED).shuffle(indices)
    percent = round(fraction * 100, 9)  # 0.7 -> 70.0, the study's percent
    k = int(n * percent / 100.0)
    if k < 1:
        raise BenchxferError(f"fraction {fraction!r} of {n} examples keeps none; give a larger fraction")
    return indices[:k]


def shots_subset(targets: np.ndarray, task: str, shots: int, seed: int) -> np.ndarray:
    """k examples per class, drawn with ``seed`` (BiT's few-shot protocol).

    Single-label: k per class value. Multi-label: for each class in turn, positives are added until
    the subset holds at least k of them. A class with fewer than k examples gives all it has.
    """
    if shots < 1:
        raise BenchxferError(f"shots {shots!r} must be a positive integer")
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    if get_task(task).target == "multi-hot":
        have = set()
        pos = targets >= 0.5
        for c in range(targets.shape[1]):
            cand = rng.permutation(np.flatnonzero(pos[:, c]))
            got = sum(1 for i in have if pos[i, c])
            for i in cand:
                if got >= shots:
                    break
                if i not in have:
                    have.add(int(i))
                    got += 1
        chosen = sorted(have)
    else:
        for value in np.unique(targets):
            cand = rng.permutation(np.flatnonzero(targets == value))
            chosen += [int(i) for i in cand[:shots]]
        chosen.sort()
    return np.asarray(chosen, dtype=np.int64)
