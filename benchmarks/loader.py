"""Training-transform throughput per CPU core: decoding PNGs each time vs the preprocessed cache.

Writes a ChestX-ray14-layout set of synthetic 1024x1024 PNGs into a temporary folder, then times, on
one core (one process, one torch thread), ``open_dataset(...)[i]`` with the "systematic-cls" training
transform at 224 px:

- plain:  open and decode the PNG, then transform (RandomResizedCrop 224, flip, rotation, normalise);
- cached: the image read from the preprocessed cache (shorter side 256), then the same transform.

    .venv/bin/python benchmarks/loader.py              # 200 images, records into BENCHMARKS.md
    .venv/bin/python benchmarks/loader.py --images 1000 --no-record
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

from benchxfer import data  # noqa: E402
from benchxfer.data import transforms  # noqa: E402
from benchxfer.data.cache import write_cache  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="number of 1024x1024 PNGs (default 200)")
    parser.add_argument("--size", type=int, default=1024, help="stored image size (default 1024)")
    parser.add_argument("--cached-passes", type=int, default=5, help="passes over the cached set (default 5)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = data.synthetic.write("chestxray14", Path(tmp) / "nih", n_train=args.images, n_val=1, n_test=1,
                                    size=args.size)
        t_write = time.perf_counter() - t0
        pipe = transforms.build("systematic-cls", train=True, size=224, mean=transforms.CXR_MEAN, std=transforms.CXR_STD)
        side = transforms.resize_side("systematic-cls", 224)

        plain = data.open_dataset("chestxray14", root, "train", transform=pipe)
        plain_ips, plain_wall = throughput(plain, 1)

        t0 = time.perf_counter()
        write_cache("chestxray14", root, side, ["train"], cache_dir=Path(tmp) / "cache")
        t_cache = time.perf_counter() - t0
        cached = data.open_dataset("chestxray14", root, "train", transform=pipe, size_hint=side,
                                   cache_dir=Path(tmp) / "cache")
        assert cached.cache is not None
        cached_ips, cached_wall = throughput(cached, args.cached_passes)

    ratio = cached_ips / plain_ips
    body = f"""
{args.images} synthetic ChestX-ray14-layout PNGs of {args.size}x{args.size} (8-bit grey), "systematic-cls"
training transform at 224 px (RandomResizedCrop, flip, rotation +/-7, normalise), one process, one torch thread.

| path | images/s per core (CPU time) | images/s (wall clock) |
|---|---|---|
| plain: decode the PNG, then transform | {plain_ips:.0f} | {plain_wall:.0f} |
| cached: memory-mapped uint8 at 256 px, then transform | {cached_ips:.0f} | {cached_wall:.0f} |
| speed-up | {ratio:.1f}x | {cached_wall / plain_wall:.1f}x |

Per core = images / CPU seconds of the one process (the machine was shared with other jobs, so the
wall-clock column is lower than what an idle core delivers).

Writing the cache (decode + resize once, one process) took {t_cache:.1f} s for {args.images} images
({args.images / t_cache:.0f} images/s); generating the PNGs took {t_write:.1f} s.
Goal (issue 4): cached >= 10x plain and >= 1,000 images/s per core.
"""
    if args.no_record:
        print(body)
    else:
        record("loader", "Data loader: PNG decoding vs the preprocessed cache (per CPU core)",
               "python benchmarks/loader.py" + (f" --images {args.images}" if args.images != 200 else ""), body)


if __name__ == "__main__":
    main()
