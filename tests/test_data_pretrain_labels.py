"""Pre-training data (the second study, large-scale-pretraining-transfer ``transfer_learning/datasets/``): classes,
"No Finding" rows, masked cells, views, PadChest's synonym map and pixels, the sources' train and val sets.
Expected values are computed here from the study's rules, written out as its code states them."""

import csv

import numpy as np
import pytest
from PIL import Image

from benchxfer import data
from benchxfer.data.merged import canonical
from benchxfer.data.readers.chest import CHEXPERT_CLASSES, PADCHEST_CLASSES, PADCHEST_CSV, padchest_vector

pytestmark = pytest.mark.fast

# the study's pathology lists (chexpert.py / mimic.py, nih.py, padchest.py), and its PadChest synonym map
STUDY_CHEXPERT = ["Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                  "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                  "Fracture", "Support Devices"]
STUDY_NIH = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
             "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia"]
STUDY_PADCHEST = STUDY_NIH + ["Fracture", "Granuloma", "Flattened Diaphragm", "Bronchiectasis", "Aortic Elongation",
                              "Scoliosis", "Hilar Enlargement", "Support Devices", "Tuberculosis", "Air Trapping",
                              "Costophrenic Angle Blunting", "Aortic Atheromatosis", "Hemidiaphragm Elevation"]
STUDY_MAP = {
    "Infiltration": ["infiltrates", "interstitial pattern", "ground glass pattern", "reticular interstitial pattern",
                     "reticulonodular interstitial pattern", "alveolar pattern", "consolidation", "air bronchogram"],
    "Pleural_Thickening": ["pleural thickening"],
    "Consolidation": ["air bronchogram"],
    "Hilar Enlargement": ["adenopathy", "pulmonary artery enlargement"],
    "Support Devices": ["device", "pacemaker"],
}
CXR_VIEWS = ["PA", "AP", "AP Supine", "L", "COSTAL"]  # chexpert_mimic_nih_padchest_*.yaml


def study_padchest_row(labels_cell: str) -> list[float]:
    """padchest.py: ``Labels.str.contains(pathology.lower())``, or'ed with each synonym, over sorted pathologies."""
    return [float(p.lower() in labels_cell or any(s in labels_cell for s in STUDY_MAP.get(p, [])))
            for p in sorted(STUDY_PADCHEST)]


@pytest.fixture(scope="module")
def chex_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chex")
    rows = []
    # (view, AP/PA, {class: cell}); every other cell blank
    spec = [("Frontal", "PA", {"No Finding": "1.0", "Edema": "-1.0"}),  # normal: every pathology a stated 0
            ("Frontal", "AP", {"Pleural Effusion": "1.0", "Edema": "-1.0"}),  # uncertain edema masked, blanks too
            ("Lateral", "", {"Pleural Effusion": "0.0"}),
            ("Frontal", "PA", {"Edema": "0.0", "Pleural Effusion": "1.0"})]
    for i, (view, appa, cells) in enumerate(spec):
        rel = f"train/patient{i:05d}/study1/view1.jpg"
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / rel)
        rows.append([f"CheXpert-v1.0/{rel}", view, appa, *[cells.get(c, "") for c in CHEXPERT_CLASSES]])
    for name in ("train.csv", "valid.csv"):
        with (root / name).open("w", newline="") as f:
            csv.writer(f).writerows([["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLASSES], *rows])
    return root


def test_chexpert_alone_has_the_studys_13_classes(chex_root):
    merged = data.open_merged([("chexpert", chex_root)], "val")
    assert sorted(map(canonical, merged.classes)) == sorted(map(canonical, STUDY_CHEXPERT))
    assert len(merged.classes) == 13 and "No Finding" not in merged.classes


def test_merged_classes_are_the_intersection_of_the_studys_lists(tmp_path):
    sets = [set(map(canonical, names)) for names in (STUDY_CHEXPERT, STUDY_CHEXPERT, STUDY_NIH, STUDY_PADCHEST)]
    want = set.intersection(*sets)
    assert len(want) == 7  # the study's "nb_classes: 7 # intersection of labels"
    names = ("chexpert", "mimic-cxr", "chestxray14", "padchest")
    roots = [data.synthetic.write(n, tmp_path / n, n_train=6, n_val=2, n_test=2, size=16) for n in names]
    merged = data.open_merged(list(zip(names, roots)), "train")
    assert set(map(canonical, merged.classes)) == want
    two = data.open_merged(list(zip(names[:2], roots[:2])), "train")  # chexpert_mimic_*.yaml: nb_classes 13
    assert len(two.classes) == 13


def test_no_finding_rows_state_every_pathology_as_zero(chex_root):
    merged = data.open_merged([("chexpert", chex_root)], "val")  # val = valid.csv, PA and AP views
    col = {c: merged.classes.index(c) for c in ("Pleural Effusion", "Edema", "Pneumonia", "Support Devices")}
    # row 0: No Finding = 1 -> every pathology a stated 0 (chexpert.py: csv.loc[healthy, pathology] = 0)
    assert merged.targets[0].tolist() == [0.0] * 13 and merged.label_masks[0].all()
    # row 1: uncertain (-1) and blank cells masked (nan in the study), stated ones kept
    assert merged.label_masks[1, col["Edema"]] == 0 and merged.label_masks[1, col["Pneumonia"]] == 0
    assert merged.targets[1, col["Pleural Effusion"]] == 1 and merged.label_masks[1, col["Pleural Effusion"]] == 1


def test_views_pa_and_ap_by_default_and_the_cxr_files_views(chex_root):
    def study_view(frontal_lateral, appa):  # chexpert.py: Frontal -> the AP/PA column; Lateral -> "L"
        return appa if frontal_lateral == "Frontal" else "L"

    rows = list(csv.DictReader((chex_root / "valid.csv").open()))
    for views, opts in ((["PA", "AP"], {}), (CXR_VIEWS, {"views": CXR_VIEWS})):
        want = sum(study_view(r["Frontal/Lateral"], r["AP/PA"]) in views for r in rows)
        assert len(data.open_merged([("chexpert", chex_root, opts)], "val")) == want
    assert want == 4  # the cxr file keeps the lateral
    assert len(data.open_dataset("chexpert", chex_root, "test")) == 4  # fine-tuning reads every view


def test_mimic_views_from_the_metadata(tmp_path):
    root = data.synthetic.write("mimic-cxr", tmp_path / "mimic", n_train=8, n_val=2, n_test=2)
    views = {r["dicom_id"]: r["ViewPosition"] for r in csv.DictReader((root / "mimic-cxr-2.0.0-metadata.csv").open())}
    every = data.open_dataset("mimic-cxr", root, "train")
    frontal = data.open_dataset("mimic-cxr", root, "train", views=["PA", "AP"])
    want = [r.image for r in every.records if views[r.image.rsplit("/", 1)[1][:-4]] in ("PA", "AP")]
    assert [r.image for r in frontal.records] == want and 0 < len(want) < len(every)
    merged = data.open_merged([("mimic-cxr", root)], "train")  # the study's default views: PA, AP
    assert [r.image for r in merged.parts[0].records] == want


def _padchest_root(root, rows):
    """rows: (Projection, Labels cell, pixel value); 16-bit PNGs."""
    (root / "0").mkdir(parents=True)
    out = []
    for i, (projection, labels, value) in enumerate(rows):
        name = f"img_{i}.png"
        Image.fromarray(np.full((6, 6), value, np.uint16)).save(root / "0" / name)
        out.append([name, "0", f"p{i}", labels, projection])
    with (root / PADCHEST_CSV).open("w", newline="") as f:
        csv.writer(f).writerows([["ImageID", "ImageDir", "PatientID", "Labels", "Projection"], *out])
    return root


def test_padchest_classes_from_the_studys_synonym_map():
    assert PADCHEST_CLASSES == tuple(sorted(STUDY_PADCHEST))
    for cell in ("['air bronchogram']", "['alveolar pattern', 'pacemaker']", "['loculated pleural effusion']",
                 "['adenopathy', 'pleural thickening']", "['normal']", "['hiatal hernia', 'electrical device']",
                 "['pulmonary artery enlargement', 'ground glass pattern', 'consolidation']"):
        labels = {t.strip().lower() for t in eval(cell)}  # noqa: S307 (a literal list of our own)
        assert padchest_vector(labels).tolist() == study_padchest_row(cell), cell
    got = dict(zip(PADCHEST_CLASSES, padchest_vector({"air bronchogram"})))
    assert got["Infiltration"] == got["Consolidation"] == 1  # "air bronchogram" gives both
    assert len(STUDY_MAP["Infiltration"]) == 8


def test_padchest_views_nulls_and_pixels(tmp_path):
    projections = ["PA", "AP_horizontal", "L", "COSTAL", "EXCLUDE", "AP", "PA"]
    rows = [(p, "['normal']", v) for p, v in zip(projections, (0, 257, 1000, 30000, 40000, 65535, 12345))]
    rows.append(("PA", "", 500))  # no Labels: the study drops the row
    root = _padchest_root(tmp_path / "pc", rows)
    views = {"AP_horizontal": "AP Supine"}  # padchest.py standardises this one name
    for keep in (["PA", "AP"], CXR_VIEWS):
        want = sorted(f"img_{i}.png" for i, (p, labels, _) in enumerate(rows) if views.get(p, p) in keep and labels)
        got = [r.image.rsplit("/", 1)[1] for s in ("train", "test")
               for r in data.open_dataset("padchest", root, s, views=keep).records]
        assert sorted(got) == want
    assert len(want) == 6  # EXCLUDE and the row without labels are left out
    for rec in [r for s in ("train", "test") for r in data.open_dataset("padchest", root, s).records]:
        value = int(np.asarray(Image.open(rec.image))[0, 0])
        pixels = data.pixels.record_image(data.get_dataset("padchest"), rec)
        assert pixels.dtype == np.uint8 and pixels.shape == (6, 6, 1)
        # the study: value / 65535 in [0, 1]; here its 8-bit code, value * 255 / 65535 rounded
        assert abs(pixels[0, 0, 0] / 255 - value / 65535) <= 0.5 / 255


def test_nih_and_chexpert_train_and_val_sets_are_the_studys(tmp_path, chex_root):
    root = data.synthetic.write("chestxray14", tmp_path / "nih", n_train=6, n_val=3, n_test=4, size=16)
    # nih.py: train = train_val_list.txt, val = test_list.txt (every image there is PA here)
    for split, listed in (("train", "train_val_list.txt"), ("val", "test_list.txt")):
        merged = data.open_merged([("chestxray14", root)], split)
        names = [ln for ln in (root / listed).read_text().split() if ln]
        assert [r.image.rsplit("/", 1)[1] for r in merged.parts[0].records] == names
    # chexpert.py: train = every train.csv row of the views, val = valid.csv
    for split, listed in (("train", "train.csv"), ("val", "valid.csv")):
        merged = data.open_merged([("chexpert", chex_root)], split)
        rows = [r for r in csv.DictReader((chex_root / listed).open()) if r["Frontal/Lateral"] == "Frontal"]
        assert [r.image.split("CheXpert-v1.0/")[-1] for r in merged.parts[0].records] == \
            [str(chex_root / r["Path"].split("/", 1)[1]).split("CheXpert-v1.0/")[-1] for r in rows]


def test_padchest_split_is_the_studys(tmp_path):
    """padchest.py: the kept rows' indices shuffled with RandomState(42), the first int(0.9 n) train, the rest its
    validation set (benchxfer's test split, and the pre-training's val); its left-out images never count."""
    rows = [("PA" if i % 3 else "AP", "['normal']" if i % 5 else "['pleural effusion']", i) for i in range(40)]
    rows[7] = ("L", "['normal']", 7)  # another view
    rows[11] = ("PA", "", 11)  # no labels
    root = _padchest_root(tmp_path / "pc", rows)
    excluded = "269300710246070740096540277379121868595_e7zsan.png"  # one of the study's left-out images
    (root / "0" / "img_13.png").rename(root / "0" / excluded)
    text = (root / PADCHEST_CSV).read_text().replace("img_13.png", excluded)
    (root / PADCHEST_CSV).write_text(text)
    kept = [f"img_{i}.png" for i, (p, labels, _) in enumerate(rows) if p in ("PA", "AP") and labels and i != 13]
    inds = np.arange(len(kept))
    np.random.RandomState(42).shuffle(inds)
    k = int(len(kept) * 0.9)
    want = {"train": [kept[i] for i in inds[:k]], "val": [kept[i] for i in inds[k:]]}
    for split, names in want.items():
        merged = data.open_merged([("padchest", root)], split)
        assert [r.image.rsplit("/", 1)[1] for r in merged.parts[0].records] == names
    assert [r.image.rsplit("/", 1)[1] for r in data.open_dataset("padchest", root, "test", views=["PA", "AP"]).records] \
        == want["val"]


def test_a_sources_options_are_checked_when_the_file_is_read(tmp_path):
    from benchxfer.errors import BenchxferError
    from benchxfer.plan.pretraining import load_pretrain_spec

    path = tmp_path / "p.yaml"
    path.write_text("name: x\nsources:\n  - {dataset: chexpert, root: ., options: {view: [PA]}}\n")
    with pytest.raises(BenchxferError, match=r"p.yaml: sources\[0\].options: .*unknown option\(s\) view; it takes: views"):
        load_pretrain_spec(path)
    path.write_text("name: x\nsources:\n  - {dataset: padchest, root: ., options: {views: PA}}\n")
    with pytest.raises(BenchxferError, match="views must be a non-empty list of view names"):
        load_pretrain_spec(path)
