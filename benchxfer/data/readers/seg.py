"""Segmentation layouts: DRIVE (TIFF + GIF), SIIM-ACR pneumothorax (DICOM + RLE CSV), image/mask folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchxfer.data.catalog import (
    STUDY_CXR_SEG,
    STUDY_DRIVE,
    Index,
    IndexCtx,
    Record,
    register_dataset,
    seeded_split,
    where,
)
from benchxfer.data.imageio import rle_decode
from benchxfer.data.readers._common import FolderFiles, csv_rows
from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm")


# DRIVE comes in two layouts, told apart by their folders. The first study trained on SA-UNet's copy (its
# README links it; Version1/dataloader.py's DriveDataset reads any image folder with its labels named
# ``<part of the name before '_'>_manual1.png``); the DRIVE challenge's own release is the other.
SA_UNET_SPLITS = {"train": "train", "val": "validate", "test": "test"}


@dataclass(frozen=True)
class DriveLayout:
    """One on-disk form of DRIVE: the folders it needs (``test/images`` is in both, so it marks neither) and its
    reader."""

    folders: tuple[str, ...]
    read: Callable[[Path, str, IndexCtx], list[Record]]


def read_original_drive(root: Path, split: str, ctx: IndexCtx) -> list[Record]:
    """The challenge's release: ``test/`` is test; val is a seeded 20% of ``training/`` (seed 0)."""
    part = "test" if split == "test" else "training"
    files = FolderFiles()
    recs = []
    for path in sorted((root / part / "images").glob("*.tif")):
        number = path.name.split("_")[0]
        mask = root / part / "1st_manual" / f"{number}_manual1.gif"
        if not files.exists(mask):
            ctx.report(f"{path}: image without mask ({mask} missing)")
            continue
        recs.append(Record(str(path), None, masks=(str(mask),), patient=number, origin=str(path)))
    if part == "training":
        assign = seeded_split([r.patient for r in recs], (0.8, 0.2, 0.0))
        recs = [r for r in recs if assign[r.patient] == split]
    return recs


def read_sa_unet_drive(root: Path, split: str, ctx: IndexCtx) -> list[Record]:
    """SA-UNet's offline-augmented copy, split by its folders as the study's three DriveDatasets were: train =
    ``train/``, val = ``validate/``, test = ``test/``; each image's label is ``labels/<id>_manual1.png``, ``<id>``
    the image name's part before '_' (Train_drive.py, Eval_drive.py, DriveDataset)."""
    folder = root / SA_UNET_SPLITS[split]
    files = FolderFiles()
    recs = []
    for path in sorted((folder / "images").iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = path.name.split("_")[0]
        mask = folder / "labels" / f"{key}_manual1.png"
        if not files.exists(mask):
            ctx.report(f"{path}: image without label ({mask} missing)")
            continue
        recs.append(Record(str(path), None, masks=(str(mask),), patient=key, origin=str(path)))
    return recs


DRIVE_LAYOUTS: Registry[DriveLayout] = Registry("DRIVE layout")
DRIVE_LAYOUTS.add("sa-unet", DriveLayout(("train/images", "train/labels", "validate/images", "validate/labels",
                                          "test/images", "test/labels"), read_sa_unet_drive))
DRIVE_LAYOUTS.add("original", DriveLayout(("training/images", "training/1st_manual", "test/images"),
                                           read_original_drive))


def drive_layout(root: Path) -> str:
    """The layout ``root`` holds: the one with a folder of its own there, which must have all its folders (one
    line names those missing); SA-UNet's before the original when a root holds both."""
    for name in ("sa-unet", "original"):
        folders = DRIVE_LAYOUTS.get(name).folders
        present = [f for f in folders if (root / f).is_dir()]
        if [f for f in present if f != "test/images"]:
            missing = [f for f in folders if f not in present]
            if missing:
                raise BenchxferError(f"dataset 'drive': {root} holds part of the {name} layout; "
                                     f"{', '.join(missing)} missing (it needs {', '.join(folders)})")
            return name
    raise BenchxferError(f"dataset 'drive': {root} holds neither DRIVE layout; "
                         + "; or ".join(f"{n} needs {', '.join(lay.folders)}" for n, lay in DRIVE_LAYOUTS.items()))


@register_dataset(
    "drive",
    task="segmentation",
    classes=("vessel",),
    metric="dice",
    metrics=("dice", "dice_per_image", "iou"),  # the study: Dice over all test pixels, and the mean per image
    required=("training/images|train/images", "test/images"),  # the rest: drive_layout, one line
    grayscale=False,
    seg_inputs=STUDY_DRIVE,
    description="DRIVE retinal vessels: SA-UNet's augmented copy (PNG labels) or the 40 RGB TIFF fundus images "
    "with GIF vessel masks (1st_manual).",
    split_rule="SA-UNet's copy (train/, validate/, test/ with labels/): train = train/, val = validate/, "
    "test = test/; the original release: test = test/; val = seeded 20% of training/ (seed 0), train the rest",
)
def drive(root: Path, split: str, ctx: IndexCtx) -> Index:
    return Index(DRIVE_LAYOUTS.get(drive_layout(root)).read(root, split, ctx))


def _siim_mask(rec: Record, hw: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(hw, np.uint8)
    for rle in rec.rle:
        mask |= rle_decode(rle, hw[0], hw[1], rec.origin)
    return mask


@register_dataset(
    "siim-pneumothorax",
    task="segmentation",
    classes=("pneumothorax",),
    metric="dice",
    metrics=("dice", "iou"),
    required=("train-rle.csv",),
    load_mask=_siim_mask,
    seg_inputs=STUDY_CXR_SEG,
    description="SIIM-ACR pneumothorax: DICOM chest X-rays with run-length masks in train-rle.csv.",
    split_rule="seeded 80/10/10 split of the ImageIds in train-rle.csv (seed 0)",
)
def siim(root: Path, split: str, ctx: IndexCtx) -> Index:
    csv_path = root / "train-rle.csv"
    rles: dict[str, list[str]] = {}
    origins: dict[str, str] = {}
    for lineno, row in csv_rows(csv_path, ("ImageId", "EncodedPixels")):
        rles.setdefault(row["ImageId"], []).append(row["EncodedPixels"])
        origins.setdefault(row["ImageId"], where(csv_path, lineno))
    dicoms: dict[str, str] = {}
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".dcm"):
                dicoms.setdefault(name[:-4], os.path.join(folder, name))
    assign = seeded_split(list(rles), (0.8, 0.1, 0.1))
    recs = []
    for image_id, codes in rles.items():
        if assign[image_id] != split:
            continue
        if image_id not in dicoms:
            ctx.report(f"{origins[image_id]}: image {image_id}.dcm is missing below {root}")
            continue
        codes = [c for c in codes if c != "-1"] or ["-1"]
        recs.append(Record(dicoms[image_id], None, rle=tuple(codes), patient=image_id, origin=origins[image_id]))
    return Index(recs)


def _stems(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES} if folder.is_dir() else {}


@register_dataset(
    "maskfolder",
    task="segmentation",
    classes=("foreground",),
    metric="dice",
    metrics=("dice", "iou"),
    required=("images|train/images",),
    grayscale=False,
    description="Any image/mask folder pair: images/<name> and masks/<name> with the same stem.",
    split_rule="train/, val/, test/ subfolders (each with images/ and masks/) when present; "
    "otherwise a seeded 70/10/20 split by stem (seed 0)",
)
def maskfolder(root: Path, split: str, ctx: IndexCtx) -> Index:
    split_folders = (root / "train" / "images").is_dir()
    base = root / split if split_folders else root
    images, masks = _stems(base / "images"), _stems(base / "masks")
    recs = []
    for stem, path in images.items():
        if stem not in masks:
            ctx.report(f"{path}: image without mask (no {base / 'masks' / stem}.*)")
            continue
        recs.append(Record(str(path), None, masks=(str(masks[stem]),), patient=stem, origin=str(path)))
    if not split_folders:
        assign = seeded_split([r.patient for r in recs], (0.7, 0.1, 0.2))
        recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs)

