"""The dataset registry: name -> :class:`DatasetCfg` (task, classes, metric, reader, root check).

A reader turns a dataset root as the owners distribute it into an :class:`Index` of :class:`Record`
per split. Problems found while indexing go through a :class:`Problems` collector: in a training run
the first one raises a :class:`BenchxferError`; ``benchxfer data verify`` collects them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry
from benchxfer.tasks import TASKS, Task, get_task

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One example as found on disk. ``origin`` is where it was named ("file:line" or a path)."""

    image: str
    label: Any = None  # multilabel: float array (nan = blank, -1 = uncertain); binary/multiclass: int
    masks: tuple[str, ...] = ()  # mask files united into one mask
    rle: tuple[str, ...] = ()  # run-length strings (SIIM) united into one mask
    patient: str | None = None
    origin: str = ""


@dataclass
class Index:
    """What a reader found for one split."""

    records: list[Record]
    classes: tuple[str, ...] | None = None  # set when only the root knows them (folders)


class Problems:
    """Collects problems (verify) or raises on the first one (training)."""

    def __init__(self, collect: bool = False):
        self.collect = collect
        self.items: list[str] = []

    def __call__(self, message: str) -> None:
        if not self.collect:
            raise BenchxferError(message)
        self.items.append(" ".join(message.split()))


@dataclass
class IndexCtx:
    """What a reader gets besides root and split."""

    lists: Mapping[str, str | Path] | None = None
    report: Problems = field(default_factory=Problems)
    options: dict[str, Any] = field(default_factory=dict)


Reader = Callable[[Path, str, IndexCtx], Index]


@dataclass(frozen=True)
class SegInputs:
    """How the first study fed a segmentation set ("systematic-seg"): online augmentation of the train
    split, and of the val split (it selected checkpoints on augmented val images for some sets; its test
    splits are never augmented); the
    normalisation ("unit": [0, 1] as is, "imagenet", None: the run's); the image resize ("nearest",
    "bilinear"); the mask resize ("nearest"; "bilinear-127": the 0/255 mask resized bilinearly, then > 127)."""

    augment_train: bool = True
    augment_val: bool = False
    normalization: str | None = None
    interpolation: str = "bilinear"
    mask_resize: str = "nearest"


# Montgomery and SIIM: val augmented like train (test not), [0, 1] inputs, nearest-neighbour resize.
# DRIVE: no online augmentation (the study trained on an offline-augmented copy), ImageNet mean/std, the mask
# resized as its DriveDataset did: cv2.resize (bilinear) of the 0/255 mask, then cv2.threshold(127).
STUDY_CXR_SEG = SegInputs(augment_train=True, augment_val=True, normalization="unit", interpolation="nearest")
STUDY_DRIVE = SegInputs(augment_train=False, augment_val=False, normalization="imagenet", interpolation="bilinear",
                        mask_resize="bilinear-127")


@dataclass(frozen=True)
class DatasetCfg:
    """A dataset as data: what it is, how it is scored, and how to read it."""

    name: str
    task: str
    classes: tuple[str, ...]
    metric: str
    metrics: tuple[str, ...]
    description: str
    reader: Reader
    required: tuple[str, ...] = ()  # paths below root that must exist (check_root)
    eval_classes: tuple[str, ...] | None = None
    split_rule: str = ""  # one sentence for docs and `data list`
    grayscale: bool = True
    load_image: Callable[[Record], np.ndarray] | None = None  # default: decode the file by suffix
    load_mask: Callable[[Record, tuple[int, int]], np.ndarray] | None = None  # default: union of files
    classes_from_root: bool = False  # imagefolder-like: classes are the folder names
    native_lists: bool = False  # the reader parses ``lists`` itself (first-study list formats)
    options: tuple[str, ...] = ()  # reader options this dataset takes (anything else is an error)
    uncertain: str = "ones"  # multi-label: default policy for uncertain (-1) cells (labels.UNCERTAIN)
    seg_inputs: SegInputs = SegInputs()  # segmentation sets: the study's inputs for this set
    splits: tuple[str, ...] = SPLITS  # the splits its protocol has; "val" absent: only with val_fraction > 0
    # the splits a label ``fraction`` cuts: the training list, and where the first study passed its
    # ``annotation_percent`` to every split (CheXpert, Shenzhen: main_classification.py) val and test as well
    fraction_splits: tuple[str, ...] = ("train",)
    # what the protocol's split keeps apart: "patient" (a patient in two splits is a problem to `data verify`) or
    # "image" (PadChest's, the study's: a patient's images may fall in both parts, which verify reports as such)
    split_by: str = "patient"
    # as a source of the second study's chest pre-training (data.merged): the split it validated on, and the
    # reader options that give the study's training set and views (a pre-training file's own options win)
    pretrain_val: str = "val"
    pretrain_options: Mapping[str, Any] = field(default_factory=dict)
    # the second study's sampling for this set (read by train.sampling): class-balanced oversampling in full-data
    # runs when the knob ``balance`` is ``auto`` (``oversampling: true`` in its covidx_cxr2.yaml and
    # flowers_oversampling.yaml), and its micro-batch (batch 128 / batch_split in its fine-tune configs: 4, CIFAR's
    # 64), below which its few-shot loader drew with replacement
    auto_balanced: bool = False
    study_micro_batch: int = 4

    def num_classes(self, root: str | Path | None = None) -> int:
        """Number of outputs' classes; folder datasets need ``root``."""
        if self.classes_from_root:
            if root is None:
                raise BenchxferError(f"dataset {self.name!r} takes its classes from the root; give a root")
            return len(self.root_classes(root))
        return len(self.classes)  # a binary set lists both its classes (checked at registration)

    @property
    def kind(self) -> Task:
        """The task's entry in the task registry (:mod:`benchxfer.tasks`): what the data layer asks of a task."""
        return TASKS.get(self.task)

    def root_classes(self, root: str | Path) -> tuple[str, ...]:
        """Classes of a folder dataset, from its train split."""
        idx = self.reader(Path(root).expanduser(), "train", IndexCtx())
        return idx.classes or self.classes


DATASETS: Registry[DatasetCfg] = Registry("dataset")


def register_dataset(name: str, **kwargs: Any) -> Callable[[Reader], Reader]:
    """Decorator on a reader: ``@register_dataset("x", task=..., classes=..., metric=...)``."""

    def deco(reader: Reader) -> Reader:
        kw = dict(kwargs)
        kw.setdefault("metrics", (kw["metric"],))
        kw.setdefault("description", (reader.__doc__ or "").strip().splitlines()[0] if reader.__doc__ else "")
        if kw["task"] not in TASKS:
            raise ValueError(f"task {kw['task']!r} not in {TASKS.names()}")
        if TASKS.get(kw["task"]).score_column is not None and len(kw.get("classes", ())) != 2:
            raise ValueError(f"dataset {name!r}: a task scored on its positive class lists 2 classes")
        computable = get_task(kw["task"]).metrics
        wrong = [m for m in (kw["metric"], *kw["metrics"]) if m not in computable]
        if wrong:
            raise ValueError(f"dataset {name!r}: metric {wrong[0]!r} cannot be computed for a {kw['task']} task; "
                             f"its evaluation gathers what {', '.join(computable)} need")
        DATASETS.add(name, DatasetCfg(name=name, reader=reader, **kw))
        return reader

    return deco


def get_dataset(name: str) -> DatasetCfg:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def num_classes(cfg: DatasetCfg | str, root: str | Path | None = None) -> int:
    cfg = get_dataset(cfg) if isinstance(cfg, str) else cfg
    return cfg.num_classes(root)


def val_fraction_of(ctx: IndexCtx, default: float = 0.1) -> float:
    """The ``val_fraction`` reader option, checked to lie in [0, 1)."""
    value = ctx.options.get("val_fraction", default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise BenchxferError(f"val_fraction {ctx.options.get('val_fraction')!r} must be a number in [0, 1)")
    return value


def where(path: str | Path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def require_split(split: str) -> None:
    if split not in SPLITS:
        raise BenchxferError(f"split {split!r} unknown; use one of: {', '.join(SPLITS)}")


def seeded_split(keys: Sequence[str], fractions: tuple[float, float, float], seed: int = 0) -> dict[str, str]:
    """Assign each distinct key (a patient, or an image) to train/val/test by a seeded shuffle.

    ``fractions`` are (train, val, test); a non-zero val or test part holds at least one key (n >= 3). The same keys always give the same split.
    """
    uniq = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n = len(uniq)
    # a non-zero fraction gets at least one key once there are enough keys to go round
    n_test = max(int(round(fractions[2] * n)), 1 if fractions[2] > 0 and n >= 3 else 0)
    n_val = max(int(round(fractions[1] * n)), 1 if fractions[1] > 0 and n >= 3 else 0)
    out: dict[str, str] = {}
    for rank, idx in enumerate(order):
        out[uniq[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out
