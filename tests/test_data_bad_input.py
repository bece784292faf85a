"""Bad input: each problem is one BenchxferError line naming the file (and line); verify lists them all."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_cluster_and_sweeps import required_layout

from benchxfer import data
from benchxfer.cli import main
from benchxfer.data import synthetic
from benchxfer.data.verify import verify
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast

SMALL = dict(n_train=4, n_val=2, n_test=2, size=24)


@pytest.fixture
def nih(tmp_path) -> Path:
    return synthetic.write("chestxray14", tmp_path / "nih", **SMALL)


def _first_image(root: Path, split: str = "train") -> str:
    return (root / f"Xray14_{split}_official.txt").read_text().split()[0]


def test_missing_root(tmp_path):
    with pytest.raises(BenchxferError, match=r"root .*nowhere does not exist"):
        data.check_root("chestxray14", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchxferError, match=r"empty/images is missing; the chestxray14 layout needs images"):
        data.check_root("chestxray14", tmp_path / "empty")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(BenchxferError, match=r"unknown dataset 'nope'; known: chestxray14, chexpert"):
        data.get_dataset("nope")


def test_wrong_number_of_labels(nih, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(f"{_first_image(nih)} 0 1 0 0 0 0 0 0 0 0 0 0 0 0\n{_first_image(nih)} 0 1 0\n")
    with pytest.raises(BenchxferError, match=r"bad\.txt:2: 3 labels, expected 14"):
        data.open_dataset("chestxray14", nih, "train", lists={"train": bad})


def test_image_named_but_absent(nih):
    name = _first_image(nih)
    (nih / "images" / name).unlink()
    with pytest.raises(BenchxferError, match=rf"Xray14_train_official\.txt:1: image .*{name} is missing"):
        data.open_dataset("chestxray14", nih, "train")


def test_truncated_image_fails_on_read(nih):
    path = nih / "images" / _first_image(nih)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    ds = data.open_dataset("chestxray14", nih, "train")
    with pytest.raises(BenchxferError, match=rf"{path.name}: unreadable or truncated image"):
        ds[0]


def test_path_escaping_root(nih, tmp_path):
    bad = tmp_path / "escape.txt"
    bad.write_text("../../etc/passwd " + " ".join(["0"] * 14) + "\n")
    with pytest.raises(BenchxferError, match=r"escape\.txt:1: path '\.\./\.\./etc/passwd' escapes the dataset root"):
        data.open_dataset("chestxray14", nih, "train", lists={"train": bad})
    bad.write_text("/etc/passwd " + " ".join(["0"] * 14) + "\n")
    with pytest.raises(BenchxferError, match=r"escape\.txt:1: path '/etc/passwd' must be relative"):
        data.open_dataset("chestxray14", nih, "train", lists={"train": bad})


def test_empty_split(nih, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(BenchxferError, match=r"split 'val' at .* is empty"):
        data.open_dataset("chestxray14", nih, "val", lists={"val": empty})


def test_mask_size_differs_from_image(tmp_path):
    root = synthetic.write("montgomery-lungs", tmp_path / "mc", **SMALL)
    ds = data.open_dataset("montgomery-lungs", root, "train")
    name = Path(ds.records[0].image).name
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "ManualMask/leftMask" / name)
    with pytest.raises(BenchxferError, match=rf"leftMask/{name}: mask is 10x12 but its image .* is 24x24"):
        ds[0]


def test_rle_running_past_the_image(tmp_path):
    root = synthetic.write("siim-pneumothorax", tmp_path / "siim", **SMALL)
    rows = list(csv.reader((root / "train-rle.csv").open()))
    rows[1][1] = "5 10000"
    with (root / "train-rle.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = next(d for d in (data.open_dataset("siim-pneumothorax", root, s) for s in ("train", "val", "test"))
              if any(r.origin.endswith("train-rle.csv:2") for r in d.records))
    i = next(i for i, r in enumerate(ds.records) if r.origin.endswith(":2"))
    with pytest.raises(BenchxferError, match=r"train-rle\.csv:2: run-length string runs past the image"):
        ds[i]


def test_bad_chexpert_cell(tmp_path):
    root = synthetic.write("chexpert", tmp_path / "cx", **SMALL)
    text = (root / "valid.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[-1] = "maybe"
    text[1] = ",".join(cells)
    (root / "valid.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(BenchxferError, match=r"valid\.csv:2: column 'Support Devices' is 'maybe'; allowed: 1\.0, 0\.0, -1\.0 or empty"):
        data.open_dataset("chexpert", root, "test")


def test_verify_lists_every_problem(nih):
    lines = (nih / "Xray14_train_official.txt").read_text().splitlines()
    (nih / "images" / lines[0].split()[0]).unlink()  # missing
    broken = nih / "images" / lines[1].split()[0]
    broken.write_bytes(b"not a png")  # unreadable
    lines[2] = lines[2].rsplit(" ", 1)[0]  # 13 labels
    (nih / "Xray14_train_official.txt").write_text("\n".join(lines) + "\n")
    val = (nih / "Xray14_val_official.txt").read_text()
    (nih / "Xray14_val_official.txt").write_text(val + lines[3] + "\n")  # a train patient in val
    report = verify("chestxray14", nih)
    text = "\n".join(report.problems)
    assert len(report.problems) == 5, text
    assert "Xray14_train_official.txt:1: image" in text and "is missing" in text
    assert f"{broken.name}: unreadable or truncated image" in text
    assert "Xray14_train_official.txt:3: 13 labels, expected 14" in text
    assert f"images/{lines[3].split()[0]} is in more than one split: train, val" in text  # the image itself
    assert f"patient {lines[3].split('_')[0]} appears in more than one split: train, val" in text
    assert report.counts == {"train": 2, "val": 3, "test": 2}


def test_cli_verify_reports_and_fails(nih):
    (nih / "images" / _first_image(nih)).unlink()
    result = CliRunner().invoke(main, ["data", "verify", "chestxray14", "--root", str(nih)])
    assert result.exit_code == 1
    assert "1 problem(s):" in result.output and "Xray14_train_official.txt:1: image" in result.output
    assert "Traceback" not in result.output


def test_cli_bad_root_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["data", "cache", "montgomery", "--root", str(tmp_path / "x"), "--size", "32"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: dataset 'montgomery': root {tmp_path / 'x'} does not exist or is not a folder"]
    result = CliRunner().invoke(main, ["data", "verify", "nope", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "unknown dataset 'nope'" in result.output and "Traceback" not in result.output


def test_cli_list_and_cache(tmp_path):
    result = CliRunner().invoke(main, ["data", "list"])
    assert result.exit_code == 0 and len(result.output.strip().splitlines()) == len(data.DATASETS)  # one each
    assert "montgomery-lungs   segmentation" in result.output
    root = synthetic.write("montgomery", tmp_path / "mc", **SMALL)
    result = CliRunner().invoke(main, ["data", "cache", "montgomery", "--root", str(root), "--size", "16",
                                       "--split", "train", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache").glob("montgomery-*/train-16/manifest.json"))) == 1


def test_unsafe_cifar_pickle_is_refused(tmp_path):
    import pickle

    base = tmp_path / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)

    pwned = tmp_path / "pwned"

    class Evil:  # unpickling it would create a file
        def __reduce__(self):
            return (open, (str(pwned), "w"))

    for name in ("test_batch", "data_batch_1"):
        with (base / name).open("wb") as f:
            pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(BenchxferError, match=r"test_batch: not a CIFAR python batch .*refusing to load \w+\.open"):
        data.open_dataset("cifar10", tmp_path / "cifar", "test")
    assert not pwned.exists()


def test_unknown_or_bad_reader_options(nih):
    with pytest.raises(BenchxferError, match=r"dataset 'chestxray14': unknown option\(s\) val_fration; it takes: official, val_fraction"):
        data.open_dataset("chestxray14", nih, "train", val_fration=0.2)
    with pytest.raises(BenchxferError, match=r"official='kaggle'; use 'first-study' \(default\) or 'nih'"):
        data.open_dataset("chestxray14", nih, "train", official="kaggle")
    with pytest.raises(BenchxferError, match=r"val_fraction 1\.5 must be a number in \[0, 1\)"):
        data.open_dataset("chestxray14", nih, "val", official="nih", val_fraction=1.5)
    with pytest.raises(BenchxferError, match=r"unknown uncertain-label policy 'maybe'; known: lsr-ones"):
        data.open_dataset("chestxray14", nih, "train", uncertain="maybe")
    with pytest.raises(BenchxferError, match=r"fraction 0 must be in \(0, 1\]"):
        data.open_dataset("chestxray14", nih, "train", fraction=0)


def test_check_root_reads_only_the_layout(tmp_path):
    """The check before a sweep decodes nothing and reads no list: for every dataset, the paths its registry entry
    requires, alone and empty, pass it (a real root of 112,120 images is checked as fast as this one)."""
    for name in data.list_datasets():
        data.check_root(name, required_layout(name, tmp_path / name))
