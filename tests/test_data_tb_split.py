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


def test_the_studys_archive_layout_two_levels_deep(tmp_path):
    # finetune/tuberculosis_full.yaml: Tuberculosis_dataset/ChinaSet_AllFiles/ChinaSet_AllFiles/CXR_png and
    # Tuberculosis_dataset/Montgomery/MontgomerySet/CXR_png
    root = tmp_path / "Tuberculosis_dataset"
    china = root / "ChinaSet_AllFiles" / "ChinaSet_AllFiles" / "CXR_png"
    montgomery = root / "Montgomery" / "MontgomerySet" / "CXR_png"
    _write_set(china, "CHNCXR", 23)
    _write_set(montgomery, "MCUCXR", 11)
    train, test = [], []
    for folder in (china, montgomery):  # the study's Merge order: China first
        files = sorted(glob(os.path.join(str(folder.resolve()), "*.png")))
        np.random.RandomState(42).shuffle(files)
        k = int(len(files) * 0.85)
        train, test = train + files[:k], test + files[k:]
    assert [r.image for r in data.open_dataset("tuberculosis", root, "train").records] == train
    assert [r.image for r in data.open_dataset("tuberculosis", root, "test").records] == test


@pytest.mark.parametrize("held, missing", [("ChinaSet_AllFiles", "Montgomery"), ("MontgomerySet", "Shenzhen")])
def test_a_root_with_one_set_is_refused(tmp_path, held, missing):
    _write_set(tmp_path / held / "CXR_png", "CHNCXR" if held.startswith("China") else "MCUCXR", 5)
    with pytest.raises(BenchxferError) as err:
        data.open_dataset("tuberculosis", tmp_path, "train")
    line = str(err.value)
    assert "\n" not in line and f"no {missing} CXR_png folder" in line and f"{held}/CXR_png" in line


def test_a_set_found_twice_is_refused(tb_root, tmp_path):
    _write_set(tmp_path / "a" / "CXR_png", "CHNCXR", 3)
    _write_set(tmp_path / "b" / "MontgomerySet" / "CXR_png", "MCUCXR", 3)
    _write_set(tmp_path / "c" / "CXR_png", "MCUCXR", 3)
    with pytest.raises(BenchxferError, match="holds the Montgomery set more than once"):
        data.open_dataset("tuberculosis", tmp_path, "train")
