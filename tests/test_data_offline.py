"""SA-UNet's offline augmentation of DRIVE (keras_dataAug.py, flip.py), written from the original release into the
layout the study trained on; each copy checked against the script's own operation, not benchxfer's output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchxfer import data
from benchxfer.data import synthetic
from benchxfer.data.offline import augment_drive
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast

# the names keras_dataAug.py (``<op><i><name>``, 3 operations x 3 times) and flip.py (h, v, hv) give an image
COPIES = ["", "randomRotation0", "randomRotation1", "randomRotation2", "randomColor0", "randomColor1", "randomColor2",
          "randomGaussian0", "randomGaussian1", "randomGaussian2", "h", "v", "hv"]


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("offline")
    original = synthetic.write("drive", base / "original", n_train=4, n_val=1, n_test=2, size=32, seed=1)
    return original, augment_drive(original, base / "augmented", seed=0)


def _px(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _label(path: Path) -> np.ndarray:
    """A label as 0/255 grey (DRIVE's GIFs are palette images: their raw values are indices)."""
    return np.asarray(Image.open(path).convert("L"))


def test_thirteen_copies_an_image_named_as_the_scripts_name_them(drive):
    original, out = drive
    for split, folder in {"train": "train", "val": "validate"}.items():
        keys = [Path(r.image).name.split("_")[0] for r in data.open_dataset("drive", original, split).records]
        want = sorted(f"{p}{k}_training.tif" for k in keys for p in COPIES)
        ds = data.open_dataset("drive", out, split)
        assert sorted(Path(r.image).name for r in ds.records) == want
        assert {Path(r.image).parent for r in ds.records} == {out / folder / "images"}
    test = data.open_dataset("drive", out, "test")
    assert sorted(Path(r.image).name for r in test.records) == ["01_test.tif", "02_test.tif"]
    np.testing.assert_array_equal(_label(out / "test" / "labels" / "01_manual1.png"),
                                  _label(original / "test" / "1st_manual" / "01_manual1.gif"))


@pytest.mark.parametrize("prefix, flip", [("h", lambda a: np.flip(a, 1)), ("v", lambda a: np.flip(a, 0)),
                                          ("hv", lambda a: np.flip(a, (0, 1)))])
def test_flips_are_numpys_flips_of_image_and_label(drive, prefix, flip):
    original, out = drive
    image = _px(original / "training" / "images" / "21_training.tif")
    label = _label(original / "training" / "1st_manual" / "21_manual1.gif")
    np.testing.assert_array_equal(_px(out / "train" / "images" / f"{prefix}21_training.tif"), flip(image))
    np.testing.assert_array_equal(_label(out / "train" / "labels" / f"{prefix}21_manual1.png"), flip(label))


def test_rotation_is_pils_rotate_by_a_whole_angle_image_bicubic_label_nearest(drive):
    """keras_dataAug.py: ``angle = randint(1, 360)``; ``image.rotate(angle, BICUBIC)``, ``label.rotate(angle, NEAREST)``."""
    original, out = drive
    image = Image.open(original / "training" / "images" / "21_training.tif").convert("RGB")
    label = Image.open(original / "training" / "1st_manual" / "21_manual1.gif").convert("L")
    for i in range(3):
        got_image = _px(out / "train" / "images" / f"randomRotation{i}21_training.tif")
        got_label = _label(out / "train" / "labels" / f"randomRotation{i}21_manual1.png")
        angles = [a for a in range(1, 360) if np.array_equal(np.asarray(label.rotate(a, Image.NEAREST)), got_label)
                  and np.array_equal(np.asarray(image.rotate(a, Image.BICUBIC)), got_image)]
        assert angles, f"randomRotation{i}: no whole angle in [1, 359] gives it"


def test_gaussian_noise_is_the_scripts_uint8_truncation(drive):
    """keras_dataAug.py adds N(0.2, 0.3) to each uint8 value and stores it back truncated: a value drops by 1 when the
    noise is below 0 (P(z < -2/3) = 0.252), rises by 1 when it is 1 or more (P(z >= 8/3) = 0.0038)."""
    original, out = drive
    src = _px(original / "training" / "images" / "21_training.tif").astype(int)
    inner = (src > 0) & (src < 255)
    for i in range(3):
        diff = _px(out / "train" / "images" / f"randomGaussian{i}21_training.tif").astype(int) - src
        assert set(np.unique(diff[inner])) <= {-1, 0, 1}
        assert abs(float((diff[inner] == -1).mean()) - 0.252) < 0.03
        assert abs(float((diff[inner] == 1).mean()) - 0.0038) < 0.003
        np.testing.assert_array_equal(_label(out / "train" / "labels" / f"randomGaussian{i}21_manual1.png"),
                                      _label(original / "training" / "1st_manual" / "21_manual1.gif"))


def test_refuses_a_folder_that_is_not_empty_and_an_augmented_root(drive, tmp_path):
    original, out = drive
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BenchxferError, match="is not empty"):
        augment_drive(original, tmp_path / "full")
    with pytest.raises(BenchxferError, match="already holds SA-UNet's"):
        augment_drive(out, tmp_path / "again")


def test_the_command_writes_what_the_reader_reads_as_sa_unets_layout(drive, tmp_path):
    from click.testing import CliRunner

    from benchxfer.cli import main
    from benchxfer.data.readers.seg import drive_layout

    original, _ = drive
    res = CliRunner().invoke(main, ["data", "drive-augment", "--root", str(original), "--out", str(tmp_path / "aug")])
    assert res.exit_code == 0, res.output
    assert drive_layout(tmp_path / "aug") == "sa-unet" and drive_layout(original) == "original"
    assert len(data.open_dataset("drive", tmp_path / "aug", "train").records) == 13 * 4


def test_colour_is_pils_enhancers_in_the_scripts_order_with_its_factors():
    """keras_dataAug.py's randomColor: ImageEnhance Color k/10 (k in 0..30), Brightness and Contrast k/10 (10..20),
    Sharpness k/10 (0..30), in that order, the label untouched. Replayed with PIL's own enhancers on the same draws."""
    from PIL import ImageEnhance

    from benchxfer.data.offline import OPS

    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    label = Image.fromarray((rng.random((20, 24)) > 0.8).astype(np.uint8) * 255)
    for seed in range(5):
        got_image, got_label = OPS.get("randomColor")(image, label, np.random.default_rng(seed))
        draw = np.random.default_rng(seed)
        want = image
        for enhancer, low, high in ((ImageEnhance.Color, 0, 31), (ImageEnhance.Brightness, 10, 21),
                                    (ImageEnhance.Contrast, 10, 21), (ImageEnhance.Sharpness, 0, 31)):
            factor = draw.integers(low, high) / 10
            assert low / 10 <= factor <= (high - 1) / 10
            want = enhancer(want).enhance(factor)
        np.testing.assert_array_equal(np.asarray(got_image), np.asarray(want))
        assert got_label is label
