"""Synthetic datasets written in the REAL on-disk layouts, so that the real readers read them.

Images are small (``size`` px) and built so that simple visual primitives carry the labels, which a
ResNet-18 at 64 px learns in a few CPU epochs:

- chest family: a noisy chest-like picture (body, two dark lung ellipses) on which finding ``k`` of
  a 14-label set is a bright blob of its own shape at its own place (:data:`FINDING_SPOTS`);
  tuberculosis / COVID / PE positives are a bright textured patch inside a lung; the lung masks are
  the two ellipses; a pneumothorax is a dark crescent at the top of a lung.
- ``family="cxr-source"``: the pre-training source. Same primitives (lungs, finding blobs), different
  images (its own seed stream), so that a backbone pre-trained on it transfers to the ``cxr`` targets.
- natural family (imagefolder, flowers102, pets, cifar10, cifar100): class ``k`` = a coloured shape; maskfolder:
  a blob and its mask; DRIVE: dark curved vessels on an orange disc.

``n_train``/``n_val``/``n_test`` are the image counts per split for layouts whose split lists the
generator writes (chestxray14, shenzhen, covidx, cifar10, cifar100, imagefolder, maskfolder, drive); for layouts
whose reader draws a seeded split (montgomery, siim, ...) the generator writes their sum.
"""

from __future__ import annotations

import csv
import functools
import os
import pickle
import shutil
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from benchxfer.errors import BenchxferError
from benchxfer.paths import synthetic_dir
from benchxfer.registry import Registry

FAMILIES = ("cxr", "cxr-source")


@dataclass(frozen=True)
class SyntheticSet:
    """What a synthetic set is written with: the ``synthetic:`` block of a sweep or pre-training file (its keys are
    these fields, ``written`` aside; ``benchxfer.plan.schema`` checks and builds it), and ``ensure``'s parameters,
    whose defaults are these. ``written``: the keys the file wrote (sorted), which alone name the set's folder
    (``data.roots.synthetic_folder``), so that a folder stays what it was when a file writes a default out."""

    n_train: int = 300
    n_val: int = 100
    n_test: int = 100
    size: int = 96
    seed: int = 0
    family: str = "cxr"
    written: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The values the file wrote (the folder's identity)."""
        return {key: getattr(self, key) for key in self.written}

    def params(self) -> dict[str, Any]:
        """Every value but ``written``: ``write``'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "written"}


MARKER = ".benchxfer-synthetic"
GENERATOR = 3  # bumped when files change for the same parameters (2: findings placed by name; 3: MIMIC
# metadata with ViewPosition), so sets are rewritten
# 16 finding positions (row, col) as fractions of the image, and a shape per position. The 14 ChestX-ray14
# findings have the first 14, in NIH's order; the same finding has the same place and shape in every chest
# layout (CheXpert's "Pleural Effusion" is NIH's "Effusion"), so that merged sources agree on their labels.
FINDING_SPOTS = [(0.2 + 0.2 * (i // 4), 0.17 + 0.22 * (i % 4)) for i in range(16)]
SHAPES = ("disk", "square", "ring", "cross")
FINDING_CONTRAST = 0.4  # a finding adds this much brightness; with NOISE it sets how hard the task is
NOISE = 0.1
FINDING_RADIUS = 0.08  # as a fraction of the image side

Writer = Callable[["Gen", Path, tuple[int, int, int]], None]
WRITERS: Registry[Writer] = Registry("synthetic layout")  # one per dataset, in the layout it is distributed in
# other layouts a dataset's reader also reads (``write`` takes their names too): e.g. drive-sa-unet
ALT_WRITERS: Registry[Writer] = Registry("synthetic alternative layout")


class Gen:
    """Random drawing helpers for one dataset (its own seeded stream)."""

    def __init__(self, size: int, seed: int, family: str):
        if family not in FAMILIES:
            raise BenchxferError(f"synthetic family {family!r} unknown; use one of: {', '.join(FAMILIES)}")
        self.size = size
        self.family = family
        self.rng = np.random.default_rng([seed, FAMILIES.index(family)])
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        self.yy, self.xx = yy, xx

    # --- primitives -------------------------------------------------------------------------------
    def ellipse(self, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
        return ((self.yy - cy) / ry) ** 2 + ((self.xx - cx) / rx) ** 2 <= 1.0

    def shape(self, kind: str, cy: float, cx: float, r: float) -> np.ndarray:
        dy, dx = np.abs(self.yy - cy), np.abs(self.xx - cx)
        if kind == "disk":
            return dy**2 + dx**2 <= r**2
        if kind == "square":
            return (dy <= r * 0.85) & (dx <= r * 0.85)
        if kind == "ring":
            d = np.sqrt(dy**2 + dx**2)
            return (d <= r) & (d >= r * 0.5)
        return ((dy <= r) & (dx <= r * 0.35)) | ((dx <= r) & (dy <= r * 0.35))

    def chest(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A chest-like float image in [0, 1] with its left and right lung masks."""
        j = lambda s: float(self.rng.uniform(-s, s))  # noqa: E731
        img = 0.15 + 0.1 * self.yy
        body = self.ellipse(0.55 + j(0.02), 0.5 + j(0.02), 0.5, 0.42 + j(0.03))
        img = np.where(body, 0.6 + j(0.05), img)
        left = self.ellipse(0.5 + j(0.04), 0.3 + j(0.03), 0.3 + j(0.05), 0.13 + j(0.025))
        right = self.ellipse(0.5 + j(0.04), 0.7 + j(0.03), 0.3 + j(0.05), 0.13 + j(0.025))
        img = np.where(left | right, 0.28 + j(0.04), img)
        return img.astype(np.float32), left, right

    def finding(self, img: np.ndarray, k: int) -> np.ndarray:
        """Finding at spot ``k`` (see :func:`finding_spot`)."""
        cy, cx = FINDING_SPOTS[k]
        cy += float(self.rng.uniform(-0.03, 0.03))
        cx += float(self.rng.uniform(-0.03, 0.03))
        m = self.shape(SHAPES[k % len(SHAPES)], cy, cx, FINDING_RADIUS)
        return img + FINDING_CONTRAST * m

    def patch(self, img: np.ndarray, lung: np.ndarray) -> np.ndarray:
        """A bright textured patch inside ``lung`` (TB, COVID, PE positives)."""
        ys, xs = np.nonzero(lung)
        i = int(self.rng.integers(len(ys)))
        m = self.ellipse(ys[i] / self.size, xs[i] / self.size, 0.09, 0.07)
        texture = 0.75 + 0.2 * (((self.yy * self.size).astype(int) // 2 + (self.xx * self.size).astype(int) // 2) % 2)
        return np.where(m, texture, img)

    def finish(self, img: np.ndarray, noise: float = NOISE) -> np.ndarray:
        img = img + self.rng.normal(0.0, noise, img.shape)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

    def cxr(self, labels: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
        """A chest with the findings ``labels > 0``: label ``k`` is ChestX-ray14's finding ``k``, or the
        finding named ``names[k]``."""
        img, _, _ = self.chest()
        for k in np.flatnonzero(labels > 0):
            spot = int(k) % 14 if names is None else finding_spot(names[k])
            if spot is not None:
                img = self.finding(img, spot)
        return self.finish(img)

    def labels(self, n: int, p: float = 0.3) -> np.ndarray:
        return (self.rng.random((n, 14)) < p).astype(np.int64)

    def tb(self, positive: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, left, right = self.chest()
        if positive:
            img = self.patch(img, left if self.rng.random() < 0.5 else right)
        return self.finish(img), left, right

    def colour_shape(self, k: int, n_classes: int) -> np.ndarray:
        """Natural family: class ``k`` = a shape of its own colour at a random place, RGB uint8."""
        hue = k / max(n_classes, 1)
        colour = np.asarray([abs(np.sin(np.pi * (hue + o))) for o in (0.0, 1 / 3, 2 / 3)], np.float32)
        img = np.ones((self.size, self.size, 3), np.float32) * self.rng.uniform(0.2, 0.5, 3).astype(np.float32)
        m = self.shape(SHAPES[k % len(SHAPES)], *self.rng.uniform(0.3, 0.7, 2), 0.22)
        img[m] = colour
        img += self.rng.normal(0, 0.04, img.shape)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def finding_spot(name: str) -> int | None:
    """Where finding ``name`` is drawn: ChestX-ray14's findings (under any synonym) at their own spot, the
    others at one of the two spare spots, "No Finding" nowhere."""
    from benchxfer.data.merged import canonical
    from benchxfer.data.readers.nih import NIH_CLASSES

    key = canonical(name)
    if key == "no finding":
        return None
    nih = [canonical(c) for c in NIH_CLASSES]
    return nih.index(key) if key in nih else 14 + zlib.crc32(key.encode()) % 2


def _png(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def _splits(counts: tuple[int, int, int]) -> list[str]:
    return ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]


def _dicom(path: Path, arr: np.ndarray, uid: str, *, ct: bool = False) -> None:
    """An uncompressed DICOM file (8-bit X-ray, or 16-bit CT with a HU rescale)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality = "CT" if ct else "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    if ct:
        # HU = raw - 1024; the PE window (100 +/- 350 HU) maps the uint8 picture onto [-250, 450] HU
        raw = (arr.astype(np.float32) / 255.0 * 700.0 - 250.0 + 1024.0).astype(np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = raw.tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


# --- chest layouts ----------------------------------------------------------------------------------

@WRITERS.register("chestxray14")
def _chestxray14(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.readers.nih import LIST_NAMES, NIH_CLASSES

    splits = _splits(counts)
    labels = g.labels(len(splits))
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    entries = []
    patient, follow = 0, 0
    for i, split in enumerate(splits):
        # 1-2 images per patient; a patient never straddles two splits
        if i == 0 or splits[i - 1] != split or follow >= 1 or g.rng.random() < 0.5:
            patient, follow = patient + 1, 0
        else:
            follow += 1
        name = f"{patient:08d}_{follow:03d}.png"
        _png(root / "images" / name, g.cxr(labels[i]))
        lines[split].append(name + " " + " ".join(map(str, labels[i])))
        findings = "|".join(NIH_CLASSES[k] for k in np.flatnonzero(labels[i])) or "No Finding"
        entries.append([name, findings, follow, patient, 50, "M", "PA", g.size, g.size, 0.143, 0.143])
    for split, names in lines.items():
        (root / LIST_NAMES[split]).write_text("\n".join(names) + "\n")
    with (root / "Data_Entry_2017.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                    "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"])
        w.writerows(entries)
    (root / "train_val_list.txt").write_text("\n".join(ln.split()[0] for s in ("train", "val") for ln in lines[s]) + "\n")
    (root / "test_list.txt").write_text("\n".join(ln.split()[0] for ln in lines["test"]) + "\n")


def _chexpert_rows(g: Gen, n: int) -> tuple[np.ndarray, list[list[str]]]:
    """Cells of the 14 CheXpert observations: 1.0, 0.0, -1.0 or blank; a finding is drawn when 1 or -1."""
    draw = g.rng.choice(4, size=(n, 14), p=[0.3, 0.2, 0.1, 0.4])  # 1, 0, -1, blank
    text = np.asarray(["1.0", "0.0", "-1.0", ""])[draw]
    return (draw == 0) | (draw == 2), text.tolist()


@WRITERS.register("chexpert")
def _chexpert(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.readers.chest import CHEXPERT_CLASSES

    head = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES]
    for csv_name, part, n in (("train.csv", "train", counts[0] + counts[1]), ("valid.csv", "valid", counts[2])):
        present, cells = _chexpert_rows(g, n)
        rows = []
        for i in range(n):
            rel = f"{part}/patient{i // 2 + (0 if part == 'train' else 60000):05d}/study1/view{i % 2 + 1}_frontal.jpg"
            _png(root / rel, g.cxr(present[i], CHEXPERT_CLASSES), quality=95)
            rows.append([f"CheXpert-v1.0/{rel}", "Female", 60, "Frontal", "PA", *cells[i]])
        with (root / csv_name).open("w", newline="") as f:
            csv.writer(f).writerows([head, *rows])


def _tb_set(g: Gen, root: Path, prefix: str, n: int, masks: bool) -> list[str]:
    names = []
    for i in range(n):
        label = int(i % 2)
        name = f"{prefix}_{i + 1:04d}_{label}.png"
        img, left, right = g.tb(bool(label))
        _png(root / "CXR_png" / name, img)
        if masks:
            _png(root / "ManualMask" / "leftMask" / name, (left * 255).astype(np.uint8))
            _png(root / "ManualMask" / "rightMask" / name, (right * 255).astype(np.uint8))
        names.append(name)
    return names


@WRITERS.register("shenzhen")
def _shenzhen(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.readers.tb import SHENZHEN_LISTS

    names = _tb_set(g, root, "CHNCXR", sum(counts), masks=False)
    for split in ("train", "val", "test"):
        picked = [n for n, s in zip(names, _splits(counts)) if s == split]
        (root / SHENZHEN_LISTS[split]).write_text("".join(f"{n},{n[-5]}\n" for n in picked))


@WRITERS.register("montgomery")
def _montgomery(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    _tb_set(g, root, "MCUCXR", sum(counts), masks=True)


WRITERS.add("montgomery-lungs", _montgomery)


@WRITERS.register("tuberculosis")
def _tuberculosis(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    n = sum(counts)
    _tb_set(g, root / "ChinaSet_AllFiles", "CHNCXR", n - n // 3, masks=False)
    _tb_set(g, root / "MontgomerySet", "MCUCXR", n // 3, masks=True)


@WRITERS.register("covidx")
def _covidx(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    for part, n in (("train", counts[0] + counts[1]), ("test", counts[2])):
        lines = []
        for i in range(n):
            positive = bool(i % 2)
            img, _, _ = g.tb(positive)
            name = f"{part}_{i:05d}.png"
            _png(root / part / name, img)
            lines.append(f"{part}{i // 2} {name} {'positive' if positive else 'negative'} synthetic")
        (root / f"{part}.txt").write_text("\n".join(lines) + "\n")


@WRITERS.register("siim-pneumothorax")
def _siim(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.imageio import rle_encode

    rows = []
    for i in range(sum(counts)):
        img_f, left, right = g.chest()
        mask = np.zeros_like(left)
        if i % 2:
            lung = left if g.rng.random() < 0.5 else right
            ys, xs = np.nonzero(lung)
            top = ys.min() / g.size
            cx = xs.mean() / g.size
            mask = lung & g.ellipse(top + 0.08, cx, 0.12, 0.16)
            img_f = np.where(mask, 0.05, img_f)
        uid = f"1.2.276.0.7230010.3.1.4.8323329.{i + 1}"
        _dicom(root / "dicom-images-train" / f"{uid}.1" / f"{uid}.2" / f"{uid}.dcm", g.finish(img_f), uid)
        rows.append([uid, rle_encode(mask)])
    with (root / "train-rle.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", " EncodedPixels"])  # the competition's header has the leading space
        w.writerows(rows)


@WRITERS.register("mimic-cxr")
def _mimic(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.readers.chest import CHEXPERT_CLASSES

    n = sum(counts)
    present, cells = _chexpert_rows(g, n)
    label_rows, split_rows, meta_rows = [], [], []
    for i, split in enumerate(_splits(counts)):
        subject, study, dicom = f"1{i // 2:07d}", f"5{i:07d}", f"{i:08x}-synthetic"
        _png(root / f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg", g.cxr(present[i], CHEXPERT_CLASSES),
             quality=95)
        label_rows.append([subject, study, *cells[i]])
        split_rows.append([dicom, study, subject, {"val": "validate"}.get(split, split)])
        meta_rows.append([dicom, subject, study, "PA" if i % 4 else "LATERAL"])
    with (root / "mimic-cxr-2.0.0-chexpert.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["subject_id", "study_id", *CHEXPERT_CLASSES], *label_rows])
    with (root / "mimic-cxr-2.0.0-split.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["dicom_id", "study_id", "subject_id", "split"], *split_rows])
    with (root / "mimic-cxr-2.0.0-metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["dicom_id", "subject_id", "study_id", "ViewPosition"], *meta_rows])


# report terms as PadChest writes them, where they differ from the class name
_PADCHEST_TEXT = {"No Finding": "normal", "Edema": "pulmonary edema", "Fibrosis": "pulmonary fibrosis",
                  "Hernia": "hiatal hernia", "Infiltration": "infiltrates"}


@WRITERS.register("padchest")
def _padchest(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    from benchxfer.data.readers.chest import PADCHEST_CLASSES, PADCHEST_CSV

    terms = [_PADCHEST_TEXT.get(c, c.replace("_", " ").lower()) for c in PADCHEST_CLASSES]
    rows = []
    for i in range(sum(counts)):
        found = g.rng.random(len(terms)) < 0.25
        img = g.cxr(found, PADCHEST_CLASSES).astype(np.uint16) * 257  # 16-bit PNG as distributed
        name = f"synthetic_{i:05d}.png"
        _png(root / str(i % 3) / name, img)
        labels = [t for t, f in zip(terms, found) if f] or ["normal"]
        rows.append([name, str(i % 3), f"pat{i // 2}", str(labels), "PA"])
    with (root / PADCHEST_CSV).open("w", newline="") as f:
        csv.writer(f).writerows([["ImageID", "ImageDir", "PatientID", "Labels", "Projection"], *rows])


@WRITERS.register("padchest-single")
def _padchest_single(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    """PadChest's layout, each row with one finding of the first :data:`PADCHEST_SINGLE_CLASSES` classes in turn
    (one class each under the study's substring match), so that the single-label rows are every row."""
    from benchxfer.data.readers.chest import PADCHEST_CLASSES, PADCHEST_CSV

    names = PADCHEST_CLASSES[:PADCHEST_SINGLE_CLASSES]
    rows = []
    for i in range(sum(counts)):
        k = i % len(names)
        img = g.cxr(np.eye(len(PADCHEST_CLASSES))[k], PADCHEST_CLASSES).astype(np.uint16) * 257
        name = f"synthetic_{i:05d}.png"
        _png(root / str(i % 3) / name, img)
        rows.append([name, str(i % 3), f"pat{i // 2}", str([_PADCHEST_TEXT.get(names[k], names[k].lower())]), "PA"])
    with (root / PADCHEST_CSV).open("w", newline="") as f:
        csv.writer(f).writerows([["ImageID", "ImageDir", "PatientID", "Labels", "Projection"], *rows])


PADCHEST_SINGLE_CLASSES = 2  # classes the synthetic PadChest target draws (of its 27)


@WRITERS.register("rsna-pe")
def _rsna_pe(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    rows = []
    for i in range(sum(counts)):
        study, series, sop = f"1.2.3.{i // 2}", f"1.2.3.{i // 2}.1", f"1.2.3.{i // 2}.1.{i % 2}"
        positive = bool(i % 2)
        img, _, _ = g.tb(positive)
        _dicom(root / "train" / study / series / f"{sop}.dcm", img, sop, ct=True)
        rows.append([study, series, sop, int(positive)])
    with (root / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "pe_present_on_image"], *rows])


# --- other layouts ----------------------------------------------------------------------------------

def _fundus(g: Gen) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic fundus: RGB uint8 image, vessel mask (bool), field of view (bool)."""
    h, w = g.size + g.size // 32, g.size  # DRIVE is slightly taller than wide (584 x 565)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    fov = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.22
    img = np.zeros((h, w, 3), np.float32)
    img[fov] = (0.85, 0.45, 0.2)
    vessels = np.zeros((h, w), bool)
    for _ in range(4):
        a, b, c = g.rng.uniform(-1, 1, 3)
        curve = np.abs(yy - 0.5 - 0.3 * a * np.sin(3 * (xx - 0.5) * (1 + b)) - 0.2 * c) < 0.012
        vessels |= curve & fov
    img[vessels] = (0.35, 0.1, 0.05)
    img += g.rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), vessels, fov


@WRITERS.register("drive")
def _drive(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    for part, n, start in (("training", counts[0] + counts[1], 21), ("test", counts[2], 1)):
        for i in range(n):
            rgb, vessels, fov = _fundus(g)
            num = f"{start + i:02d}"
            suffix = "training" if part == "training" else "test"
            _png(root / part / "images" / f"{num}_{suffix}.tif", rgb)
            _png(root / part / "1st_manual" / f"{num}_manual1.gif", (vessels * 255).astype(np.uint8))
            _png(root / part / "mask" / f"{num}_{suffix}_mask.gif", (fov * 255).astype(np.uint8))


# the names SA-UNet's scripts give an image's copies: keras_dataAug.py writes ``<op><i><name>`` for its three
# operations, three times each; flip.py ``h``, ``v``, ``hv`` + name. With the original: 13 names an image.
SA_UNET_PREFIXES = ("", *(f"{op}{i}" for op in ("randomRotation", "randomColor", "randomGaussian") for i in range(3)),
                    "h", "v", "hv")


@ALT_WRITERS.register("drive-sa-unet")
def _drive_sa_unet(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    """DRIVE as SA-UNet's augmented copy lays it out (read by the ``drive`` reader): ``train/``, ``validate/``,
    ``test/``, each ``images/<name>.tif`` and ``labels/<id>_manual1.png``. Train and validate images take the
    scripts' names in turn (13 per original: :data:`SA_UNET_PREFIXES`); their pixels are fresh synthetic
    fundi, not augmented ones."""
    originals = -(-counts[0] // len(SA_UNET_PREFIXES))  # validate's copies are of the next originals
    for part, n, first in (("train", counts[0], 21), ("validate", counts[1], 21 + originals), ("test", counts[2], 1)):
        for i in range(n):
            rgb, vessels, _fov = _fundus(g)
            if part == "test":
                key, name = f"{first + i:02d}", f"{first + i:02d}_test.tif"
            else:
                number, prefix = first + i // len(SA_UNET_PREFIXES), SA_UNET_PREFIXES[i % len(SA_UNET_PREFIXES)]
                key, name = f"{prefix}{number:02d}", f"{prefix}{number:02d}_training.tif"
            _png(root / part / "images" / name, rgb)
            _png(root / part / "labels" / f"{key}_manual1.png", (vessels * 255).astype(np.uint8))


@WRITERS.register("maskfolder")
def _maskfolder(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    for i, split in enumerate(_splits(counts)):
        img_f = np.full((g.size, g.size), 0.3, np.float32)
        m = g.shape(SHAPES[i % 4], *g.rng.uniform(0.3, 0.7, 2), 0.2)
        img_f[m] = 0.8
        _png(root / split / "images" / f"case{i:04d}.png", g.finish(img_f))
        _png(root / split / "masks" / f"case{i:04d}.png", (m * 255).astype(np.uint8))


def _folder_classes(g: Gen, root: Path, counts: tuple[int, int, int], n_classes: int, ext: str) -> None:
    for i, split in enumerate(_splits(counts)):
        k = i % n_classes
        _png(root / split / f"class_{k:03d}" / f"img{i:05d}.{ext}", g.colour_shape(k, n_classes))


@WRITERS.register("imagefolder")
def _imagefolder(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    _folder_classes(g, root, counts, 4, "png")


@WRITERS.register("flowers102")
def _flowers(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    _folder_classes(g, root, counts, 5, "jpg")


@WRITERS.register("pets")
def _pets(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    breeds = ["Abyssinian", "beagle", "Bengal", "boxer"]
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for i, split in enumerate(_splits(counts)):
        k = i % len(breeds)
        name = f"{breeds[k]}_{i + 1}"
        _png(root / "images" / f"{name}.jpg", g.colour_shape(k, len(breeds)), quality=95)
        species = 1 if breeds[k][0].isupper() else 2  # the Pets convention: cats are capitalised
        lines["test" if split == "test" else "trainval"].append(f"{name} {k + 1} {species} {k + 1}")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, rows in lines.items():
        (root / "annotations" / f"{part}.txt").write_text("\n".join(rows) + "\n")


@WRITERS.register("cifar10")
def _cifar10(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    small = Gen(32, int(g.rng.integers(1 << 30)), g.family)

    def batch(n: int, offset: int) -> dict:
        labels = [(offset + i) % 10 for i in range(n)]
        data = np.stack([small.colour_shape(k, 10).transpose(2, 0, 1).reshape(-1) for k in labels]) if n else np.zeros((0, 3072), np.uint8)
        return {"batch_label": "synthetic", "labels": labels, "data": data, "filenames": [f"img{offset + i}.png" for i in range(n)]}

    n_train = counts[0] + counts[1]
    per = [n_train // 5 + (1 if b < n_train % 5 else 0) for b in range(5)]
    offset = 0
    for b, n in enumerate(per, 1):
        with (base / f"data_batch_{b}").open("wb") as f:
            pickle.dump(batch(n, offset), f, protocol=2)
        offset += n
    with (base / "test_batch").open("wb") as f:
        pickle.dump(batch(counts[2], offset), f, protocol=2)
    with (base / "batches.meta").open("wb") as f:
        from benchxfer.data.readers.natural import CIFAR10_CLASSES

        pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": per[0], "num_vis": 3072}, f, protocol=2)


@WRITERS.register("cifar100")
def _cifar100(g: Gen, root: Path, counts: tuple[int, int, int]) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    small = Gen(32, int(g.rng.integers(1 << 30)), g.family)

    def batch(n: int, offset: int) -> dict:
        fine = [(offset + i) % 100 for i in range(n)]
        data = np.stack([small.colour_shape(k, 100).transpose(2, 0, 1).reshape(-1) for k in fine]) if n else np.zeros((0, 3072), np.uint8)
        return {"batch_label": "synthetic", "fine_labels": fine, "coarse_labels": [k // 5 for k in fine], "data": data,
                "filenames": [f"img{offset + i}.png" for i in range(n)]}

    for name, n, offset in (("train", counts[0] + counts[1], 0), ("test", counts[2], counts[0] + counts[1])):
        with (base / name).open("wb") as f:
            pickle.dump(batch(n, offset), f, protocol=2)
    with (base / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"class{k:02d}" for k in range(100)],
                     "coarse_label_names": [f"super{k:02d}" for k in range(20)]}, f, protocol=2)


# --- entry points -----------------------------------------------------------------------------------

def list_layouts() -> list[str]:
    return WRITERS.names()


def write(
    name: str,
    root: str | Path,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    size: int = SyntheticSet.size,
    seed: int = SyntheticSet.seed,
    family: str = SyntheticSet.family,
) -> Path:
    """Write a synthetic ``name`` dataset in its real layout under ``root`` (replacing what is there)."""
    writer = ALT_WRITERS.get(name) if name in ALT_WRITERS else WRITERS.get(name)
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise BenchxferError(f"synthetic {name}: n_train/n_val/n_test must be >= 0 and not all 0")
    root = Path(root).expanduser().resolve()
    if root.exists():
        _check_replaceable(name, root)
        shutil.rmtree(root)
    tmp = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer(Gen(size, seed, family), tmp, (n_train, n_val, n_test))
    (tmp / MARKER).write_text(_marker(name, n_train, n_val, n_test, size, seed, family))
    try:
        tmp.rename(root)  # atomic: a reader never sees half a dataset
    except OSError:  # another process finished the same dataset first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_replaceable(name: str, root: Path) -> None:
    """``root`` may be deleted only when it is empty or benchxfer wrote it for this same dataset ``name``."""
    if not root.is_dir():
        raise BenchxferError(f"synthetic {name}: {root} is a file, not a folder; refusing to replace it")
    try:
        empty = not any(root.iterdir())
    except PermissionError:
        raise BenchxferError(f"synthetic {name}: cannot read {root} (permission denied)") from None
    if empty:
        return
    marker = root / MARKER
    written_for = marker.read_text().split(" ", 1)[0] if marker.is_file() else None
    if written_for is None:
        raise BenchxferError(f"synthetic {name}: {root} is not empty and was not written by benchxfer; "
                             "refusing to overwrite it (give an empty or new folder)")
    if written_for != name:
        raise BenchxferError(f"synthetic {name}: {root} holds benchxfer's synthetic {written_for!r}, not {name!r}; "
                             "refusing to overwrite it (give an empty or new folder)")


def _marker(name: str, n_train: int, n_val: int, n_test: int, size: int, seed: int, family: str) -> str:
    return (f"{name} n_train={n_train} n_val={n_val} n_test={n_test} size={size} seed={seed} family={family} "
            f"generator={GENERATOR}\n")


def ensure(name: str, root: str | Path | None = None, settings: SyntheticSet = SyntheticSet()) -> Path:
    """The root of synthetic ``name`` written with ``settings`` (default ``synthetic_dir()/<name>``,
    ``<name>-source`` for the source family), written only when missing or written with other parameters."""
    if root is None:
        root = synthetic_dir() / (name if settings.family == "cxr" else f"{name}-{settings.family.split('-', 1)[-1]}")
    root = Path(root).expanduser().resolve()
    marker = root / MARKER
    if marker.exists() and marker.read_text() == _marker(name, **settings.params()):
        return root
    return write(name, root, **settings.params())
