"""The synthetic generator: deterministic, written once, in the real layout, with labels in the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from benchxfer import data
from benchxfer.data import synthetic
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


def test_ensure_writes_once_under_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    root = synthetic.ensure("shenzhen", settings=synthetic.SyntheticSet(n_train=4, n_val=2, n_test=2, size=24))
    assert root == tmp_path / "home" / "data" / "synthetic" / "shenzhen"
    stamp = (root / synthetic.MARKER).stat().st_mtime_ns
    assert synthetic.ensure("shenzhen", settings=synthetic.SyntheticSet(n_train=4, n_val=2, n_test=2, size=24)) == root
    assert (root / synthetic.MARKER).stat().st_mtime_ns == stamp  # not rewritten
    assert [len(data.open_dataset("shenzhen", root, s)) for s in ("train", "val", "test")] == [4, 2, 2]
    src = synthetic.ensure("chestxray14", settings=synthetic.SyntheticSet(n_train=4, n_val=2, n_test=2, size=24,
                                                                   family="cxr-source"))
    assert src.name == "chestxray14-source"
    synthetic.ensure("shenzhen", settings=synthetic.SyntheticSet(n_train=6, n_val=2, n_test=2, size=24))  # other parameters: rewritten
    assert len(data.open_dataset("shenzhen", root, "train")) == 6


def test_deterministic_and_families_differ(tmp_path):
    a = synthetic.write("chestxray14", tmp_path / "a", n_train=3, n_val=1, n_test=1, size=24)
    b = synthetic.write("chestxray14", tmp_path / "b", n_train=3, n_val=1, n_test=1, size=24)
    c = synthetic.write("chestxray14", tmp_path / "c", n_train=3, n_val=1, n_test=1, size=24, family="cxr-source")
    ia, ib, ic = (data.open_dataset("chestxray14", r, "train").raw_image(0) for r in (a, b, c))
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(ia, ic)


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(BenchxferError, match="not empty and was not written by benchxfer"):
        synthetic.write("montgomery", tmp_path / "mine", n_train=2, n_val=1, n_test=1)
    with pytest.raises(BenchxferError, match="unknown synthetic layout 'mnist'"):
        synthetic.write("mnist", tmp_path / "m", n_train=2, n_val=1, n_test=1)
    with pytest.raises(BenchxferError, match="synthetic family 'xray' unknown"):
        synthetic.write("montgomery", tmp_path / "m2", n_train=2, n_val=1, n_test=1, family="xray")


def test_findings_are_in_the_pixels(tmp_path):
    """Finding k brightens its own spot: mean brightness there is higher in images that have k."""
    root = synthetic.write("chestxray14", tmp_path / "nih", n_train=60, n_val=1, n_test=1, size=48)
    ds = data.open_dataset("chestxray14", root, "train")
    images = np.stack([ds.raw_image(i)[:, :, 0] for i in range(len(ds))]).astype(np.float32)
    for k, (cy, cx) in enumerate(synthetic.FINDING_SPOTS[:14]):  # the 14 ChestX-ray14 findings
        y, x = int(cy * 48), int(cx * 48)
        spot = images[:, y - 3 : y + 4, x - 3 : x + 4].mean(axis=(1, 2))  # covers every shape (rings too)
        has = ds.targets[:, k] == 1
        assert spot[has].mean() > spot[~has].mean() + 8, k


def test_lung_masks_are_the_dark_ellipses(tmp_path):
    root = synthetic.write("montgomery-lungs", tmp_path / "mc", n_train=6, n_val=2, n_test=2, size=48)
    ds = data.open_dataset("montgomery-lungs", root, "train")
    for i in range(len(ds)):
        image, mask = ds[i]
        between = image[0, 20:28, 24:25]  # the body between the two lungs
        assert 0.05 < float(mask.mean()) < 0.4 and mask[20:28, 24:25].sum() == 0
        assert float(image[0][mask == 1].mean()) < 0.4 < 0.5 < float(between.mean())


def test_a_finding_has_one_place_in_every_chest_layout():
    """Merged sources agree on their labels: CheXpert's "Pleural Effusion" is drawn where ChestX-ray14's
    "Effusion" is, PadChest's "Edema" where NIH's is; "No Finding" draws nothing."""
    from benchxfer.data.readers.chest import CHEXPERT_CLASSES, PADCHEST_CLASSES
    from benchxfer.data.readers.nih import NIH_CLASSES
    from benchxfer.data.synthetic import Gen, finding_spot

    assert [finding_spot(c) for c in NIH_CLASSES] == list(range(14))
    assert finding_spot("Pleural Effusion") == NIH_CLASSES.index("Effusion")
    assert finding_spot("Edema") == finding_spot("pulmonary edema") == NIH_CLASSES.index("Edema")
    assert finding_spot("No Finding") is None
    assert finding_spot("Support Devices") in (14, 15)

    def brightest_spot(img: np.ndarray, plain: np.ndarray) -> int:
        """The spot whose 7x7 window brightened most over the same chest without findings."""
        gain = [(img - plain)[int(cy * 64) - 3:int(cy * 64) + 4, int(cx * 64) - 3:int(cx * 64) + 4].mean()
                for cy, cx in synthetic.FINDING_SPOTS]
        return int(np.argmax(gain))

    for cls in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Edema"):
        nih_name = "Effusion" if cls == "Pleural Effusion" else cls
        for names in (NIH_CLASSES, CHEXPERT_CLASSES, PADCHEST_CLASSES):
            wanted = cls if names is CHEXPERT_CLASSES else nih_name  # PadChest says "Effusion" as NIH
            labels = np.asarray([c == wanted for c in names], np.int64)
            assert labels.sum() == 1
            img = Gen(64, 0, "cxr").cxr(labels, None if names is NIH_CLASSES else names).astype(np.float32)
            plain = Gen(64, 0, "cxr").cxr(np.zeros(14, np.int64)).astype(np.float32)
            assert brightest_spot(img, plain) == NIH_CLASSES.index(nih_name), (cls, len(names))
