"""Peak GPU memory of one optimiser step through benchxfer's own gradient accumulation
(:func:`benchxfer.train.loop.accumulate_gradients`), per (arch, size, images per worker, micro-batch), next to the
estimate of :mod:`benchxfer.gpu_memory`. The setting of the measured table: SGD with Nesterov momentum, bf16
autocast, channels-last, random inputs, one worker's batch.

    python benchmarks/microbatch_memory.py            # on a GPU: the rows below
    python benchmarks/microbatch_memory.py --small    # on CPU: a tiny run that checks the script end to end

Prints one line per row: arch, size, batch, micro-batch, measured peak (torch.cuda.max_memory_allocated) and the
estimate. Needs torch, torchvision and timm (no Ray, no MLflow).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from benchxfer import gpu_memory, models
from benchxfer.recipes.parts import OPTIMIZERS, loss_for
from benchxfer.train.loop import accumulate_gradients

ROWS = [  # arch, size, images per worker, micro_batch (0: the whole batch)
    ("bit-r152x4", 480, 32, 4),
    ("bit-r152x4", 480, 32, 8),
    ("bit-r152x4", 480, 32, 0),
    ("bit-r50x1", 480, 32, 0),
    ("bit-r50x1", 480, 32, 4),
    ("resnet50", 224, 32, 0),
]
SMALL = [("resnet18", 32, 8, 0), ("resnet18", 32, 8, 2)]


def one_step(arch: str, size: int, batch: int, micro: int, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    with device:
        model = models.build_model(arch, "multiclass", 10)
    model = models.channels_last(model.to(device), cuda).train()
    opt = OPTIMIZERS.get("sgd-nesterov")(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=0.0)
    x = torch.randn(batch, 3, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    accumulate_gradients(model, loss_for("ce", "multiclass"), x, y, None, micro, autocast)
    opt.step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else float("nan")
    images = micro if 0 < micro < batch else batch
    est = gpu_memory.estimate(arch, size, images)
    del model, opt, x, y
    if cuda:
        torch.cuda.empty_cache()
    return {"arch": arch, "size": size, "batch": batch, "micro_batch": micro, "images_per_pass": images,
            "peak_gb": round(peak, 2), "estimate_gb": None if est is None else round(est.gb, 2),
            "estimate_basis": None if est is None else est.basis, "step_s": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny rows on CPU, to check the script")
    ap.add_argument("--out", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    device = torch.device("cuda") if torch.cuda.is_available() and not args.small else torch.device("cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    rows = []
    for arch, size, batch, micro in SMALL if args.small else ROWS:
        if device.type == "cuda":
            one_step(arch, size, batch, micro, device)  # warm-up: cuDNN's workspace choice, lazy inits
        row = one_step(arch, size, batch, micro, device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
