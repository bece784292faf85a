"""The first study's segmentation inputs: its albumentations composition and each set's SegInputs."""

from __future__ import annotations

import subprocess
import sys

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from benchxfer import data
from benchxfer.data import albu, transforms

pytestmark = pytest.mark.fast


def _steps(pipe):
    return list(pipe.compose.transforms)


def test_composition_parameters():
    bright, distort, crop = albu.seg_augmentation(224)
    assert isinstance(bright, A.OneOf) and bright.p == 0.3
    assert [type(t) for t in bright.transforms] == [A.RandomBrightnessContrast, A.RandomGamma]
    assert isinstance(distort, A.OneOf) and distort.p == 0.3
    elastic, grid, optical = distort.transforms
    affine, elastic = elastic.transforms  # 0.4.3's ElasticTransform: its random affine, then the field
    assert (type(affine), type(elastic)) == (albu.StudyAffine, A.ElasticTransform)
    assert (type(grid), type(optical)) == (albu.StudyGridDistortion, A.OpticalDistortion)
    assert not grid.normalized
    assert (elastic.alpha, elastic.sigma, affine.alpha_affine) == (120, 6, 120 * 0.03)  # the study's, * 0.05, * 0.03
    assert tuple(optical.distort_limit) == (-2, 2)
    assert all(t.border_mode == cv2.BORDER_REFLECT_101 for t in (affine, elastic, grid, optical))
    assert isinstance(crop, A.RandomSizedCrop) and crop.p == 0.25
    assert tuple(crop.min_max_height) == (156, 224) and tuple(crop.size) == (224, 224)


@pytest.mark.parametrize("which", range(3))
def test_each_distortion_moves_image_and_mask_together(which):
    np.random.seed(0)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:40, 8:50] = 1
    image = np.repeat((mask * 255)[:, :, None], 3, axis=2)
    distortion = albu.seg_augmentation(64)[1].transforms[which]  # each choice has p 1
    one = A.Compose([distortion], seed=which)
    moved = 0
    for _ in range(5):
        out = one(image=image, mask=mask)
        agree = ((out["image"][:, :, 0] > 127) == (out["mask"] > 0)).mean()
        assert agree > 0.97  # only edge pixels (bilinear image, nearest mask) may differ
        moved += int((out["mask"] != mask).any())
    assert moved > 0  # the distortion did move something


def _pair(h=80, w=60):
    mask = torch.zeros((1, h, w), dtype=torch.uint8)
    mask[:, 20:50, 10:40] = 1
    return tv_tensors.Image((mask * 200).expand(3, -1, -1).clone()), tv_tensors.Mask(mask)


def test_montgomery_and_siim_inputs():
    for name in ("montgomery-lungs", "siim-pneumothorax"):
        inputs = data.get_dataset(name).seg_inputs
        assert (inputs.augment_train, inputs.augment_val, inputs.normalization, inputs.interpolation) == \
            (True, True, "unit", "nearest")
        for train, split in ((True, "train"), (False, "val")):  # val gets the training augmentation
            pipe = transforms.build("systematic-seg", train=train, size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                                    task="segmentation", dataset=name, split=split)
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


# --- the distortions' strength, measured: mean displacement of a coordinate grid ----------------------------
# albumentations 0.4.3 (the study's) restated from its functional.py: elastic_transform (random affine of three
# points of the centre square by U(-alpha_affine, alpha_affine), then a field of UNIFORM noise in [-1, 1]
# smoothed by scipy's gaussian_filter(sigma) times alpha), grid_distortion (unnormalised steps 1 + U(-0.3, 0.3)
# over 5 cells), optical_distortion (fx = fy = width, k = U(-2, 2), shift rounded to 0).
# The issue's figures for 0.4.3 (issue 22): elastic field 4.25 px, its affine part 2.75 px, grid 14.1 px.
SIZE = 224
_YY, _XX = np.meshgrid(np.arange(SIZE, dtype=np.float32), np.arange(SIZE, dtype=np.float32), indexing="ij")
_GRID = np.stack([_XX, _YY, np.zeros_like(_XX)], -1)  # each pixel holds its own (x, y)


def _displacement(out: np.ndarray) -> float:
    return float(np.hypot(out[..., 0] - _XX, out[..., 1] - _YY).mean())


def _study_elastic(rs: np.random.RandomState, alpha: float = 120, sigma: float = 6, affine: float = 3.6,
                   field: bool = True) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    h, w = _GRID.shape[:2]
    reflect = cv2.BORDER_REFLECT_101
    centre, side = np.float32((h, w)) // 2, min(h, w) // 3
    pts = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    moved = pts + rs.uniform(-affine, affine, size=pts.shape).astype(np.float32)
    img = cv2.warpAffine(_GRID, cv2.getAffineTransform(pts, moved), (w, h), flags=cv2.INTER_LINEAR, borderMode=reflect)
    if not field:
        return img
    dx = np.float32(gaussian_filter(rs.rand(h, w) * 2 - 1, sigma) * alpha)
    dy = np.float32(gaussian_filter(rs.rand(h, w) * 2 - 1, sigma) * alpha)
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    return cv2.remap(img, np.float32(x + dx), np.float32(y + dy), cv2.INTER_LINEAR, borderMode=reflect)


def _study_grid(rs: np.random.RandomState, steps: int = 5, limit: float = 0.3) -> np.ndarray:
    def axis(n: int, k: list[float]) -> np.ndarray:
        out, prev, step = np.zeros(n, np.float32), 0.0, n // steps
        for idx, start in enumerate(range(0, n, step)):
            end = min(start + step, n)
            cur = n if start + step > n else prev + step * k[idx]
            out[start:end] = np.linspace(prev, cur, end - start)
            prev = cur
        return out
    xs, ys = (list(1 + rs.uniform(-limit, limit, steps + 1)) for _ in range(2))
    mx, my = np.meshgrid(axis(SIZE, xs), axis(SIZE, ys))
    return cv2.remap(_GRID, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _study_optical(rs: np.random.RandomState, limit: float = 2.0) -> np.ndarray:
    k = rs.uniform(-limit, limit)
    camera = np.array([[SIZE, 0, SIZE * 0.5], [0, SIZE, SIZE * 0.5], [0, 0, 1]], dtype=np.float32)
    m1, m2 = cv2.initUndistortRectifyMap(camera, np.array([k, k, 0, 0, 0], np.float32), None, None,
                                         (SIZE, SIZE), cv2.CV_32FC1)
    return cv2.remap(_GRID, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _ours(transform, n: int) -> float:
    one = A.Compose([transform], seed=7)
    return float(np.mean([_displacement(one(image=_GRID)["image"]) for _ in range(n)]))


def _study(make, n: int) -> float:
    rs = np.random.RandomState(7)
    return float(np.mean([_displacement(make(rs)) for _ in range(n)]))


N = 300  # draws per estimate: the optical k = U(-2, 2) alone spreads the mean by a few per cent at 100


@pytest.mark.parametrize("which, study", [(0, _study_elastic), (1, _study_grid), (2, _study_optical)])
def test_distortion_strength_is_the_studys(which, study):
    """Each distortion choice moves pixels as far on average as albumentations 0.4.3 did (within 10 %)."""
    ours = _ours(albu.seg_augmentation(SIZE)[1].transforms[which], N)
    assert ours == pytest.approx(_study(study, N), rel=0.10)


def test_distortion_parts_match_the_issues_figures():
    elastic = albu.seg_augmentation(SIZE)[1].transforms[0]
    affine, field = elastic.transforms
    assert _ours(field, N) == pytest.approx(4.25, rel=0.10)  # the elastic field, uniform noise
    assert _ours(affine, N) == pytest.approx(2.75, rel=0.10)  # 0.4.3's alpha_affine part
    assert _ours(albu.seg_augmentation(SIZE)[1].transforms[1], N) == pytest.approx(14.1, rel=0.10)
    # and 2.x's defaults would not: Gaussian noise divided by its maximum, a normalised grid
    assert _ours(A.ElasticTransform(alpha=120, sigma=6, border_mode=cv2.BORDER_REFLECT_101, p=1), 30) < 0.5 * 4.25
    assert _ours(A.GridDistortion(border_mode=cv2.BORDER_REFLECT_101, p=1), 30) < 0.7 * 14.1
    assert _study(lambda rs: _study_elastic(rs, field=False), N) == pytest.approx(2.75, rel=0.10)


def test_montgomery_and_siim_test_sets_are_never_augmented():
    """The study tests with transforms=None: every read of a test image is the plain resize; val is augmented."""
    for name in ("montgomery-lungs", "siim-pneumothorax"):
        kw = dict(train=False, size=32, task="segmentation", dataset=name)
        test = transforms.build("systematic-seg", **kw, split="test")
        val = transforms.build("systematic-seg", **kw, split="val")
        assert len(_steps(test)) == 1 and len(_steps(val)) == 4
        image, mask = _pair()
        torch.manual_seed(0)
        reads = [test(image, mask) for _ in range(40)]
        assert all(torch.equal(r[0], reads[0][0]) and torch.equal(r[1], reads[0][1]) for r in reads)
        plain = cv2.resize(image.permute(1, 2, 0).numpy(), (32, 32), interpolation=cv2.INTER_NEAREST)
        torch.testing.assert_close(reads[0][0], torch.from_numpy(plain).permute(2, 0, 1).float() / 255)
        vals = [val(image, mask)[0] for _ in range(40)]
        assert any(not torch.equal(v, vals[0]) for v in vals)  # val: the training augmentation


def test_a_classification_pipeline_leaves_albumentations_unimported():
    """albumentations is imported by the presets built on it (segmentation, chest pre-training), not by a
    classification trial or the command line: it costs every process that imports it about half a second."""
    code = ("import sys; from benchxfer.data import transforms; "
            "transforms.build('systematic-cls', train=True, size=32); "
            "transforms.build('bit-hyperrule', train=False, size=32); "
            "print('albumentations' in sys.modules); "
            "transforms.build('systematic-seg', train=True, size=32, task='segmentation', dataset='montgomery-lungs'); "
            "print('albumentations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]

