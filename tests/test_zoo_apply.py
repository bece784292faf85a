"""apply_backbone: the weights land in a classifier or a U-Net encoder, or nothing is loaded at all."""

from __future__ import annotations

import pytest
import torch
import torchvision

from benchxfer import zoo
from benchxfer.errors import BenchxferError
from benchxfer.models import build_model

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def r50_backbone() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    sd = torchvision.models.resnet50().state_dict()
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var")):
            v.uniform_(0.5, 1.5)
        if k.endswith("num_batches_tracked"):
            v.fill_(11)
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def test_into_a_classifier(r50_backbone):
    torch.manual_seed(4)
    model = build_model("resnet50", "multilabel", 14)
    fc_before = {k: v.clone() for k, v in model.fc.state_dict().items()}
    loaded = zoo.apply_backbone(model, r50_backbone)
    assert loaded == sorted(r50_backbone) and len(loaded) == 318
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in r50_backbone.items())
    assert all(torch.equal(model.fc.state_dict()[k], v) for k, v in fc_before.items())
    assert model.fc.out_features == 14


def test_into_a_unet_encoder(r50_backbone):
    torch.manual_seed(5)
    unet = build_model("resnet50", "segmentation", 1)
    decoder_before = {k: v.clone() for k, v in unet.decoder.state_dict().items()}
    loaded = zoo.apply_backbone(unet, r50_backbone)
    assert loaded == sorted(r50_backbone)
    encoder = unet.encoder.state_dict()
    assert all(torch.equal(encoder[k], v) for k, v in r50_backbone.items())
    assert all(torch.equal(unet.decoder.state_dict()[k], v) for k, v in decoder_before.items())


@pytest.fixture(scope="module")
def r18_backbone() -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    return {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}


@pytest.mark.parametrize("damage", ["shape", "missing", "unexpected", "head"])
def test_refuses_and_loads_nothing(damage, r18_backbone):
    model = build_model("resnet18", "binary", 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(r18_backbone)
    culprit = {"shape": "layer4.1.conv2.weight", "missing": "layer2.0.downsample.0.weight",
               "unexpected": "layer5.0.conv1.weight", "head": "fc.weight"}[damage]
    if damage == "shape":
        state[culprit] = torch.zeros(512, 512, 1, 1)
    elif damage == "missing":
        del state[culprit]
    else:
        state[culprit] = torch.zeros(1, 512)
    with pytest.raises(BenchxferError) as err:
        zoo.apply_backbone(model, state)
    message = str(err.value)
    assert "\n" not in message and culprit in message
    # conv1 and every other key sorted before the culprit were not copied either
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_num_batches_tracked_is_optional(r18_backbone):
    model = build_model("resnet18", "binary", 1)
    state = {k: v for k, v in r18_backbone.items() if not k.endswith("num_batches_tracked")}
    loaded = zoo.apply_backbone(model, state)
    assert len(loaded) == 120 - 20
    assert torch.equal(model.conv1.weight, r18_backbone["conv1.weight"])
