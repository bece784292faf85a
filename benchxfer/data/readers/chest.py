"""Chest X-ray label-CSV layouts: CheXpert, MIMIC-CXR-JPG, PadChest; and RSNA PE CT slices."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np

from benchxfer.data.catalog import Index, IndexCtx, Record, register_dataset, seeded_split, val_fraction_of, where
from benchxfer.data.imageio import decode_image
from benchxfer.data.readers._common import FRONTAL_VIEWS, FolderFiles, csv_rows, csv_tuples, view_filter

CHEXPERT_CLASSES = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
CHEXPERT_EVAL = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_CELLS = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": np.nan}


def chexpert_view(row: dict[str, str]) -> str:
    """The second study's view name of a CheXpert row: the AP/PA column for a frontal image, L for a lateral."""
    kind = row["Frontal/Lateral"]
    return row["AP/PA"] if kind == "Frontal" else "L" if kind == "Lateral" else kind


def parse_cells(row: dict[str, str], classes: tuple[str, ...], origin: str, ctx: IndexCtx,
                known: dict[tuple[str, ...], np.ndarray] | None = None) -> np.ndarray | None:
    """CheXpert-style cells: 1.0, 0.0, -1.0 (uncertain) or empty (never mentioned, kept as nan)."""
    return cell_vector(tuple(row[name] for name in classes), classes, origin, ctx, known)


def cell_vector(cells: tuple[str, ...], classes: tuple[str, ...], origin: str, ctx: IndexCtx,
                known: dict[tuple[str, ...], np.ndarray] | None = None) -> np.ndarray | None:
    """:func:`parse_cells` of the cells of ``classes``, in order. ``known``: the vectors of the cell tuples seen so
    far, shared (read-only) by the rows that repeat one (CheXpert's 223,414 rows hold some 20k distinct ones)."""
    if known is not None:
        vec = known.get(cells)
        if vec is not None:
            return vec
    try:
        vec = np.asarray([_CELLS[cell] for cell in cells], np.float32)
    except KeyError:
        i = next(i for i, cell in enumerate(cells) if cell not in _CELLS)
        ctx.report(f"{origin}: column {classes[i]!r} is {cells[i]!r}; allowed: 1.0, 0.0, -1.0 or empty")
        return None
    vec.flags.writeable = False
    if known is not None:
        known[cells] = vec
    return vec


def _path_parts(path: str) -> tuple[str, ...]:
    """``Path(path).parts``, without building a Path for the plain relative paths that every row has."""
    if path.startswith(("/", "./")) or "//" in path or "/./" in path or path.endswith(("/", "/.")):
        return Path(path).parts
    return tuple(path.split("/"))


def _chexpert_patient(parts: tuple[str, ...], path: str) -> str:
    """The first folder named ``patient...``; else the third part from the end (or the whole path)."""
    for part in parts:
        if part.startswith("patient"):
            return part
    return parts[-3] if len(parts) > 3 else path


@register_dataset(
    "chexpert",
    task="multilabel",
    classes=CHEXPERT_CLASSES,
    eval_classes=CHEXPERT_EVAL,
    metric="auroc",
    metrics=("auroc",),
    required=("train.csv", "valid.csv"),
    options=("views", "val_fraction"),
    uncertain="lsr-ones",  # the first study's default: uniform(0.55, 0.85), drawn anew at each read
    fraction_splits=("train", "val", "test"),  # main_classification.py: annotation_percent on all three
    description="CheXpert v1.0: 224k chest X-rays, 14 observations with uncertain labels; scored on 5.",
    split_rule="test = valid.csv (the official validation set); val = seeded 10% of train.csv patients (seed 0); "
               "views: a frontal image's AP/PA column, L for a lateral one",
    pretrain_val="test",  # the second study pre-trained on all of train.csv and validated on valid.csv
    pretrain_options={"val_fraction": 0.0, "views": FRONTAL_VIEWS},
)
def chexpert(root: Path, split: str, ctx: IndexCtx) -> Index:
    csv_path = root / ("valid.csv" if split == "test" else "train.csv")
    views = view_filter(ctx)
    known: dict[tuple[str, ...], np.ndarray] = {}
    n = len(CHEXPERT_CLASSES)
    rows = []
    for lineno, cells in csv_tuples(csv_path, ("Path", "Frontal/Lateral") + CHEXPERT_CLASSES
                                    + (("AP/PA",) if views is not None else ())):
        if views is not None:
            kind = cells[1]  # chexpert_view
            if (cells[-1] if kind == "Frontal" else "L" if kind == "Lateral" else kind) not in views:
                continue
        label = cell_vector(cells[2:2 + n], CHEXPERT_CLASSES, f"{csv_path}:{lineno}", ctx, known)
        if label is None:
            continue
        parts = _path_parts(cells[0])  # "CheXpert-v1.0/train/patient00001/study1/view1_frontal.jpg"
        if len(parts) < 2:
            ctx.report(f"{where(csv_path, lineno)}: Path {cells[0]!r} must start with the CheXpert-v1.0 folder")
            continue
        rows.append((lineno, "/".join(parts[1:]), label, _chexpert_patient(parts, cells[0])))
    if split != "test":  # the split is drawn from the CSV's patients first: only its own images are looked for
        val_fraction = val_fraction_of(ctx)
        assign = seeded_split([patient for *_, patient in rows], (1 - val_fraction, val_fraction, 0.0))
        rows = [r for r in rows if assign[r[3]] == split]
    files = FolderFiles(one_by_one=True)  # 187,641 study folders of one to three images: a stat per image
    recs = []
    for lineno, rel, label, patient in rows:
        origin = f"{csv_path}:{lineno}"
        path = files.locate(root, rel, origin, ctx.report)
        if path is not None:
            recs.append(Record(path, label, patient=patient, origin=origin))
    return Index(recs)


@register_dataset(
    "mimic-cxr",
    task="multilabel",
    classes=CHEXPERT_CLASSES,
    eval_classes=CHEXPERT_EVAL,
    metric="auroc",
    metrics=("auroc",),
    required=("mimic-cxr-2.0.0-split.csv|mimic-cxr-2.0.0-split.csv.gz",
              "mimic-cxr-2.0.0-chexpert.csv|mimic-cxr-2.0.0-chexpert.csv.gz", "files"),
    options=("views",),
    description="MIMIC-CXR-JPG 2.0.0: JPEGs below files/, CheXpert-labeller labels per study.",
    split_rule="mimic-cxr-2.0.0-split.csv (train / validate / test); views: ViewPosition "
               "(mimic-cxr-2.0.0-metadata.csv)",
    pretrain_options={"views": FRONTAL_VIEWS},
)
def mimic_cxr(root: Path, split: str, ctx: IndexCtx) -> Index:
    labels_csv = root / "mimic-cxr-2.0.0-chexpert.csv"
    labels: dict[str, np.ndarray] = {}
    known: dict[tuple[str, ...], np.ndarray] = {}
    for lineno, row in csv_rows(labels_csv, ("subject_id", "study_id") + CHEXPERT_CLASSES):
        vec = parse_cells(row, CHEXPERT_CLASSES, where(labels_csv, lineno), ctx, known)
        if vec is not None:
            labels[row["study_id"]] = vec
    frontal: set[str] | None = None
    views = view_filter(ctx)
    if views is not None:
        meta = root / "mimic-cxr-2.0.0-metadata.csv"
        frontal = {row["dicom_id"] for _, row in csv_rows(meta, ("dicom_id", "ViewPosition"))
                   if row["ViewPosition"].strip() in views}
    split_csv = root / "mimic-cxr-2.0.0-split.csv"
    want = {"train": "train", "val": "validate", "test": "test"}[split]
    files = FolderFiles(one_by_one=True)  # a folder per study, as CheXpert
    recs = []
    for lineno, row in csv_rows(split_csv, ("dicom_id", "study_id", "subject_id", "split")):
        if row["split"] != want or (frontal is not None and row["dicom_id"] not in frontal):
            continue
        origin = where(split_csv, lineno)
        subject, study = row["subject_id"], row["study_id"]
        if study not in labels:
            ctx.report(f"{origin}: study {study} has no row in {labels_csv}")
            continue
        path = files.locate(root, f"files/p{subject[:2]}/p{subject}/s{study}/{row['dicom_id']}.jpg", origin, ctx.report)
        if path is not None:
            recs.append(Record(str(path), labels[study], patient=subject, origin=origin))
    return Index(recs)


PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
# the second study's 27 PadChest classes (transfer_learning/datasets/padchest.py), sorted as it sorted them
PADCHEST_CLASSES = tuple(sorted((
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
    "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Fracture", "Granuloma",
    "Flattened Diaphragm", "Bronchiectasis", "Aortic Elongation", "Scoliosis", "Hilar Enlargement", "Support Devices",
    "Tuberculosis", "Air Trapping", "Costophrenic Angle Blunting", "Aortic Atheromatosis", "Hemidiaphragm Elevation",
)))
# its synonym map: a class is present when its lower-cased name, or one of these, is a substring of the labels
PADCHEST_SYNONYMS = {
    "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"),
    "Pleural_Thickening": ("pleural thickening",),
    "Consolidation": ("air bronchogram",),
    "Hilar Enlargement": ("adenopathy", "pulmonary artery enlargement"),
    "Support Devices": ("device", "pacemaker"),
}
PADCHEST_VIEWS = {"AP_horizontal": "AP Supine"}  # its standardised Projection names
# the images the study left out (missing or unreadable in its copy) before it split the rest
PADCHEST_EXCLUDED = frozenset((
    "216840111366964012819207061112010307142602253_04-014-084.png",
    "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012959786098432011033083840143_00-176-115.png",
    "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012339356563862009072111404053_00-043-192.png",
    "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964012373310883942009117084022290_00-064-025.png",
    "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012373310883942009170084120009_00-097-074.png",
    "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964013829543166512013353113303615_02-092-190.png",
    "216840111366964012904401302362010337093236130_03-198-079.png",
    "216840111366964012904401302362010336141343749_03-198-010.png",
    "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964012989926673512011083134050913_00-168-009.png",
    "216840111366964012373310883942009077082646386_00-047-124.png",
    "216840111366964013686042548532013208193054515_02-026-007.png",
    "216840111366964013962490064942014134093945580_01-178-104.png",
    "216840111366964012819207061112010281134410801_00-129-131.png",
    "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964012283393834152009027091819347_00-007-136.png",
    "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012283393834152009033140208626_00-059-118.png",
    "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964012487858717522009280135853083_00-075-001.png",
    "216840111366964013590140476722013049100117076_02-063-097.png",
    "216840111366964013649110343042013092101343018_02-075-146.png",
    "216840111366964012819207061112010306085429121_04-020-102.png",
    "269300710246070740096540277379121868595_e7zsan.png",
    "216840111366964012373310883942009180082307973_00-097-011.png",
))
PADCHEST_SEED, PADCHEST_TRAIN = 42, 0.9
# Labels cells that pandas reads as missing (its default na_values), which the study's
# ``self.csv[~self.csv["Labels"].isnull()]`` drops: the published file has 103 rows whose Labels is the text "nan"
PADCHEST_NULL = frozenset((
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
))  # its split: rows shuffled with RandomState(42), the first 90 % train


def padchest_terms(name: str) -> tuple[str, ...]:
    """The study's patterns: ``name.lower()`` (underscore kept, as its ``str.contains`` had it) and the synonyms."""
    return (name.lower(), *PADCHEST_SYNONYMS.get(name, ()))


def padchest_vector(labels: set[str]) -> np.ndarray:
    """1 for each class whose name or synonym occurs in one of the row's labels, else 0 (every cell stated)."""
    return np.asarray([1.0 if any(t in label for t in padchest_terms(c) for label in labels) else 0.0
                       for c in PADCHEST_CLASSES], np.float32)


_LABEL_LIST = re.compile(r"\[\s*(?:'[^'\\]*'\s*(?:,\s*'[^'\\]*'\s*)*)?\]")


def padchest_labels(cell: str, origin: str, ctx: IndexCtx, by_label: dict[str, int] | None = None) -> np.ndarray | None:
    """The class vector of one ``Labels`` cell (a Python list literal such as ``['normal']``), read-only: the rows
    that repeat the cell share it; None, reported, for a cell that is not such a list. ``by_label``: the classes of
    each label seen so far, as bits."""
    if _LABEL_LIST.fullmatch(cell):  # a list of plain quoted strings: what literal_eval gives, quicker
        found = {t.strip().lower() for t in re.findall(r"'([^']*)'", cell)}
    else:
        try:
            found = {str(t).strip().lower() for t in ast.literal_eval(cell)}
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            ctx.report(f"{origin}: Labels {cell[:40]!r} is not a list like ['normal']")
            return None
    by_label = {} if by_label is None else by_label
    bits = 0
    for label in found:
        if label not in by_label:
            by_label[label] = sum(1 << i for i, c in enumerate(PADCHEST_CLASSES)
                                  if any(t in label for t in padchest_terms(c)))
        bits |= by_label[label]
    vec = np.asarray([(bits >> i) & 1 for i in range(len(PADCHEST_CLASSES))], np.float32)
    vec.flags.writeable = False
    return vec


def _padchest_image(rec: Record) -> np.ndarray:
    """The second study's PadChest pixels: the stored value / 65535 (whatever the bit depth), as uint8
    (value * 255 / 65535, rounded); never a per-image min-max stretch. The first channel of a colour file."""
    from PIL import Image

    from benchxfer.errors import BenchxferError

    try:
        with Image.open(rec.image) as img:
            arr = np.asarray(img)
    except FileNotFoundError:
        raise BenchxferError(f"{rec.image}: image file is missing") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BenchxferError(f"{rec.image}: unreadable or truncated image ({err})") from None
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    return np.clip(np.rint(arr.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)[:, :, None]


@register_dataset(
    "padchest",
    task="multilabel",
    classes=PADCHEST_CLASSES,
    metric="auroc",
    metrics=("auroc",),
    required=(f"{PADCHEST_CSV}|{PADCHEST_CSV}.gz",),
    load_image=_padchest_image,
    description="PadChest: 160k chest X-rays (16-bit PNG, read as value / 65535) with report-mined findings; "
                "the second study's 27 classes by name or synonym match.",
    options=("views", "val_fraction"),
    splits=("train", "test"),
    split_by="image",
    split_rule="second study: the rows of the views with Labels (a cell pandas reads as missing, e.g. the 103 "
               "'nan' ones, dropped as its isnull(); less its 30 left-out images), shuffled with "
               "RandomState(42): the first int(0.9 n) train, the rest test (its validation set); views: Projection "
               "(AP_horizontal named AP Supine); no val unless val_fraction > 0 (then a seeded share of the train "
               "part's patients, seed 0)",
    pretrain_val="test",
    pretrain_options={"views": FRONTAL_VIEWS},
)
def padchest(root: Path, split: str, ctx: IndexCtx) -> Index:
    csv_path = root / PADCHEST_CSV
    views = view_filter(ctx)
    vectors: dict[str, np.ndarray] = {}  # by Labels cell: 160k rows hold some 29k distinct ones
    by_label: dict[str, int] = {}  # one label -> the bits of the classes it names
    rows = []  # only what a record needs: the report text and the other 31 columns are never kept
    for lineno, (image, folder, patient, cell, *projection) in csv_tuples(
            csv_path, ("ImageID", "ImageDir", "PatientID", "Labels") + (("Projection",) if views is not None else ())):
        if views is not None and PADCHEST_VIEWS.get(projection[0], projection[0]) not in views:
            continue
        if cell in PADCHEST_NULL or image in PADCHEST_EXCLUDED:  # as the study
            continue
        label = vectors.get(cell)
        if label is None:
            label = padchest_labels(cell, f"{csv_path}:{lineno}", ctx, by_label)
            if label is None:
                continue
            vectors[cell] = label
        rows.append((lineno, folder, image, patient, label))
    order = np.arange(len(rows))
    np.random.RandomState(PADCHEST_SEED).shuffle(order)
    n_train = int(len(rows) * PADCHEST_TRAIN)
    chosen = order[n_train:] if split == "test" else order[:n_train]
    files = FolderFiles()
    recs = []
    for i in chosen.tolist():
        lineno, folder, image, patient, label = rows[i]
        origin = f"{csv_path}:{lineno}"
        path = files.locate(root, f"{folder}/{image}", origin, ctx.report)
        if path is not None:
            recs.append(Record(path, label, patient=patient, origin=origin))
    if split != "test":
        val_fraction = val_fraction_of(ctx, default=0.0)
        if val_fraction > 0:
            assign = seeded_split([r.patient for r in recs], (1 - val_fraction, val_fraction, 0.0))
            recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs)


@register_dataset(
    "padchest-single",
    task="multiclass",
    classes=PADCHEST_CLASSES,
    metric="accuracy",
    metrics=("accuracy",),
    required=(f"{PADCHEST_CSV}|{PADCHEST_CSV}.gz",),
    load_image=_padchest_image,
    description="PadChest as the second study's fine-tuning target (configs/finetune/padchest.yaml, finetune.py "
                "--multilabel-force-classification): the images with exactly one of the 27 classes, 27-way.",
    options=("views", "val_fraction"),
    splits=("train", "test"),
    split_rule="padchest's split (RandomState(42): 90 % train, the rest test), then the rows with exactly one "
               "class present, that class the label (finetune.py SingleLabelFromMultiLabel)",
)
def padchest_single(root: Path, split: str, ctx: IndexCtx) -> Index:
    rows = padchest(root, split, ctx).records
    return Index([dataclasses.replace(r, label=int(np.argmax(r.label))) for r in rows if float(r.label.sum()) == 1])


PE_WINDOW = (100.0, 700.0)  # centre, width in HU: the usual pulmonary-angiography window


def _pe_image(rec: Record) -> np.ndarray:
    return decode_image(rec.image, window=PE_WINDOW)


@register_dataset(
    "rsna-pe",
    task="binary",
    classes=("no_pe", "pe"),
    metric="auroc",
    metrics=("auroc", "accuracy"),
    required=("train.csv", "train"),
    load_image=_pe_image,
    description="RSNA STR pulmonary embolism CT, slice level (pe_present_on_image), PE window 100/700 HU.",
    split_rule="seeded 80/10/10 split by StudyInstanceUID (seed 0)",
)
def rsna_pe(root: Path, split: str, ctx: IndexCtx) -> Index:
    csv_path = root / "train.csv"
    cols = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "pe_present_on_image")
    files = FolderFiles()
    recs = []
    for lineno, row in csv_rows(csv_path, cols):
        origin = where(csv_path, lineno)
        if row["pe_present_on_image"] not in ("0", "1"):
            ctx.report(f"{origin}: pe_present_on_image must be 0 or 1, got {row['pe_present_on_image']!r}")
            continue
        path = files.locate(root, f"train/{row[cols[0]]}/{row[cols[1]]}/{row[cols[2]]}.dcm", origin, ctx.report)
        if path is not None:
            recs.append(Record(str(path), int(row["pe_present_on_image"]), patient=row[cols[0]], origin=origin))
    assign = seeded_split([r.patient for r in recs], (0.8, 0.1, 0.1))
    return Index([r for r in recs if assign[r.patient] == split])
