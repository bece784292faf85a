"""A record's pixels as the dataset's owners distributed them: its image (uint8 H x W x C, C in {1, 3}) and, for
a segmentation set, its mask (uint8 {0, 1} H x W, the union of its mask files). No torch: the dataset, the cache
writer and ``data verify`` all read pixels here."""

from __future__ import annotations

import numpy as np

from benchxfer.data.catalog import DatasetCfg, Record
from benchxfer.data.imageio import decode_image, decode_mask
from benchxfer.errors import BenchxferError


def record_image(cfg: DatasetCfg, rec: Record) -> np.ndarray:
    """The record's image, through the dataset's own loader where it has one."""
    return cfg.load_image(rec) if cfg.load_image else decode_image(rec.image)


def record_mask(cfg: DatasetCfg, rec: Record, hw: tuple[int, int]) -> np.ndarray:
    """The record's mask for an image of size ``hw``; a mask whose size differs from its image is an error."""
    if cfg.load_mask is not None:
        return cfg.load_mask(rec, hw)
    mask = None
    for path in rec.masks:
        part = decode_mask(path)
        if part.shape != hw:
            raise BenchxferError(
                f"{path}: mask is {part.shape[0]}x{part.shape[1]} but its image {rec.image} is {hw[0]}x{hw[1]}"
            )
        mask = part if mask is None else np.maximum(mask, part)
    if mask is None:
        raise BenchxferError(f"{rec.image}: image has no mask ({rec.origin})")
    return mask
