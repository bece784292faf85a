"""The tuberculosis split of the second study, recomputed from its rule on fixture folders."""

import os
from glob import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchxfer import data
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


def _write_set(folder: Path, prefix: str, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(folder / f"{prefix}_{i:04d}_{i % 2}.png")


@pytest.fixture(scope="module")
def tb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    _write_set(root / "ChinaSet_AllFiles" / "CXR_png", "CHNCXR", 23)
    _write_set(root / "MontgomerySet" / "CXR_png", "MCUCXR", 11)
    return root


def _study(root: Path):
    """The rule: per folder, sorted paths shuffled by RandomState(42); first int(0.85 n) train; concatenate."""
    train, test = [], []
    for folder in ("ChinaSet_AllFiles", "MontgomerySet"):
        files = sorted(glob(os.path.join(str(root), folder, "CXR_png", "*.png")))
        np.random.RandomState(42).shuffle(files)
        k = int(len(files) * 0.85)
        train += files[:k]
        test += files[k:]
    return train, test


def test_split_follows_the_study(tb_root):
    train, test = _study(tb_root.resolve())
    got_train = data.open_dataset("tuberculosis", tb_root, "train")
    got_test = data.open_dataset("tuberculosis", tb_root, "test")
    assert [r.image for r in got_train.records] == train
    assert [r.image for r in got_test.records] == test
    assert len(train) == int(23 * 0.85) + int(11 * 0.85) == 28
    assert got_train.targets.tolist() == [int(p[-5]) for p in train]


def test_no_validation_split_by_default(tb_root):
    with pytest.raises(BenchxferError, match="no val split.*val_fraction"):
        data.open_dataset("tuberculosis", tb_root, "val")


def test_validation_split_is_an_explicit_option(tb_root):
    train, test = _study(tb_root.resolve())
    tr = data.open_dataset("tuberculosis", tb_root, "train", val_fraction=0.2)
    va = data.open_dataset("tuberculosis", tb_root, "val", val_fraction=0.2)
    te = data.open_dataset("tuberculosis", tb_root, "test", val_fraction=0.2)
    assert [r.image for r in te.records] == test  # the test part never moves
    assert sorted(r.image for r in tr.records + va.records) == sorted(train)
    assert len(va) == round(0.2 * len(train))
