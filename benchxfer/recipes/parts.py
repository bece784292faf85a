"""Optimisers, losses and stopping rules that recipes name, each in a registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from benchxfer.registry import Registry

# --- optimisers ------------------------------------------------------------------------------------

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")


def _kernel(params: Iterable) -> tuple[list, dict[str, bool]]:
    """The parameters as a list, and the step's implementation: torch's fused kernel where every parameter is on
    the CPU, whose default there is a loop over the tensors one by one, several times slower (BENCHMARKS.md,
    "Optimiser steps on the CPU"); on a GPU, torch's own default, as no GPU measured another. One step is the
    loop's update to rounding (tests/test_loop_protocol.py); over a run the rounding grows, as with any other
    order of the same float arithmetic (the table gives the weights' largest difference from the loop)."""
    params = list(params)
    on_cpu = bool(params) and all(isinstance(p, torch.Tensor) and p.device.type == "cpu" for p in params)
    return params, {"fused": True} if on_cpu else {}


@OPTIMIZERS.register("adam")
def adam(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params, kernel = _kernel(params)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kernel)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params, kernel = _kernel(params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kernel)


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    params, kernel = _kernel(params)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **kernel)


@OPTIMIZERS.register("sgd-nesterov")
def sgd_nesterov(params: Iterable, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum (the second study's fine-tuning and chest pre-training)."""
    params, kernel = _kernel(params)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True, **kernel)


# --- losses ----------------------------------------------------------------------------------------
# A loss takes (logits, target, label_mask) and returns one loss per sample (shape [B]), so that the
# training step can average it and evaluation can gather it per sample across workers.

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
LOSSES: Registry[LossFn] = Registry("loss")


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


@LOSSES.register("bce")
def bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    target = target.reshape(logits.shape).to(logits.dtype)
    return _per_sample(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))


@LOSSES.register("ce")
def ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if target.dim() == logits.dim():  # soft targets (MixUp)
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return F.cross_entropy(logits.float(), target.long(), reduction="none")


@LOSSES.register("masked-bce")
def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """BCE averaged over the batch's known cells (the second study's pre-training loss,
    ``binary_cross_entropy_with_logits(output[mask], target[mask])``): missing and uncertain labels (mask 0) do
    not count. Per sample: its known cells' loss sum x batch size / the batch's known cells, so that the mean
    over the batch is that average (a batch with no known cell: 0). In micro-batches each piece averages its own
    known cells, weighted by its share: the study's rule for sub-batches (``loss.div_(n_sub_batches)``)."""
    loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    if mask is None:
        return loss.mean(dim=1)
    mask = mask.to(loss.dtype)
    return (loss * mask).sum(dim=1) * (len(loss) / mask.sum().clamp_min(1.0))


@LOSSES.register("dice")
def soft_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole flattened batch, smoothing 1 (the first study's segmentation loss).

    One value for the batch, repeated per sample so that the step's ``.mean()`` returns it unchanged.
    """
    prob = torch.sigmoid(logits.float()).reshape(-1)
    tgt = target.float().reshape(-1)
    loss = 1.0 - (2.0 * (prob * tgt).sum() + smooth) / (prob.sum() + tgt.sum() + smooth)
    return loss.expand(logits.shape[0])


@LOSSES.register("dice-per-image")
def soft_dice_per_image(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                        smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice with smoothing 1, per image (not the study's loss; an explicit option)."""
    prob = torch.sigmoid(logits.float()).reshape(logits.shape[0], -1)
    tgt = target.float().reshape(logits.shape[0], -1)
    inter = (prob * tgt).sum(dim=1)
    return 1.0 - (2.0 * inter + smooth) / (prob.sum(dim=1) + tgt.sum(dim=1) + smooth)


@LOSSES.register("bce-dice")
def bce_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return bce(logits, target) + soft_dice(logits, target)


# Losses that are one value over the whole batch, not a mean of per-sample terms: the gradient of a batch cannot
# be accumulated from micro-batches of it (a ratio of sums is not a sum of ratios), so `micro_batch` refuses them.
WHOLE_BATCH_LOSSES = frozenset({"dice", "bce-dice"})


def loss_name(name: str, task: str) -> str:
    """The loss a knob value means: ``auto`` is the task's own."""
    if name == "auto":
        from benchxfer.tasks import get_task

        return get_task(task).loss
    return name


def check_micro_batch(knobs: dict, task: str, where: str) -> None:
    """Refuse micro-batches where the accumulated gradient could not be the batch's: a whole-batch loss, or a net
    with BatchNorm (each piece normalised by its own statistics, the running statistics moved once per piece)."""
    from benchxfer.errors import BenchxferError
    from benchxfer.models import ARCHS, has_batch_norm
    from benchxfer.tasks import get_task

    micro = knobs.get("micro_batch", 0)
    if not micro:
        return
    name = loss_name(knobs.get("loss", "auto"), task)
    if name in WHOLE_BATCH_LOSSES:
        raise BenchxferError(
            f"{where}: micro_batch {micro} with loss {name!r}: that loss is one value over the whole "
            "batch (a Dice of the flattened batch), so micro-batches cannot give its gradient; use micro_batch 0, "
            f"or a per-sample loss ({', '.join(n for n in LOSSES.names() if n not in WHOLE_BATCH_LOSSES)})")
    arch = knobs.get("arch", "resnet50")
    if arch in ARCHS.names() and has_batch_norm(arch, task):
        group_norm = [n for n, a in ARCHS.items() if not a.batch_norm]
        raise BenchxferError(
            f"{where}: micro_batch {micro} on a {arch} {'U-Net' if get_task(task).dense else 'net'} with BatchNorm: "
            f"each micro-batch would be normalised by its own statistics and move the running statistics once per "
            f"piece, so the step is not the batch's; use micro_batch 0, or a GroupNorm arch ({', '.join(group_norm)})")


def loss_for(name: str, task: str) -> LossFn:
    """``auto`` is the task's own loss (``benchxfer.tasks``: BCE multi-label, cross-entropy multi-class and
    binary, Dice for masks)."""
    return LOSSES.get(loss_name(name, task))


# --- stopping rules --------------------------------------------------------------------------------

@dataclass
class EarlyStopping:
    """Stop once the monitored value (lower is better) has gone MORE than ``patience`` epochs without
    improving (the first study: ``patience`` 10 stops at the 11th epoch without improvement)."""

    patience: int
    best: float = float("inf")
    bad_epochs: int = 0

    def update(self, value: float) -> bool:
        """Record one epoch's value; return True when it is a new best."""
        if value < self.best:
            self.best, self.bad_epochs = value, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs > self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "patience": self.patience}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


STOPPING: Registry[Callable[[int], EarlyStopping]] = Registry("stopping rule")
# "early": patience on val loss; "steps"/"none": never early (the epoch or step budget ends training);
# all three still track the best epoch, which is the one tested.
STOPPING.add("early", lambda patience: EarlyStopping(patience))
STOPPING.add("steps", lambda patience: EarlyStopping(10**9))
STOPPING.add("none", lambda patience: EarlyStopping(10**9))


def mixup_lambda(alpha: float, seed: int, step: int) -> float:
    """The MixUp weight of optimiser step ``step``: one Beta(alpha, alpha) draw per step for the whole global
    batch (the second study's finetune.py draws it once per step, for all its micro-batches), from a generator
    seeded by (seed, step) so that every DDP worker draws the same one."""
    return float(np.random.default_rng([int(seed), int(step)]).beta(alpha, alpha))


def mixup(images: torch.Tensor, target: torch.Tensor, lam: float, num_classes: int,
          generator: torch.Generator | None = None, group: int | list[int] = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp as the second study's ``mixup_data``: each sample mixed with the one a random permutation
    (``torch.randperm``) pairs it with, weight ``lam``; targets become the same mix of one-hot targets (for
    cross-entropy and BCE, the study's lam * loss(y_a) + (1 - lam) * loss(y_b)). ``group`` > 0: one permutation per
    consecutive ``group`` images, as the study called ``mixup_data`` on each micro-batch (of 4: a quarter of the
    images are paired with themselves), or a list: the micro-batches' sizes; 0: one over the whole batch."""
    n = images.shape[0]
    if isinstance(group, int):
        size = group if 0 < group < n else n
        group = [min(size, n - a) for a in range(0, n, size)]
    starts = np.cumsum([0, *group[:-1]]).tolist()
    perm = torch.cat([a + torch.randperm(k, generator=generator) for a, k in zip(starts, group)]).to(images.device)
    if target.dim() == 1 and num_classes > 1:
        target = F.one_hot(target.long(), num_classes).float()
    target = target.float()
    return lam * images + (1 - lam) * images[perm], lam * target + (1 - lam) * target[perm]


__all__ = ["LOSSES", "OPTIMIZERS", "STOPPING", "WHOLE_BATCH_LOSSES", "EarlyStopping", "check_micro_batch", "loss_for",
           "loss_name", "mixup", "mixup_lambda"]
