"""The few-shot step on this machine: benchxfer's marginal time per step vs a plain PyTorch loop.

The second study's few-shot cell (bit-hyperrule: full batches drawn from a 5-shot set, SGD Nesterov, AGC,
the last step tested, no validation pass) with ResNet-18 at 32 px, batch 128, on a synthetic CIFAR-10 set
in its real layout. benchxfer's training function (``train_run``, what ``benchxfer train FILE --trial N``
runs in-process) is timed for two run lengths; the difference over the difference in steps is its marginal
time per step (set-up and the test pass cancel out). The plain loop uses the same model, files and
transform (median seconds per step after a warm-up). Goal (issue 25): within 20 % of the plain loop.

    .venv/bin/python benchmarks/steps.py                 # records into BENCHMARKS.md
    .venv/bin/python benchmarks/steps.py --no-record --short 5 --long 15
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fewshot import FewShot, benchxfer_step, plain_step, write_set
from _record import record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=10, help="steps of the short benchxfer run (default 10)")
    parser.add_argument("--long", type=int, default=40, help="steps of the long benchxfer run (default 40)")
    parser.add_argument("--plain-steps", type=int, default=30, help="timed steps of the plain loop (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workers", type=int, default=0, help="loader processes, both loops (default 0)")
    parser.add_argument("--repeats", type=int, default=1, help="measure both this many times, keep the best")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cell = FewShot(workers=args.workers)

    ours, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_set(cell, Path(tmp))
        for _ in range(args.repeats):
            ours.append(benchxfer_step(cell, root, args.short, args.long))
            plain.append(plain_step(cell, root, warmup=3, steps=args.plain_steps))
    b, p = min(ours, key=lambda s: s.cpu), min(plain, key=lambda s: s.cpu)
    body = f"""
Few-shot cell of the second study's recipe (`bit-hyperrule`: full batches of {cell.batch} drawn from a
{cell.shots}-shot set of 10 classes, SGD Nesterov, AGC 0.01, no validation pass), {cell.arch} at {cell.size} px,
synthetic CIFAR-10 in its real layout, CPU, {args.threads} torch thread(s), {args.workers} loader process(es);
best of {args.repeats}.

| loop | CPU seconds per step (this process) | wall seconds per step |
|---|---|---|
| benchxfer `train_run` (marginal: {b.note}) | {b.cpu:.3f} | {b.wall:.3f} |
| plain PyTorch loop, same model, files and transform (mean of {args.plain_steps} steps) | {p.cpu:.3f} | {p.wall:.3f} |
| benchxfer / plain | {b.cpu / p.cpu:.2f} | {b.wall / p.wall:.2f} |

CPU time is the per-core figure (with 0 loader processes all the work is in the one process); the wall clock
depends on what else the machine runs.
Goal (issue 25): benchxfer within 20 % of the plain loop (ratio <= 1.20); before this issue's changes it was
0.75 s vs 0.25 s (3x).
"""
    print(body)
    if not args.no_record:
        record("steps", "Few-shot step: benchxfer vs a plain PyTorch loop (CPU)",
               "python benchmarks/steps.py" + "".join(f" {a}" for a in sys.argv[1:]), body)


if __name__ == "__main__":
    main()
