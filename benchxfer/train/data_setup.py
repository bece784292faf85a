"""The data side of one run: datasets, transforms and loaders, sharded over workers deterministically.

The training loader is one stream for the whole run (:class:`TrainStream`): its worker processes start once,
and while a step trains, they already load the next batches, across epoch boundaries too. Each epoch's
samples still come from the sampler seeded by (seed, epoch), and each sample's augmentation from its own
seed (seed, epoch, rank, position), whichever process loads it: a run resumed at any epoch sees exactly
the inputs an uninterrupted one would, and ``loader_workers`` does not change them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from benchxfer import data, zoo
from benchxfer.recipes import TrainConfig
from benchxfer.recipes.config import per_worker_batch
from benchxfer.recipes.schedules import bit_mixup
from benchxfer.tasks import PRETRAIN_TASK, run_task
from benchxfer.train.sampling import DrawnSampler, balanced, class_weights, small_set_sampler, validation_set
from benchxfer.zoo.inits import IMAGENET_MEAN, IMAGENET_STD, INIT_NORMALISATIONS


class Indexed(Dataset):
    """Items become ``(index, *item)`` so that evaluation can put gathered predictions back in order.

    Asked for ``(index, seed)`` (the training stream), the item's random transforms draw from torch's
    generator seeded with ``seed``; in the main process (``loader_workers: 0``) the main generator's state is
    put back afterwards, so loading never moves the training step's own random numbers (MixUp, dropout)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]):
        if isinstance(key, int):
            return (key, *self.ds[key])
        i, seed = key
        if get_worker_info() is None:
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                return (i, *self.ds[i])
        torch.random.default_generator.manual_seed(seed)
        return (i, *self.ds[i])


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The augmentation seed of one training sample: the ``position``-th of this worker's draw in ``epoch``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{rank}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def normalisation(cfg: TrainConfig) -> tuple[Sequence[float], Sequence[float]]:
    """A name in ``data.transforms.NORMALISATIONS``; ``init``: the mean/std the study fed the init (ImageNet for
    scratch and, as the first study, for SimCLR); ``init-trained``: those the init was pre-trained on ([0, 1] for
    SimCLR; the same as ``init`` for every other init)."""
    if cfg.normalization not in INIT_NORMALISATIONS:
        return data.transforms.NORMALISATIONS.get(cfg.normalization)
    if cfg.init == "scratch":
        return IMAGENET_MEAN, IMAGENET_STD
    init = zoo.get_init(cfg.init)
    if cfg.normalization == "init-trained" and init.trained_mean is not None:
        return tuple(init.trained_mean), tuple(init.trained_std or init.std)
    return tuple(init.mean), tuple(init.std)


@dataclass
class RunData:
    train: Dataset
    val: Dataset | None  # None: no validation set (the last step is tested, the train loss is monitored)
    test: Dataset | None
    task: str  # a name in benchxfer.tasks.TASKS
    num_classes: int  # classes of the dataset; the task turns them into head outputs
    metric: str
    metrics: tuple[str, ...]
    auroc_columns: list[int] | None  # CheXpert: AUROC over the 5 competition classes only
    mixup: float
    balance: bool = False  # class-balanced oversampling of the training set




def build_data(cfg: TrainConfig) -> RunData:
    mean, std = normalisation(cfg)
    if cfg.sources:  # pre-training on merged sources
        def tf(train: bool):
            return data.transforms.build(cfg.augment, train=train, size=cfg.size, mean=mean, std=std,
                                         task=PRETRAIN_TASK.name)
        srcs = [(s["dataset"], s["root"], dict(s.get("options") or {})) for s in cfg.sources]
        side = data.transforms.resize_side(cfg.augment, cfg.size)  # the study's preset: the originals
        train = data.open_merged(srcs, "train", transform=tf(True), size_hint=side)
        val = data.open_merged(srcs, "val", transform=tf(False), size_hint=side)
        n = len(train.classes)
        return RunData(train, val, None, PRETRAIN_TASK.name, n, PRETRAIN_TASK.metric, (PRETRAIN_TASK.metric,),
                       None, 0.0)

    dcfg = data.get_dataset(cfg.dataset)
    task = dcfg.task
    common: dict[str, Any] = {**cfg.dataset_options, "size_hint": data.transforms.resize_side(cfg.augment, cfg.size)}

    def tf(split: str, tencrop: bool = False):
        return data.transforms.build(cfg.augment, train=split == "train", size=cfg.size, mean=mean, std=std,
                                     task=task, tencrop=tencrop, dataset=cfg.dataset, split=split)

    use_val = validation_set(cfg.select, dcfg.splits, cfg.dataset_options)
    if not use_val and "val_fraction" in dcfg.options and "val_fraction" not in common:
        common["val_fraction"] = 0.0  # no validation set: carve none from the training data
    train = data.open_dataset(cfg.dataset, cfg.root, "train", transform=tf("train"), shots=cfg.shot,
                              seed=cfg.seed, **common)
    # a label fraction cuts the training list, and val and test where the dataset's fraction_splits say so
    val = data.open_dataset(cfg.dataset, cfg.root, "val", transform=tf("val"), **common) if use_val else None
    test = data.open_dataset(cfg.dataset, cfg.root, "test", transform=tf("test", cfg.tencrop), **common)
    classes = list(getattr(train, "classes", None) or dcfg.classes)
    num_classes = len(classes)
    columns = None
    if dcfg.eval_classes:
        columns = [classes.index(c) for c in dcfg.eval_classes]
    mix = cfg.mixup if cfg.mixup >= 0 else bit_mixup(len(train))  # -1: BiT-HyperRule's rule
    return RunData(train, val, test, run_task(task, cfg.binary_outputs), num_classes, dcfg.metric,
                   tuple(dcfg.metrics), columns, mix, balanced(cfg.balance, cfg.dataset, cfg.shot))


def train_sampler(ds: Dataset, cfg: TrainConfig, rank: int, world: int, balance: bool = False):
    """This worker's sampler: class-balanced draws (weights n / count(class), n per epoch), a full batch from a set
    smaller than the batch (``full_batches``: ``sampling.small_set_sampler``), or the shuffled shard.
    Each comes from (seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted one would."""
    n = len(ds)  # type: ignore[arg-type]
    if balance:  # n draws (as many per worker: rounded up to a multiple of the workers, as DistributedSampler pads)
        return DrawnSampler(n, math.ceil(n / world) * world, rank, world, cfg.seed,
                            weights=class_weights(list(ds.targets)))  # type: ignore[attr-defined]
    if cfg.full_batches and n < cfg.batch_size:
        return small_set_sampler(n, cfg.batch_size, cfg.dataset, rank, world, cfg.seed)
    return DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)


class EpochBatches(Sampler):
    """The batches of epochs ``start`` ... ``stop - 1`` back to back, for one loader iterator: per epoch, the
    sampler's draw for (seed, epoch) cut into the first ``steps`` batches of ``batch_size`` (the last one partial
    where :func:`steps_per_epoch` keeps it), each index paired with its :func:`sample_seed`. The sampler is moved
    to the next epoch here, in the main process, as the loader asks for that epoch's first batch."""

    def __init__(self, sampler: Any, batch_size: int, steps: int, seed: int, rank: int):
        self.sampler, self.batch_size, self.seed, self.rank = sampler, batch_size, seed, rank
        self.per_epoch = steps
        self.start, self.stop = 0, 0

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        bs = self.batch_size
        for epoch in range(self.start, self.stop):
            self.sampler.set_epoch(epoch)
            draw = list(self.sampler)
            for b in range(self.per_epoch):
                yield [(int(i), sample_seed(self.seed, epoch, self.rank, p))
                       for p, i in enumerate(draw[b * bs:(b + 1) * bs], b * bs)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.per_epoch


class TrainStream:
    """One loader iterator over all the epochs a run has left (:class:`EpochBatches`); ``epoch(e)`` yields
    that epoch's batches. The loader's processes live until :meth:`close` (or the end of the stream)."""

    def __init__(self, loader: DataLoader, batches: EpochBatches):
        self.loader, self.batches = loader, batches
        self._it: Iterator | None = None
        self._next = 0

    @property
    def per_epoch(self) -> int:
        return self.batches.per_epoch

    def start(self, first: int, stop: int) -> None:
        """Begin the stream at epoch ``first`` (0, or the one after the restored checkpoint)."""
        self.close()
        self.batches.start, self.batches.stop = first, stop
        self._next = first
        self._it = iter(self.loader) if stop > first else None

    def pieces(self, epoch: int) -> list[int] | None:
        """The sizes of the study's micro-batches in this worker's one batch of ``epoch``, where the sampler cuts
        them (``sampling.CycledSampler``); None otherwise."""
        of = getattr(self.batches.sampler, "pieces_of", None)
        return of(epoch) if of is not None and self.per_epoch == 1 else None

    def epoch(self, epoch: int) -> Iterator:
        if epoch != self._next or self._it is None:
            raise RuntimeError(f"the training stream is at epoch {self._next}, not {epoch}")
        self._next = epoch + 1
        for _ in range(self.per_epoch):
            yield next(self._it)

    def close(self) -> None:
        self._it = None  # the iterator's worker processes shut down with it


def train_loader(ds: Dataset, cfg: TrainConfig, rank: int, world: int, pin: bool,
                 balance: bool = False) -> TrainStream:
    """The training stream over this worker's shard (see :func:`train_sampler`); pinned memory on a GPU."""
    sampler = train_sampler(ds, cfg, rank, world, balance)
    batches = EpochBatches(sampler, per_worker_batch(cfg.batch_size, world),
                           steps_per_epoch(len(ds), cfg, world), cfg.seed, rank)  # type: ignore[arg-type]
    workers = cfg.loader_workers
    loader = DataLoader(Indexed(ds), batch_sampler=batches, num_workers=workers, pin_memory=pin,
                        prefetch_factor=PREFETCH if workers else None)
    return TrainStream(loader, batches)


PREFETCH = 4  # batches each loader process keeps ready


def eval_loader(ds: Dataset, cfg: TrainConfig, rank: int, world: int, pin: bool,
                persistent: bool = False) -> DataLoader:
    """This worker's share of an evaluation set: indices rank, rank + world, ... (no padding, no repeats).
    ``persistent``: its loader processes stay up between passes (the validation set, every epoch)."""
    shard = Subset(Indexed(ds), list(range(rank, len(ds), world)))  # type: ignore[arg-type]
    workers = cfg.loader_workers
    return DataLoader(shard, batch_size=per_worker_batch(cfg.batch_size, world), shuffle=False,
                      num_workers=workers, pin_memory=pin, persistent_workers=persistent and workers > 0,
                      prefetch_factor=PREFETCH if workers else None)


def steps_per_epoch(n: int, cfg: TrainConfig, world: int) -> int:
    """Steps of one epoch over the shard. Without ``full_batches`` every image of the shard, the last batch
    partial (``n mod batch`` images): the first study's ``DataLoader(shuffle=True)`` and the chest pre-training's
    keep it (``drop_last`` False). With ``full_batches`` (the second study's fine-tuning, 128 images a step from
    recycled passes) only full batches, or one step when the set is smaller than a batch (that step draws a full
    batch: :func:`train_sampler`)."""
    bs = per_worker_batch(cfg.batch_size, world)
    per_worker = math.ceil(n / world)
    if per_worker <= bs:
        steps = 1
    else:
        steps = per_worker // bs if cfg.full_batches else math.ceil(per_worker / bs)
    return min(steps, cfg.max_train_batches) if cfg.max_train_batches > 0 else steps
