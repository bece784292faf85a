"""Training-transform throughput per CPU core: decoding PNGs each time vs the exact and a lossy preprocessed cache.

Writes a ChestX-ray14-layout set of synthetic 1024x1024 PNGs into a temporary folder, then times, on
one core (one process, one torch thread), ``open_dataset(...)[i]`` with the "systematic-cls" training
transform at 224 px:

- plain:  open and decode the PNG, then transform (RandomResizedCrop 224, flip, rotation, normalise);
- exact cache: the image read from the ``original`` cache (every image at its own size, the decoded pixels
  bit for bit), then the same transform: the same inputs as plain;
- lossy cache: the image read from a cache resized to a shorter side of 256, then the same transform.

It also measures what a cache does to the inputs: the same RandomResizedCrop box (drawn once per image, in
the original's coordinates) taken from the decoded PNG and from the cache at each measured size, both
resized to 224; the mean and max absolute difference in grey levels (0-255). Zero means the cache keeps
the protocol's training inputs exact. (Synthetic images are smoother than radiographs, so real
differences are larger.)

    .venv/bin/python benchmarks/loader.py              # 200 images, records into BENCHMARKS.md
    .venv/bin/python benchmarks/loader.py --images 1000 --no-record
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record

from benchxfer import data
from benchxfer.data import transforms
from benchxfer.data.cache import ORIGINAL, cache_size, write_cache


def throughput(ds, passes: int) -> tuple[float, float]:
    """(images per CPU-second of this process, images per wall-second) over ``passes`` passes.

    CPU time is the per-core figure: it does not count time lost to other processes on a busy machine.
    """
    ds[0]  # warm up (imports, memory maps)
    n = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(passes):
        for i in range(len(ds)):
            image, _target = ds[i]
            n += 1
    assert image.shape == (3, 224, 224)
    return n / (time.process_time() - cpu), n / (time.perf_counter() - wall)


def crop_difference(root: Path, cache_dir: Path, cache_sizes: list[int | str], n: int) -> dict[int | str, tuple[float, float]]:
    """{cache size: (mean, max) |crop from cache - crop from PNG|} over the first ``n`` train images."""
    from torchvision.transforms import v2

    full = data.open_dataset("chestxray14", root, "train")
    g = torch.Generator().manual_seed(0)
    boxes = []
    for i in range(n):
        img = full.raw_image(i)
        pil = v2.functional.to_pil_image(torch.from_numpy(np.array(img[:, :, 0])))
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        boxes.append(v2.RandomResizedCrop.get_params(pil, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]))
    out = {}
    for size in cache_sizes:
        write_cache("chestxray14", root, size, ["train"], cache_dir=cache_dir)
        cached = data.open_dataset("chestxray14", root, "train", size_hint=size, cache_dir=cache_dir)
        diffs = []
        for i, (top, left, h, w) in enumerate(boxes):
            orig = full.raw_image(i)[:, :, 0]
            small = cached.raw_image(i)[:, :, 0]
            scale = small.shape[0] / orig.shape[0]
            a = v2.functional.resized_crop(v2.functional.to_pil_image(torch.from_numpy(np.array(orig))), top, left, h, w,
                                           [224, 224], antialias=True)
            b = v2.functional.resized_crop(v2.functional.to_pil_image(torch.from_numpy(np.ascontiguousarray(small))),
                                           round(top * scale), round(left * scale), max(1, round(h * scale)),
                                           max(1, round(w * scale)), [224, 224], antialias=True)
            diffs.append(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
        out[size] = (float(np.mean([d.mean() for d in diffs])), float(max(d.max() for d in diffs)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="number of 1024x1024 PNGs (default 200)")
    parser.add_argument("--size", type=int, default=1024, help="stored image size (default 1024)")
    parser.add_argument("--cached-passes", type=int, default=5, help="passes over the cached set (default 5)")
    parser.add_argument("--cache-size", type=int, default=256, help="cache size timed (default 256)")
    parser.add_argument("--fidelity-sizes", default="256,512,original",
                        help="cache sizes whose crops are compared with the PNG's (default 256,512,original)")
    parser.add_argument("--fidelity-images", type=int, default=20, help="images compared (default 20)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = data.synthetic.write("chestxray14", Path(tmp) / "nih", n_train=args.images, n_val=1, n_test=1,
                                    size=args.size)
        t_write = time.perf_counter() - t0
        pipe = transforms.build("systematic-cls", train=True, size=224, mean=transforms.CXR_MEAN, std=transforms.CXR_STD)
        side = args.cache_size  # a lossy cache, timed only: the study presets read the originals

        plain = data.open_dataset("chestxray14", root, "train", transform=pipe)
        plain_ips, plain_wall = throughput(plain, 1)

        t0 = time.perf_counter()
        write_cache("chestxray14", root, ORIGINAL, ["train"], cache_dir=Path(tmp) / "exact")
        t_exact = time.perf_counter() - t0
        exact = data.open_dataset("chestxray14", root, "train", transform=pipe, cache_dir=Path(tmp) / "exact")
        assert exact.cache is not None  # read without a size hint, as the study presets do
        exact_ips, exact_wall = throughput(exact, args.cached_passes)

        t0 = time.perf_counter()
        write_cache("chestxray14", root, side, ["train"], cache_dir=Path(tmp) / "cache")
        t_cache = time.perf_counter() - t0
        cached = data.open_dataset("chestxray14", root, "train", transform=pipe, size_hint=side,
                                   cache_dir=Path(tmp) / "cache")
        assert cached.cache is not None
        cached_ips, cached_wall = throughput(cached, args.cached_passes)
        sizes = [cache_size(x) for x in args.fidelity_sizes.split(",") if x]
        fidelity = crop_difference(root, Path(tmp) / "fidelity", sizes, min(args.fidelity_images, args.images))

    ratio = cached_ips / plain_ips
    body = f"""
{args.images} synthetic ChestX-ray14-layout PNGs of {args.size}x{args.size} (8-bit grey), "systematic-cls"
training transform at 224 px (RandomResizedCrop, flip, rotation +/-7, normalise), one process, one torch thread.

| path | images/s per core (CPU time) | images/s (wall clock) |
|---|---|---|
| plain: decode the PNG, then transform | {plain_ips:.0f} | {plain_wall:.0f} |
| exact cache (`original`): memory-mapped uint8 at each image's own size, then transform | {exact_ips:.0f} | {exact_wall:.0f} |
| lossy cache: memory-mapped uint8 at {side} px, then transform | {cached_ips:.0f} | {cached_wall:.0f} |
| speed-up, exact cache (same inputs) | {exact_ips / plain_ips:.1f}x | {exact_wall / plain_wall:.1f}x |
| speed-up, lossy cache (changed inputs) | {ratio:.1f}x | {cached_wall / plain_wall:.1f}x |

Per core = images / CPU seconds of the one process (the machine was shared with other jobs, so the
wall-clock column is lower than what an idle core delivers).

Writing the lossy cache (decode + resize once, one process) took {t_cache:.1f} s for {args.images} images
({args.images / t_cache:.0f} images/s), the exact one {t_exact:.1f} s; generating the PNGs took {t_write:.1f} s.
Goals: lossy cache >= 10x plain and >= 1,000 images/s per core (issue 4); exact cache >= 5x plain (issue 25).

Cache size timed: {side} px (shorter side). What a cache does to the training inputs: the same
RandomResizedCrop box from the decoded {args.size} px PNG and from the cache, both resized to 224
({min(args.fidelity_images, args.images)} images; grey levels 0-255):

| cache size (shorter side) | mean abs difference | max abs difference |
|---|---|---|
""" + "".join(f"| {k} | {m:.2f} | {x:.0f} |\n" for k, (m, x) in fidelity.items())
    record("loader", "Data loader: PNG decoding vs the exact and a lossy preprocessed cache (per CPU core)",
           "python benchmarks/loader.py" + (f" --images {args.images}" if args.images != 200 else ""), body,
           print_only=args.no_record)


if __name__ == "__main__":
    main()
