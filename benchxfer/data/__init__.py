"""Datasets as distributed: the registry, readers, transforms, subsets, preprocessed cache, synthetic data.

    from benchxfer import data
    ds = data.open_dataset("chestxray14", root, "train", transform=data.transforms.build(...))
"""

from benchxfer.data import readers as _readers  # noqa: F401  (registers every dataset)
from benchxfer.data.catalog import DATASETS, DatasetCfg, get_dataset, list_datasets, num_classes, register_dataset
from benchxfer.data.dataset import ImageDataset, check_root, open_dataset
from benchxfer.data.merged import MergedDataset, open_merged
from benchxfer.data import cache, synthetic, transforms

__all__ = [
    "DATASETS", "DatasetCfg", "ImageDataset", "MergedDataset", "cache", "check_root", "get_dataset",
    "list_datasets", "num_classes", "open_dataset", "open_merged", "register_dataset", "synthetic", "transforms",
]
