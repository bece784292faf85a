"""NIH ChestX-ray14: ``images/*.png`` with the first study's split lists (shipped) or NIH's own lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchxfer.data.catalog import Index, IndexCtx, Record, register_dataset, seeded_split, val_fraction_of, where
from benchxfer.data.imageio import read_lines
from benchxfer.data.readers._common import FRONTAL_VIEWS, FolderFiles, csv_tuples, shipped_split, view_filter
from benchxfer.errors import BenchxferError

NIH_CLASSES = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
LIST_NAMES = {"train": "Xray14_train_official.txt", "val": "Xray14_val_official.txt", "test": "Xray14_test_official.txt"}


def default_list(root: Path, split: str) -> Path:
    """The root's own ``Xray14_<split>_official.txt`` when present, else the shipped official list."""
    own = root / LIST_NAMES[split]
    return own if own.exists() else shipped_split(LIST_NAMES[split])


def parse_first_study_list(root: Path, list_file: Path, ctx: IndexCtx, folder: str = "images") -> list[Record]:
    """Lines ``00000001_000.png 0 1 0 ...``: a file name in ``images/`` and 14 labels of 0 or 1."""
    files = FolderFiles()
    out = []
    for lineno, line in read_lines(list_file):
        origin = where(list_file, lineno)
        parts = line.split()
        if len(parts) != 1 + len(NIH_CLASSES):
            ctx.report(f"{origin}: {len(parts) - 1} labels, expected {len(NIH_CLASSES)} (a file name and 14 labels of 0/1)")
            continue
        if any(p not in ("0", "1") for p in parts[1:]):
            ctx.report(f"{origin}: labels must be 0 or 1, got {' '.join(parts[1:])}")
            continue
        path = files.locate(root / folder, parts[0], origin, ctx.report)
        if path is None:
            continue
        label = np.asarray([float(p) for p in parts[1:]], np.float32)
        out.append(Record(str(path), label, patient=Path(parts[0]).name.split("_")[0], origin=origin))
    return out


# NIH's label file: the name it serves today first (the second study read that one), then the 2017 name
DATA_ENTRY = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")


def data_entry(root: Path) -> Path:
    """The root's NIH label file, plain or gzipped; the one error names every file looked for."""
    for name in DATA_ENTRY:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.exists() or candidate.is_symlink():
                return candidate
    looked = ", ".join(n for name in DATA_ENTRY for n in (name, f"{name}.gz"))
    raise BenchxferError(f"chestxray14 (official='nih'): {root} holds no NIH label file; looked for {looked}")


def _finding_vector(cell: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """The 14 labels of a ``Finding Labels`` cell (``Cardiomegaly|Emphysema``, ``No Finding``), read-only, and the
    findings in it that are none of them."""
    vec = np.zeros(len(NIH_CLASSES), np.float32)
    unknown = []
    for finding in cell.split("|"):
        finding = finding.strip()
        if finding in NIH_CLASSES:
            vec[NIH_CLASSES.index(finding)] = 1.0
        elif finding != "No Finding":
            unknown.append(finding)
    vec.flags.writeable = False
    return vec, tuple(unknown)


def _nih_official(root: Path, split: str, ctx: IndexCtx) -> list[Record]:
    """NIH's ``train_val_list.txt`` / ``test_list.txt`` with labels from ``Data_Entry_2017_v2020.csv`` (or the
    2017 name, :data:`DATA_ENTRY`).

    Validation: a patient-disjoint seeded 10 % of ``train_val_list.txt`` (``val_fraction``, seed 0).
    ``views``: the images whose ``View Position`` is one of them.
    """
    entry = data_entry(root)
    views = view_filter(ctx)
    labels: dict[str, tuple[np.ndarray, str]] = {}
    # by Finding Labels cell: the 112,120 rows hold some 800 distinct ones
    vectors: dict[str, tuple[np.ndarray, tuple[str, ...]]] = {}
    left_out: set[str] = set()  # images of another view
    for lineno, (image, cell, patient, *view) in csv_tuples(
            entry, ("Image Index", "Finding Labels", "Patient ID") + (("View Position",) if views is not None else ())):
        if views is not None and view[0] not in views:
            left_out.add(image)
            continue
        if cell not in vectors:
            vectors[cell] = _finding_vector(cell)
        vec, unknown = vectors[cell]
        for finding in unknown:
            ctx.report(f"{where(entry, lineno)}: unknown finding {finding!r}; known: No Finding, "
                       f"{', '.join(NIH_CLASSES)}")
        labels[image] = (vec, patient)
    list_file = root / ("test_list.txt" if split == "test" else "train_val_list.txt")
    names = [(ln, n) for ln, n in read_lines(list_file) if n not in left_out]
    if split != "test":
        val_fraction = val_fraction_of(ctx)
        patients = [labels.get(n, (None, n.split("_")[0]))[1] for _, n in names]
        assign = seeded_split(patients, (1 - val_fraction, val_fraction, 0.0))
        names = [(ln, n) for (ln, n), p in zip(names, patients) if assign[p] == split]
    files = FolderFiles()
    out = []
    for lineno, name in names:
        origin = where(list_file, lineno)
        if name not in labels:
            ctx.report(f"{origin}: image {name!r} has no row in {entry}")
            continue
        path = files.locate(root / "images", name, origin, ctx.report)
        if path is not None:
            vec, patient = labels[name]
            out.append(Record(str(path), vec, patient=patient, origin=origin))
    return out


@register_dataset(
    "chestxray14",
    task="multilabel",
    classes=NIH_CLASSES,
    metric="auroc",
    metrics=("auroc",),
    required=("images",),
    native_lists=True,
    options=("official", "val_fraction", "views"),
    description="NIH ChestX-ray14: 112,120 frontal chest X-rays, 14 findings (multi-label).",
    split_rule="first study's official lists (shipped; the root's own Xray14_<split>_official.txt win); "
    "official='nih' uses NIH's train_val_list.txt/test_list.txt + Data_Entry_2017_v2020.csv (or "
    "Data_Entry_2017.csv), val = seeded 10% of patients; "
    "views (with official='nih'): View Position",
    # the second study pre-trained on all of train_val_list.txt and validated on test_list.txt
    pretrain_val="test",
    pretrain_options={"official": "nih", "val_fraction": 0.0, "views": FRONTAL_VIEWS},
)
def chestxray14(root: Path, split: str, ctx: IndexCtx) -> Index:
    if ctx.lists and split in ctx.lists:
        return Index(parse_first_study_list(root, Path(ctx.lists[split]), ctx))
    official = ctx.options.get("official", "first-study")
    if official not in ("first-study", "nih"):
        raise BenchxferError(f"chestxray14: official={official!r}; use 'first-study' (default) or 'nih'")
    if official == "nih":
        return Index(_nih_official(root, split, ctx))
    if "views" in ctx.options:
        raise BenchxferError("chestxray14: the option views needs official='nih' (the view is in NIH's "
                             "Data_Entry_2017_v2020.csv)")
    return Index(parse_first_study_list(root, default_list(root, split), ctx))
