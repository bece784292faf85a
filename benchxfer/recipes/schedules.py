"""Learning-rate schedules. Library schedulers where they exist; BiT-HyperRule written once here.

Each schedule builder returns a :class:`Schedule`: a torch scheduler and whether it steps per
optimiser step or per epoch (``ReduceLROnPlateau`` steps per epoch on the validation loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from benchxfer.registry import Registry


@dataclass
class Schedule:
    scheduler: LRScheduler | ReduceLROnPlateau
    per_step: bool  # True: step after every optimiser step; False: once per epoch
    on_metric: bool = False  # True: step(val_loss)


@dataclass(frozen=True)
class ScheduleInput:
    epochs: int
    steps_per_epoch: int
    n_train: int
    warmup_epochs: int
    plateau_factor: float
    plateau_patience: int
    plateau_threshold: float
    workers: int = 1  # data-parallel workers (the chest pre-training's warm-up starts at lr / workers)


SCHEDULES: Registry[Callable[[Optimizer, ScheduleInput], Schedule]] = Registry("schedule")


@SCHEDULES.register("constant")
def constant(opt: Optimizer, s: ScheduleInput) -> Schedule:
    return Schedule(LambdaLR(opt, lambda _: 1.0), per_step=False)


@SCHEDULES.register("plateau")
def plateau(opt: Optimizer, s: ScheduleInput) -> Schedule:
    sched = ReduceLROnPlateau(opt, mode="min", factor=s.plateau_factor, patience=s.plateau_patience,
                              threshold=s.plateau_threshold)
    return Schedule(sched, per_step=False, on_metric=True)


def cosine_epoch_factor(epoch: int, epochs: int) -> float:
    """The first study's segmentation schedule: lr/2 * (cos(pi * epoch / epochs) + 1), as a factor of lr."""
    return 0.5 * (math.cos(math.pi * epoch / epochs) + 1.0)


@SCHEDULES.register("cosine-epoch")
def cosine_epoch(opt: Optimizer, s: ScheduleInput) -> Schedule:
    """The study sets the lr AFTER each epoch (Version1/engine.py: ``cosine_anneal_schedule(epoch, ...)`` once
    epoch ``epoch`` has trained), so epoch 0 trains at the full lr and epoch e >= 1 at factor(e - 1)."""
    return Schedule(LambdaLR(opt, lambda e: cosine_epoch_factor(max(e - 1, 0), s.epochs)), per_step=False)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (math.cos(math.pi * min(1.0, progress)) + 1.0)


@SCHEDULES.register("warmup-cosine")
def warmup_cosine(opt: Optimizer, s: ScheduleInput) -> Schedule:
    warm, total = s.warmup_epochs * s.steps_per_epoch, s.epochs * s.steps_per_epoch
    return Schedule(LambdaLR(opt, lambda step: warmup_cosine_factor(step, warm, total)), per_step=True)


# --- BiT-HyperRule ---------------------------------------------------------------------------------

def bit_boundaries(n_train: int) -> list[int]:
    """BiT-HyperRule's step boundaries by training-set size."""
    if n_train < 20_000:
        return [100, 200, 300, 400, 500]
    if n_train < 500_000:
        return [500, 3000, 6000, 9000, 10000]
    return [500, 6000, 12000, 18000, 20000]


def bit_mixup(n_train: int) -> float:
    """BiT-HyperRule's MixUp alpha: 0.1 from 20k training examples, otherwise none."""
    return 0.1 if n_train >= 20_000 else 0.0


def bit_lr_factor(step: int, boundaries: list[int]) -> float:
    """The factor of the base lr at ``step``: linear warm-up to the first boundary, then /10 after each
    later boundary (as the reference implementation: a boundary ``b`` applies once ``step > b``).
    Training stops at the last boundary."""
    if step < boundaries[0]:
        return step / boundaries[0]
    return 0.1 ** sum(1 for b in boundaries[1:] if b < step)


PRETRAIN_MILESTONES = (30, 60, 80)  # the second study's chest pre-training: lr / 10 at these epochs


def warmup_step_factor(step: int, warmup_steps: int, steps_per_epoch: int, workers: int = 1,
                       milestones: tuple[int, ...] = PRETRAIN_MILESTONES) -> float:
    """The second study's pre-training lr (Goyal et al.'s warm-up, as its ``adjust_learning_rate_step``): the
    factor of the full lr at optimiser step ``step`` (from 0). During the warm-up, with e = (step + 1) /
    steps_per_epoch epochs done after this step and K = ``workers``: (1 / K) (e (K - 1) / warmup_epochs + 1),
    a line from lr / K (one worker's lr) to lr; one worker has no warm-up. Then lr / 10 at each milestone
    epoch passed."""
    epoch = step // max(1, steps_per_epoch)
    if warmup_steps and step < warmup_steps:
        warmup_epochs = warmup_steps / max(1, steps_per_epoch)
        done = (step + 1) / max(1, steps_per_epoch)
        return (done * (workers - 1) / warmup_epochs + 1) / workers
    return 0.1 ** sum(1 for m in milestones if epoch >= m)


@SCHEDULES.register("warmup-step")
def warmup_step(opt: Optimizer, s: ScheduleInput) -> Schedule:
    warm = s.warmup_epochs * s.steps_per_epoch
    return Schedule(LambdaLR(opt, lambda step: warmup_step_factor(step, warm, s.steps_per_epoch, s.workers)),
                    per_step=True)


@SCHEDULES.register("bit-hyperrule")
def bit_hyperrule(opt: Optimizer, s: ScheduleInput) -> Schedule:
    bounds = bit_boundaries(s.n_train)
    return Schedule(LambdaLR(opt, lambda step: bit_lr_factor(step, bounds)), per_step=True)


def build_schedule(name: str, opt: Optimizer, s: ScheduleInput) -> Schedule:
    return SCHEDULES.get(name)(opt, s)


def current_lr(opt: Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


__all__ = ["SCHEDULES", "Schedule", "ScheduleInput", "bit_boundaries", "bit_lr_factor", "bit_mixup",
           "build_schedule", "cosine_epoch_factor", "current_lr", "warmup_cosine_factor", "warmup_step_factor"]
