"""Which training samples a step sees: the shuffled shard, full batches from a set smaller than a batch (cycled
shuffled passes, or drawn with replacement from a set smaller than the study's micro-batch), or class-balanced
oversampling; and which weights a run tests. torch loads only when a sampler is made.

Every draw comes from a generator seeded with (seed, epoch), and each worker takes its slice of the one
global draw, so a resumed run sees exactly the samples an uninterrupted one would, and the workers of a DDP
run together see one full batch per step.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from benchxfer.recipes.config import BALANCE, SELECT  # noqa: F401  (the knobs' values, named with the knobs)

# Which sets the second study oversampled to balanced classes in full-data runs (never in few-shot runs), and its
# micro-batch per set, are facts of each dataset's registry entry (``DatasetCfg.auto_balanced``,
# ``DatasetCfg.study_micro_batch``). Its loader draws with replacement only from a set smaller than one
# micro-batch; from any other set it cycles shuffled passes.


def validation_set(select: str, splits: Sequence[str], options: dict[str, Any]) -> bool:
    """Does a run have a validation set? Only where best-val selection wants one or ``val_fraction`` asks for
    one, and the dataset's protocol has a val split or ``val_fraction`` > 0 carves one."""
    carve = float(options.get("val_fraction", 0) or 0) > 0
    return (select == "best-val" or carve) and ("val" in splits or carve)


def class_weights(labels: Sequence[int]) -> list[float]:
    """The study's weighted random sampler: sample i weighs n / count(class of i)."""
    counts: dict[int, int] = {}
    for y in labels:
        counts[int(y)] = counts.get(int(y), 0) + 1
    n = len(labels)
    return [n / counts[int(y)] for y in labels]


def balanced(balance: str, dataset: str, shot: int | None) -> bool:
    """Class-balanced oversampling for this run? Full-data runs only; ``auto`` follows the dataset."""
    if shot:
        return False
    from benchxfer.data import get_dataset

    return balance == "class" or (balance == "auto" and get_dataset(dataset).auto_balanced)


def study_micro_batch(dataset: str) -> int:
    """The dataset's entry says; a run on no registered set (pre-training's merged sources) gets the default."""
    from benchxfer.data import DATASETS, DatasetCfg

    return DATASETS.get(dataset).study_micro_batch if dataset in DATASETS else DatasetCfg.study_micro_batch


def small_set_sampler(n: int, batch: int, dataset: str, rank: int, world: int, seed: int) -> "DrawnSampler | CycledSampler":
    """A full batch per step from a set smaller than the batch, as the second study's loader gave it: drawn with
    replacement when the set is smaller than one of its micro-batches, otherwise consecutive shuffled passes."""
    if n < study_micro_batch(dataset):
        return DrawnSampler(n, batch, rank, world, seed)
    return CycledSampler(n, batch, rank, world, seed)


class CycledSampler:
    """``num_samples`` indices per epoch from an endless stream of shuffled passes over the set (the study's
    ``recycle(DataLoader(shuffle=True))``): epoch e takes stream positions [e * num_samples, (e + 1) * num_samples),
    pass p is a permutation from a generator seeded with (seed, p); this worker yields its slice ``rank::world``."""

    def __init__(self, n: int, num_samples: int, rank: int, world: int, seed: int):
        self.n, self.num_samples, self.rank, self.world, self.seed = n, num_samples, rank, world, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> list[int]:
        """The global draw of this epoch (all workers)."""
        import torch

        start = self.epoch * self.num_samples
        out: list[int] = []
        for p in range(start // self.n, (start + self.num_samples - 1) // self.n + 1):
            gen = torch.Generator()
            gen.manual_seed(self.seed * 1_000_003 + p)
            out += torch.randperm(self.n, generator=gen).tolist()
        skip = start - (start // self.n) * self.n
        return out[skip:skip + self.num_samples]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank::self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world))


class DrawnSampler:
    """``num_samples`` indices per epoch drawn WITH replacement, uniformly (torch's ``RandomSampler``) or by
    ``weights`` (torch's ``WeightedRandomSampler``), from a generator seeded with (seed, epoch); this worker
    yields its slice ``rank::world`` of the global draw."""

    def __init__(self, n: int, num_samples: int, rank: int, world: int, seed: int,
                 weights: Sequence[float] | None = None):
        self.n, self.num_samples, self.rank, self.world, self.seed = n, num_samples, rank, world, seed
        self.weights = weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> list[int]:
        """The global draw of this epoch (all workers)."""
        import torch
        from torch.utils.data import RandomSampler, WeightedRandomSampler

        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            sampler: Any = WeightedRandomSampler(self.weights, self.num_samples, replacement=True, generator=gen)
        else:
            sampler = RandomSampler(range(self.n), replacement=True, num_samples=self.num_samples, generator=gen)
        return list(sampler)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank::self.world])

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.world))
