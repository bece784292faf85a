"""The readers on the label files as their owners publish them (issue 30).

NIH's ``Data_Entry_2017_v2020.csv`` (under both its names), CheXpert's ``train.csv``, PadChest's 160K-row CSV and
SIIM's ``train-rle.csv``, from the ``torchxrayvision`` wheel, each in a root where every image it names is present
(``published_roots.py``: hard links to one tiny stand-in, each root built once per session). For each dataset:
every split it has opens; row counts, per-class counts and each row's labels equal what the study's rule gives on
the same file, computed here with pandas as the study's code states it (the first study's list files for
ChestX-ray14; the second study's ``transfer_learning/datasets/{nih,chexpert,padchest}.py`` for the pre-training);
for NIH, CheXpert and PadChest also what torchxrayvision's own dataset class gives (a peer, where it follows the
same rule); the merged pre-training sources; and ``benchxfer data verify`` exits 0 on each clean root.

A root holds 100K+ names: each split is opened once per module (``opened``) and each file read once."""

from __future__ import annotations

import ast
import csv
import gzip
import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from published_roots import (
    NIH_FILE,
    PADCHEST_FILE,
    SIIM_FILE,
    SIIM_SIZE,
    Roots,
    published,
    scratch_base,
)
from test_data_pretrain_labels import STUDY_MAP  # the second study's synonym map, typed once

from benchxfer import data
from benchxfer.cli import main
from benchxfer.data.merged import canonical
from benchxfer.data.readers.chest import CHEXPERT_CLASSES, PADCHEST_CLASSES
from benchxfer.data.readers.nih import NIH_CLASSES
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


@pytest.fixture(scope="session")
def roots():
    made = Roots(scratch_base())
    yield made
    made.remove()


@pytest.fixture(scope="module")
def opened(roots):
    """``opened(name, root, split, **options)``: the dataset, opened once per module."""
    seen: dict = {}

    def get(name: str, root: str, split: str, **options):
        key = (name, root, split, repr(sorted(options.items())))
        if key not in seen:
            seen[key] = data.open_dataset(name, getattr(roots, root)(), split, **options)
        return seen[key]

    return get


def name_of(rec) -> str:
    return rec.image.rsplit("/", 1)[1]


def line_of(rec) -> int:
    return int(rec.origin.rsplit(":", 1)[1])


def raw(ds) -> np.ndarray:
    return np.stack([ds.records[i].label for i in ds.indices]).astype(np.float32)


def peer():
    """torchxrayvision's datasets module (imported here only: benchxfer never imports it)."""
    import torchxrayvision

    return torchxrayvision.datasets


def study_views(projection: pd.Series) -> pd.Series:
    return projection.replace({"AP_horizontal": "AP Supine"})  # padchest.py


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def entry() -> pd.DataFrame:
    """Data_Entry_2017_v2020.csv with the second study's labels (nih.py: ``Finding Labels.str.contains(p)``)."""
    df = pd.read_csv(published(NIH_FILE), usecols=["Image Index", "Finding Labels", "Patient ID", "View Position"])
    for c in NIH_CLASSES:
        df[c] = df["Finding Labels"].str.contains(c, regex=False).astype(np.float32)
    return df.set_index("Image Index", drop=False)


def test_nih_first_study_lists_name_every_image_with_the_data_entry_labels(opened, entry, roots):
    """The first study's official lists (shipped) on the real root: 75,312 / 11,212 / 25,596, all 112,120 images of
    the Data_Entry file once, each line's labels those of its Data_Entry row."""
    splits = {s: opened("chestxray14", "nih", s) for s in ("train", "val", "test")}
    assert {s: len(ds) for s, ds in splits.items()} == {"train": 75312, "val": 11212, "test": 25596}
    names = [name_of(r) for ds in splits.values() for r in ds.records]
    assert len(names) == len(set(names)) == len(entry) == 112120
    assert set(names) == set(entry.index)
    got = np.concatenate([ds.targets for ds in splits.values()])
    np.testing.assert_array_equal(got, entry.loc[names, list(NIH_CLASSES)].to_numpy())
    assert got.sum(axis=0).tolist() == entry[list(NIH_CLASSES)].sum(axis=0).tolist()  # per-class counts
    assert [r.patient for r in splits["test"].records] == [n.split("_")[0] for n in map(name_of, splits["test"].records)]


def test_nih_official_reads_either_label_file_name(opened, entry, roots):
    """official='nih' on a root with Data_Entry_2017_v2020.csv (the name NIH serves today): train + val =
    train_val_list.txt (val a patient-disjoint 10 %), test = test_list.txt, labels of Data_Entry; a root with the
    same file as Data_Entry_2017.csv reads the same."""
    folder = roots.nih()
    train_val = (folder / "train_val_list.txt").read_text().split()
    test = (folder / "test_list.txt").read_text().split()
    splits = {s: opened("chestxray14", "nih", s, official="nih") for s in ("train", "val", "test")}
    assert sorted(name_of(r) for s in ("train", "val") for r in splits[s].records) == sorted(train_val)
    assert [name_of(r) for r in splits["test"].records] == test
    assert not set(splits["train"].patient_ids) & set(splits["val"].patient_ids)
    assert 0.09 < len(set(splits["val"].patient_ids)) / len(set(entry.loc[train_val, "Patient ID"])) < 0.11
    for ds in splits.values():
        names = [name_of(r) for r in ds.records]
        np.testing.assert_array_equal(ds.targets, entry.loc[names, list(NIH_CLASSES)].to_numpy())
        assert ds.patient_ids == entry.loc[names, "Patient ID"].astype(str).tolist()
    old = opened("chestxray14", "nih_2017", "val", official="nih")
    assert (roots.nih_2017() / "Data_Entry_2017.csv").exists() and not (roots.nih_2017() / "Data_Entry_2017_v2020.csv").exists()
    assert [name_of(r) for r in old.records] == [name_of(r) for r in splits["val"].records]
    np.testing.assert_array_equal(old.targets, splits["val"].targets)


def test_nih_pretraining_sets_are_the_second_studys(opened, entry):
    """nih.py: the views' rows of Data_Entry_2017_v2020.csv merged (inner) with train_val_list.txt / test_list.txt;
    benchxfer's pre-training options (official='nih', views PA and AP, val_fraction 0); torchxrayvision's
    NIH_Dataset gives the same labels for every image."""
    options = data.get_dataset("chestxray14").pretrain_options
    assert options == {"official": "nih", "val_fraction": 0.0, "views": ("PA", "AP")}
    for split, listed in (("train", "train_val_list.txt"), ("test", "test_list.txt")):
        ds = opened("chestxray14", "nih", split, **options)
        split_df = pd.read_csv(ds.root / listed, names=["Image Index"])
        viewed = entry[entry["View Position"].isin(["AP", "PA"])].reset_index(drop=True)
        want = pd.merge(viewed, split_df, on="Image Index", how="inner").set_index("Image Index")
        names = [name_of(r) for r in ds.records]  # in the list file's order (the study's: Data_Entry's)
        assert names == [n for n in split_df["Image Index"] if n in want.index]
        assert sorted(names) == sorted(want.index)
        np.testing.assert_array_equal(ds.targets, want.loc[names, list(NIH_CLASSES)].to_numpy())
    xrv = peer().NIH_Dataset(imgpath=str(ds.root / "images"), views=["PA", "AP"], unique_patients=False)
    theirs = pd.DataFrame(xrv.labels, columns=xrv.pathologies, index=xrv.csv["Image Index"])
    for split in ("train", "test"):
        ds = opened("chestxray14", "nih", split, **options)
        names = [name_of(r) for r in ds.records]
        np.testing.assert_array_equal(ds.targets, theirs.loc[names, list(NIH_CLASSES)].to_numpy())


def test_nih_without_a_label_file_names_every_file_looked_for(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n")
    with pytest.raises(BenchxferError) as err:
        data.open_dataset("chestxray14", tmp_path, "train", official="nih")
    message = str(err.value)
    assert "\n" not in message
    for name in ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv",
                 "Data_Entry_2017.csv.gz"):
        assert name in message


# --- CheXpert -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chexpert_csv(roots) -> dict[str, pd.DataFrame]:
    root = roots.chexpert()
    return {name: pd.read_csv(root / name) for name in ("train.csv", "valid.csv")}


def test_chexpert_splits_hold_every_row_with_its_cells(opened, chexpert_csv):
    """Fine-tuning's splits (every view): train + val = every row of train.csv (val a patient-disjoint seeded 10 %),
    test = valid.csv; each record's cells those of its CSV line (1, 0, -1, blank = nan), as pandas reads them."""
    df = chexpert_csv["train.csv"]
    splits = {s: opened("chexpert", "chexpert", s) for s in ("train", "val", "test")}
    lines = [line_of(r) for s in ("train", "val") for r in splits[s].records]
    assert len(df) == 223414 and sorted(lines) == list(range(2, len(df) + 2))
    assert not set(splits["train"].patient_ids) & set(splits["val"].patient_ids)
    assert 0.09 < len(set(splits["val"].patient_ids)) / df["Path"].str.extract(r"(patient\d+)")[0].nunique() < 0.11
    for split, ds in splits.items():
        table = chexpert_csv["valid.csv" if split == "test" else "train.csv"]
        rows = table.iloc[[line_of(r) - 2 for r in ds.records]]
        np.testing.assert_array_equal(raw(ds), rows[list(CHEXPERT_CLASSES)].to_numpy(np.float32))
        assert [r.image.split("CheXpert-v1.0-small/", 1)[1] for r in ds.records] == \
            [p.split("/", 1)[1] for p in rows["Path"]]
    # per-class counts (what verify prints, under U-Ones): a positive is a 1 or a -1 cell
    ones = np.concatenate([data.labels.apply_uncertain(raw(splits[s]), "ones") for s in ("train", "val")])
    assert ones.sum(axis=0).tolist() == df[list(CHEXPERT_CLASSES)].isin([1, -1]).sum(axis=0).astype(float).tolist()
    assert len(splits["test"]) == len(chexpert_csv["valid.csv"]) == 234


def study_chexpert(table: pd.DataFrame, views=("PA", "AP")) -> tuple[pd.DataFrame, np.ndarray]:
    """chexpert.py: the view column (a frontal row's AP/PA, L for a lateral), "No Finding" = 1 rows' pathologies set
    to 0, -1 cells nan; its 13 pathologies, sorted."""
    table = table.copy()
    table["view"] = table["Frontal/Lateral"]
    table.loc[table["view"] == "Frontal", "view"] = table["AP/PA"]
    table["view"] = table["view"].replace({"Lateral": "L"})
    table = table[table["view"].isin(list(views))]
    healthy = table["No Finding"] == 1
    pathologies = sorted(c for c in CHEXPERT_CLASSES if c != "No Finding")
    for p in pathologies:
        table.loc[healthy, p] = 0
    labels = table[pathologies].to_numpy(np.float32, copy=True)
    labels[labels == -1] = np.nan
    return table, labels


def merged_as_study(merged, part: int, pathologies: list[str]) -> np.ndarray:
    """A merged part's targets in the study's order, nan where the label mask leaves the cell out."""
    lo = sum(len(p) for p in merged.parts[:part])
    rows = slice(lo, lo + len(merged.parts[part]))
    cols = [[canonical(c) for c in merged.classes].index(canonical(p)) for p in pathologies]
    out = merged.targets[rows][:, cols].copy()
    out[merged.label_masks[rows][:, cols] == 0] = np.nan
    return out


def test_chexpert_pretraining_sets_are_the_second_studys(roots, chexpert_csv):
    """open_merged's CheXpert (the study's views PA and AP): train = those rows of train.csv, val = of valid.csv,
    with chexpert.py's labels; torchxrayvision's CheX_Dataset gives the same rows and labels (but for "Support
    Devices" on a "No Finding" row, which it leaves as stated: the study sets it to 0, as benchxfer)."""
    pathologies = sorted(c for c in CHEXPERT_CLASSES if c != "No Finding")
    for split, name in (("val", "valid.csv"), ("train", "train.csv")):
        merged = data.open_merged([("chexpert", roots.chexpert())], split)
        table, labels = study_chexpert(chexpert_csv[name])
        assert [line_of(r) - 2 for r in merged.parts[0].records] == table.index.tolist()
        ours = merged_as_study(merged, 0, pathologies)
        np.testing.assert_array_equal(ours, labels)
    xrv = peer().CheX_Dataset(imgpath=str(roots.chexpert()), csvpath=str(roots.chexpert() / "train.csv"),
                              views=["PA", "AP"], unique_patients=False)
    assert xrv.csv["Path"].tolist() == table["Path"].tolist()
    theirs = pd.DataFrame(xrv.labels, columns=xrv.pathologies)
    theirs = theirs.rename(columns={"Effusion": "Pleural Effusion"})[pathologies].to_numpy(np.float32)
    healthy = (xrv.csv["No Finding"] == 1).to_numpy()
    devices = pathologies.index("Support Devices")
    np.testing.assert_array_equal(np.delete(ours, devices, 1), np.delete(theirs, devices, 1))
    np.testing.assert_array_equal(ours[~healthy, devices], theirs[~healthy, devices])


# --- PadChest -----------------------------------------------------------------------------------------------------

STUDY_MISSING = {  # padchest.py's left-out images (it lists two of them twice)
    "216840111366964012819207061112010307142602253_04-014-084.png", "216840111366964012989926673512011074122523403_00-163-058.png",
    "216840111366964012959786098432011033083840143_00-176-115.png", "216840111366964012558082906712009327122220177_00-102-064.png",
    "216840111366964012339356563862009072111404053_00-043-192.png", "216840111366964013076187734852011291090445391_00-196-188.png",
    "216840111366964012373310883942009117084022290_00-064-025.png", "216840111366964012283393834152009033102258826_00-059-087.png",
    "216840111366964012373310883942009170084120009_00-097-074.png", "216840111366964012819207061112010315104455352_04-024-184.png",
    "216840111366964013829543166512013353113303615_02-092-190.png", "216840111366964012904401302362010337093236130_03-198-079.png",
    "216840111366964012904401302362010336141343749_03-198-010.png", "216840111366964012989926673512011151082430686_00-157-045.png",
    "216840111366964012989926673512011083134050913_00-168-009.png", "216840111366964012373310883942009077082646386_00-047-124.png",
    "216840111366964013686042548532013208193054515_02-026-007.png", "216840111366964013962490064942014134093945580_01-178-104.png",
    "216840111366964012819207061112010281134410801_00-129-131.png", "216840111366964013590140476722013043111952381_02-065-198.png",
    "216840111366964012283393834152009027091819347_00-007-136.png", "216840111366964012373310883942009152114636712_00-102-045.png",
    "216840111366964012283393834152009033140208626_00-059-118.png", "216840111366964013590140476722013058110301622_02-056-111.png",
    "216840111366964012487858717522009280135853083_00-075-001.png", "216840111366964013590140476722013049100117076_02-063-097.png",
    "216840111366964013649110343042013092101343018_02-075-146.png", "216840111366964012819207061112010306085429121_04-020-102.png",
    "269300710246070740096540277379121868595_e7zsan.png", "216840111366964012373310883942009180082307973_00-097-011.png",
}


@pytest.fixture(scope="module")
def padchest_csv() -> pd.DataFrame:
    """The file as the study read it: ``pd.read_csv(..., low_memory=False)`` (the columns it uses)."""
    return pd.read_csv(published(PADCHEST_FILE), low_memory=False,
                       usecols=["ImageID", "ImageDir", "PatientID", "Projection", "Labels"])


def study_padchest(df: pd.DataFrame, views=None) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """padchest.py: AP_horizontal named AP Supine, the views' rows, ``Labels`` not null, the left-out images
    dropped; each sorted pathology ``Labels.str.contains`` its lower-cased name or a synonym; the rows' indices
    shuffled with RandomState(42), the first int(0.9 n) train, the rest its validation set (benchxfer's test)."""
    df = df.assign(view=study_views(df["Projection"]))
    if views is not None:
        df = df[df["view"].isin(list(views))]
    df = df[~df["Labels"].isnull()]
    df = df[~df["ImageID"].isin(STUDY_MISSING)]
    labels = []
    for pathology in PADCHEST_CLASSES:
        mask = df["Labels"].str.contains(pathology.lower(), regex=False)
        for syn in STUDY_MAP.get(pathology, []):
            mask |= df["Labels"].str.contains(syn.lower(), regex=False)
        labels.append(mask.values)
    labels = np.asarray(labels).T.astype(np.float32)
    inds = np.arange(len(df))
    np.random.RandomState(42).shuffle(inds)
    n = int(len(inds) * 0.9)
    return {"train": (df.iloc[inds[:n]], labels[inds[:n]]), "test": (df.iloc[inds[n:]], labels[inds[n:]])}


def test_padchest_opens_without_its_null_labels_and_splits_as_the_study(opened, roots, padchest_csv):
    """The published file opens: its 103 rows whose Labels is the text ``nan`` are dropped as the study's
    ``isnull()`` drops them (pandas reads ``nan`` as missing); train and test (the study's validation set) are its
    rows, in its order, with its labels; there is no val split."""
    text = csv.reader(published_text_lines(PADCHEST_FILE))
    labels_col = next(text).index("Labels")
    null_lines = [text.line_num for row in text if row[labels_col] == "nan"]  # lines of the file (reports span several)
    assert len(null_lines) == 103 and {42116, 43994, 45076} <= set(null_lines)
    assert padchest_csv["Labels"].isnull().sum() == 103
    want = study_padchest(padchest_csv)
    for split in ("train", "test"):
        ds = opened("padchest", "padchest", split)
        rows, labels = want[split]
        assert [name_of(r) for r in ds.records] == rows["ImageID"].tolist()
        np.testing.assert_array_equal(ds.targets, labels)
        assert ds.targets.sum(axis=0).tolist() == labels.sum(axis=0).tolist()  # per-class counts
        assert ds.patient_ids == rows["PatientID"].astype(str).tolist()
        assert not {line_of(r) for r in ds.records} & set(null_lines)
    assert len(want["train"][0]) + len(want["test"][0]) == len(padchest_csv) - 103 - len(STUDY_MISSING) == 160728
    with pytest.raises(BenchxferError, match="has no val split"):
        data.open_dataset("padchest", roots.padchest(), "val")


def published_text_lines(name: str):
    with gzip.open(published(name), "rt", encoding="utf-8", newline="") as fh:
        yield from fh


def test_padchest_pretraining_sets_are_the_second_studys_and_torchxrayvisions(roots, padchest_csv):
    """open_merged's PadChest (the study's views PA and AP): train and val are padchest.py's; torchxrayvision's
    PC_Dataset (which leaves out fewer images, drops children and unknown birth years, and sorts by ImageID) gives
    the same labels for each image both keep."""
    want = study_padchest(padchest_csv, views=("PA", "AP"))
    for split, part in (("train", "train"), ("val", "test")):
        merged = data.open_merged([("padchest", roots.padchest())], split)
        rows, labels = want[part]
        assert [name_of(r) for r in merged.parts[0].records] == rows["ImageID"].tolist()
        np.testing.assert_array_equal(merged_as_study(merged, 0, list(PADCHEST_CLASSES)), labels)
        if split == "train":
            ours = pd.DataFrame(labels, columns=list(PADCHEST_CLASSES), index=rows["ImageID"])
    xrv = peer().PC_Dataset(imgpath=str(roots.padchest()), views=["PA", "AP"], unique_patients=False)
    theirs = pd.DataFrame(xrv.labels, columns=xrv.pathologies, index=xrv.csv["ImageID"])
    both = ours.index.intersection(theirs.index)
    shared = [c for c in PADCHEST_CLASSES if c in theirs.columns]
    assert len(both) > 0.95 * len(ours) and len(shared) == len(PADCHEST_CLASSES)  # its own "Tube" besides
    np.testing.assert_array_equal(ours.loc[both, shared].to_numpy(), theirs.loc[both, shared].to_numpy())


# --- SIIM-ACR pneumothorax ------------------------------------------------------------------------------------------

def rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The competition's ``mask_functions.rle2mask`` (used as ``rle2mask(rle, 1024, 1024).T``)."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    starts, lengths = array[0::2], array[1::2]
    current_position = 0
    for index, start in enumerate(starts):
        current_position += start
        mask[current_position:current_position + lengths[index]] = 255
        current_position += lengths[index]
    return mask.reshape(width, height)


def test_siim_masks_unite_every_row_of_an_image(opened):
    """Every ImageId of train-rle.csv once over the three splits, each with all its run-length rows (an image without
    pneumothorax: its one "-1"); the masks of 100 images with several rows and of 50 others equal the union of
    the competition's rle2mask. (torchxrayvision's SIIM reader keeps only the last row of such an image.)"""
    df = pd.read_csv(published(SIIM_FILE))
    df.columns = [c.strip() for c in df.columns]
    codes = df.groupby("ImageId", sort=False)["EncodedPixels"].apply(lambda s: [c.strip() for c in s]).to_dict()
    splits = [opened("siim-pneumothorax", "siim", s) for s in ("train", "val", "test")]
    records = [r for ds in splits for r in ds.records]
    assert len(records) == len({r.patient for r in records}) == len(codes) == 12047
    for rec in records:
        rows = codes[rec.patient]
        assert list(rec.rle) == ([c for c in rows if c != "-1"] or ["-1"])
        assert rec.image.endswith(f"/{rec.patient}.dcm")
    several = [r for r in records if len(codes[r.patient]) > 1]
    assert len(several) == 624
    cfg = data.get_dataset("siim-pneumothorax")
    rng = np.random.default_rng(0)
    sample = [several[i] for i in rng.choice(len(several), 100, replace=False)]
    for rec in sample + [records[i] for i in rng.choice(len(records), 50, replace=False)]:
        mask = data.pixels.record_mask(cfg, rec, (SIIM_SIZE, SIIM_SIZE))
        want = np.zeros((SIIM_SIZE, SIIM_SIZE), bool)
        for code in codes[rec.patient]:
            if code != "-1":
                want |= rle2mask(code, SIIM_SIZE, SIIM_SIZE).T > 0
        assert np.array_equal(mask.astype(bool), want), rec.patient


# --- the merged pre-training sources ----------------------------------------------------------------------------

def test_merged_pretraining_on_the_published_files(roots, entry, chexpert_csv, padchest_csv):
    """CheXpert + ChestX-ray14 + PadChest as sweeps/pretrain_chest.yaml merges them (its five views; MIMIC-CXR's
    files are not published): the common classes, and each source's validation set that of the study's code."""
    views = ["PA", "AP", "AP Supine", "L", "COSTAL"]
    sources = [("chexpert", roots.chexpert(), {"views": views}), ("chestxray14", roots.nih(), {"views": views}),
               ("padchest", roots.padchest(), {"views": views})]
    pad = study_padchest(padchest_csv, views=views)
    merged = data.open_merged(sources, "val")  # the sources' train sets: test_{nih,chexpert,padchest}_pretraining_*
    assert sorted(map(canonical, merged.classes)) == ["atelectasis", "cardiomegaly", "consolidation", "edema",
                                                       "pleural effusion", "pneumonia", "pneumothorax"]
    chex = study_chexpert(chexpert_csv["valid.csv"], views)[0]
    listed = (roots.nih() / "test_list.txt").read_text().split()
    nih = entry[entry["View Position"].isin(views)].reset_index(drop=True)
    nih = pd.merge(pd.DataFrame({"Image Index": listed}), nih, on="Image Index", how="inner")  # the list's order
    rows = pad["test"][0]
    assert [len(p) for p in merged.parts] == [len(chex), len(nih), len(rows)]
    assert len(merged) == len(chex) + len(nih) + len(rows)
    assert [name_of(r) for r in merged.parts[1].records] == nih["Image Index"].tolist()
    assert [name_of(r) for r in merged.parts[2].records] == rows["ImageID"].tolist()
    assert [line_of(r) - 2 for r in merged.parts[0].records] == chex.index.tolist()
    nih_names = [next(k for k in NIH_CLASSES if canonical(k) == canonical(c)) for c in merged.classes]
    lo = len(chex)
    np.testing.assert_array_equal(merged.targets[lo:lo + len(nih)], nih[nih_names].to_numpy())
    assert (merged.label_masks[lo:lo + len(nih)] == 1).all()


# --- data verify ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    ("chestxray14", "nih", ["--official", "nih", "--views", "PA,AP", "--val-fraction", "0", "--no-decode"]),
    ("chexpert", "chexpert", ["--no-decode"]),
    ("siim-pneumothorax", "siim", ["--no-decode"]),
    ("padchest", "padchest", ["--no-decode"]),
], ids=lambda c: "-".join([c[1], *[a.strip("-") for a in c[2] if a.startswith("--")]]))
def test_verify_passes_a_clean_published_root(roots, case):
    """Exit 0 and a short report (decoding is the same on any root: ``test_verify_decodes_each_image_once``).
    PadChest: its two splits only, its patients in both parts a note (its split is by image), not 65,065 problem
    lines."""
    name, root, args = case
    result = CliRunner().invoke(main, ["data", "verify", name, "--root", str(getattr(roots, root)()), *args])
    assert result.exit_code == 0, result.output[-3000:]
    lines = result.output.splitlines()
    assert len(lines) < 12 and "  0 problem(s)" in lines, result.output
    if name == "padchest":
        assert [ln.split(":")[0].strip() for ln in lines[1:3]] == ["train", "test"]
        assert "  train: 144655 images" in lines[1] and "  test: 16073 images" in lines[2]
        note = next(ln for ln in lines if ln.startswith("  note:"))
        assert "patient(s) have images in more than one split" in note and "splits by image" in note


def test_padchest_null_labels_cell_literals_are_pandas_missing_values():
    """The cells dropped as missing are those pandas' read_csv reads as NaN by default (the study's isnull())."""
    from benchxfer.data.readers.chest import PADCHEST_NULL

    values = sorted(PADCHEST_NULL - {""})
    table = pd.read_csv(io.StringIO("Labels\n" + "\n".join(values) + "\n['normal']\n"))
    assert table["Labels"].isnull().tolist() == [True] * len(values) + [False]
    assert ast.literal_eval(table["Labels"].iloc[-1]) == ["normal"]


# --- data verify, on small roots (the same code on any root) -----------------------------------------------------

def test_verify_decodes_each_image_once_on_workers(tmp_path):
    """PadChest's protocol has train and test only: verify walks those two (not a val that would repeat the train
    part), decodes each image once on two processes with progress reported, finds a broken image there, and tells
    patients in both parts as notes: a summary line by default, one line each with --all."""
    from benchxfer.data.verify import verify

    root = data.synthetic.write("padchest", tmp_path / "pc", n_train=30, n_val=0, n_test=10, size=16)
    seen = []
    report = verify("padchest", root, workers=2, progress=lambda done, total: seen.append((done, total)))
    assert report.ok and list(report.counts) == ["train", "test"] and report.decoded == 40 == sum(report.counts.values())
    assert seen[0] == (0, 40) and seen[-1] == (40, 40)
    assert report.notes and all("the protocol splits by image" in n for n in report.notes)
    broken = next(root.rglob("synthetic_00007.png"))
    broken.write_bytes(b"not a png")
    out = CliRunner().invoke(main, ["data", "verify", "padchest", "--root", str(root), "--workers", "2"])
    assert out.exit_code == 1 and out.output.count("synthetic_00007.png: unreadable") == 2  # the report, the Error line
    short = [ln for ln in out.output.splitlines() if ln.startswith("  note:")]
    assert len(short) == 1 and "(--all lists them)" in short[0]
    every = CliRunner().invoke(main, ["data", "verify", "padchest", "--root", str(root), "--no-decode", "--all"])
    assert every.exit_code == 0
    assert len([ln for ln in every.output.splitlines() if ln.startswith("  note: patient")]) == len(report.notes)
    carved = verify("padchest", root, decode=False, val_fraction=0.2)
    assert list(carved.counts) == ["train", "val", "test"]


def test_verify_takes_the_pretrainings_reader_options(tmp_path):
    """--official nih and --views (comma-separated or repeated) reach the reader; a dataset that does not take an
    option says so; without --all, at most 10 problems are printed and the rest counted."""
    root = data.synthetic.write("chestxray14", tmp_path / "nih", n_train=12, n_val=3, n_test=4, size=16)
    run = CliRunner().invoke
    nih = run(main, ["data", "verify", "chestxray14", "--root", str(root), "--official", "nih", "--views", "PA",
                     "--views", "AP", "--val-fraction", "0", "--no-decode"])
    assert nih.exit_code == 0, nih.output
    assert [ln.split(":")[0].strip() for ln in nih.output.splitlines()[1:3]] == ["train", "test"]
    none = run(main, ["data", "verify", "chestxray14", "--root", str(root), "--official", "nih", "--views", "L",
                      "--no-decode"])
    assert none.exit_code == 1 and "split 'train' is empty" in none.output
    wrong = run(main, ["data", "verify", "chexpert", "--root", str(root), "--official", "nih"])
    assert wrong.exit_code == 1 and "unknown option(s) official" in wrong.output
    for line in (root / "Xray14_train_official.txt").read_text().splitlines()[:11]:  # 11 of its 12 images
        (root / "images" / line.split()[0]).unlink()
    many = run(main, ["data", "verify", "chestxray14", "--root", str(root), "--no-decode"])
    assert many.exit_code == 1 and "  11 problem(s):" in many.output
    shown = [ln for ln in many.output.splitlines() if ln.startswith("    ") and "is missing" in ln]
    assert len(shown) == 10 and "    ... and 1 more (--all lists every one)" in many.output
    every = run(main, ["data", "verify", "chestxray14", "--root", str(root), "--no-decode", "--all"])
    assert len([ln for ln in every.output.splitlines() if ln.startswith("    ") and "is missing" in ln]) == 11


def test_targets_cost_one_lookup_per_item(tmp_path):
    """``ds.targets[i]`` in a loop: the array is taken once (read-only), the whole split's own when the items are the
    whole split; a subset's rows are taken once too, and again after the items change."""
    root = data.synthetic.write("chexpert", tmp_path / "cx", n_train=12, n_val=2, n_test=2, size=16)
    ds = data.open_dataset("chexpert", root, "train", uncertain="ones")
    first = ds.targets
    assert ds.targets is first and not first.flags.writeable and np.shares_memory(first, ds._targets)
    part = data.open_dataset("chexpert", root, "train", uncertain="ones", fraction=0.5)
    np.testing.assert_array_equal(part.targets, first[part.indices])
    assert part.targets is part.targets
    part.indices = part.indices[:2]
    np.testing.assert_array_equal(part.targets, first[part.indices])


def test_verify_walks_the_first_studys_val_list_whatever_val_fraction(tmp_path):
    """val_fraction 0 leaves a carved val empty (passed over), never a val the lists name."""
    from benchxfer.data.verify import verify

    root = data.synthetic.write("chestxray14", tmp_path / "nih", n_train=6, n_val=3, n_test=3, size=16)
    assert verify("chestxray14", root, decode=False, val_fraction=0.0).counts == {"train": 6, "val": 3, "test": 3}
    nih = verify("chestxray14", root, decode=False, official="nih", val_fraction=0.0)
    assert nih.ok and list(nih.counts) == ["train", "test"]
