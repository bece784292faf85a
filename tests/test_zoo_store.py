"""The init registry, the zoo folder and its index, and the `benchxfer zoo` commands."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner

from benchxfer import zoo
from benchxfer.cli import main
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast

STUDY_INITS = [
    "scratch", "imagenet", "inat2021", "inat2021-mini", "barlowtwins", "swav", "deepcluster-v2", "sela-v2",
    "insdis", "moco-v1", "moco-v2", "pcl-v1", "pcl-v2", "simclr-v1", "simclr-v2", "infomin", "pirl", "byol",
    "chestxray14", "chexpert", "imagenet-chestxray14", "imagenet-chexpert",
    "bit-s-r50x1", "bit-m-r152x4", "bit-cxr-r152x4",
]


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    torch.manual_seed(6)
    return torchvision.models.resnet18(num_classes=7).state_dict()


def r18_backbone(sd):
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def test_registry_covers_both_studies(tmp_path):
    names = [c.name for c in zoo.list_inits(tmp_path)]
    assert set(STUDY_INITS) <= set(names)
    assert len(names) == len(set(names))
    for name in STUDY_INITS:
        cfg = zoo.get_init(name, tmp_path)
        assert cfg.fmt is None or cfg.fmt in zoo.FORMATS
        assert len(cfg.mean) == 3 and len(cfg.std) == 3
    assert zoo.get_init("moco-v2").fmt == "moco" and zoo.get_init("moco-v2").arch == "resnet50"
    assert zoo.get_init("bit-cxr-r152x4").arch == "bit-r152x4" and zoo.get_init("bit-cxr-r152x4").fmt == "bit"
    assert zoo.get_init("simclr-v1").mean == (0.485, 0.456, 0.406)  # the first study: ImageNet for every init
    assert zoo.get_init("simclr-v1").trained_mean == (0.0, 0.0, 0.0)  # normalization: init-trained
    assert zoo.resolve_init("scratch", tmp_path) == (zoo.get_init("scratch"), None)


def test_unknown_init_lists_the_known_ones(tmp_path):
    with pytest.raises(BenchxferError, match=r"unknown init 'moco-v3'; known: .*moco-v2"):
        zoo.get_init("moco-v3", tmp_path)


def test_missing_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(BenchxferError) as err:
        zoo.resolve_init("moco-v2", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "moco-v2.safetensors") in message
    assert "benchxfer zoo import moco-v2 FILE" in message and "\n" not in message
    with pytest.raises(BenchxferError, match="--trust"):
        zoo.resolve_init("byol", tmp_path)


def test_zoo_folder_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHXFER_ZOO", str(tmp_path / "envzoo"))
    assert zoo.zoo_dir() == (tmp_path / "envzoo").resolve()
    assert zoo.zoo_dir(tmp_path / "flag") == (tmp_path / "flag").resolve()


def test_save_local_init_roundtrip(r18, tmp_path):
    path = zoo.save_local_init("cxr-r18", r18, "resnet18", {"sweep": "demo", "epochs": 3}, zoo=tmp_path,
                               mean=(0.5056,) * 3, std=(0.252,) * 3)
    assert path == tmp_path / "cxr-r18.safetensors" and path.is_file()
    cfg, resolved = zoo.resolve_init("cxr-r18", tmp_path)
    assert resolved == path
    assert (cfg.arch, cfg.fmt, cfg.mean, cfg.std) == ("resnet18", "benchxfer", (0.5056,) * 3, (0.252,) * 3)
    assert cfg.sha256 == zoo.sha256_file(path)
    assert "cxr-r18" in [c.name for c in zoo.list_inits(tmp_path)]
    record = json.loads((tmp_path / "zoo.json").read_text())["inits"]["cxr-r18"]
    assert record["provenance"] == {"epochs": 3, "sweep": "demo"}
    loaded = zoo.read_backbone(path)
    assert (loaded.arch, loaded.fmt) == ("resnet18", "benchxfer")
    want = r18_backbone(r18)
    assert sorted(loaded.state) == sorted(want) and all(torch.equal(loaded.state[k], v) for k, v in want.items())

    changed = {k: (v * 2 if v.is_floating_point() else v) for k, v in r18.items()}
    zoo.save_local_init("cxr-r18", changed, "resnet18", {"sweep": "demo2"}, zoo=tmp_path)
    assert zoo.get_init("cxr-r18", tmp_path).sha256 == zoo.sha256_file(path) != cfg.sha256
    assert torch.equal(zoo.load_backbone(path)["conv1.weight"], r18["conv1.weight"] * 2)


def test_save_local_init_refusals(r18, tmp_path):
    with pytest.raises(BenchxferError, match="built-in"):
        zoo.save_local_init("imagenet", r18, "resnet18", {}, zoo=tmp_path)
    with pytest.raises(BenchxferError, match="not allowed"):
        zoo.save_local_init("../evil", r18, "resnet18", {}, zoo=tmp_path)
    with pytest.raises(BenchxferError, match="holds a resnet18 backbone, but resnet50 was expected"):
        zoo.save_local_init("mine", r18, "resnet50", {}, zoo=tmp_path)
    assert not (tmp_path / "zoo.json").exists()


# --- CLI ------------------------------------------------------------------------------------------------

def run(*args: str):
    result = CliRunner().invoke(main, ["zoo", *args])
    return result.exit_code, result.output


def assert_one_line_failure(code: int, output: str, *culprits: str) -> None:
    assert code != 0
    assert "Traceback" not in output
    error_lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, output
    for culprit in culprits:
        assert culprit in error_lines[0], output


def test_cli_list_and_formats(tmp_path):
    code, out = run("list", "--zoo", str(tmp_path))
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(STUDY_INITS) <= set(rows)
    assert rows["moco-v2"][1:4] == ["resnet50", "moco", "no"]
    assert rows["scratch"][2:4] == ["-", "-"]
    code, out = run("formats")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == set(zoo.FORMATS.names())


def test_cli_import_list_verify(r18, tmp_path):
    published = tmp_path / "published" / "moco_r18.pth.tar"
    published.parent.mkdir()
    torch.save({"state_dict": {"module.encoder_q." + k: v for k, v in r18.items()},
                "epoch": 200}, published)
    folder = tmp_path / "zoo"
    code, out = run("import", "my-moco", str(published), "--zoo", str(folder))
    assert code == 0, out
    assert "resnet18 backbone, 120 tensors" in out and "format moco" in out
    cfg, path = zoo.resolve_init("my-moco", folder)
    assert cfg.sha256 == zoo.sha256_file(path) and cfg.sha256 in out
    record = zoo.read_index(folder)["my-moco"]
    assert record["source_sha256"] == zoo.sha256_file(published)
    state = zoo.load_backbone(path)
    assert all(torch.equal(state[k], v) for k, v in r18_backbone(r18).items())

    code, out = run("list", "--zoo", str(folder))
    assert [line.split()[:4] for line in out.splitlines() if line.startswith("my-moco")] == \
        [["my-moco", "resnet18", "moco", "yes"]]

    code, out = run("verify", "--zoo", str(folder))
    assert code == 0, out
    assert "ok    my-moco: 120 tensors load into resnet18" in out

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # damage one byte of a tensor
    path.write_bytes(bytes(data))
    code, out = run("verify", "my-moco", "--zoo", str(folder))
    assert "FAIL  my-moco: checksum mismatch" in out
    assert_one_line_failure(code, out, "1 of 1 inits failed verification", "my-moco")


def test_cli_import_builtin_checks_architecture(r18, tmp_path):
    published = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"state_dict": {"module.encoder_q." + k: v for k, v in r18.items()}}, published)
    code, out = run("import", "moco-v2", str(published), "--zoo", str(tmp_path / "zoo"))
    assert_one_line_failure(code, out, "resnet18", "resnet50", str(published))
    assert not (tmp_path / "zoo" / "moco-v2.safetensors").exists()


def test_cli_errors_are_one_line(r18, tmp_path):
    published = tmp_path / "r18.pth"
    torch.save(r18, published)
    folder = str(tmp_path / "zoo")
    assert_one_line_failure(*run("import", "x", str(published), "--format", "mocov9", "--zoo", folder),
                            "'mocov9'", "torchvision")
    assert_one_line_failure(*run("import", "byol", str(published), "--zoo", folder), "--trust", "byol-haiku")
    assert_one_line_failure(*run("import", "Bad Name", str(published), "--zoo", folder), "'Bad Name'")
    assert_one_line_failure(*run("import", "x", str(tmp_path / "nope.pth"), "--zoo", folder), "nope.pth")
    assert_one_line_failure(*run("verify", "moco-v3", "--zoo", folder), "unknown init 'moco-v3'")
    code, out = run("verify", "moco-v2", "--zoo", folder)
    assert "FAIL  moco-v2: missing" in out
    assert_one_line_failure(code, out, "moco-v2")
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "zoo.json").write_text('{"version": 1,\n "inits": {,}}')
    assert_one_line_failure(*run("list", "--zoo", folder), "zoo.json", "line 2")
