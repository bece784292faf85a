"""The label files as their owners publish them, and dataset roots built around them.

The files come from the ``torchxrayvision`` wheel (the ``test`` extra), read where pip put them
(``torchxrayvision/data/``) without importing the package: NIH's ``Data_Entry_2017_v2020.csv``, CheXpert's
``train.csv`` (as ``chexpert_train.csv.gz``), PadChest's ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz``
and SIIM's ``train-rle.csv`` (as ``siim-pneumothorax-train-rle.csv.gz``). A root holds the label file under the
name its owners give it, in their layout, and every image the file names as a hard link to one tiny stand-in (a
fresh stand-in every 60,000 links: ext4 allows 65,000 links to a file). The roots live on tmpfs (``/dev/shm``)
where there is one: CheXpert's 187,641 study folders take 2 s to make there and 9 s on a disk.

What the wheel does not ship is made from what it does, and said where it is made: NIH's ``train_val_list.txt``
and ``test_list.txt`` are the first study's official lists, sorted (its test list is NIH's, 25,596 images; its train
and val lists together are NIH's train_val_list, 86,524); CheXpert's ``valid.csv`` (234 rows in the real one) is 234 rows of
``train.csv`` moved to ``valid/``, each under a patient number after the last train patient's (64540).

Used by ``tests/test_data_published.py`` (one root per dataset per test session) and ``benchmarks/real_files.py``.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import scratch
from PIL import Image

NIH_FILE = "Data_Entry_2017_v2020.csv.gz"
CHEXPERT_FILE = "chexpert_train.csv.gz"
PADCHEST_FILE = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
SIIM_FILE = "siim-pneumothorax-train-rle.csv.gz"
LINKS_PER_FILE = 60_000
SIIM_SIZE = 1024  # the masks' run-length codes index 1024 x 1024 pixels


def data_folder() -> Path:
    """``torchxrayvision/data`` of the installed wheel (found, not imported: importing it loads torch and skimage)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torchxrayvision is not installed: pip install -e '.[test]' (it ships the label files)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def published(name: str) -> Path:
    return data_folder() / name


def text_of(name: str) -> str:
    with gzip.open(published(name), "rt", encoding="utf-8", newline="") as fh:
        return fh.read()


PREFIX = "benchxfer-published-"


def scratch_base() -> Path:
    """A fresh folder for the roots, on tmpfs when there is one with room (:func:`scratch.scratch_base`)."""
    return scratch.scratch_base(PREFIX)


class Linker:
    """Hard links to stand-ins: a new copy of ``source`` every :data:`LINKS_PER_FILE` links."""

    def __init__(self, folder: Path, source: Path):
        self.folder, self.source, self.count = folder, source, 0
        self.current = ""

    def __call__(self, dst: str) -> None:
        if self.count % LINKS_PER_FILE == 0:
            self.current = str(self.folder / f"{self.source.stem}-{self.count // LINKS_PER_FILE}{self.source.suffix}")
            shutil.copyfile(self.source, self.current)
        os.link(self.current, dst)
        self.count += 1


class Roots:
    """One root per dataset below ``base``, each made on first use."""

    def __init__(self, base: Path):
        self.base = base
        self.stand_ins = base / "stand-ins"
        self.stand_ins.mkdir(parents=True, exist_ok=True)
        self._made: dict[str, Path] = {}

    def _once(self, name: str, make) -> Path:
        if name not in self._made:
            root = self.base / name
            root.mkdir()
            make(root)
            self._made[name] = root
        return self._made[name]

    def _stand_in(self, name: str, arr: np.ndarray) -> Path:
        path = self.stand_ins / name
        if not path.exists():
            if name.endswith(".dcm"):
                from benchxfer.data.synthetic import _dicom

                _dicom(path, arr, "1.2.826.0.1.3680043.2.1125.1")
            else:
                Image.fromarray(arr).save(path)
        return path

    # --- NIH ChestX-ray14 -------------------------------------------------------------------------------
    def nih(self) -> Path:
        """``images/`` with the 112,120 PNGs, ``Data_Entry_2017_v2020.csv``, and NIH's two lists."""
        return self._once("nih", self._make_nih)

    def _make_nih(self, root: Path) -> None:
        (root / "Data_Entry_2017_v2020.csv").write_text(text_of(NIH_FILE), newline="")
        link = Linker(self.stand_ins, self._stand_in("grey.png", np.full((4, 4), 100, np.uint8)))
        images = root / "images"
        images.mkdir()
        for name in nih_names():
            link(f"{images}/{name}")
        from benchxfer.data.readers._common import shipped_split

        def names(*lists: str) -> str:  # NIH's lists are sorted by name
            return "".join(f"{name}\n" for name in sorted(line.split()[0] for f in lists
                                                          for line in shipped_split(f).read_text().splitlines()
                                                          if line.strip()))

        (root / "train_val_list.txt").write_text(names("Xray14_train_official.txt", "Xray14_val_official.txt"))
        (root / "test_list.txt").write_text(names("Xray14_test_official.txt"))

    def nih_2017(self) -> Path:
        """The same root with the label file under NIH's 2017 name, ``Data_Entry_2017.csv`` (``images/`` linked)."""
        return self._once("nih-2017", self._make_nih_2017)

    def _make_nih_2017(self, root: Path) -> None:
        nih = self.nih()
        os.symlink(nih / "images", root / "images")
        for name in ("train_val_list.txt", "test_list.txt"):
            shutil.copyfile(nih / name, root / name)
        shutil.copyfile(nih / "Data_Entry_2017_v2020.csv", root / "Data_Entry_2017.csv")

    # --- CheXpert -----------------------------------------------------------------------------------------
    def chexpert(self) -> Path:
        """``CheXpert-v1.0-small``: ``train.csv`` as published, a ``valid.csv`` made from it, every JPEG."""
        return self._once("CheXpert-v1.0-small", self._make_chexpert)

    def _make_chexpert(self, root: Path) -> None:
        text = text_of(CHEXPERT_FILE)
        (root / "train.csv").write_text(text, newline="")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        header, body = rows[0], rows[1:]
        valid = []
        for i, row in enumerate(body[:234]):
            parts = row[0].split("/")  # CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
            valid.append([f"{parts[0]}/valid/patient{64541 + i:05d}/study1/{parts[-1]}", *row[1:]])
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\n").writerows([header, *valid])
        (root / "valid.csv").write_text(buf.getvalue(), newline="")
        link = Linker(self.stand_ins, self._stand_in("grey.jpg", np.full((8, 8), 100, np.uint8)))
        made: set[str] = set()
        base = str(root)
        for row in [*body, *valid]:
            rel = row[0].split("/", 1)[1]
            folder = rel.rsplit("/", 1)[0]
            if folder not in made:  # mkdir by hand: os.makedirs checks each parent again
                parents = folder.split("/")
                for depth in range(1, len(parents) + 1):
                    sub = "/".join(parents[:depth])
                    if sub not in made:
                        os.mkdir(f"{base}/{sub}")
                        made.add(sub)
            link(f"{base}/{rel}")

    # --- PadChest ---------------------------------------------------------------------------------------
    def padchest(self) -> Path:
        """The label file as BIMCV publishes it (gzipped) and every 16-bit PNG in its ``ImageDir`` folder."""
        return self._once("padchest", self._make_padchest)

    def _make_padchest(self, root: Path) -> None:
        shutil.copyfile(published(PADCHEST_FILE), root / PADCHEST_FILE)  # 17 MB
        link = Linker(self.stand_ins, self._stand_in("grey16.png", np.full((4, 4), 30000, np.uint16)))
        made: set[str] = set()
        reader = csv.reader(io.StringIO(text_of(PADCHEST_FILE), newline=""))
        header = next(reader)
        image, folder = header.index("ImageID"), header.index("ImageDir")
        for row in reader:
            if row[folder] not in made:
                (root / row[folder]).mkdir()
                made.add(row[folder])
            link(f"{root}/{row[folder]}/{row[image]}")

    # --- SIIM-ACR pneumothorax --------------------------------------------------------------------------
    def siim(self) -> Path:
        """Kaggle's ``train-rle.csv`` and ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (1024 x 1024)."""
        return self._once("siim", self._make_siim)

    def _make_siim(self, root: Path) -> None:
        (root / "train-rle.csv").write_text(text_of(SIIM_FILE), newline="")
        arr = np.full((SIIM_SIZE, SIIM_SIZE), 90, np.uint8)
        link = Linker(self.stand_ins, self._stand_in("grey.dcm", arr))
        seen: set[str] = set()
        for image_id in siim_ids():
            if image_id not in seen:
                seen.add(image_id)
                folder = root / "dicom-images-train" / f"{image_id}.1" / f"{image_id}.2"
                folder.mkdir(parents=True)
                link(f"{folder}/{image_id}.dcm")

    def remove(self) -> None:
        """Every root (rm's own walk: shutil.rmtree takes 15 s over 500,000 names)."""
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.base)], check=False)


def nih_names() -> list[str]:
    reader = csv.reader(io.StringIO(text_of(NIH_FILE), newline=""))
    next(reader)
    return [row[0] for row in reader]


def siim_ids() -> list[str]:
    reader = csv.reader(io.StringIO(text_of(SIIM_FILE), newline=""))
    next(reader)
    return [row[0].strip() for row in reader if row]
