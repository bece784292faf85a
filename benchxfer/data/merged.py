"""Several chest X-ray sources merged on the intersection of their label sets (supervised pre-training).

Label names are matched after normalisation (case, ``_``, and a few synonyms such as NIH "Effusion" =
CheXpert "Pleural Effusion"). Items are ``(image, target, label_mask)``: ``label_mask`` is 1 where the
source states the label (0 or 1) and 0 where it is blank or uncertain, so the loss leaves it out. As in the
second study (``transfer_learning/datasets/``): "No Finding" is never a class (CheXpert alone has 13), a row
whose "No Finding" is 1 states every pathology as 0, and each source reads the study's training and
validation sets and views (its catalog entry's ``pretrain_val`` and ``pretrain_options``: CheXpert all of
train.csv / valid.csv, NIH train_val_list.txt / test_list.txt, PA and AP views unless the file names more).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from benchxfer.data.catalog import get_dataset
from benchxfer.data.dataset import ImageDataset, open_dataset
from benchxfer.errors import BenchxferError

NO_FINDING = "no finding"
SYNONYMS = {"effusion": "pleural effusion", "pulmonary edema": "edema", "infiltrate": "infiltration"}


def canonical(label: str) -> str:
    key = " ".join(label.replace("_", " ").lower().split())
    return SYNONYMS.get(key, key)


def common_classes(names: list[str]) -> tuple[str, ...]:
    """Labels present in every dataset of ``names`` but "No Finding", in the first one's order, under its names."""
    sets = [{canonical(c) for c in get_dataset(n).classes} for n in names]
    first = get_dataset(names[0]).classes
    return tuple(c for c in first if canonical(c) != NO_FINDING and all(canonical(c) in s for s in sets))


class MergedDataset(Dataset):
    """Concatenation of source splits with labels mapped onto the common classes."""

    def __init__(self, parts: list[ImageDataset], classes: tuple[str, ...]):
        self.parts, self.classes = parts, classes
        targets, masks = [], []
        for ds in parts:
            cols = [ [canonical(c) for c in ds.cfg.classes].index(canonical(k)) for k in classes ]
            full = np.stack([np.asarray(ds.records[p].label, np.float32) for p in ds.indices])
            raw = full[:, cols]
            known = ~np.isnan(raw) & (raw != -1)
            names = [canonical(c) for c in ds.cfg.classes]
            if NO_FINDING in names:  # "No Finding" = 1: every pathology is a stated 0
                normal = full[:, names.index(NO_FINDING)] == 1
                pathology = np.asarray([canonical(k) != NO_FINDING for k in classes])
                raw[np.ix_(normal, pathology)] = 0.0
                known[np.ix_(normal, pathology)] = True
            targets.append(np.where(known, raw, 0.0).astype(np.float32))
            masks.append(known.astype(np.float32))
        self.targets = np.concatenate(targets)
        self.label_masks = np.concatenate(masks)
        self._offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def patient_ids(self) -> list[str]:
        return [f"{ds.cfg.name}:{p}" for ds in self.parts for p in ds.patient_ids]

    def __getitem__(self, i: int):
        part = int(np.searchsorted(self._offsets, i, side="right") - 1)
        image, _ = self.parts[part][i - int(self._offsets[part])]
        return image, torch.from_numpy(self.targets[i]), torch.from_numpy(self.label_masks[i])


Source = tuple[str, "str | Path"] | tuple[str, "str | Path", dict[str, Any]]


def open_merged(sources: list[Source], split: str, *, transform: Any = None, **opts: Any) -> MergedDataset:
    """``sources`` = [(dataset name, root[, reader options]), ...], all multi-label chest X-ray sets.

    ``split`` "train" opens each source's training split, "val" the split the study validated on
    (``pretrain_val``), "test" its test split; the reader options are the source's ``pretrain_options``, then
    ``opts``, then the source's own."""
    if not sources:
        raise BenchxferError("open_merged: give at least one (dataset, root) source")
    names = [src[0] for src in sources]
    for name in names:
        if get_dataset(name).kind.target != "multi-hot":
            raise BenchxferError(f"open_merged: {name!r} is not a multi-label dataset; merge chest X-ray label sets only")
    classes = common_classes(names)
    if not classes:
        raise BenchxferError(f"open_merged: {', '.join(names)} share no label")
    parts = []
    for name, root, *own in sources:
        cfg = get_dataset(name)
        options = {**cfg.pretrain_options, **opts, **(own[0] if own else {})}
        part_split = cfg.pretrain_val if split == "val" else split
        parts.append(open_dataset(name, root, part_split, transform=transform, **options))
    return MergedDataset(parts, classes)
