"""Every checkpoint format, written in its published layout from a random model, reads back bit-identically.

Also the refusals: truncated files, other architectures, code-running pickles, unknown format names and
ambiguous files each give one clear line.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from zoo_support import timm_to_bit_names

from benchxfer import zoo
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def r50() -> dict[str, torch.Tensor]:
    """A random torchvision ResNet-50 state dict, with non-trivial BN statistics."""
    torch.manual_seed(0)
    sd = torchvision.models.resnet50().state_dict()
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var", "bn1.bias", "bn2.bias", "bn3.bias")):
            v.uniform_(0.5, 1.5)
    return sd


def backbone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def other(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, different values (a second encoder that must not be loaded)."""
    return {k: (v + 1 if v.is_floating_point() else v + 1) for k, v in sd.items()}


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    bad = [k for k in want if not torch.equal(got[k], want[k])]
    assert not bad, f"tensors differ: {bad[:3]}"


def prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


# --- the layouts, as the authors publish them ---------------------------------------------------------

def torchvision_file(sd):
    return sd  # torchvision weights file: bare state dict with the 1000-way fc


def inat_file(sd):
    body = prefixed("module.", backbone(sd))
    body["module.fc.weight"] = torch.randn(10000, 2048)
    body["module.fc.bias"] = torch.randn(10000)
    return {"epoch": 75, "arch": "resnet50", "state_dict": body, "best_acc1": torch.tensor(70.1)}


def barlowtwins_file(sd):
    return backbone(sd)


def swav_file(sd):
    body = prefixed("module.", backbone(sd))
    body.update({"module.projection_head.0.weight": torch.randn(2048, 2048),
                 "module.projection_head.1.weight": torch.randn(2048),
                 "module.projection_head.3.weight": torch.randn(128, 2048),
                 "module.prototypes.weight": torch.randn(3000, 128)})
    return body


def deepcluster_file(sd):
    body = prefixed("module.", backbone(sd))
    body.update({"module.projection_head.0.weight": torch.randn(2048, 2048),
                 "module.prototypes.prototypes0.weight": torch.randn(3000, 128),
                 "module.prototypes.prototypes1.weight": torch.randn(3000, 128)})
    return {"epoch": 800, "state_dict": body}


def moco_file(sd):
    q = prefixed("module.encoder_q.", backbone(sd))
    q.update({"module.encoder_q.fc.0.weight": torch.randn(2048, 2048), "module.encoder_q.fc.0.bias": torch.randn(2048),
              "module.encoder_q.fc.2.weight": torch.randn(128, 2048), "module.encoder_q.fc.2.bias": torch.randn(128)})
    k = prefixed("module.encoder_k.", other(backbone(sd)))
    extra = {"module.queue": torch.randn(128, 4096), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    optimizer = {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}
    return {"epoch": 800, "arch": "resnet50", "state_dict": {**q, **k, **extra}, "optimizer": optimizer}


def pycontrast_file(sd):
    model = prefixed("module.encoder.", backbone(sd))
    model.update({"module.head.fc.weight": torch.randn(128, 2048), "module.head.fc.bias": torch.randn(128),
                  "module.head_jig.fc1.weight": torch.randn(128, 2048),
                  "module.jigsaw.weight": torch.randn(128, 1152)})
    ema = prefixed("module.encoder.", other(backbone(sd)))
    opt = argparse.Namespace(method="PIRL", arch="resnet50", nce_k=16384)
    return {"opt": opt, "model": model, "model_ema": ema, "contrast": {"memory": torch.randn(64, 128)},
            "epoch": 800}


def cmc_file(sd):
    model = {**prefixed("module.encoder1.", backbone(sd)), **prefixed("module.encoder2.", other(backbone(sd)))}
    return {"model": model, "epoch": 240}


def indomain_file(sd):
    body = prefixed("module.", backbone(sd))
    body["module.fc.weight"] = torch.randn(14, 2048)
    body["module.fc.bias"] = torch.randn(14)
    return {"epoch": 42, "lossMIN": 0.15, "state_dict": body}


def indomain_plain_file(sd):  # in-domain model saved without DataParallel
    body = dict(backbone(sd))
    body["fc.weight"] = torch.randn(5, 2048)
    body["fc.bias"] = torch.randn(5)
    return {"epoch": 12, "state_dict": body}


def simclr_file(sd):
    return {"state_dict": sd}  # tonylins/simclr-converter output: torchvision names with fc


LAYOUTS = {
    "torchvision": [torchvision_file], "inat": [inat_file], "barlowtwins": [barlowtwins_file],
    "swav": [swav_file, deepcluster_file], "moco": [moco_file], "pcl": [moco_file],
    "pycontrast": [pycontrast_file], "cmc": [cmc_file], "indomain": [indomain_file, indomain_plain_file],
    "simclr": [simclr_file, torchvision_file],
}
CASES = [(fmt, writer) for fmt, writers in LAYOUTS.items() for writer in writers]


@pytest.mark.parametrize("fmt,writer", CASES, ids=[f"{f}-{w.__name__}" for f, w in CASES])
def test_resnet50_layouts_read_bit_identically(fmt, writer, r50, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(writer(r50), path)
    want = backbone(r50)
    assert_identical(zoo.load_backbone(path, fmt), want)
    detected = zoo.read_backbone(path)  # no format given: detected from the keys
    assert detected.arch == "resnet50"
    assert_identical(detected.state, want)


@pytest.mark.parametrize("fmt,writer", [("moco", moco_file), ("pycontrast", pycontrast_file)])
def test_legacy_files_are_read_after_their_declared_sizes(fmt, writer, r50, tmp_path):
    """A legacy (non-zip) torch.save file (published checkpoints before torch 1.6): the storages its pickle
    declares are read without running it, sum to its tensors' bytes, and the file then reads bit-identically."""
    from benchxfer.zoo.checkpoint import _declared_storages

    path = tmp_path / "legacy.pth.tar"
    obj = writer(r50)
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    storages, records = _declared_storages(path)
    tensors = [t for part in obj.values() if isinstance(part, dict) for t in part.values()
               if isinstance(t, torch.Tensor)]
    assert records is None and sum(storages.values()) == sum(t.numel() * t.element_size() for t in tensors)
    assert_identical(zoo.load_backbone(path, fmt), backbone(r50))


def test_every_published_format_has_a_name():
    names = set(zoo.FORMATS.names())
    assert {"torchvision", "moco", "pcl", "swav", "barlowtwins", "pycontrast", "cmc", "indomain", "inat", "bit",
            "simclr", "byol-haiku", "benchxfer"} <= names


# --- BiT --------------------------------------------------------------------------------------------------


def test_bit_model_pth_tar_maps_onto_timm_and_loads(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=5).state_dict()
    want = {k: v for k, v in source.items() if not k.startswith("head.fc.")}
    bit = timm_to_bit_names(source)
    assert "body.block1.unit01.gn1.weight" in bit and "body.block4.unit03.conv3.weight" in bit
    path = tmp_path / "model.pth.tar"
    torch.save({"model": bit, "step": 1000, "optim": {"state": {}, "param_groups": []}}, path)

    got = zoo.read_backbone(path)
    assert (got.fmt, got.arch) == ("bit", "bit-r50x1")
    assert_identical(got.state, want)
    assert_identical(zoo.load_backbone(path, "bit", arch="bit-r50x1"), want)

    from benchxfer.models import build_model

    model = build_model("bit-r50x1", "multiclass", 3)
    head_before = model.head.fc.weight.clone()
    loaded = zoo.apply_backbone(model, got.state)
    assert loaded == sorted(want)
    after = model.state_dict()
    assert all(torch.equal(after[k], want[k]) for k in want)
    assert torch.equal(model.head.fc.weight, head_before)  # the new head is not touched


# --- BYOL (Haiku pickle, needs trust) ---------------------------------------------------------------------

def write_byol_pickle(path: Path, sd: dict[str, torch.Tensor], payload: object = None, protocol: int = 4) -> None:
    """Write BYOL's checkpoint layout: a pickle of {'experiment_state': _ByolExperimentState(...)}.

    The published file is a dill pickle with protocol 2; protocol 4 holds the same objects and writes
    100 MB of arrays ten times faster, which keeps this test quick.
    """
    params, state = {}, {}
    torso = "res_net50/~/"

    def conv(name, weight):
        params[torso + name] = {"w": weight.permute(2, 3, 1, 0).numpy()}  # OIHW -> HWIO

    def bn(name, prefix):
        row = lambda t: t.numpy().reshape(1, 1, 1, -1)  # noqa: E731  (Haiku keeps (1, 1, 1, C))
        params[torso + name] = {"scale": row(sd[prefix + ".weight"]), "offset": row(sd[prefix + ".bias"])}
        for stat, key in (("mean_ema", "running_mean"), ("var_ema", "running_var")):
            state[f"{torso}{name}/~/{stat}"] = {"average": row(sd[f"{prefix}.{key}"]), "counter": np.array(7),
                                               "hidden": np.zeros_like(row(sd[f"{prefix}.{key}"]))}

    conv("initial_conv", sd["conv1.weight"])
    bn("initial_batchnorm", "bn1")
    for group, blocks in enumerate((3, 4, 6, 3)):
        for block in range(blocks):
            tv, hk = f"layer{group + 1}.{block}", f"block_group_{group}/~/block_{block}/~/"
            for i in range(3):
                conv(f"{hk}conv_{i}", sd[f"{tv}.conv{i + 1}.weight"])
                bn(f"{hk}batchnorm_{i}", f"{tv}.bn{i + 1}")
            if block == 0:
                conv(hk + "shortcut_conv", sd[f"{tv}.downsample.0.weight"])
                bn(hk + "shortcut_batchnorm", f"{tv}.downsample.1")
    params[torso + "logits"] = {"w": np.ones((2048, 1000), np.float32), "b": np.zeros(1000, np.float32)}
    params["projector/~/linear"] = {"w": np.ones((2048, 4096), np.float32)}
    params["predictor/~/linear"] = {"w": np.ones((256, 4096), np.float32)}
    target = {k: {n: a + 1 for n, a in v.items()} for k, v in params.items()}

    state_cls = namedtuple("_ByolExperimentState",
                           "online_params target_params online_state target_state opt_state")
    state_cls.__module__ = "byol.byol_experiment"  # as in the real file; not importable here
    fake = types.ModuleType("byol.byol_experiment")
    fake._ByolExperimentState = state_cls
    sys.modules["byol"], sys.modules["byol.byol_experiment"] = types.ModuleType("byol"), fake
    try:
        es = state_cls(params, target, state, state, payload)
        with open(path, "wb") as f:
            pickle.dump({"step": 300000, "rng": np.zeros(2, np.uint32), "experiment_state": es}, f, protocol=protocol)
    finally:
        del sys.modules["byol"], sys.modules["byol.byol_experiment"]


def test_byol_haiku_converts_with_trust_only(r50, tmp_path):
    path = tmp_path / "pretrain_res50x1.pkl"
    write_byol_pickle(path, r50)
    with pytest.raises(BenchxferError, match="--trust"):
        zoo.load_backbone(path, "byol-haiku")
    got = zoo.load_backbone(path, "byol-haiku", trust=True)
    want = backbone(r50)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if key.endswith("num_batches_tracked"):
            assert int(got[key]) == 7
        else:
            assert torch.equal(got[key], value), key


def test_byol_pickle_is_never_run_without_trust(tmp_path):
    marker = tmp_path / "byol-ran"
    path = tmp_path / "pretrain_res50x1.pkl"
    with open(path, "wb") as f:
        pickle.dump({"step": 1, "experiment_state": MakesFile(marker)}, f, protocol=2)
    for fmt in ("byol-haiku", None):
        with pytest.raises(BenchxferError) as err:
            zoo.load_backbone(path, fmt)
        assert "\n" not in str(err.value)
    assert not marker.exists()


# --- refusals -----------------------------------------------------------------------------------------------

class MakesFile:
    """Unpickling this creates a file: the stand-in for a checkpoint that runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(BenchxferError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("container", ["torch.save", "pickle.dump"])
def test_code_running_pickle_is_refused_and_never_run(container, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"state_dict": {"conv1.weight": torch.zeros(1)}, "x": MakesFile(marker)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    message = one_line_error(zoo.load_backbone, path)
    assert "refused" in message and str(path) in message
    one_line_error(zoo.load_backbone, path, "moco")
    assert not marker.exists()


def test_truncated_files(r50, tmp_path):
    full = tmp_path / "full.pth"
    torch.save(barlowtwins_file(r50), full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    message = one_line_error(zoo.load_backbone, cut, "barlowtwins")
    assert "truncated" in message and "cut.pth" in message

    from safetensors.torch import save_file

    st = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in backbone(r50).items()}, str(st))
    cut_st = tmp_path / "cut.safetensors"
    cut_st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    assert "truncated" in one_line_error(zoo.load_backbone, cut_st)


def test_other_architecture(tmp_path):
    torch.manual_seed(2)
    r18 = torchvision.models.resnet18().state_dict()
    path = tmp_path / "moco_r18.pth.tar"
    torch.save({"state_dict": prefixed("module.encoder_q.", r18)}, path)
    assert zoo.read_backbone(path, "moco").arch == "resnet18"
    message = one_line_error(zoo.load_backbone, path, "moco", arch="resnet50")
    assert "resnet18" in message and "resnet50" in message

    dense = tmp_path / "densenet121.pth"
    torch.save(torchvision.models.densenet121().state_dict(), dense)
    message = one_line_error(zoo.load_backbone, dense, "torchvision")
    assert "no known architecture" in message and "unexpected (classifier.bias" in message
    assert "cannot tell the format" in one_line_error(zoo.load_backbone, dense)


def test_unknown_format_name(r50, tmp_path):
    path = tmp_path / "x.pth"
    torch.save(barlowtwins_file(r50), path)
    message = one_line_error(zoo.load_backbone, path, "mocov3")
    assert "'mocov3'" in message and "moco" in message and "torchvision" in message


def test_wrong_format_names_what_is_missing(r50, tmp_path):
    path = tmp_path / "swav.pth"
    torch.save(swav_file(r50), path)
    message = one_line_error(zoo.load_backbone, path, "moco")
    assert "not a 'moco' checkpoint" in message and "state_dict" in message


def test_ambiguous_file_asks_for_the_format(r50, tmp_path):
    path = tmp_path / "both.pth.tar"
    torch.save({"state_dict": indomain_file(r50)["state_dict"],
                "model": prefixed("module.encoder.", other(backbone(r50)))}, path)
    message = one_line_error(zoo.load_backbone, path)
    assert "ambiguous" in message and "pycontrast" in message and "indomain" in message and "--format" in message
    assert_identical(zoo.load_backbone(path, "pycontrast"), other(backbone(r50)))
    assert_identical(zoo.load_backbone(path, "indomain"), backbone(r50))
