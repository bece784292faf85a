"""The exact cache (``original``): every image at its own size, so each study protocol's training and test inputs
from it equal those from the source files, image by image, with the same random state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchxfer import data
from benchxfer.data import synthetic, transforms
from benchxfer.data.cache import ORIGINAL, cache_status, write_cache
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast

# (dataset, preset, crop size): grey PNGs (the first study's classification and pre-training presets), RGB JPEGs
# (BiT), image + mask pairs (segmentation)
CASES = [
    ("chestxray14", "systematic-cls", 32),
    ("chestxray14", "supervised-pretrain", 32),
    ("pets", "bit-hyperrule", 32),
    ("montgomery-lungs", "systematic-seg", 32),
]


def varied_sizes(root, pattern: str) -> None:
    """Give the images different, non-square sizes (as real sets have): the cache must keep each one's own."""
    for k, path in enumerate(sorted(root.rglob(pattern))):
        img = Image.open(path)
        img.load()
        w, h = img.size
        size = (w + 7 * (k % 3), h + 5 * (k % 4))
        img.resize(size, Image.Resampling.NEAREST).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))


@pytest.mark.parametrize("name,preset,size", CASES, ids=[f"{n}-{p}" for n, p, _ in CASES])
def test_original_cache_gives_the_protocols_inputs_exactly(tmp_path, name, preset, size):
    root = synthetic.write(name, tmp_path / name, n_train=6, n_val=2, n_test=4, size=48, seed=3)
    varied_sizes(root, "*.jpg" if name == "pets" else "*.png")
    cache_dir = tmp_path / "cache"
    folders = write_cache(name, root, ORIGINAL, cache_dir=cache_dir)
    assert [f.name for f in folders] == ["train-original", "val-original", "test-original"]
    task = data.get_dataset(name).task
    for split, train in (("train", True), ("test", False)):
        tf = transforms.build(preset, train=train, size=size, task=task, dataset=name)
        # no size hint (the study presets ask for none): the exact cache is read whenever it is fresh
        png = data.open_dataset(name, root, split, transform=tf)
        cached = data.open_dataset(name, root, split, transform=tf, cache_dir=cache_dir)
        assert png.cache is None and cached.cache is not None and len(png) == len(cached)
        shapes = set()
        for i in range(len(png)):
            raw = png.raw_image(i)
            shapes.add(raw.shape)
            np.testing.assert_array_equal(cached.raw_image(i), raw)  # bit for bit, at its own size
            for seed in (i, 1000 + i):  # the same random state: the same crop, flip, rotation
                torch.manual_seed(seed)
                a = png[i]
                torch.manual_seed(seed)
                b = cached[i]
                assert len(a) == len(b)
                for x, y in zip(a, b):
                    if isinstance(x, torch.Tensor):
                        assert torch.equal(x, y), (split, i)
                    else:
                        assert x == y, (split, i)
        if split == "train":
            assert len(shapes) > 1  # the images really differ in size


def test_a_lossy_cache_asked_for_wins_and_a_stale_exact_one_is_not_read(tmp_path):
    root = synthetic.write("chestxray14", tmp_path / "cxr", n_train=4, n_val=1, n_test=1, size=40, seed=1)
    cache_dir = tmp_path / "cache"
    write_cache("chestxray14", root, ORIGINAL, ["train"], cache_dir=cache_dir)
    write_cache("chestxray14", root, 20, ["train"], cache_dir=cache_dir)
    lossy = data.open_dataset("chestxray14", root, "train", cache_dir=cache_dir, cache_size=20)
    assert lossy.raw_image(0).shape[:2] == (20, 20)  # named for what it is: asked for, it is read
    exact = data.open_dataset("chestxray14", root, "train", cache_dir=cache_dir)
    assert exact.raw_image(0).shape[:2] == (40, 40)
    assert cache_status("chestxray14", root, ORIGINAL, "train", cache_dir) == "fresh"
    png = sorted((root).rglob("*.png"))[0]
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png)
    assert cache_status("chestxray14", root, ORIGINAL, "train", cache_dir) == "stale"
    with pytest.warns(UserWarning, match="stale"):
        again = data.open_dataset("chestxray14", root, "train", cache_dir=cache_dir)
    assert again.cache is None


@pytest.mark.parametrize("bad", [0, -3, "256px", True, 2.5])
def test_a_bad_cache_size_is_one_line(tmp_path, bad):
    with pytest.raises(BenchxferError, match="must be 'original' .exact. or a positive number of pixels"):
        write_cache("chestxray14", tmp_path, bad, ["train"], cache_dir=tmp_path / "c")
