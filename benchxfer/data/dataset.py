"""``open_dataset``: a registered dataset's split as a torch ``Dataset``, read as distributed or from the cache
(the split's records: indexing.py; their pixels: pixels.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from benchxfer.data.cache import ORIGINAL, open_cache
from benchxfer.data.cache import cache_size as check_cache_size
from benchxfer.data.catalog import DatasetCfg, Problems, Record, get_dataset, require_split
from benchxfer.data.indexing import build_index, check_options, make_targets, open_root, raw_labels
from benchxfer.data.labels import fraction_subset, redraw_range, shots_subset
from benchxfer.data.pixels import record_image, record_mask
from benchxfer.errors import BenchxferError

Transform = Callable[[Any, Any], tuple[Any, Any]]


class ImageDataset(Dataset):
    """One split of a registered dataset. Items: ``(image, target)`` or ``(image, mask)``.

    ``targets`` holds every label (multi-label float N x C, else int N); ``patient_ids`` one id per item.
    """

    def __init__(
        self,
        cfg: DatasetCfg,
        root: Path,
        split: str,
        records: list[Record],
        classes: tuple[str, ...],
        targets: np.ndarray | None,
        indices: np.ndarray,
        transform: Transform | None = None,
        cache: Any = None,
        redraw: tuple[float, float] | None = None,
        raw: np.ndarray | None = None,
    ):
        self.cfg, self.root, self.split = cfg, root, split
        # LSR policies: the uncertain cells' values are drawn anew (uniform in ``redraw``) at every read
        self.redraw = redraw
        self._uncertain = None
        if redraw is not None and cfg.kind.target == "multi-hot" and records:
            self._uncertain = (raw_labels(cfg, records) if raw is None else raw) == -1
        self.classes = classes
        self.records = records  # the whole split (the cache's order)
        self.indices = indices  # positions of this dataset's items in ``records``
        self._targets = targets
        self.transform = transform
        self.cache = cache

    # --- labels -------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.cfg.task

    @property
    def indices(self) -> np.ndarray:
        return self._indices

    @indices.setter
    def indices(self, value: np.ndarray) -> None:
        self._indices = value
        self._items_targets: np.ndarray | None = None  # taken again on the next read of ``targets``

    @property
    def targets(self) -> np.ndarray | None:
        """The items' labels, read-only: the whole split's array itself (no copy) when the items are the whole
        split, else its rows of the items, taken once; so ``ds.targets[i]`` in a loop costs O(1)."""
        if self._targets is None:
            return None
        if self._items_targets is None:
            n = len(self._targets)
            whole = len(self._indices) == n and bool(np.array_equal(self._indices, np.arange(n)))
            items = self._targets.view() if whole else self._targets[self._indices]
            items.flags.writeable = False
            self._items_targets = items
        return self._items_targets

    @property
    def patient_ids(self) -> list[str | None]:
        return [self.records[i].patient for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    # --- pixels -------------------------------------------------------------------------------
    def raw_image(self, i: int) -> np.ndarray:
        """uint8 H x W x C (C in {1, 3}) of item ``i``; from the cache when one is open."""
        pos = int(self.indices[i])
        return self.cache.image(pos) if self.cache is not None else record_image(self.cfg, self.records[pos])

    def raw_mask(self, i: int, hw: tuple[int, int]) -> np.ndarray:
        """uint8 {0,1} H x W of item ``i`` (see :func:`pixels.record_mask`)."""
        pos = int(self.indices[i])
        return self.cache.mask(pos) if self.cache is not None else record_mask(self.cfg, self.records[pos], hw)

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        img = self.raw_image(i)
        mask = self.raw_mask(i, img.shape[:2]) if self.cfg.kind.dense else None
        if mask is None and getattr(self.transform, "accepts_array", False):
            image, _ = self.transform(img, None)  # our pipelines take H x W x C uint8 as is (no copies)
            return image, self._target(i)
        if not img.flags.writeable or not img.flags.c_contiguous:
            img = np.array(img)  # torch wants writable memory (PIL arrays and memory maps are read-only)
        image = torch.from_numpy(img).permute(2, 0, 1)
        if image.shape[0] == 1 and not getattr(self.transform, "accepts_grey", False):
            image = image.expand(3, -1, -1)
        if self.transform is None:
            image = image.float().div_(255.0)
            out_mask = None if mask is None else torch.tensor(mask, dtype=torch.float32)
        else:
            from torchvision import tv_tensors

            image, out_mask = self.transform(
                tv_tensors.Image(image), None if mask is None else tv_tensors.Mask(torch.tensor(mask)[None])
            )
        if self.cfg.kind.dense:
            return image, out_mask
        return image, self._target(i)

    def _target(self, i: int):
        pos = int(self.indices[i])
        if self.cfg.kind.target == "multi-hot":
            target = torch.from_numpy(self._targets[pos])
            if self._uncertain is not None and self._uncertain[pos].any():
                cells = torch.from_numpy(self._uncertain[pos])
                lo, hi = self.redraw  # type: ignore[misc]
                target = target.clone()
                target[cells] = lo + (hi - lo) * torch.rand(int(cells.sum()))  # the worker's seeded generator
            return target
        return int(self._targets[pos])


def open_dataset(
    name: str,
    root: str | Path,
    split: str,
    *,
    transform: Transform | None = None,
    uncertain: str | None = None,
    fraction: float | None = None,
    shots: int | None = None,
    seed: int = 0,
    lists: Mapping[str, str | Path] | None = None,
    size_hint: int | str | None = None,
    **reader_options: Any,
) -> ImageDataset:
    """Open ``split`` of dataset ``name`` at ``root`` (the folder as the owner's archive extracts it).

    ``shots`` subsets the train split only, drawn with ``seed``; ``fraction`` the splits the dataset's
    ``fraction_splits`` names (the train split; CheXpert's and Shenzhen's val and test too, as the first study). ``size_hint``: read from the preprocessed cache for that size when a fresh one exists; else from
    the exact cache (``original``) when a fresh one exists; else the source images.
    ``reader_options`` go to the reader (e.g. ``val_fraction`` where a validation split is carved).
    ``uncertain``: the policy for uncertain multi-label cells; default the dataset's own (CheXpert:
    LSR-Ones, drawn anew at each read). ``cache_size`` (an option): read a preprocessed cache of that
    shorter side even where it changes the protocol's pixels (docs/datasets.md).
    """
    cfg = get_dataset(name)
    require_split(split)
    cache_dir = reader_options.pop("cache_dir", None)
    cache_size = reader_options.pop("cache_size", None)
    if cache_size is not None:
        try:
            size_hint = check_cache_size(cache_size)  # type: ignore[assignment]
        except BenchxferError:
            raise BenchxferError(f"cache_size {cache_size!r} must be {ORIGINAL!r} (exact) or a positive number "
                                 "of pixels") from None
    uncertain = uncertain or cfg.uncertain
    check_options(cfg, reader_options)
    if split not in cfg.splits and not reader_options.get("val_fraction"):
        raise BenchxferError(f"dataset {name!r} has no {split} split in its protocol (splits: "
                             f"{', '.join(cfg.splits)}); give the option val_fraction > 0 to carve one")
    cfg, root = open_root(name, root, reader_options)
    index = build_index(cfg, root, split, lists, reader_options, Problems())
    if not index.records:
        raise BenchxferError(f"dataset {name!r}: split {split!r} at {root} is empty; check the root and the split lists")
    classes = index.classes or cfg.classes
    raw = raw_labels(cfg, index.records) if cfg.kind.target == "multi-hot" else None
    targets = make_targets(cfg, index.records, uncertain, seed, raw)
    indices = np.arange(len(index.records))
    if split == "train" and fraction is not None and shots is not None:
        raise BenchxferError("give either fraction or shots, not both")
    if split in cfg.fraction_splits and fraction is not None:
        indices = fraction_subset(len(indices), fraction)
    if split == "train" and shots is not None:
        if targets is None:
            raise BenchxferError(f"shots: dataset {name!r} is a segmentation set; use fraction")
        indices = shots_subset(targets, cfg.task, int(shots), seed)
    cache = None
    if size_hint:
        cache = open_cache(cfg, root, split, size_hint, index.records, lists=lists, options=reader_options,
                           cache_dir=cache_dir)
    if cache is None:  # the exact cache, when one is there, whatever the preset: the same pixels, not decoded
        cache = open_cache(cfg, root, split, ORIGINAL, index.records, lists=lists, options=reader_options,
                           cache_dir=cache_dir)
    return ImageDataset(cfg, root, split, index.records, classes, targets, indices, transform, cache,
                        redraw=redraw_range(uncertain) if cfg.kind.target == "multi-hot" else None, raw=raw)
