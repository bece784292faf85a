"""Several chest X-ray sources merged on the intersection of their label sets (supervised pre-training).

Label names are matched after normalisation (case, ``_``, and a few synonyms such as NIH "Effusion" =
CheXpert "Pleural Effusion"). Items are ``(image, target, label_mask)``: ``label_mask`` is 1 where the
source states the label (0 or 1) and 0 where it is blank or uncertain, so the loss leaves it out. As in the
second study, a row whose "No Finding" is 1 states every pathology as 0, and sources that record the view
keep frontal images (PA, AP) unless ``frontal_only=False``.
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
    """Labels present in every dataset of ``names``, in the first one's order, under its names."""
    sets = [{canonical(c) for c in get_dataset(n).classes} for n in names]
    first = get_dataset(names[0]).classes
    return tuple(c for c in first if all(canonical(c) in s for s in sets))


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


def open_merged(sources: list[tuple[str, str | Path]], split: str, *, transform: Any = None, **opts: Any) -> MergedDataset:
    """``sources`` = [(dataset name, root), ...], all multi-label chest X-ray sets."""
    if not sources:
        raise BenchxferError("open_merged: give at least one (dataset, root) source")
    for name, _root in sources:
        if get_dataset(name).task != "multilabel":
            raise BenchxferError(f"open_merged: {name!r} is not a multi-label dataset; merge chest X-ray label sets only")
    classes = common_classes([n for n, _ in sources])
    if not classes:
        raise BenchxferError(f"open_merged: {', '.join(n for n, _ in sources)} share no label")
    parts = []
    for name, root in sources:
        own = dict(opts)
        if "frontal_only" in get_dataset(name).options:
            own.setdefault("frontal_only", True)  # the study pre-trained on frontal views
        parts.append(open_dataset(name, root, split, transform=transform, **own))
    return MergedDataset(parts, classes)
