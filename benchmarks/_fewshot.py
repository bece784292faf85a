"""The few-shot step, measured two ways on the same model, files and transform: benchxfer's training function
(``train_run``, what ``benchxfer train FILE --trial N`` runs in-process: no Ray, no MLflow) and a plain PyTorch
loop. Both report the marginal time per step (the difference of two run lengths, so set-up and the test pass
cancel out). Needs only torch, torchvision, timm and benchxfer's own imports (albumentations, smp)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchxfer import data
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.train.loop import train_run
from benchxfer.train.session import Runtime


@dataclass(frozen=True)
class FewShot:
    """One few-shot cell: the second study's recipe (bit-hyperrule) on a synthetic set in its real layout."""

    arch: str = "resnet18"
    size: int = 32
    batch: int = 128
    shots: int = 5
    dataset: str = "cifar10"
    image_px: int = 32  # stored image size (cifar10 is 32 px whatever is asked)
    workers: int = 0  # loader processes
    amp: bool = True  # used on a GPU only

    def knobs(self, steps: int) -> dict:
        return get_recipe("bit-hyperrule").resolve(
            {"arch": self.arch, "size": self.size, "batch_size": self.batch, "max_steps": steps,
             "loader_workers": self.workers, "amp": self.amp}, "benchmark")

    def config(self, root: Path, steps: int) -> TrainConfig:
        return TrainConfig.from_dict({**self.knobs(steps), "trial_key": f"bench{steps}", "dataset": self.dataset,
                                      "root": str(root), "lr": 0.001, "seed": 0, "shot": self.shots})


def write_set(cell: FewShot, folder: Path) -> Path:
    n_train = max(10 * cell.shots * 2, 40)
    return data.synthetic.write(cell.dataset, folder / cell.dataset, n_train=n_train, n_val=0, n_test=cell.batch,
                                size=cell.image_px, seed=1)


@dataclass(frozen=True)
class PerStep:
    wall: float  # seconds per step, wall clock
    cpu: float  # CPU seconds of this process per step (the per-core figure on a shared machine)
    note: str = ""


def benchxfer_step(cell: FewShot, root: Path, short: int, long: int) -> PerStep:
    """Marginal time per step: (T(long) - T(short)) / (long - short), after one warm-up run (imports, caches)."""
    walls, cpus = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (short, short, long):
            w, c = time.perf_counter(), time.process_time()
            train_run(cell.config(root, steps), Runtime(trial_dir=f"{tmp}/t{steps}-{len(walls)}"))
            sync()
            walls[steps], cpus[steps] = time.perf_counter() - w, time.process_time() - c
    n = long - short
    return PerStep((walls[long] - walls[short]) / n, (cpus[long] - cpus[short]) / n,
                   f"{short} vs {long} steps took {walls[short]:.1f} s and {walls[long]:.1f} s")


def plain_step(cell: FewShot, root: Path, warmup: int, steps: int) -> PerStep:
    """The ceiling: the same model, files and transform in a plain loop (one DataLoader for the whole run, a
    random batch of the few-shot set each step, SGD with Nesterov, AGC, cross-entropy); mean over the timed
    steps after ``warmup``."""
    from timm.utils.agc import adaptive_clip_grad
    from torch.utils.data import DataLoader, RandomSampler

    from benchxfer import models
    from benchxfer.data import transforms
    from benchxfer.zoo.backbone import HEAD_PREFIXES

    cfg = cell.config(root, warmup + steps)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tf = transforms.build(cfg.augment, train=True, size=cfg.size, task="multiclass", dataset=cfg.dataset)
    ds = data.open_dataset(cfg.dataset, root, "train", transform=tf, shots=cfg.shot, seed=cfg.seed)
    sampler = RandomSampler(range(len(ds)), replacement=True, num_samples=cell.batch * (warmup + steps))
    loader = DataLoader(ds, batch_size=cell.batch, sampler=sampler, num_workers=cell.workers,
                        pin_memory=device.type == "cuda", persistent_workers=cell.workers > 0,
                        prefetch_factor=4 if cell.workers else None)
    model = models.build_model(cfg.arch, "multiclass", 10, cfg.head_init).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    clipped = [p for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIXES)]
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and cell.amp else contextlib.nullcontext()
    model.train()
    for k, (x, y) in enumerate(loader):
        if k == warmup:
            sync()
            w, c = time.perf_counter(), time.process_time()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp:
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        adaptive_clip_grad(clipped, clip_factor=0.01, eps=1e-3)
        opt.step()
        float(loss.detach())  # the step is done (benchxfer's loop reads the loss once an epoch)
    sync()
    return PerStep((time.perf_counter() - w) / steps, (time.process_time() - c) / steps)


def sync() -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
