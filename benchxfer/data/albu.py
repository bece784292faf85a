"""The pipelines built on albumentations: the first study's segmentation (:class:`SegPipeline`, its online
augmentation pinned to albumentations 0.4.3's strength) and the second study's chest pre-training steps, a step of
a classification :class:`~benchxfer.data.transforms.Pipeline` (:class:`Albumentations`). Imported by
:func:`benchxfer.data.transforms.build` only for the presets that use it (albumentations costs every process that
imports it about half a second)."""

from __future__ import annotations

from typing import ClassVar, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from benchxfer.data.catalog import SegInputs, get_dataset
from benchxfer.data.normalise import NORMALISATIONS, Normalise
from benchxfer.errors import BenchxferError


class SegPipeline:
    """Image + mask through an albumentations ``Compose`` (the first study's segmentation pipeline).

    Called like :class:`~benchxfer.data.transforms.Pipeline`: ``(tv_tensors.Image uint8 C x H x W,
    tv_tensors.Mask 1 x H x W)`` -> ``(float32 3 x H x W normalised with (mean, std), float32 {0, 1} H x W)``.
    albumentations 2.x keeps its own generator (seeded from the OS, and copied into every forked loader worker), so
    each call reseeds it from torch's generator, which the loader seeds per worker: runs repeat, and workers differ.
    """

    accepts_grey: ClassVar[bool] = True

    def __init__(self, compose: A.Compose, mean: Sequence[float], std: Sequence[float], mask_threshold: int = 0):
        self.compose = compose
        self.mean = tuple(map(float, mean))
        self.std = tuple(map(float, std))
        self.mask_threshold = mask_threshold  # the mask goes through as 0/255; a pixel > this is foreground
        self._finish = Normalise(self.mean, self.std)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None):
        if mask is None:
            raise BenchxferError("the segmentation pipeline needs a mask with each image")
        img = np.ascontiguousarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).numpy())
        msk = np.ascontiguousarray((mask.as_subclass(torch.Tensor)[0].numpy() > 0).astype(np.uint8) * 255)
        self.compose.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        out = self.compose(image=img, mask=msk)
        img = torch.from_numpy(np.ascontiguousarray(out["image"]))
        img = img[:, :, None] if img.dim() == 2 else img
        return self._finish(img.permute(2, 0, 1)), (torch.from_numpy(np.asarray(out["mask"])) > self.mask_threshold).float()


# The first study's online augmentation of Montgomery and SIIM (albumentations 0.4.3): brightness/contrast or
# gamma; elastic, grid or optical distortion (border REFLECT_101, the old default); a random sized crop.
# albumentations 2.x gives the same parameters other meanings; each is pinned back to 0.4.3's rule:
# - ElasticTransform: 0.4.3 smooths UNIFORM noise in [-1, 1] (2.x's default draws Gaussian noise divided by its
#   maximum: 1.7 px instead of 4.2 px mean displacement), and first warps by a random affine (``alpha_affine``,
#   gone in 2.x): :class:`StudyAffine`, run before the elastic field as one choice of the OneOf.
# - GridDistortion: 0.4.3 did not normalise the distorted grid (2.x's ``normalized=True`` halves it) and ended
#   its last, partial cell at the image's edge: :class:`StudyGridDistortion`.
# - OpticalDistortion: 0.4.3 rounded its shift (``shift_limit`` 0.5) to whole pixels, i.e. to 0; nothing is lost.
# tests/test_data_seg_transforms.py measures the mean displacement of a coordinate grid against 0.4.3's.
SEG_ELASTIC = {"alpha": 120.0, "sigma": 120 * 0.05, "noise_distribution": "uniform"}
SEG_ELASTIC_AFFINE = 120 * 0.03  # 0.4.3's alpha_affine: each of 3 points moves by U(-3.6, 3.6) px per axis
SEG_OPTICAL = {"distort_limit": 2.0}
SEG_CROP = (156, 224)


class StudyAffine(A.DualTransform):
    """The random affine that albumentations 0.4.3's ``ElasticTransform`` applied before its elastic field:
    three points of the centre square (side ``min(h, w) // 3`` from the centre) each move by
    U(-alpha_affine, alpha_affine) px per axis; ``cv2.getAffineTransform`` of the two triangles warps the
    image (bilinear) and the mask (nearest), borders reflected."""

    class InitSchema(A.DualTransform.InitSchema):
        alpha_affine: float
        border_mode: int

    def __init__(self, alpha_affine: float, border_mode: int = cv2.BORDER_REFLECT_101, p: float = 1.0):
        super().__init__(p=p)
        self.alpha_affine, self.border_mode = float(alpha_affine), int(border_mode)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        centre, side = np.float32((h, w)) // 2, min(h, w) // 3
        pts = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
        moved = pts + self.random_generator.uniform(-self.alpha_affine, self.alpha_affine, pts.shape).astype(np.float32)
        return {"matrix": cv2.getAffineTransform(pts, moved)}

    def _warp(self, img: np.ndarray, matrix: np.ndarray, flags: int) -> np.ndarray:
        h, w = img.shape[:2]
        out = cv2.warpAffine(img, matrix, (w, h), flags=flags, borderMode=self.border_mode)
        return out.reshape(img.shape)

    def apply(self, img: np.ndarray, matrix: np.ndarray, **params) -> np.ndarray:
        return self._warp(img, matrix, cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, matrix: np.ndarray, **params) -> np.ndarray:
        return self._warp(mask, matrix, cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha_affine", "border_mode")


class StudyGridDistortion(A.GridDistortion):
    """albumentations' GridDistortion with 0.4.3's grid: steps 1 + U(-limit, limit) per cell, not normalised,
    and a last partial cell that ends at the image's edge (2.x extends it by a whole step)."""

    def __init__(self, border_mode: int = cv2.BORDER_REFLECT_101, p: float = 1.0):
        super().__init__(normalized=False, border_mode=border_mode, p=p)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        axes = []
        for n in (w, h):
            steps = [1 + self.py_random.uniform(*self.distort_limit) for _ in range(self.num_steps + 1)]
            step, line, prev = n // self.num_steps, np.zeros(n, np.float32), 0.0
            for k, start in enumerate(range(0, n, step)):
                end = min(start + step, n)
                cur = float(n) if start + step > n else prev + step * steps[k]
                line[start:end] = np.linspace(prev, cur, end - start)
                prev = cur
            axes.append(line)
        map_x, map_y = np.meshgrid(*axes)
        return {"map_x": map_x.astype(np.float32), "map_y": map_y.astype(np.float32)}


def seg_augmentation(size: int) -> list[A.BasicTransform]:
    reflect = cv2.BORDER_REFLECT_101
    low = round(SEG_CROP[0] * size / SEG_CROP[1])
    elastic = A.Sequential([StudyAffine(SEG_ELASTIC_AFFINE, border_mode=reflect),
                            A.ElasticTransform(**SEG_ELASTIC, border_mode=reflect, p=1.0)], p=1.0)
    return [
        A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=1.0),
                 A.RandomGamma(gamma_limit=(80, 120), p=1.0)], p=0.3),
        A.OneOf([elastic,
                 StudyGridDistortion(border_mode=reflect, p=1.0),
                 A.OpticalDistortion(**SEG_OPTICAL, border_mode=reflect, p=1.0)], p=0.3),
        A.RandomSizedCrop(min_max_height=(low, size), size=(size, size), p=0.25),
    ]


class Albumentations(v2.Transform):
    """An albumentations ``Compose`` as a step of a classification :class:`~benchxfer.data.transforms.Pipeline` (PIL
    in, PIL out), its generator reseeded from torch's at each call (as :class:`SegPipeline`), so runs repeat and
    workers differ."""

    def __init__(self, compose: A.Compose):
        super().__init__()
        self.compose = compose

    def make_params(self, flat_inputs: list) -> dict:
        return {"seed": int(torch.randint(0, 2**31 - 1, (1,)))}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, Image.Image):
            raise BenchxferError("the albumentations step takes PIL images (a classification pipeline)")
        self.compose.set_random_seed(params["seed"])
        return Image.fromarray(self.compose(image=np.asarray(inpt))["image"], inpt.mode)


# The second study's chest pre-training (transfer_learning/datasets/builder.py and chexpert.py's cohen_aug):
# torchxrayvision's centre square and cv2 INTER_AREA resize, then (train) albumentations
# ShiftScaleRotate(shift_limit=0.25, scale_limit=0.1, rotate_limit=45, p=1) -- linear interpolation and
# BORDER_REFLECT_101, its defaults then -- and HorizontalFlip(p=0.5). Here the same draws through Affine, which
# ShiftScaleRotate became in albumentations 2.x (whose own default border is a zero fill); ``keep_ratio``: one
# scale for both axes, as 0.5.2's ``cv2.getRotationMatrix2D(centre, angle, scale)`` (2.x's Affine draws x and y apart).
PRETRAIN_AFFINE = {"translate_percent": (-0.25, 0.25), "scale": (0.9, 1.1), "rotate": (-45.0, 45.0)}


def pretrain_steps(train: bool, size: int) -> A.Compose:
    """The second study's chest pre-training after the centre square: resize (area), then random shift 0.25, scale
    0.1, rotation 45 deg (linear, reflected borders) and a horizontal flip (train)."""
    steps: list[A.BasicTransform] = [A.Resize(size, size, interpolation=cv2.INTER_AREA)]
    if train:
        steps += [A.Affine(**PRETRAIN_AFFINE, shear=0.0, keep_ratio=True, interpolation=cv2.INTER_LINEAR,
                           border_mode=cv2.BORDER_REFLECT_101, p=1.0),
                  A.HorizontalFlip(p=0.5)]
    return A.Compose(steps)


def segmentation(train: bool, size: int, mean: Sequence[float], std: Sequence[float],
                 dataset: str | None, split: str) -> SegPipeline:
    """The "systematic-seg" pipeline of ``dataset`` (its :class:`SegInputs` decide the resize, the augmentation of
    train and val, and the normalisation) for ``split``, as :func:`benchxfer.data.transforms.build` asks for it."""
    inputs = get_dataset(dataset).seg_inputs if dataset else SegInputs()
    interp = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}[inputs.interpolation]
    mask_interp, threshold = {"nearest": (cv2.INTER_NEAREST, 0), "bilinear-127": (cv2.INTER_LINEAR, 127)}[inputs.mask_resize]
    steps: list[A.BasicTransform] = [A.Resize(size, size, interpolation=interp, mask_interpolation=mask_interp)]
    if (inputs.augment_train and train) or (inputs.augment_val and split == "val"):  # test: never
        steps += seg_augmentation(size)
    if inputs.normalization is not None:
        mean, std = NORMALISATIONS.get(inputs.normalization)
    return SegPipeline(A.Compose(steps), mean, std, threshold)
