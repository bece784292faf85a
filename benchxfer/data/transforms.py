"""torchvision.transforms.v2 pipelines, one preset per recipe (RECIPES.md), moving image and mask together; the
presets built on albumentations (the first study's segmentation, the second study's chest pre-training) are in
:mod:`benchxfer.data.albu`, imported only by a pipeline that uses them.

A pipeline is called as ``pipeline(image, mask)`` with a uint8 ``tv_tensors.Image`` (3 x H x W) and a
``tv_tensors.Mask`` (1 x H x W) or None, and returns ``(image, mask)``: the image float32 normalised
with (mean, std), the mask float32 {0, 1} H x W (or None). ``tencrop=True`` (evaluation of
"systematic-cls") returns a 10 x C x H x W stack whose predictions the caller averages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from benchxfer.data.normalise import (  # noqa: F401  (re-exported: the pipelines' normalisations)
    CXR_MEAN,
    CXR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALISATIONS,
    Normalise,
)
from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry
from benchxfer.tasks import get_task

if TYPE_CHECKING:
    from benchxfer.data import albu


@dataclass(frozen=True)
class Pipeline:
    """Geometric/photometric steps on uint8, then dtype + normalisation; the mask follows the image.

    Classification images go through the steps as PIL images (PIL's uint8 kernels are several times
    faster than tensor kernels for crops and rotations); image + mask pairs go through as tv_tensors,
    so the mask is resampled with nearest neighbour. A 1-channel (grey) image is processed as one
    channel and replicated to 3 at the end (``accepts_grey``: the dataset may pass 1 x H x W).
    """

    steps: v2.Compose
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    tencrop: int | None = None
    accepts_grey: ClassVar[bool] = True
    accepts_array: ClassVar[bool] = True  # classification: a uint8 H x W x C numpy array is taken as is

    def __post_init__(self) -> None:
        object.__setattr__(self, "_finish", Normalise(self.mean, self.std))  # uint8 -> normalised float32

    def __call__(self, image: torch.Tensor, mask: tv_tensors.Mask | None = None):
        if mask is None:
            out = self.steps(_to_pil(image))
            if self.tencrop:
                crops = v2.functional.ten_crop(out, [self.tencrop, self.tencrop])
                return torch.stack([self._finish(v2.functional.pil_to_tensor(c)) for c in crops]), None
            return self._finish(v2.functional.pil_to_tensor(out)), None
        image, mask = self.steps(image, mask)
        return self._finish(image.as_subclass(torch.Tensor)), (mask.as_subclass(torch.Tensor)[0] > 0).float()


def _to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    if isinstance(image, np.ndarray):  # H x W x C from the dataset
        return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image, "L" if image.shape[2] == 1 else "RGB")
    arr = image.as_subclass(torch.Tensor).numpy()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0], "L")
    if arr.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(arr.transpose(1, 2, 0)), "RGB")
    raise BenchxferError(f"transform: image has {arr.shape[0]} channels; expected 1 or 3")


Builder = Callable[[bool, int], list[v2.Transform]]
PRESETS: Registry[Builder] = Registry("transform preset")


def resize_side(preset: str, size: int) -> int:
    """The shorter side of a preprocessed cache that leaves a preset's inputs as the study's; 0: none does.

    The first study's presets crop (RandomResizedCrop) or resize to a square from the original image, and a
    cached copy at any smaller size changes those pixels (docs/datasets.md, the cache table), so they read
    the originals. A lossy cache stays available with the dataset option ``cache_size``.
    """
    return {"bit-hyperrule": 0, "systematic-cls": 0, "supervised-pretrain": 0, "systematic-seg": 0}.get(preset, size)


def bit_resize(crop: int) -> int:
    """BiT: 160 -> 128 for small images, 512 -> 480 otherwise; other crops keep the 512/480 ratio."""
    return 160 if crop == 128 else round(crop * 512 / 480)


def bit_crop_for(height: int, width: int) -> int:
    """BiT-HyperRule's resolution rule: images under 96 x 96 px train at 128 (from 160), others at 480 (from 512)."""
    return 128 if height * width < 96 * 96 else 480


@PRESETS.register("systematic-cls")
def _systematic_cls(train: bool, size: int) -> list[v2.Transform]:
    if train:
        return [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.RandomRotation(7)]
    side = round(size * 256 / 224)
    return [v2.Resize((side, side), antialias=True), v2.CenterCrop(size)]  # the study: a square, then the crop


@PRESETS.register("bit-hyperrule")
def _bit(train: bool, size: int) -> list[v2.Transform]:
    if train:  # the shorter side to 512, a random 480 crop, a flip
        return [v2.Resize(bit_resize(size), antialias=True), v2.RandomCrop(size), v2.RandomHorizontalFlip()]
    return [v2.Resize((size, size), antialias=True)]


class CenterSquare(v2.Transform):
    """Centre crop to a square of the shorter side, placed as torchxrayvision's ``XRayCenterCrop`` (the second
    study): top = h // 2 - side // 2, left = w // 2 - side // 2."""

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.functional.get_size(flat_inputs[0])
        side = min(h, w)
        return {"top": h // 2 - side // 2, "left": w // 2 - side // 2, "side": side}

    def transform(self, inpt, params: dict):
        return v2.functional.crop(inpt, params["top"], params["left"], params["side"], params["side"])


@PRESETS.register("supervised-pretrain")
def _pretrain(train: bool, size: int) -> list[v2.Transform]:
    """The second study's chest pre-training (:func:`benchxfer.data.albu.pretrain_steps`) after the centre square."""
    from benchxfer.data import albu  # albumentations is imported by the presets that use it, not by every trial

    return [CenterSquare(), albu.Albumentations(albu.pretrain_steps(train, size))]


@PRESETS.register("plain")
def _plain(train: bool, size: int) -> list[v2.Transform]:
    return [v2.Resize((size, size), antialias=True)]


# "systematic-seg" is built by albumentations (``albu.segmentation``); its steps depend on the dataset's SegInputs.
PRESETS.add("systematic-seg", lambda train, size: [])


def build(
    preset: str,
    *,
    train: bool,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    task: str = "multilabel",
    tencrop: bool = False,
    dataset: str | None = None,
    split: str = "test",
) -> Pipeline | albu.SegPipeline:
    """The pipeline of ``preset`` for training or evaluation at ``size`` px.

    ``dataset``: with "systematic-seg", the dataset's :class:`SegInputs` (catalog) decide the online
    augmentation (of train, and of val where the study augmented it), the normalisation and the resize.
    ``split`` ("val" or "test", with ``train=False``): the study augmented some val splits, never a test split
    (``transforms=None`` for test in its main_segmentation.py).
    """
    steps = PRESETS.get(preset)(train, int(size))
    if size < 1:
        raise BenchxferError(f"transform size {size!r} must be a positive number of pixels")
    if tencrop and (train or get_task(task).dense):
        raise BenchxferError("tencrop is for evaluating classifiers only (train=False, a classification task)")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise BenchxferError(f"mean {tuple(mean)} and std {tuple(std)} must hold 3 values each, std > 0")
    if preset == "systematic-seg":
        from benchxfer.data import albu

        return albu.segmentation(train, int(size), mean, std, dataset, split)
    if tencrop:
        steps = [s for s in steps if not isinstance(s, v2.CenterCrop)]
    return Pipeline(v2.Compose(steps), tuple(map(float, mean)), tuple(map(float, std)), int(size) if tencrop else None)


def list_presets() -> list[str]:
    return PRESETS.names()
