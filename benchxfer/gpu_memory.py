"""Measured GPU memory peaks, the estimate of one trial's peak from them, and what each GPU type holds.

The measurements (issue 22; one NVIDIA H200, SGD with Nesterov momentum, bf16 autocast, peak GPU memory over one
optimiser step of one training process) are the only numbers here that were measured. "GB" here is GiB (2^30
bytes): re-measured through benchxfer's own accumulation (``benchmarks/microbatch_memory.py``, H200, 2026-12-04),
``torch.cuda.max_memory_allocated`` gave 27.02 / 42.52 / 132.04 x 1e9 bytes for R152x4 at 4 / 8 / 32 images and
14.62 for R50x1 at 32, that is 25.2 / 39.6 / 123.0 and 13.6 GiB (the table's 126.4 for 32 images is 3 % above):

| arch | size | images per micro-batch | peak GB |
|---|---|---|---|
| bit-r152x4 | 480 | 4 / 8 / 16 / 32 | 25.1 / 39.5 / 68.5 / 126.4 |
| bit-r50x1 | 480 | 32 | 13.7 |
| resnet50 | 224 | 32 | about 2 |

The estimate for (arch, size, micro-batch) is ``fixed + per_image x images x (size / measured size)^2``:

- ``fixed`` is what does not grow with the batch: the weights, their gradients and the optimiser's momentum
  (3 x 4 bytes per parameter). For bit-r152x4 it is fitted with ``per_image`` to the four points (least
  squares: 10.6 GB, 3.62 GB per image; the 936 M parameters x 12 bytes give 11.2 GB, the same); for an arch
  measured at one point it is 12 bytes per parameter, and ``per_image`` the rest of the peak over the images.
- Another micro-batch than measured is extrapolated linearly in the images (exact for bit-r152x4 within
  0.1 GB over 4-32); another size scales the per-image part by the pixel count (activations grow with
  H x W). Either is said in the estimate's ``basis``.
- An arch that was not measured, and any U-Net (segmentation), has no estimate (``None``): nothing is refused
  for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# (arch, image size) -> {images per micro-batch: peak GB}, as measured (see the module's docstring)
MEASURED: dict[tuple[str, int], dict[int, float]] = {
    ("bit-r152x4", 480): {4: 25.1, 8: 39.5, 16: 68.5, 32: 126.4},
    ("bit-r50x1", 480): {32: 13.7},
    ("resnet50", 224): {32: 2.0},
}
# parameters of the measured archs (timm / torchvision, with a 1000-class head), for the fixed part
PARAMETERS_M: dict[str, float] = {"bit-r152x4": 936.5, "bit-r50x1": 25.5, "resnet50": 25.6}
BYTES_PER_PARAMETER = 12  # fp32 weights + gradients + SGD momentum

# Ray's accelerator_type names (ray.util.accelerators) -> the GPU's memory in GiB, as nvidia-smi reports it (MiB /
# 1024; e.g. the H200: 143,771 MiB). "A100" is what Ray detects on both A100 models: it counts as the 40 GB one
# (declare `accelerator_type:A100-80G` for the other). The smaller model where a name covers two (V100 16/32 GB).
GPU_MEMORY_GB: dict[str, float] = {
    "A10G": 22.5, "L4": 22.5, "T4": 15, "V100": 16, "P100": 16, "L40S": 45, "A100": 40, "A100-40G": 40,
    "A100-80G": 80, "H100": 79.6, "H20": 95, "H200": 140.4, "B200": 179, "RTX-PRO-6000": 95,
}
# a GPU holds what fits in this share of its memory: the CUDA context and the caching allocator's fragmentation
# take the rest
USABLE = 0.9


@dataclass(frozen=True)
class Estimate:
    gb: float
    basis: str  # "measured", or how it was extrapolated


def _fit(points: dict[int, float], arch: str) -> tuple[float, float]:
    """(fixed GB, GB per image) from the measured points of one (arch, size)."""
    if len(points) >= 2:
        xs, ys = list(points), list(points.values())
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        return my - slope * mx, slope
    (images, gb), = points.items()
    fixed = PARAMETERS_M[arch] * 1e6 * BYTES_PER_PARAMETER / 1e9
    return fixed, (gb - fixed) / images


def estimate(arch: str, size: int, images: int) -> Estimate | None:
    """The peak GPU memory of one training process of ``arch`` at ``size`` px, ``images`` per micro-batch."""
    sizes = sorted(s for a, s in MEASURED if a == arch)
    if not sizes:
        return None
    measured = min(sizes, key=lambda s: abs(s - size))
    points = MEASURED[(arch, measured)]
    if size == measured and images in points:
        return Estimate(points[images], "measured")
    fixed, per_image = _fit(points, arch)
    scale = (size / measured) ** 2
    how = []
    if images not in points:
        how.append(f"linear in images from {'/'.join(map(str, points))}")
    if size != measured:
        how.append(f"per-image part x ({size}/{measured})^2")
    return Estimate(fixed + per_image * images * scale, "extrapolated: " + ", ".join(how))


def sharing(gpus_per_worker: float) -> int:
    """How many workers Ray may place on one GPU (1 for a whole GPU or more)."""
    return max(1, math.floor(1 / gpus_per_worker + 1e-9)) if 0 < gpus_per_worker < 1 else 1


def estimate_for(arch: str, size: int, images: int, task: str) -> Estimate | None:
    """One trial's estimate per worker process, ``images`` per forward and backward
    (``recipes.config.TrainConfig.images_per_pass``); the table holds classifiers only (a U-Net is not measured)."""
    from benchxfer.tasks import get_task

    if get_task(task).dense:
        return None
    return estimate(arch, size, images)


def plan_columns(arch: str, size: int, images: int, task: str, gpus_per_worker: float) -> dict[str, str]:
    """The dry run's per-trial columns: the micro-batch, the estimated GPU memory, and how many share a GPU."""
    est = estimate_for(arch, size, images, task) if gpus_per_worker > 0 else None
    share = sharing(gpus_per_worker)
    if gpus_per_worker <= 0:
        memory = "no GPU"
    elif est is None:
        memory = "not measured"
    else:
        memory = f"{est.gb:.1f} GB" + ("" if est.basis == "measured" else "*")
    return {"micro": str(images), "gpu_memory": memory, "per_gpu": str(share)}


def gpu_memory(accelerator_type: str) -> float | None:
    return GPU_MEMORY_GB.get(accelerator_type)
