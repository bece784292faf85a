"""SA-UNet's offline augmentation of DRIVE, written from the original release into SA-UNet's layout.

The first study trained DRIVE on SA-UNet's augmented copy (its README links it). Where only the challenge's
release is at hand, :func:`augment_drive` writes the same kind of copy: each image's 13 versions, named as
SA-UNet's ``keras_dataAug.py`` and ``flip.py`` name them (:data:`COPIES`):

- the image itself;
- ``randomRotation<i>``: a rotation by a whole angle in [1, 359] degrees, image bicubic, label nearest, black
  corners (PIL's ``rotate``, which torchvision's ``rotate`` calls on a PIL image);
- ``randomColor<i>``: PIL's enhancers in the script's order with its factors: colour (saturation) k/10, k in
  0..30; brightness and contrast k/10, k in 10..20; sharpness k/10, k in 0..30 (torchvision's ``adjust_*``);
- ``randomGaussian<i>``: N(0.2, 0.3) added to each uint8 value, stored back as uint8 (truncated), label as is;
- ``h``, ``v``, ``hv``: horizontal, vertical and both flips (``cv2.flip`` 1, 0, -1), label flipped with it.

``i`` is 0, 1, 2 (the script draws each operation three times). The draws are seeded by (seed, image's
split, place). What SA-UNet's archive holds in ``validate/`` its repository does not say: here it is the copies of
the 4 training images the original reader holds out as val (seeded, seed 0), so train and validate share no
source image; ``test/`` is the 20 test images with their labels as PNG.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from benchxfer.data.catalog import IndexCtx
from benchxfer.data.readers.seg import SA_UNET_SPLITS, drive_layout, read_original_drive
from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry

Pair = tuple[Image.Image, Image.Image]
Op = Callable[[Image.Image, Image.Image, np.random.Generator], Pair]
OPS: Registry[Op] = Registry("DRIVE offline augmentation")


@OPS.register("randomRotation")
def _rotation(image: Image.Image, label: Image.Image, rng: np.random.Generator) -> Pair:
    angle = float(rng.integers(1, 360))
    return (F.rotate(image, angle, interpolation=InterpolationMode.BICUBIC),
            F.rotate(label, angle, interpolation=InterpolationMode.NEAREST))


@OPS.register("randomColor")
def _colour(image: Image.Image, label: Image.Image, rng: np.random.Generator) -> Pair:
    image = F.adjust_saturation(image, rng.integers(0, 31) / 10)
    image = F.adjust_brightness(image, rng.integers(10, 21) / 10)
    image = F.adjust_contrast(image, rng.integers(10, 21) / 10)
    return F.adjust_sharpness(image, rng.integers(0, 31) / 10), label


@OPS.register("randomGaussian")
def _noise(image: Image.Image, label: Image.Image, rng: np.random.Generator) -> Pair:
    pixels = np.asarray(image, np.float64)
    noisy = np.clip(pixels + rng.normal(0.2, 0.3, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy), label


FLIPS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "h": F.horizontal_flip,
    "v": F.vertical_flip,
    "hv": lambda im: F.vertical_flip(F.horizontal_flip(im)),
}
TIMES = 3  # keras_dataAug.py: each operation three times
COPIES = ("", *(f"{op}{i}" for op in ("randomRotation", "randomColor", "randomGaussian") for i in range(TIMES)),
          *FLIPS)


def _copies(image: Image.Image, label: Image.Image, rng: np.random.Generator) -> dict[str, Pair]:
    out = {"": (image, label)}
    for op in ("randomRotation", "randomColor", "randomGaussian"):
        for i in range(TIMES):
            out[f"{op}{i}"] = OPS.get(op)(image, label, rng)
    for prefix, flip in FLIPS.items():
        out[prefix] = (flip(image), flip(label))
    return out


def augment_drive(root: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Write SA-UNet's layout under ``out`` (a new or empty folder) from the original DRIVE at ``root``."""
    root, out = Path(root).expanduser(), Path(out).expanduser()
    if drive_layout(root) != "original":
        raise BenchxferError(f"{root} already holds SA-UNet's augmented DRIVE; read it as it is")
    if out.exists() and any(out.iterdir()):
        raise BenchxferError(f"{out} is not empty; give a new or empty folder for the augmented DRIVE")
    tmp = out.with_name(f"{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for part, (split, folder) in enumerate(SA_UNET_SPLITS.items()):
        for place, rec in enumerate(read_original_drive(root, split, IndexCtx())):
            image = Image.open(rec.image).convert("RGB")
            label = Image.open(rec.masks[0]).convert("L")
            key, rest = Path(rec.image).name.split("_", 1)
            rng = np.random.default_rng([seed, part, place])
            pairs = {"": (image, label)} if split == "test" else _copies(image, label, rng)
            for prefix, (im, lab) in pairs.items():
                for path, pic in ((tmp / folder / "images" / f"{prefix}{key}_{rest}", im),
                                  (tmp / folder / "labels" / f"{prefix}{key}_manual1.png", lab)):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pic.save(path)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
