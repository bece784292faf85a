"""Input normalisations: the named (mean, std) pairs a run can ask for, and the step that ends every pipeline (uint8
pixels to normalised float32), shared by the torchvision pipelines (:mod:`benchxfer.data.transforms`) and the
albumentations ones (:mod:`benchxfer.data.albu`)."""

from __future__ import annotations

from typing import Sequence

import torch

from benchxfer.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CXR_MEAN = (0.5056, 0.5056, 0.5056)
CXR_STD = (0.252, 0.252, 0.252)

# named input normalisations (mean, std) a run can ask for instead of its init's own ("init")
NORMALISATIONS: Registry[tuple[tuple[float, float, float], tuple[float, float, float]]] = Registry("normalization")
NORMALISATIONS.add("imagenet", (IMAGENET_MEAN, IMAGENET_STD))
NORMALISATIONS.add("cxr", (CXR_MEAN, CXR_STD))
NORMALISATIONS.add("half", ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))  # the second study's chest models: [-1, 1]
NORMALISATIONS.add("unit", ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))  # [0, 1] as is


class Normalise:
    """uint8 C x H x W (C = 1 or 3) -> float32 3 x H x W, ``(x / 255 - mean) / std`` as one fused multiply-add that
    also broadcasts 1 channel to 3."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        std_t = torch.tensor(tuple(std), dtype=torch.float32).view(3, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._bias = -torch.tensor(tuple(mean), dtype=torch.float32).view(3, 1, 1) / std_t

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._bias, image.to(torch.float32), self._scale)
