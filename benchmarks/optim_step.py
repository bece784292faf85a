"""One optimiser step on the CPU: torch's per-tensor loop (its CPU default), its foreach kernel, its fused kernel,
and what benchxfer's registry builds (``recipes.parts.OPTIMIZERS``), for each optimiser a recipe names, on a
ResNet-18's parameters (11.7M) with one compute thread, as a 1-CPU trial runs. The step alone is timed (the
forward and backward before it are not), median of ``--steps`` after two warm-up steps; the weights after the
steps are compared with the loop's.

    .venv/bin/python benchmarks/optim_step.py              # records into BENCHMARKS.md
    .venv/bin/python benchmarks/optim_step.py --no-record
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from _record import record  # noqa: E402

from benchxfer.recipes.parts import OPTIMIZERS  # noqa: E402

SETTINGS = {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}
TORCH = {  # the torch class and its keyword arguments for each registry name
    "adam": (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-4}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-4}),
    "sgd": (torch.optim.SGD, SETTINGS),
    "sgd-nesterov": (torch.optim.SGD, {**SETTINGS, "nesterov": True}),
}


def timed(model: torch.nn.Module, build, steps: int) -> tuple[float, torch.Tensor]:
    """Median ms of one ``opt.step()``, and the weights after the steps."""
    model = copy.deepcopy(model)
    opt = build(model.parameters())
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.rand(16, 14, generator=gen)
    times = []
    for i in range(steps + 2):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        t = time.perf_counter()
        opt.step()
        if i >= 2:
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), torch.cat([p.detach().flatten() for p in model.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=14)
    rows = ["| optimiser | loop (torch's CPU default), ms | foreach, ms | fused, ms | benchxfer's, ms | "
            "largest weight difference from the loop |", "|---|---:|---:|---:|---:|---:|"]
    for name in OPTIMIZERS.names():
        cls, kw = TORCH[name]
        loop, want = timed(model, functools.partial(cls, foreach=False, **kw), args.steps)
        foreach, _ = timed(model, functools.partial(cls, foreach=True, **kw), args.steps)
        fused, _ = timed(model, functools.partial(cls, fused=True, **kw), args.steps)
        ours, got = timed(model, functools.partial(OPTIMIZERS.get(name), **SETTINGS), args.steps)
        rows.append(f"| {name} | {loop:.1f} | {foreach:.1f} | {fused:.1f} | {ours:.1f} | "
                    f"{(got - want).abs().max().item():.1e} |")
        print(rows[-1], flush=True)
    body = (f"ResNet-18 (11.7M parameters), one compute thread, batch 16 at 32 px; the median of {args.steps} steps "
            "after two warm-up steps (the step alone).\n\n" + "\n".join(rows))
    record("optim_step", "Optimiser steps on the CPU", "python benchmarks/optim_step.py", body,
           print_only=args.no_record)


if __name__ == "__main__":
    main()
