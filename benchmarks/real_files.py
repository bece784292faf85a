"""Opening the real datasets at their real scale: NIH ChestX-ray14, CheXpert and PadChest on the label files their
owners publish (from the torchxrayvision wheel, the ``test`` extra), in roots where every image they name is a hard
link to a tiny stand-in (``tests/published_roots.py``).

For each split: the wall and CPU seconds of ``open_dataset`` and the memory it adds above the interpreter (the peak
resident set during the open, above the one before it, all imports done), each in a fresh process, after one
untimed open of the same split (a warm file-system cache); and the time of one ``ds.targets[i]`` in a loop.
Budget (issue 30): at most 3 s and 300 MB for any split, ``targets`` O(1) per item.

    .venv/bin/python benchmarks/real_files.py [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

CASES = [  # (label, dataset, root, split, options)
    ("ChestX-ray14, first study's lists", "chestxray14", "nih", "train", {}),
    ("ChestX-ray14, first study's lists", "chestxray14", "nih", "val", {}),
    ("ChestX-ray14, first study's lists", "chestxray14", "nih", "test", {}),
    ("ChestX-ray14, official='nih'", "chestxray14", "nih", "train", {"official": "nih"}),
    ("ChestX-ray14, official='nih'", "chestxray14", "nih", "val", {"official": "nih"}),
    ("ChestX-ray14, official='nih'", "chestxray14", "nih", "test", {"official": "nih"}),
    ("ChestX-ray14, pre-training (nih, PA/AP)", "chestxray14", "nih", "train",
     {"official": "nih", "views": ["PA", "AP"], "val_fraction": 0.0}),
    ("CheXpert", "chexpert", "chexpert", "train", {}),
    ("CheXpert", "chexpert", "chexpert", "val", {}),
    ("CheXpert", "chexpert", "chexpert", "test", {}),
    ("CheXpert, pre-training (PA/AP)", "chexpert", "chexpert", "train", {"views": ["PA", "AP"], "val_fraction": 0.0}),
    ("PadChest", "padchest", "padchest", "train", {}),
    ("PadChest", "padchest", "padchest", "test", {}),
    ("PadChest, pre-training (PA/AP)", "padchest", "padchest", "train", {"views": ["PA", "AP"]}),
]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def one(name: str, root: str, split: str, options: dict) -> dict:
    """In this (fresh) process: every import first, then the timed open with its peak memory, then targets[i]."""
    import numpy as np  # noqa: F401
    import torch  # noqa: F401  (open_dataset's module imports it)

    import benchxfer.data.cache  # noqa: F401
    import benchxfer.data.dataset  # noqa: F401
    import benchxfer.data.merged  # noqa: F401
    from benchxfer import data

    data.get_dataset(name)
    try:  # the peak resident set from here on (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _status_kb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    ds = data.open_dataset(name, root, split, **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status_kb("VmHWM")
    n = min(len(ds), 20000)
    t = time.perf_counter()
    for i in range(n):
        ds.targets[i]
    per_item = (time.perf_counter() - t) / n
    return {"n": len(ds), "wall": wall, "cpu": cpu, "mb": (peak - before) / 1024, "item_us": per_item * 1e6}


def run_one(name: str, root: Path, split: str, options: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps([name, str(root), split, options])],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-record", action="store_true", help="print only; leave BENCHMARKS.md as it is")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*json.loads(args.one))))
        return

    from published_roots import Roots, scratch_base

    load = os.getloadavg()[0]
    roots = Roots(scratch_base())
    try:
        t = time.perf_counter()
        folders = {"nih": roots.nih(), "chexpert": roots.chexpert(), "padchest": roots.padchest()}
        built = time.perf_counter() - t
        rows = []
        for label, name, root, split, options in CASES:
            run_one(name, folders[root], split, options)  # warms the file-system cache
            r = run_one(name, folders[root], split, options)
            rows.append((label, split, r))
            print(f"{label} {split}: {r['n']} images, {r['wall']:.2f} s ({r['cpu']:.2f} s CPU), {r['mb']:.0f} MB, "
                  f"targets[i] {r['item_us']:.2f} us", flush=True)
    finally:
        roots.remove()
    worst_s = max(r["wall"] for *_, r in rows)
    worst_mb = max(r["mb"] for *_, r in rows)
    table = ["| dataset | split | images | open, wall s | open, CPU s | MB above the interpreter | ds.targets[i], us |",
             "|---|---|---:|---:|---:|---:|---:|"]
    table += [f"| {label} | {split} | {r['n']:,} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['mb']:.0f} | "
              f"{r['item_us']:.2f} |" for label, split, r in rows]
    end_load = os.getloadavg()[0]
    body = "\n".join([
        "The label files as their owners publish them (torchxrayvision's wheel, `torchxrayvision/data/`), in roots "
        "where every image they name is a hard link to a tiny stand-in (built in "
        f"{built:.0f} s on {'tmpfs' if str(roots.base).startswith('/dev/shm') else 'disk'}). Each open in a fresh "
        "process, after an untimed open of the same split (warm file-system cache); memory = the peak resident set "
        "during the open above the one before it (imports done). `ds.targets[i]`: one item of a loop over the first "
        "20,000 items.",
        "",
        *table,
        "",
        f"Worst: {worst_s:.2f} s ({max(r['cpu'] for *_, r in rows):.2f} s CPU) and {worst_mb:.0f} MB (budget, issue "
        f"30: 3 s and 300 MB per split; `targets` O(1) per item). Load average {load:.2f} at the start, "
        f"{end_load:.2f} at the end: "
        + ("other jobs were running on the machine, so the wall times are longer than on an idle one (the CPU "
           "column is the open's own)." if max(load, end_load) > 1.5 else "the machine was otherwise idle."),
    ])
    from _record import record  # here, not at the top: the timed opens run this file in fresh processes

    record("real_files", "Opening the real datasets at their real scale (issue 30)",
           "python benchmarks/real_files.py", body, print_only=args.no_record)


if __name__ == "__main__":
    main()
