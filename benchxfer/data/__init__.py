"""Datasets as distributed: the registry, readers, transforms, subsets, preprocessed cache, synthetic data.

    from benchxfer import data
    ds = data.open_dataset("chestxray14", root, "train", transform=data.transforms.build(...))

The registry (catalog and readers) loads at once; the rest (split indexing, datasets, transforms, the
cache, synthetic data) load on first use, so that ``benchxfer --help`` and name checks stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchxfer.data import readers as _readers  # noqa: F401  (registers every dataset)
from benchxfer.data.catalog import DATASETS, DatasetCfg, get_dataset, list_datasets, num_classes, register_dataset

_LAZY = {  # name -> the module that holds it (loaded on first access)
    "ImageDataset": "benchxfer.data.dataset", "check_root": "benchxfer.data.indexing",
    "open_dataset": "benchxfer.data.dataset", "MergedDataset": "benchxfer.data.merged",
    "open_merged": "benchxfer.data.merged", "resolve_root": "benchxfer.data.roots",
}
_SUBMODULES = ("cache", "synthetic", "transforms")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS", "DatasetCfg", "ImageDataset", "MergedDataset", "cache", "check_root", "get_dataset",
    "list_datasets", "num_classes", "open_dataset", "open_merged", "register_dataset", "resolve_root", "synthetic", "transforms",
]
