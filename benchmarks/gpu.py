"""Issue 25's table on one GPU: benchxfer's training function next to the plain PyTorch ceiling, with ratios.

Rows (synthetic data in the real layouts, written into a temporary folder):

1. few-shot step: ``bit-hyperrule`` 10-shot, BiT R50x1 at 480 px (images 512 px), batch 128: benchxfer's
   marginal time per step (``train_run``, what ``benchxfer train FILE --trial N`` runs in-process) vs a plain
   loop over the same model, files and transform. Goal: >= 80 % of the plain loop's rate.
2. full-data epoch: ``systematic-cls``, ResNet-50 at 224 px, batch 32, 14 loader processes, 2,048 training +
   256 validation images (512 px PNGs): benchxfer's marginal epoch vs the slower of two ceilings, compute
   alone (a training step on tensors already on the GPU) and the loader alone (PNGs, and the exact cache).
   Goal: >= 85 % of the slower ceiling.
3. compute alone, ResNet-50 at 224 px: batch 32 vs batch 256 (images/s).
4. 1, 2 and 4 batch-32 ResNet-50 trainings (compute alone) in separate processes on the one GPU at once.

Needs only torch, torchvision, timm and benchxfer's own imports (albumentations, segmentation_models_pytorch):
Ray and MLflow are refused on import here, so a GPU node without them runs it. ``--small`` runs every row end
to end on a CPU in a few minutes (tiny models and images; its numbers check the script, not the hardware).

    python benchmarks/gpu.py                 # on the GPU node; prints the table (--record: into BENCHMARKS.md)
    python benchmarks/gpu.py --small         # CPU check of the whole script
"""

from __future__ import annotations

import sys

for _name in ("ray", "mlflow"):  # the GPU node has neither: prove that nothing here needs them
    sys.modules[_name] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fewshot import FewShot, benchxfer_step, plain_step, sync  # noqa: E402
from _record import record  # noqa: E402

from benchxfer import data  # noqa: E402
from benchxfer.data.cache import ORIGINAL, write_cache  # noqa: E402
from benchxfer.recipes import TrainConfig, get_recipe  # noqa: E402
from benchxfer.train.loop import train_run  # noqa: E402
from benchxfer.train.session import Runtime  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """What each row runs; ``--small`` shrinks everything for a CPU."""

    fewshot: FewShot
    fewshot_dataset_px: int
    fewshot_steps: tuple[int, int]  # the two run lengths of benchxfer's marginal step
    plain_steps: int
    cls_arch: str
    cls_size: int
    cls_batch: int
    cls_workers: int
    cls_train: int
    cls_val: int
    cls_image_px: int
    big_batch: int
    compute_seconds: float
    processes: tuple[int, ...]


GPU = Sizes(FewShot(arch="bit-r50x1", size=480, batch=128, shots=10, dataset="pets", image_px=512, workers=14),
            512, (5, 25), 20, "resnet50", 224, 32, 14, 2048, 256, 512, 256, 10.0, (1, 2, 4))
SMALL = Sizes(FewShot(arch="resnet18", size=32, batch=16, shots=2, dataset="pets", image_px=40, workers=1),
              40, (2, 5), 3, "resnet18", 32, 8, 1, 48, 16, 40, 32, 3.0, (1, 2))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- row 1: the few-shot step ------------------------------------------------------------------------

def fewshot_row(s: Sizes, tmp: Path, profile: Path | None = None) -> dict:
    cell = s.fewshot
    root = data.synthetic.write(cell.dataset, tmp / "fewshot", n_train=max(8 * cell.shots, 40), n_val=0,
                                n_test=cell.batch, size=s.fewshot_dataset_px, seed=1)
    ours = benchxfer_step(cell, root, *s.fewshot_steps)
    plain = plain_step(cell, root, warmup=3, steps=s.plain_steps)
    if profile is not None:
        profile_fewshot(s, root, tmp, profile)
    return {"row": f"few-shot step: bit-hyperrule {cell.shots}-shot, {cell.arch}, {cell.size} px, batch {cell.batch}",
            "benchxfer_s": ours.wall, "plain_s": plain.wall, "share": plain.wall / ours.wall, "goal": 0.80}


def profile_fewshot(s: Sizes, root: Path, tmp: Path, folder: Path) -> None:
    """Row 1 once more under torch.profiler (CPU, and CUDA where there is a GPU): benchxfer's long run and the plain
    loop, each written to ``folder`` as tables of the top operators (by own CPU time and by own device time) and a
    Chrome trace, to find where benchxfer's step spends what the plain one does not."""
    from torch.profiler import ProfilerActivity, profile

    folder.mkdir(parents=True, exist_ok=True)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    cell, steps = s.fewshot, s.fewshot_steps[1]
    runs = {"benchxfer": lambda: train_run(cell.config(root, steps), Runtime(trial_dir=str(tmp / "profiled"))),
            "plain": lambda: plain_step(cell, root, warmup=3, steps=s.plain_steps)}
    for name, run in runs.items():
        with profile(activities=acts) as prof:
            run()
            sync()
        events = prof.key_averages()
        keys = ("self_cpu_time_total", "self_device_time_total" if torch.cuda.is_available() else "cpu_time_total")
        tables = [f"# {name}: {cell.arch} {cell.size} px, batch {cell.batch}, sorted by {key}\n\n"
                  + events.table(sort_by=key, row_limit=30) for key in keys]
        (folder / f"{name}.txt").write_text("\n\n".join(tables))
        prof.export_chrome_trace(str(folder / f"{name}.trace.json"))
        print(f"profile of {name}: {folder / f'{name}.txt'}", flush=True)


# --- row 2: the full-data epoch, and its two ceilings ------------------------------------------------------

def cls_config(s: Sizes, root: Path, epochs: int, cache_dir: Path | None = None) -> TrainConfig:
    knobs = get_recipe("systematic-cls").resolve(
        {"arch": s.cls_arch, "size": s.cls_size, "batch_size": s.cls_batch, "epochs": epochs,
         "loader_workers": s.cls_workers, "patience": 100}, "benchmark")
    options = {"cache_dir": str(cache_dir)} if cache_dir else {}
    return TrainConfig.from_dict({**knobs, "trial_key": f"cls{epochs}", "dataset": "chestxray14",
                                  "root": str(root), "lr": 1e-3, "seed": 0, "dataset_options": options})


def benchxfer_epoch(s: Sizes, root: Path, cache_dir: Path | None = None) -> float:
    """Seconds of one marginal epoch (training + validation): T(3 epochs) - T(1 epoch), halved, after a warm-up.
    ``cache_dir``: where the exact cache is (the run reads it, as any run does when a fresh one exists)."""
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in (1, 1, 3):
            t0 = time.perf_counter()
            train_run(cls_config(s, root, epochs, cache_dir), Runtime(trial_dir=f"{tmp}/e{epochs}-{len(walls)}"))
            sync()
            walls[epochs] = time.perf_counter() - t0
    return (walls[3] - walls[1]) / 2


def loader_alone(s: Sizes, root: Path, cache_dir: Path | None) -> float:
    """Images/s of the training loader alone (the run's transform, its loader processes, pinned on a GPU)."""
    from torch.utils.data import DataLoader

    from benchxfer.data import transforms

    cfg = cls_config(s, root, 1)
    tf = transforms.build(cfg.augment, train=True, size=cfg.size, mean=transforms.CXR_MEAN, std=transforms.CXR_STD)
    extra = {"cache_dir": cache_dir} if cache_dir else {}
    ds = data.open_dataset("chestxray14", root, "train", transform=tf, **extra)
    assert (ds.cache is not None) == bool(cache_dir)
    loader = DataLoader(ds, batch_size=s.cls_batch, shuffle=True, num_workers=s.cls_workers, drop_last=True,
                        pin_memory=torch.cuda.is_available(), persistent_workers=True, prefetch_factor=4)
    for _ in loader:  # warm-up pass: processes started, files in the page cache
        pass
    n, t0 = 0, time.perf_counter()
    for x, _y in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def compute_alone(arch: str, size: int, batch: int, seconds: float, classes: int = 14) -> float:
    """Images/s of training steps on one batch already on the device (bf16 autocast, channels-last on a GPU)."""
    from benchxfer import models

    dev = device()
    cuda = dev.type == "cuda"
    model = models.build_model(arch, "multilabel", classes).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=dev)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, classes, device=dev) > 0.5).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext

    def step():
        with amp():
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    sync()
    return n / (time.perf_counter() - t0)


def epoch_row(s: Sizes, tmp: Path) -> tuple[dict, dict]:
    root = data.synthetic.write("chestxray14", tmp / "cls", n_train=s.cls_train, n_val=s.cls_val, n_test=s.cls_batch,
                                size=s.cls_image_px, seed=2)
    epoch = benchxfer_epoch(s, root)
    ours = (s.cls_train + s.cls_val) / epoch
    compute = compute_alone(s.cls_arch, s.cls_size, s.cls_batch, s.compute_seconds)
    png = loader_alone(s, root, None)
    write_cache("chestxray14", root, ORIGINAL, cache_dir=tmp / "cache", workers=max(1, s.cls_workers))
    exact = loader_alone(s, root, tmp / "cache")
    ours_exact = (s.cls_train + s.cls_val) / benchxfer_epoch(s, root, tmp / "cache")
    ceiling = min(compute, png)
    row = {"row": f"full-data epoch: systematic-cls, {s.cls_arch}, {s.cls_size} px, batch {s.cls_batch}, "
                  f"{s.cls_workers} loader processes, {s.cls_train} + {s.cls_val} images",
           "benchxfer_img_s": ours, "epoch_s": epoch, "compute_img_s": compute, "png_loader_img_s": png,
           "exact_cache_loader_img_s": exact, "share": ours / ceiling, "goal": 0.85,
           "benchxfer_exact_cache_img_s": ours_exact, "share_exact_cache": ours_exact / min(compute, exact)}
    return row, {"compute": compute}


# --- rows 3 and 4: compute alone ------------------------------------------------------------------------

def _compute_worker(args: tuple[str, int, int, float], out) -> None:
    out.put(compute_alone(*args))


def processes_row(s: Sizes) -> dict:
    """Total images/s of k batch-32 trainings in k processes on the one device, started together."""
    ctx = mp.get_context("spawn")
    totals = {}
    for k in s.processes:
        q = ctx.Queue()
        procs = [ctx.Process(target=_compute_worker, args=((s.cls_arch, s.cls_size, s.cls_batch, s.compute_seconds), q))
                 for _ in range(k)]
        for p in procs:
            p.start()
        rates = [q.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        totals[k] = sum(rates)
    return {"row": f"{'/'.join(map(str, s.processes))} batch-{s.cls_batch} {s.cls_arch} trainings at once "
                   "(compute alone, separate processes)", "img_s": totals,
            "gain": {k: totals[k] / totals[s.processes[0]] for k in totals}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny sizes: check the script end to end on a CPU")
    parser.add_argument("--rows", default="1,2,3,4", help="which rows (default 1,2,3,4)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--record", action="store_true", help="write the table into BENCHMARKS.md")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="row 1 once more under torch.profiler: top operators and Chrome traces of benchxfer's run "
                             "and of the plain loop, written to DIR")
    args = parser.parse_args()
    s = SMALL if args.small else GPU
    if not args.small and not torch.cuda.is_available():
        sys.exit("no GPU here: run with --small for the CPU check")
    if args.small:
        torch.set_num_threads(1)
        s = replace(s, fewshot=replace(s.fewshot, workers=1))
    rows = {int(r) for r in args.rows.split(",") if r}
    out: dict = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "small": args.small}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if 1 in rows:
            out["fewshot"] = fewshot_row(s, tmp, args.profile)
            print(json.dumps(out["fewshot"]), flush=True)
        if 2 in rows:
            out["epoch"], _ = epoch_row(s, tmp)
            print(json.dumps(out["epoch"]), flush=True)
    if 3 in rows:
        small, big = (compute_alone(s.cls_arch, s.cls_size, b, s.compute_seconds) for b in (s.cls_batch, s.big_batch))
        out["batch"] = {"row": f"compute alone, {s.cls_arch} {s.cls_size} px: batch {s.cls_batch} vs {s.big_batch}",
                        "img_s": {s.cls_batch: small, s.big_batch: big}, "share_of_big": small / big}
        print(json.dumps(out["batch"]), flush=True)
    if 4 in rows:
        out["processes"] = processes_row(s)
        print(json.dumps(out["processes"]), flush=True)
    body = table(out)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    if args.record:
        record("gpu-small" if args.small else "gpu", "Issue 25's table: benchxfer vs the plain PyTorch ceiling"
               + (" (--small, CPU check of the script)" if args.small else " on a GPU"),
               "python benchmarks/gpu.py" + "".join(f" {a}" for a in sys.argv[1:]), body)


def table(out: dict) -> str:
    lines = [f"Device: {out['device']}" + (" (--small: tiny sizes, a check of the script)" if out["small"] else ""),
             "", "| what | benchxfer | plain PyTorch ceiling | benchxfer / ceiling | goal |", "|---|---|---|---|---|"]
    if "fewshot" in out:
        r = out["fewshot"]
        lines.append(f"| {r['row']} | {r['benchxfer_s']:.3f} s/step | {r['plain_s']:.3f} s/step | "
                     f"{r['share']:.0%} of the plain rate | >= {r['goal']:.0%} |")
    if "epoch" in out:
        r = out["epoch"]
        lines.append(f"| {r['row']} | {r['benchxfer_img_s']:.0f} img/s ({r['epoch_s']:.2f} s/epoch) | compute "
                     f"{r['compute_img_s']:.0f} img/s; PNG loader {r['png_loader_img_s']:.0f} img/s (exact cache "
                     f"{r['exact_cache_loader_img_s']:.0f}) | {r['share']:.0%} of the slower | >= {r['goal']:.0%} |")
        lines.append(f"| the same epoch from the exact cache (`original`) | {r['benchxfer_exact_cache_img_s']:.0f} img/s | "
                     f"compute {r['compute_img_s']:.0f} img/s; exact-cache loader {r['exact_cache_loader_img_s']:.0f} "
                     f"img/s | {r['share_exact_cache']:.0%} of the slower | - |")
    if "batch" in out:
        r = out["batch"]
        (b1, v1), (b2, v2) = r["img_s"].items()
        lines.append(f"| {r['row']} | - | {v1:.0f} vs {v2:.0f} img/s | batch {b1} uses {r['share_of_big']:.0%} | - |")
    if "processes" in out:
        r = out["processes"]
        rates = " / ".join(f"{v:.0f}" for v in r["img_s"].values())
        gains = " / ".join(f"{v:.2f}x" for v in r["gain"].values())
        lines.append(f"| {r['row']} | - | {rates} img/s together | {gains} | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
