"""The preprocessed cache: same pixels as the resized source, used only while fresh, safe to pickle."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from benchxfer import data
from benchxfer.data import synthetic
from benchxfer.data.cache import cache_status, resize_short, write_cache
from benchxfer.data.imageio import decode_image, decode_mask

pytestmark = pytest.mark.fast


@pytest.fixture
def lungs(tmp_path):
    root = synthetic.write("montgomery-lungs", tmp_path / "mc", n_train=6, n_val=2, n_test=2, size=40)
    return root, tmp_path / "cache"


def test_resize_short_keeps_aspect():
    arr = np.zeros((50, 100, 1), np.uint8)
    assert resize_short(arr, 20).shape == (20, 40, 1)
    assert resize_short(np.zeros((30, 20), np.uint8), 10, nearest=True).shape == (15, 10)


def test_cached_pixels_equal_resized_source(lungs):
    root, cache_dir = lungs
    folders = write_cache("montgomery-lungs", root, 20, ["train"], cache_dir=cache_dir)
    assert folders[0].name == "train-20" and (folders[0] / "manifest.json").exists()
    plain = data.open_dataset("montgomery-lungs", root, "train")
    cached = data.open_dataset("montgomery-lungs", root, "train", size_hint=20, cache_dir=cache_dir)
    assert cached.cache is not None and plain.cache is None and len(cached) == len(plain)
    for i in range(len(plain)):
        rec = plain.records[i]
        src = decode_image(rec.image)
        np.testing.assert_array_equal(cached.raw_image(i), resize_short(src, 20))
        union = np.maximum(decode_mask(rec.masks[0]), decode_mask(rec.masks[1]))
        np.testing.assert_array_equal(cached.raw_mask(i, (20, 20)), resize_short(union, 20, nearest=True))
    image, mask = cached[0]
    assert image.shape == (3, 20, 20) and mask.shape == (20, 20) and float(mask.sum()) > 0


def test_stale_cache_is_not_used(lungs):
    root, cache_dir = lungs
    write_cache("montgomery-lungs", root, 20, ["train"], cache_dir=cache_dir)
    assert cache_status("montgomery-lungs", root, 20, "train", cache_dir) == "fresh"
    ds = data.open_dataset("montgomery-lungs", root, "train")
    path = ds.records[0].image
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(path)
    os.utime(path, ns=(1, 1))
    assert cache_status("montgomery-lungs", root, 20, "train", cache_dir) == "stale"
    with pytest.warns(UserWarning, match="is stale"):
        again = data.open_dataset("montgomery-lungs", root, "train", size_hint=20, cache_dir=cache_dir)
    assert again.cache is None
    assert int(again.raw_image(0).max()) == 7  # read from the changed source
    assert cache_status("montgomery-lungs", root, 20, "val", cache_dir) == "missing"


def test_cache_survives_pickling_for_loader_workers(tmp_path):
    root = synthetic.write("chestxray14", tmp_path / "nih", n_train=5, n_val=1, n_test=1, size=32)
    write_cache("chestxray14", root, 16, ["train"], cache_dir=tmp_path / "c", workers=2)
    ds = data.open_dataset("chestxray14", root, "train", size_hint=16, cache_dir=tmp_path / "c", fraction=0.6)
    ds.raw_image(0)  # opens the memory map in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 20_000  # the map is reopened, not copied
    for i in range(len(ds)):
        np.testing.assert_array_equal(clone.raw_image(i), ds.raw_image(i))
        x, y = clone[i]
        assert x.shape == (3, 16, 16) and y.shape == (14,)
