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
    """A batch per step from a set smaller than the batch, as the second study's loader gave it: drawn with
    replacement when the set is smaller than one of its micro-batches (full micro-batches), otherwise its
    micro-batches of consecutive shuffled passes (:class:`CycledSampler`; where its batch_split micro-batches of a
    step cannot be shared out equally over the workers, 128 images of the passes instead)."""
    micro = study_micro_batch(dataset)
    if n < micro:
        return DrawnSampler(n, batch, rank, world, seed)
    return CycledSampler(n, batch, rank, world, seed, micro=micro if (batch // micro) % world == 0 else 0)


class CycledSampler:
    """Indices from an endless stream of shuffled passes over the set (the study's
    ``recycle(DataLoader(shuffle=True))``), pass p a permutation from a generator seeded with (seed, p).

    ``micro`` > 0 (the study's micro-batch, 128 / batch_split): each pass is cut into micro-batches of ``micro``,
    its last one partial (n mod micro images), as the study's loader (``drop_last`` False) yielded them; epoch e
    (one step) takes micro-batches [S e, S (e + 1)), S = ``num_samples`` / ``micro`` (the study's batch_split), so
    a step averages fewer than ``num_samples`` images where a pass ends in a partial one; this worker takes the
    micro-batches ``rank::world`` (:meth:`pieces_of`: their sizes). ``micro`` 0: stream positions
    [e * num_samples, (e + 1) * num_samples), this worker's slice ``rank::world``."""

    def __init__(self, n: int, num_samples: int, rank: int, world: int, seed: int, micro: int = 0):
        self.n, self.num_samples, self.rank, self.world, self.seed = n, num_samples, rank, world, seed
        self.micro = micro
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pass(self, p: int) -> list[int]:
        import torch

        gen = torch.Generator()
        gen.manual_seed(self.seed * 1_000_003 + p)
        return torch.randperm(self.n, generator=gen).tolist()

    def micro_batches(self, epoch: int) -> list[list[int]]:
        """The study's micro-batches of step ``epoch`` (all workers)."""
        per_pass = -(-self.n // self.micro)
        steps = self.num_samples // self.micro
        out = []
        for k in range(epoch * steps, (epoch + 1) * steps):
            p, j = divmod(k, per_pass)
            out.append(self._pass(p)[j * self.micro:(j + 1) * self.micro])
        return out

    def pieces_of(self, epoch: int) -> list[int] | None:
        """This worker's micro-batch sizes in epoch ``epoch`` (None: no micro-batches of the study's)."""
        if not self.micro:
            return None
        return [len(m) for m in self.micro_batches(epoch)[self.rank::self.world]]

    def draw(self) -> list[int]:
        """The global draw of this epoch (all workers)."""
        if self.micro:
            return [i for m in self.micro_batches(self.epoch) for i in m]
        start = self.epoch * self.num_samples
        out: list[int] = []
        for p in range(start // self.n, (start + self.num_samples - 1) // self.n + 1):
            out += self._pass(p)
        skip = start - (start // self.n) * self.n
        return out[skip:skip + self.num_samples]

    def __iter__(self) -> Iterator[int]:
        if self.micro:
            return iter([i for m in self.micro_batches(self.epoch)[self.rank::self.world] for i in m])
        return iter(self.draw()[self.rank::self.world])

    def __len__(self) -> int:
        if self.micro:
            return sum(self.pieces_of(self.epoch) or [])
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
