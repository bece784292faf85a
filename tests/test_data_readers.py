"""Every reader reads the synthetic data written in its real layout, with the labels and masks written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchxfer import data
from benchxfer.data import synthetic
from benchxfer.data.imageio import decode_image, rle_decode, rle_encode

pytestmark = pytest.mark.fast

SMALL = dict(n_train=6, n_val=3, n_test=3, size=32)


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synthetic")
    return {name: synthetic.write(name, base / name, **SMALL) for name in synthetic.list_layouts()}


def test_every_registered_dataset_has_a_synthetic_writer_and_a_row_in_the_docs():
    assert set(data.list_datasets()) == set(synthetic.list_layouts())
    table = (Path(__file__).parents[1] / "docs" / "datasets.md").read_text()
    assert [n for n in data.list_datasets() if f"\n| `{n}` | {data.get_dataset(n).task}" not in table] == []


@pytest.mark.parametrize("name", synthetic.list_layouts())
def test_reader_reads_every_split(roots, name):
    cfg = data.get_dataset(name)
    data.check_root(name, roots[name])
    total = 0
    for split in cfg.splits:
        ds = data.open_dataset(name, roots[name], split)
        total += len(ds)
        image, target = ds[0]
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.2
        if cfg.task == "segmentation":
            assert target.shape == image.shape[1:] and set(target.unique().tolist()) <= {0.0, 1.0}
        elif cfg.task == "multilabel":
            assert target.shape == (len(cfg.classes),) and target.dtype == torch.float32
            assert ds.targets.shape == (len(ds), len(cfg.classes))
        else:
            assert isinstance(target, int) and 0 <= target < cfg.num_classes(roots[name])
            assert len(ds.targets) == len(ds)
        assert len(ds.patient_ids) == len(ds)
    assert total == 12


def test_chestxray14_labels_are_the_list_lines(roots):
    root = roots["chestxray14"]
    ds = data.open_dataset("chestxray14", root, "train")
    lines = (root / "Xray14_train_official.txt").read_text().split("\n")
    assert len(ds) == 6
    for i, line in enumerate(filter(None, lines)):
        name, *labels = line.split()
        assert Path(ds.records[i].image).name == name
        assert ds.targets[i].tolist() == [float(v) for v in labels]
        assert ds.patient_ids[i] == name.split("_")[0]


def test_chestxray14_nih_lists_agree_with_first_study_lists(roots):
    root = roots["chestxray14"]
    test_a = data.open_dataset("chestxray14", root, "test")
    test_b = data.open_dataset("chestxray14", root, "test", official="nih")
    assert [r.image for r in test_a.records] == [r.image for r in test_b.records]
    np.testing.assert_array_equal(test_a.targets, test_b.targets)  # Data_Entry_2017.csv 'Finding Labels'
    trainval = len(data.open_dataset("chestxray14", root, "train", official="nih")) + len(
        data.open_dataset("chestxray14", root, "val", official="nih"))
    assert trainval == 9


def test_montgomery_mask_is_union_of_left_and_right(roots):
    root = roots["montgomery-lungs"]
    ds = data.open_dataset("montgomery-lungs", root, "train")
    _img, mask = ds[0]
    name = Path(ds.records[0].image).name
    left = np.asarray(Image.open(root / "ManualMask/leftMask" / name)) > 0
    right = np.asarray(Image.open(root / "ManualMask/rightMask" / name)) > 0
    np.testing.assert_array_equal(mask.numpy().astype(bool), left | right)
    assert left.any() and right.any() and not (left & right).any()


def test_tb_label_from_file_name(roots):
    for name in ("montgomery", "tuberculosis", "shenzhen"):
        ds = data.open_dataset(name, roots[name], "train")
        for rec, y in zip(ds.records, ds.targets):
            assert int(Path(rec.image).stem[-1]) == y


def test_chexpert_uncertain_policies(roots):
    root = roots["chexpert"]
    raw = np.stack([r.label for r in data.open_dataset("chexpert", root, "train").records])
    unc, blank = raw == -1, np.isnan(raw)
    assert unc.any() and blank.any()
    ones = data.open_dataset("chexpert", root, "train", uncertain="ones").targets
    zeros = data.open_dataset("chexpert", root, "train", uncertain="zeros").targets
    lsr1 = data.open_dataset("chexpert", root, "train", uncertain="lsr-ones", seed=3).targets
    lsr0 = data.open_dataset("chexpert", root, "train", uncertain="lsr-zeros", seed=3).targets
    assert (ones[unc] == 1).all() and (zeros[unc] == 0).all()
    assert ((lsr1[unc] >= 0.55) & (lsr1[unc] <= 0.85)).all() and ((lsr0[unc] >= 0) & (lsr0[unc] <= 0.3)).all()
    for t in (ones, zeros, lsr1, lsr0):
        assert (t[blank] == 0).all()  # never mentioned counts as 0
        np.testing.assert_array_equal(t[~unc & ~blank], raw[~unc & ~blank])
    # the default is the first study's: LSR-Ones, drawn anew each time a sample is read
    assert data.get_dataset("chexpert").uncertain == "lsr-ones"
    ds = data.open_dataset("chexpert", root, "train")
    i = int(np.flatnonzero(unc[ds.indices].any(axis=1))[0])
    cells = unc[ds.indices[i]]
    torch.manual_seed(0)
    first, second = ds[i][1].numpy(), ds[i][1].numpy()
    for t in (first, second):
        assert ((t[cells] >= 0.55) & (t[cells] <= 0.85)).all()
        np.testing.assert_array_equal(t[~cells], ones[ds.indices[i]][~cells])
    assert (first[cells] != second[cells]).all()
    # U-Ones and U-Zeros stay fixed per read
    u1 = data.open_dataset("chexpert", root, "train", uncertain="ones")
    assert (u1[i][1].numpy()[cells] == 1).all() and np.array_equal(u1[i][1].numpy(), u1[i][1].numpy())
    assert data.get_dataset("chestxray14").uncertain == "ones"
    assert data.get_dataset("chexpert").eval_classes == (
        "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def test_siim_mask_matches_rle_and_dicom(roots):
    root = roots["siim-pneumothorax"]
    for split in ("train", "val", "test"):
        ds = data.open_dataset("siim-pneumothorax", root, split)
        for i in range(len(ds)):
            _img, mask = ds[i]
            rle = ds.records[i].rle
            expected = "-1" if rle == ("-1",) else rle[0]
            assert rle_encode(mask.numpy()) == expected


def test_rle_against_hand_computed_mask():
    # 3 rows x 4 columns, column-major: pixel index = col * 3 + row. "1 2 3 1": run at 1-2, then 2+3=5... wait
    # relative starts: first run starts at 1 (len 2: indices 1, 2), next starts 3 after its end (index 6, len 1)
    mask = rle_decode("1 2 3 1", 3, 4, "t")
    expected = np.zeros((3, 4), np.uint8)
    expected[1, 0] = expected[2, 0] = 1  # indices 1, 2 -> column 0, rows 1 and 2
    expected[0, 2] = 1  # index 6 -> column 2, row 0
    np.testing.assert_array_equal(mask, expected)
    assert rle_encode(expected) == "1 2 3 1"
    assert rle_decode("-1", 3, 4, "t").sum() == 0


def test_drive_reads_tif_and_gif(roots):
    root = roots["drive"]
    ds = data.open_dataset("drive", root, "test")
    img, mask = ds[0]
    assert ds.records[0].image.endswith("01_test.tif") and ds.records[0].masks[0].endswith("01_manual1.gif")
    assert img.shape[1:] == mask.shape and img.shape[1] != img.shape[2]
    assert not torch.equal(img[0], img[1])  # colour is kept
    assert 0 < float(mask.mean()) < 0.5


# SA-UNet's scripts name an image's copies: keras_dataAug.py ``<op><i><name>`` (randomRotation, randomColor,
# randomGaussian; i = 0, 1, 2), flip.py ``h``/``v``/``hv`` + name; with the original, 13 names an image
SA_UNET_COPIES = ["", "randomRotation0", "randomRotation1", "randomRotation2", "randomColor0", "randomColor1",
                  "randomColor2", "randomGaussian0", "randomGaussian1", "randomGaussian2", "h", "v", "hv"]


def test_drive_reads_sa_unets_augmented_copy_split_by_its_folders(tmp_path):
    """The study's DriveDataset reads every image of a folder with the label ``<name before '_'>_manual1.png``;
    its train, val and test sets are SA-UNet's train/, validate/ and test/ (main_segmentation.py, Train_drive.py,
    Eval_drive.py)."""
    root = synthetic.write("drive-sa-unet", tmp_path / "drive", n_train=26, n_val=13, n_test=2, size=32)
    want = {
        "train": [f"{p}{n}_training.tif" for n in ("21", "22") for p in SA_UNET_COPIES],
        "val": [f"{p}23_training.tif" for p in SA_UNET_COPIES],
        "test": ["01_test.tif", "02_test.tif"],
    }
    folders = {"train": "train", "val": "validate", "test": "test"}
    for split, names in want.items():
        ds = data.open_dataset("drive", root, split)
        assert sorted(Path(r.image).name for r in ds.records) == sorted(names)
        for r in ds.records:
            image = Path(r.image)
            assert image.parent == root / folders[split] / "images"
            assert r.masks == (str(root / folders[split] / "labels" / f"{image.name.split('_')[0]}_manual1.png"),)
    image, mask = data.open_dataset("drive", root, "train")[0]
    assert image.shape[1:] == mask.shape and 0 < float(mask.mean()) < 0.5


@pytest.mark.parametrize("layout, gone", [("drive-sa-unet", "train/labels"), ("drive-sa-unet", "validate/images"),
                                          ("drive", "training/1st_manual")])
def test_drive_half_a_layout_is_one_line_naming_what_is_missing(tmp_path, layout, gone):
    import shutil

    from benchxfer.errors import BenchxferError

    root = synthetic.write(layout, tmp_path / "drive", n_train=2, n_val=1, n_test=1, size=32)
    shutil.rmtree(root / gone)
    with pytest.raises(BenchxferError) as err:
        data.open_dataset("drive", root, "test")
    assert f"{gone} missing" in str(err.value) and "\n" not in str(err.value)


def test_padchest_16bit_png_is_scaled(roots):
    root = roots["padchest"]
    ds = data.open_dataset("padchest", root, "train")
    assert Image.open(ds.records[0].image).mode.startswith("I")
    img, _ = ds[0]
    assert float(img.max()) == 1.0 and float(img.min()) == 0.0


def test_rgba_and_grey_rgb_images_become_one_grey_channel(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = decode_image(tmp_path / "a.png")
    assert arr.shape == (8, 8, 1)
    np.testing.assert_array_equal(arr[:, :, 0], grey)


def test_imagefolder_classes_from_root(roots):
    cfg = data.get_dataset("imagefolder")
    assert data.num_classes("imagefolder", roots["imagefolder"]) == 4
    ds = data.open_dataset("imagefolder", roots["imagefolder"], "test")
    assert ds.classes == ("class_000", "class_001", "class_002", "class_003")
    assert cfg.classes_from_root


def test_pets_and_cifar_labels(roots):
    pets = data.open_dataset("pets", roots["pets"], "test")
    assert pets.classes == ("Abyssinian", "beagle", "Bengal", "boxer")
    for rec, y in zip(pets.records, pets.targets):
        assert Path(rec.image).stem.rsplit("_", 1)[0] == pets.classes[y]
    cifar = data.open_dataset("cifar10", roots["cifar10"], "test")
    assert cifar.targets.tolist() == [(9 + i) % 10 for i in range(3)]  # written after 9 training images
    assert cifar[0][0].shape == (3, 32, 32)


def test_rsna_pe_window(roots):
    ds = data.open_dataset("rsna-pe", roots["rsna-pe"], "train")
    arr = ds.raw_image(0)
    assert arr.dtype == np.uint8 and arr.shape[2] == 1 and arr.max() > 200


def test_lists_replace_default_split(roots, tmp_path):
    root = roots["montgomery"]
    everything = [Path(r.image).name for s in ("train", "val", "test")
                  for r in data.open_dataset("montgomery", root, s).records]
    (tmp_path / "mine.txt").write_text("\n".join(everything[:4]) + "\n")
    ds = data.open_dataset("montgomery", root, "train", lists={"train": tmp_path / "mine.txt"})
    assert [Path(r.image).name for r in ds.records] == everything[:4]


def test_fraction_and_shots_subset_train_only(roots):
    root = roots["chestxray14"]
    full = data.open_dataset("chestxray14", root, "train")
    half = data.open_dataset("chestxray14", root, "train", fraction=0.5, seed=1)
    assert len(half) == 3 and set(half.patient_ids) <= set(full.patient_ids)
    assert len(data.open_dataset("chestxray14", root, "val", fraction=0.5)) == 3
    tb = data.open_dataset("tuberculosis", roots["tuberculosis"], "train", shots=1, seed=0)
    assert sorted(tb.targets.tolist()) == [0, 1]
    again = data.open_dataset("tuberculosis", roots["tuberculosis"], "train", shots=1, seed=0)
    assert again.indices.tolist() == tb.indices.tolist()


def test_open_merged_masks_missing_and_uncertain(roots):
    merged = data.open_merged([("chestxray14", roots["chestxray14"]), ("chexpert", roots["chexpert"])], "train")
    assert merged.classes == ("Atelectasis", "Cardiomegaly", "Effusion", "Pneumonia", "Pneumothorax",
                              "Consolidation", "Edema")
    n_nih = len((roots["chestxray14"] / "train_val_list.txt").read_text().split())  # the study's NIH training set
    assert (merged.label_masks[:n_nih] == 1).all()  # NIH labels are all stated
    chex = merged.parts[1]
    col = list(chex.cfg.classes).index("Pleural Effusion")
    raw = np.stack([r.label for r in chex.records])[chex.indices, col]
    stated = ~np.isnan(raw) & (raw != -1)
    np.testing.assert_array_equal(merged.label_masks[n_nih:, 2], stated.astype(np.float32))
    np.testing.assert_array_equal(merged.targets[n_nih:, 2][stated], raw[stated])
    image, target, mask = merged[n_nih]
    assert image.shape[0] == 3 and target.shape == mask.shape == (7,)


@pytest.mark.parametrize("name", ["montgomery-lungs", "drive", "siim-pneumothorax"])
def test_segmentation_through_the_training_transform(roots, name):
    from benchxfer.data import transforms

    torch.manual_seed(0)
    pipe = transforms.build("systematic-seg", train=True, size=32, task="segmentation", dataset=name)
    ds = data.open_dataset(name, roots[name], "train", transform=pipe)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert float(ds[0][1].sum()) > 0 or name == "siim-pneumothorax"


def test_tencrop_through_the_dataset(roots):
    from benchxfer.data import transforms

    pipe = transforms.build("systematic-cls", train=False, size=24, tencrop=True)
    image, target = data.open_dataset("chestxray14", roots["chestxray14"], "test", transform=pipe)[0]
    assert image.shape == (10, 3, 24, 24) and target.shape == (14,)
