"""Natural-image sets: image folders (and Flowers-102 as one), Oxford-IIIT Pets, CIFAR-10 and CIFAR-100 (python
pickles)."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np

from benchxfer.data.catalog import Index, IndexCtx, Record, register_dataset, seeded_split, where
from benchxfer.data.imageio import read_lines
from benchxfer.data.readers._common import FolderFiles
from benchxfer.data.readers.seg import IMAGE_SUFFIXES
from benchxfer.errors import BenchxferError

_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _imagefolder(root: Path, split: str, ctx: IndexCtx) -> Index:
    """``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>`` when split folders exist."""
    if (root / "train").is_dir():
        classes = tuple(p.name for p in _class_dirs(root / "train"))
        base = next((root / n for n in _SPLIT_FOLDERS[split] if (root / n).is_dir()), None)
        if base is None:
            return Index([], classes)
        seeded = False
    else:
        classes = tuple(p.name for p in _class_dirs(root))
        base, seeded = root, True
    recs = []
    for folder in _class_dirs(base):
        if folder.name not in classes:
            ctx.report(f"{folder}: class folder {folder.name!r} is not among the train classes ({', '.join(classes)})")
            continue
        label = classes.index(folder.name)
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                recs.append(Record(str(path), label, patient=f"{folder.name}/{path.stem}", origin=str(path)))
    if seeded:
        assign = seeded_split([r.patient for r in recs], (0.7, 0.1, 0.2))
        recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs, classes)


_FOLDER_RULE = ("train/, val/ (or valid/), test/ class folders when present; otherwise one class folder per "
                "class and a seeded 70/10/20 split by image (seed 0)")

register_dataset(
    "imagefolder",
    task="multiclass",
    classes=(),
    metric="accuracy",
    metrics=("accuracy",),
    classes_from_root=True,
    grayscale=False,
    description="Any image folder: root/<class>/<image> (classes are the sorted folder names).",
    split_rule=_FOLDER_RULE,
)(_imagefolder)


def _flowers(root: Path, split: str, ctx: IndexCtx) -> Index:
    return _imagefolder(root, split, ctx)


register_dataset(
    "flowers102",
    task="multiclass",
    classes=(),
    metric="accuracy",
    metrics=("accuracy",),
    classes_from_root=True,
    grayscale=False,
    description="Oxford Flowers-102 as an image folder (102 class folders).",
    split_rule=_FOLDER_RULE,
    auto_balanced=True,
)(_flowers)


def _pets_breed(name: str) -> str:
    return name.rsplit("_", 1)[0]


@register_dataset(
    "pets",
    task="multiclass",
    classes=(),
    metric="accuracy",
    metrics=("accuracy",),
    classes_from_root=True,
    required=("images", "annotations/trainval.txt", "annotations/test.txt"),
    grayscale=False,
    description="Oxford-IIIT Pets: images/*.jpg with annotations/{trainval,test}.txt (37 breeds).",
    split_rule="annotations/test.txt is test; val = seeded 10% of trainval.txt (seed 0)",
)
def pets(root: Path, split: str, ctx: IndexCtx) -> Index:
    list_file = root / "annotations" / ("test.txt" if split == "test" else "trainval.txt")
    files = FolderFiles()
    rows: list[tuple[str, int, str]] = []
    for lineno, line in read_lines(list_file):
        origin = where(list_file, lineno)
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 37:
            ctx.report(f"{origin}: expected '<name> <class id 1-37> <species> <breed id>', got {line!r}")
            continue
        rows.append((parts[0], int(parts[1]) - 1, origin))
    # class names: the breed part of the image names, ordered by class id (from trainval.txt)
    names: dict[int, str] = {}
    for _lineno, line in read_lines(root / "annotations" / "trainval.txt"):
        parts = line.split()
        if len(parts) == 4 and parts[1].isdigit():
            names.setdefault(int(parts[1]) - 1, _pets_breed(parts[0]))
    classes = tuple(names.get(i, str(i + 1)) for i in range(max(names, default=-1) + 1))
    recs = []
    for name, label, origin in rows:
        path = files.locate(root / "images", name + ".jpg", origin, ctx.report)
        if path is not None:
            recs.append(Record(str(path), label, patient=name, origin=origin))
    if split != "test":
        assign = seeded_split([r.patient for r in recs], (0.9, 0.1, 0.0))
        recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs, classes)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; anything else is refused, never executed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "list"), ("builtins", "dict"),
        ("_codecs", "encode"),  # how protocol-2 pickles store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


@functools.lru_cache(maxsize=8)
def _cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = _SafeUnpickler(handle, encoding="latin1").load()
        data = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(batch["labels"] if "labels" in batch else batch["fine_labels"], np.int64)  # CIFAR-100: fine
    except FileNotFoundError:
        raise BenchxferError(f"{path}: CIFAR batch file is missing") from None
    except Exception as err:  # noqa: BLE001 - a broken or hostile pickle
        raise BenchxferError(f"{path}: not a CIFAR python batch ({type(err).__name__}: {err})") from None
    if len(data) != len(labels):
        raise BenchxferError(f"{path}: {len(data)} images but {len(labels)} labels")
    return np.ascontiguousarray(data), labels


def _cifar_image(rec: Record) -> np.ndarray:
    path, i = rec.image.rsplit("#", 1)
    return _cifar_batch(path)[0][int(i)]


def _cifar_root(root: Path) -> Path:
    return root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root


@register_dataset(
    "cifar10",
    task="multiclass",
    classes=CIFAR10_CLASSES,
    metric="accuracy",
    metrics=("accuracy",),
    required=("cifar-10-batches-py/test_batch|test_batch",),
    grayscale=False,
    load_image=_cifar_image,
    description="CIFAR-10 in the torchvision python-pickle layout (cifar-10-batches-py).",
    split_rule="test_batch is test; val = seeded 10% of data_batch_1..5 (seed 0)",
    study_micro_batch=64,
)
def cifar10(root: Path, split: str, ctx: IndexCtx) -> Index:
    base = _cifar_root(root)
    return _cifar_index(base, ["test_batch"] if split == "test" else sorted(p.name for p in base.glob("data_batch_*")),
                        split)


def _cifar_index(base: Path, names: list[str], split: str) -> Index:
    """One record per image of the batch files ``names``; train and val are a seeded 90/10 split of them."""
    recs = []
    for name in names:
        path = base / name
        _data, labels = _cifar_batch(str(path))
        recs += [Record(f"{path}#{i}", int(y), patient=f"{name}#{i}", origin=f"{path}#{i}") for i, y in enumerate(labels)]
    if split != "test":
        assign = seeded_split([r.patient for r in recs], (0.9, 0.1, 0.0))
        recs = [r for r in recs if assign[r.patient] == split]
    return Index(recs)


CIFAR100_CLASSES = tuple(f"class{k:02d}" for k in range(100))  # fine labels 0-99 (names in the set's meta file)


def _cifar100_root(root: Path) -> Path:
    return root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root


@register_dataset(
    "cifar100",
    task="multiclass",
    classes=CIFAR100_CLASSES,
    metric="accuracy",
    metrics=("accuracy",),
    required=("cifar-100-python/test|test",),
    grayscale=False,
    load_image=_cifar_image,
    description="CIFAR-100 (fine labels) in the torchvision python-pickle layout (cifar-100-python).",
    split_rule="test is test; val = seeded 10% of train (seed 0)",
    study_micro_batch=64,
)
def cifar100(root: Path, split: str, ctx: IndexCtx) -> Index:
    return _cifar_index(_cifar100_root(root), ["test" if split == "test" else "train"], split)
