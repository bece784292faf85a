"""The first study's segmentation inputs: its albumentations composition and each set's SegInputs."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from benchxfer import data
from benchxfer.data import transforms

pytestmark = pytest.mark.fast


def _steps(pipe):
    return list(pipe.compose.transforms)


def test_composition_parameters():
    bright, distort, crop = transforms.seg_augmentation(224)
    assert isinstance(bright, A.OneOf) and bright.p == 0.3
    assert [type(t) for t in bright.transforms] == [A.RandomBrightnessContrast, A.RandomGamma]
    assert isinstance(distort, A.OneOf) and distort.p == 0.3
    elastic, grid, optical = distort.transforms
    assert (type(elastic), type(grid), type(optical)) == (A.ElasticTransform, A.GridDistortion, A.OpticalDistortion)
    assert (elastic.alpha, elastic.sigma) == (120, 6)  # the study: alpha 120, sigma 120 * 0.05
    assert tuple(optical.distort_limit) == (-2, 2)
    assert all(t.border_mode == cv2.BORDER_REFLECT_101 for t in distort.transforms)
    assert isinstance(crop, A.RandomSizedCrop) and crop.p == 0.25
    assert tuple(crop.min_max_height) == (156, 224) and tuple(crop.size) == (224, 224)


@pytest.mark.parametrize("which", range(3))
def test_each_distortion_moves_image_and_mask_together(which):
    np.random.seed(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 8:50] = 1
    image = np.repeat((mask * 255)[:, :, None], 3, axis=2)
    distortion = transforms.seg_augmentation(64)[1].transforms[which]
    one = A.Compose([type(distortion)(**{**_args(distortion), "p": 1.0})], seed=which)
    moved = 0
    for _ in range(5):
        out = one(image=image, mask=mask)
        agree = ((out["image"][:, :, 0] > 127) == (out["mask"] > 0)).mean()
        assert agree > 0.97  # only edge pixels (bilinear image, nearest mask) may differ
        moved += int((out["mask"] != mask).any())
    assert moved > 0  # the distortion did move something


def _args(t):
    keep = {A.ElasticTransform: ("alpha", "sigma", "border_mode"),
            A.GridDistortion: ("border_mode",),
            A.OpticalDistortion: ("distort_limit", "border_mode")}[type(t)]
    return {k: getattr(t, k) for k in keep}


def _pair(h=80, w=60):
    mask = torch.zeros((1, h, w), dtype=torch.uint8)
    mask[:, 20:50, 10:40] = 1
    return tv_tensors.Image((mask * 200).expand(3, -1, -1).clone()), tv_tensors.Mask(mask)


def test_montgomery_and_siim_inputs():
    for name in ("montgomery-lungs", "siim-pneumothorax"):
        inputs = data.get_dataset(name).seg_inputs
        assert (inputs.augment_train, inputs.augment_val, inputs.normalization, inputs.interpolation) == \
            (True, True, "unit", "nearest")
        for train in (True, False):  # val gets the training augmentation
            pipe = transforms.build("systematic-seg", train=train, size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                    task="segmentation", dataset=name)
            steps = _steps(pipe)
            assert len(steps) == 4 and steps[0].interpolation == cv2.INTER_NEAREST
            assert (pipe.mean, pipe.std) == ((0.0,) * 3, (1.0,) * 3)
        # [0, 1] inputs: a 200 pixel becomes 200 / 255
        finished = pipe._finish(torch.full((1, 2, 2), 200, dtype=torch.uint8))
        torch.testing.assert_close(finished, torch.full((3, 2, 2), 200 / 255))
        out, out_mask = pipe(*_pair())
        assert out.shape == (3, 32, 32) and out_mask.shape == (32, 32)


def test_drive_inputs():
    inputs = data.get_dataset("drive").seg_inputs
    assert (inputs.augment_train, inputs.augment_val, inputs.normalization, inputs.interpolation) == \
        (False, False, "imagenet", "bilinear")
    pipe = transforms.build("systematic-seg", train=True, size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                            task="segmentation", dataset="drive")
    steps = _steps(pipe)
    assert len(steps) == 1 and steps[0].interpolation == cv2.INTER_LINEAR  # no online augmentation
    assert (pipe.mean, pipe.std) == (transforms.IMAGENET_MEAN, transforms.IMAGENET_STD)
    a, _ = pipe(*_pair())
    b, _ = pipe(*_pair())
    torch.testing.assert_close(a, b)  # deterministic


def test_other_sets_take_the_runs_normalisation():
    pipe = transforms.build("systematic-seg", train=False, size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                            task="segmentation", dataset="maskfolder")
    assert len(_steps(pipe)) == 1 and (pipe.mean, pipe.std) == ((0.5,) * 3, (0.5,) * 3)


def test_augmentation_follows_torch_seed():
    # the loader seeds torch per worker; albumentations' own generator must follow it
    pipe = transforms.build("systematic-seg", train=True, size=32, task="segmentation", dataset="montgomery-lungs")
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(torch.stack([pipe(*_pair())[0] for _ in range(8)]))
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
