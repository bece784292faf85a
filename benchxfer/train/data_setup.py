"""The data side of one run: datasets, transforms and loaders, sharded over workers deterministically."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from benchxfer import data, zoo
from benchxfer.recipes import TrainConfig
from benchxfer.recipes.schedules import bit_mixup
from benchxfer.tasks import PRETRAIN_TASK
from benchxfer.train.sampling import DrawnSampler, balanced, class_weights, validation_set
from benchxfer.zoo.inits import IMAGENET_MEAN, IMAGENET_STD


class Indexed(Dataset):
    """Items become ``(index, *item)`` so that evaluation can put gathered predictions back in order."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        item = self.ds[i]
        return (i, *item)


def normalisation(cfg: TrainConfig) -> tuple[Sequence[float], Sequence[float]]:
    """A name in ``data.transforms.NORMALISATIONS``, or ``init``: the init's own mean/std (ImageNet for scratch)."""
    if cfg.normalization != "init":
        return data.transforms.NORMALISATIONS.get(cfg.normalization)
    if cfg.init == "scratch":
        return IMAGENET_MEAN, IMAGENET_STD
    init = zoo.get_init(cfg.init)
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

    def tf(train: bool, tencrop: bool = False):
        return data.transforms.build(cfg.augment, train=train, size=cfg.size, mean=mean, std=std, task=task,
                                     tencrop=tencrop, dataset=cfg.dataset)

    use_val = validation_set(cfg.select, dcfg.splits, cfg.dataset_options)
    if not use_val and "val_fraction" in dcfg.options and "val_fraction" not in common:
        common["val_fraction"] = 0.0  # no validation set: carve none from the training data
    train = data.open_dataset(cfg.dataset, cfg.root, "train", transform=tf(True), shots=cfg.shot,
                              seed=cfg.seed, **common)
    common.pop("fraction", None)  # a label fraction applies to the training list only
    val = data.open_dataset(cfg.dataset, cfg.root, "val", transform=tf(False), **common) if use_val else None
    test = data.open_dataset(cfg.dataset, cfg.root, "test", transform=tf(False, cfg.tencrop), **common)
    classes = list(getattr(train, "classes", None) or dcfg.classes)
    num_classes = len(classes)
    columns = None
    if dcfg.eval_classes:
        columns = [classes.index(c) for c in dcfg.eval_classes]
    mix = cfg.mixup if cfg.mixup >= 0 else bit_mixup(len(train))  # -1: BiT-HyperRule's rule
    return RunData(train, val, test, task, num_classes, dcfg.metric, tuple(dcfg.metrics), columns, mix,
                   balanced(cfg.balance, cfg.dataset, cfg.shot))


def per_worker_batch(global_batch: int, world: int) -> int:
    return max(1, global_batch // world)


def train_sampler(ds: Dataset, cfg: TrainConfig, rank: int, world: int, balance: bool = False):
    """This worker's sampler: class-balanced draws (weights n / count(class), n per epoch), a full batch drawn
    with replacement when the set is smaller than the batch (``full_batches``), or the shuffled shard.
    Each comes from (seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted one would."""
    n = len(ds)  # type: ignore[arg-type]
    if balance:
        return DrawnSampler(n, n, rank, world, cfg.seed, weights=class_weights(list(ds.targets)))  # type: ignore[attr-defined]
    if cfg.full_batches and n < cfg.batch_size:
        return DrawnSampler(n, cfg.batch_size, rank, world, cfg.seed)
    return DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)


def train_loader(ds: Dataset, cfg: TrainConfig, rank: int, world: int, pin: bool,
                 balance: bool = False) -> tuple[DataLoader, Any]:
    """A loader over this worker's shard (see :func:`train_sampler`)."""
    sampler = train_sampler(ds, cfg, rank, world, balance)
    bs = per_worker_batch(cfg.batch_size, world)
    gen = torch.Generator()
    gen.manual_seed(cfg.seed)
    loader = DataLoader(Indexed(ds), batch_size=bs, sampler=sampler, num_workers=cfg.loader_workers,
                        drop_last=len(sampler) > bs, pin_memory=pin, generator=gen,
                        persistent_workers=False)
    return loader, sampler


def eval_loader(ds: Dataset, cfg: TrainConfig, rank: int, world: int, pin: bool) -> DataLoader:
    """This worker's share of an evaluation set: indices rank, rank + world, ... (no padding, no repeats)."""
    shard = Subset(Indexed(ds), list(range(rank, len(ds), world)))  # type: ignore[arg-type]
    return DataLoader(shard, batch_size=per_worker_batch(cfg.batch_size, world), shuffle=False,
                      num_workers=cfg.loader_workers, pin_memory=pin)


def steps_per_epoch(n: int, cfg: TrainConfig, world: int) -> int:
    """Steps of one epoch: full per-worker batches over the shard, or one step when the set is smaller than
    a batch (then, with ``full_batches``, that step draws a full batch with replacement)."""
    bs = per_worker_batch(cfg.batch_size, world)
    per_worker = math.ceil(n / world)
    steps = per_worker // bs if per_worker > bs else 1
    return min(steps, cfg.max_train_batches) if cfg.max_train_batches > 0 else steps
