"""Tuberculosis chest X-rays: Shenzhen, Montgomery (TB labels and lung masks), both together, COVIDx."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from benchxfer.data.catalog import (
    STUDY_CXR_SEG,
    Index,
    IndexCtx,
    Record,
    register_dataset,
    seeded_split,
    val_fraction_of,
    where,
)
from benchxfer.data.imageio import read_lines
from benchxfer.data.readers._common import FolderFiles, shipped_split
from benchxfer.errors import BenchxferError

TB_CLASSES = ("normal", "tuberculosis")
SHENZHEN_LISTS = {"train": "ShenzenCXR_train_data.txt", "val": "ShenzenCXR_valid_data.txt", "test": "ShenzenCXR_test_data.txt"}
_SUFFIX = re.compile(r"_([01])\.png$", re.I)


def label_from_name(name: str, origin: str) -> int:
    m = _SUFFIX.search(name)
    if not m:
        raise BenchxferError(f"{origin}: file name {name!r} must end in _0.png or _1.png (the TB label)")
    return int(m.group(1))


def _folder_records(folder: Path, ctx: IndexCtx) -> list[Record]:
    return _records(sorted(folder.glob("*.png")), ctx)


def _records(images: list[Path], ctx: IndexCtx) -> list[Record]:
    """One record per PNG, its label from the ``_0``/``_1`` suffix; a name without one is reported."""
    out = []
    for path in images:
        try:
            label = label_from_name(path.name, str(path))
        except BenchxferError as err:
            ctx.report(str(err))
            continue
        out.append(Record(str(path), label, patient=path.stem.rsplit("_", 1)[0], origin=str(path)))
    return out


@register_dataset(
    "shenzhen",
    task="binary",
    classes=TB_CLASSES,
    metric="auroc",
    metrics=("auroc", "accuracy"),
    required=("CXR_png",),
    native_lists=True,
    fraction_splits=("train", "val", "test"),  # main_classification.py: annotation_percent on all three
    description="Shenzhen chest X-rays (662), tuberculosis vs normal.",
    split_rule="first study's official lists (463/65/134, shipped; the root's own ShenzenCXR_*_data.txt win)",
)
def shenzhen(root: Path, split: str, ctx: IndexCtx) -> Index:
    if ctx.lists and split in ctx.lists:
        list_file = Path(ctx.lists[split])
    else:
        own = root / SHENZHEN_LISTS[split]
        list_file = own if own.exists() else shipped_split(SHENZHEN_LISTS[split])
    files = FolderFiles()
    out = []
    for lineno, line in read_lines(list_file):
        origin = where(list_file, lineno)
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or parts[1] not in ("0", "1"):
            ctx.report(f"{origin}: expected 'CHNCXR_0001_0.png,0' (a file name and a label 0 or 1), got {line!r}")
            continue
        path = files.locate(root / "CXR_png", parts[0], origin, ctx.report)
        if path is not None:
            out.append(Record(str(path), int(parts[1]), patient=Path(parts[0]).stem.rsplit("_", 1)[0], origin=origin))
    return Index(out)


def _montgomery_split(root: Path, split: str, ctx: IndexCtx) -> list[Record]:
    """Seeded 70/10/20 split of ``CXR_png`` by image (one image per patient), seed 0."""
    recs = _folder_records(root / "CXR_png", ctx)
    assign = seeded_split([r.patient for r in recs], (0.7, 0.1, 0.2))
    return [r for r in recs if assign[r.patient] == split]


@register_dataset(
    "montgomery",
    task="binary",
    classes=TB_CLASSES,
    metric="accuracy",
    metrics=("accuracy", "auroc"),
    required=("CXR_png",),
    description="Montgomery County chest X-rays (138), tuberculosis vs normal.",
    split_rule="seeded 70/10/20 split of CXR_png by image (seed 0)",
)
def montgomery(root: Path, split: str, ctx: IndexCtx) -> Index:
    return Index(_montgomery_split(root, split, ctx))


@register_dataset(
    "montgomery-lungs",
    task="segmentation",
    classes=("lung",),
    metric="dice",
    metrics=("dice", "iou"),
    required=("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask"),
    seg_inputs=STUDY_CXR_SEG,
    description="Montgomery lung segmentation: the union of ManualMask/leftMask and rightMask.",
    split_rule="the same seeded 70/10/20 split as montgomery",
)
def montgomery_lungs(root: Path, split: str, ctx: IndexCtx) -> Index:
    files = FolderFiles()
    out = []
    for rec in _montgomery_split(root, split, ctx):
        name = Path(rec.image).name
        masks = tuple(str(root / "ManualMask" / side / name) for side in ("leftMask", "rightMask"))
        missing = [m for m in masks if not files.exists(Path(m))]
        if missing:
            ctx.report(f"{rec.image}: image without mask ({', '.join(missing)} missing)")
            continue
        out.append(Record(rec.image, None, masks=masks, patient=rec.patient, origin=rec.origin))
    return Index(out)


TB_SEED, TB_TRAIN = 42, 0.85  # the second study's split of each source folder
# the two sets the second study trains on together, told apart by their file names' prefix
TB_SETS = {"CHNCXR": "Shenzhen", "MCUCXR": "Montgomery"}
# where a set's CXR_png lies below the root: the sets' own archives extracted side by side, the study's
# layout (Tuberculosis_dataset/ChinaSet_AllFiles/ChinaSet_AllFiles/CXR_png, .../Montgomery/MontgomerySet/CXR_png)
TB_LAYOUTS = ("*/CXR_png", "*/*/CXR_png")


def tb_folders(root: Path) -> list[Path]:
    """The Shenzhen and the Montgomery ``CXR_png`` folders below ``root``, in the study's order (Shenzhen
    first). A root that does not hold each set exactly once is refused with one line."""
    found: dict[str, list[Path]] = {name: [] for name in TB_SETS.values()}
    for folder in sorted({f for layout in TB_LAYOUTS for f in root.glob(layout) if f.is_dir()}):
        prefixes = {p.name.split("_", 1)[0].upper() for p in folder.glob("*.png")}
        for prefix in sorted(prefixes & set(TB_SETS)):
            found[TB_SETS[prefix]].append(folder)
    have = {name: folders for name, folders in found.items() if folders}
    twice = {name: folders for name, folders in have.items() if len(folders) > 1}
    if twice:
        name, folders = next(iter(twice.items()))
        raise BenchxferError(f"tuberculosis: {root} holds the {name} set more than once ({', '.join(map(str, folders))}); "
                             "keep one copy of each set below the root")
    if len(have) < len(TB_SETS):
        missing = " and ".join(n for n in TB_SETS.values() if n not in have)
        held = "; it holds only the " + " and ".join(f"{n} set ({f[0]})" for n, f in have.items()) if have else ""
        raise BenchxferError(f"tuberculosis: {root} has no {missing} CXR_png folder{held}; the second study trains "
                             f"on Shenzhen and Montgomery together: put both sets' folders below the root "
                             f"({' or '.join(f'<root>/{layout}' for layout in TB_LAYOUTS)})")
    return [have[name][0] for name in TB_SETS.values()]


def study_split(folder: Path) -> tuple[list[Path], list[Path]]:
    """The second study's split of one folder: its sorted PNG paths shuffled with
    ``numpy.random.RandomState(42)``; the first ``int(0.85 * n)`` are train, the rest test."""
    paths = sorted(str(p) for p in folder.glob("*.png"))
    np.random.RandomState(TB_SEED).shuffle(paths)
    n_train = int(TB_TRAIN * len(paths))
    return [Path(p) for p in paths[:n_train]], [Path(p) for p in paths[n_train:]]


@register_dataset(
    "tuberculosis",
    task="binary",
    classes=TB_CLASSES,
    metric="accuracy",
    metrics=("accuracy", "auroc"),
    required=("|".join(TB_LAYOUTS),),
    options=("val_fraction",),
    splits=("train", "test"),
    description="Shenzhen + Montgomery together (second study): each set's CXR_png one or two levels below the "
                "root (<set>/CXR_png, or the study's <archive>/<set>/CXR_png); a root without both sets is refused.",
    split_rule="second study: each CXR_png folder on its own (Shenzhen first), sorted PNG paths shuffled with RandomState(42), "
               "first int(0.85 n) train, rest test; trains and tests concatenated; no val unless val_fraction "
               "> 0 (then a seeded share, seed 0, of the train part)",
)
def tuberculosis(root: Path, split: str, ctx: IndexCtx) -> Index:
    parts: dict[str, list[Path]] = {"train": [], "test": []}
    for folder in tb_folders(root):
        train, test = study_split(folder)
        parts["train"] += train
        parts["test"] += test
    val_fraction = val_fraction_of(ctx, default=0.0)
    chosen = parts["test"] if split == "test" else parts["train"]
    if split != "test":
        assign = seeded_split([str(p) for p in chosen], (1 - val_fraction, val_fraction, 0.0)) \
            if val_fraction > 0 else {str(p): "train" for p in chosen}
        chosen = [p for p in chosen if assign[str(p)] == split]
    return Index(_records(chosen, ctx))


@register_dataset(
    "covidx",
    task="binary",
    classes=("negative", "positive"),
    metric="accuracy",
    metrics=("accuracy", "auroc"),
    required=("train", "train.txt", "test.txt"),
    options=("val_fraction",),
    description="COVIDx CXR-2: COVID-19 positive vs negative chest X-rays.",
    split_rule="train.txt / test.txt (and val.txt when present); otherwise val = seeded 10% of train patients",
    auto_balanced=True,
)
def covidx(root: Path, split: str, ctx: IndexCtx) -> Index:
    have_val = (root / "val.txt").exists()
    src = {"train": "train", "val": "val" if have_val else "train", "test": "test"}[split]
    list_file = root / f"{src}.txt"
    files = FolderFiles()
    recs = []
    for lineno, line in read_lines(list_file):
        origin = where(list_file, lineno)
        parts = line.split()
        if len(parts) != 4 or parts[2] not in ("positive", "negative"):
            ctx.report(f"{origin}: expected '<patient id> <file name> <positive|negative> <source>', got {line!r}")
            continue
        path = files.locate(root / src, parts[1], origin, ctx.report)
        if path is not None:
            recs.append(Record(str(path), int(parts[2] == "positive"), patient=parts[0], origin=origin))
    if src == "train" and not have_val:
        val_fraction = val_fraction_of(ctx)
        assign = seeded_split([r.patient for r in recs], (1 - val_fraction, val_fraction, 0.0))
        recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs)
