"""Pre-training labels (the second study): "No Finding" rows, masked cells, frontal views, PadChest names."""

import csv

import numpy as np
import pytest
from PIL import Image

from benchxfer import data
from benchxfer.data.readers.chest import (
    CHEXPERT_CLASSES,
    PADCHEST_CLASSES,
    padchest_vector,
)

pytestmark = pytest.mark.fast

NF, EFF, EDEMA = (CHEXPERT_CLASSES.index(c) for c in ("No Finding", "Pleural Effusion", "Edema"))


@pytest.fixture(scope="module")
def chex_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chex")
    rows = []
    # (view, {class: cell}); every other cell blank
    spec = [("Frontal", {"No Finding": "1.0", "Edema": "-1.0"}),  # normal: every pathology becomes a stated 0
            ("Frontal", {"Pleural Effusion": "1.0", "Edema": "-1.0"}),  # uncertain edema masked, blanks masked
            ("Lateral", {"Pleural Effusion": "0.0"}),
            ("Frontal", {"Edema": "0.0", "Pleural Effusion": "1.0"})]
    for i, (view, cells) in enumerate(spec):
        rel = f"train/patient{i:05d}/study1/view1.jpg"
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / rel)
        rows.append([f"CheXpert-v1.0/{rel}", view, *[cells.get(c, "") for c in CHEXPERT_CLASSES]])
    for name in ("train.csv", "valid.csv"):
        with (root / name).open("w", newline="") as f:
            csv.writer(f).writerows([["Path", "Frontal/Lateral", *CHEXPERT_CLASSES], *rows])
    return root


def test_no_finding_rows_state_every_pathology_as_zero(chex_root):
    merged = data.open_merged([("chexpert", chex_root)], "test")  # test = valid.csv: every row, no split
    assert "No Finding" in merged.classes
    col = {c: merged.classes.index(c) for c in ("No Finding", "Pleural Effusion", "Edema", "Pneumonia")}
    # row 0: No Finding = 1 -> every pathology a stated 0 (mask 1), "No Finding" itself 1
    assert merged.targets[0, col["Edema"]] == 0 and merged.label_masks[0, col["Edema"]] == 1
    assert merged.targets[0, col["Pneumonia"]] == 0 and merged.label_masks[0, col["Pneumonia"]] == 1
    assert merged.targets[0, col["No Finding"]] == 1
    assert merged.label_masks[0].all()
    # row 1: uncertain (-1) and blank cells masked, stated ones kept
    assert merged.label_masks[1, col["Edema"]] == 0 and merged.label_masks[1, col["Pneumonia"]] == 0
    assert merged.targets[1, col["Pleural Effusion"]] == 1 and merged.label_masks[1, col["Pleural Effusion"]] == 1


def test_frontal_views_by_default(chex_root):
    merged = data.open_merged([("chexpert", chex_root)], "test")
    assert len(merged) == 3  # the lateral row is left out
    assert len(data.open_merged([("chexpert", chex_root)], "test", frontal_only=False)) == 4
    assert len(data.open_dataset("chexpert", chex_root, "test")) == 4  # fine-tuning reads every view


def test_mimic_frontal_views_from_the_metadata(tmp_path):
    root = data.synthetic.write("mimic-cxr", tmp_path / "mimic", n_train=8, n_val=2, n_test=2)
    views = {r["dicom_id"]: r["ViewPosition"] for r in csv.DictReader((root / "mimic-cxr-2.0.0-metadata.csv").open())}
    every = data.open_dataset("mimic-cxr", root, "train")
    frontal = data.open_dataset("mimic-cxr", root, "train", frontal_only=True)
    want = [r.image for r in every.records if views[r.image.rsplit("/", 1)[1][:-4]] in ("PA", "AP")]
    assert [r.image for r in frontal.records] == want and 0 < len(want) < len(every)


def test_padchest_class_by_substring_of_name_or_synonym():
    labels = {"pulmonary edema", "loculated pleural effusion", "infiltrates", "hiatal hernia"}
    got = dict(zip(PADCHEST_CLASSES, padchest_vector(labels)))
    # by the rule: "edema" in "pulmonary edema"; "pleural effusion" in "loculated pleural effusion";
    # synonym "infiltrate" in "infiltrates"; "hernia" in "hiatal hernia"; nothing else matches
    assert {c for c, v in got.items() if v == 1} == {"Edema", "Pleural Effusion", "Infiltration", "Hernia"}
    assert dict(zip(PADCHEST_CLASSES, padchest_vector({"normal"})))["No Finding"] == 1
