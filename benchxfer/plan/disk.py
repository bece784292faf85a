"""A sweep's disk: what one trial's folder holds while it runs and once it is final, the whole sweep's, and whether
the home has room for it.

Counted, not measured: a trial's weights are its model's parameters and buffers, counted on the meta device (no
weights are loaded or allocated), at 4 bytes each (fp32; AMP keeps fp32 weights). An epoch checkpoint
(``train.checkpoint``) holds the model, the optimiser's state (:data:`OPTIMISER_COPIES` copies of the weights) and
the best weights so far, so ``2 + copies`` times the weights (RNG, schedule and history are a few KB). While a trial
runs its folder holds at most ``CheckpointStore.keep`` epoch files and the one being written (the oldest is removed
only after the rename). Once it is final it keeps what the sweep's ``keep`` names (:data:`benchxfer.trialdir.KEEP`):
the selected weights (1x), nothing, or its last ``keep`` epoch files. ``tests/test_disk.py`` holds these counts
against the files a real trial writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from benchxfer.errors import BenchxferError

BYTES_PER_WEIGHT = 4  # fp32
# the optimiser's state in copies of the weights: SGD's momentum buffer, Adam's two moments
OPTIMISER_COPIES = {"sgd": 1, "sgd-nesterov": 1, "adam": 2, "adamw": 2}
KEPT_EPOCH_FILES = 2  # CheckpointStore's default keep (train.checkpoint)


@lru_cache(maxsize=None)
def weights_of(arch: str, task: str, num_classes: int) -> int:
    """Parameters and buffers of the model a trial trains (counted on the meta device)."""
    import torch

    from benchxfer import models

    with torch.device("meta"):
        model = models.build_model(arch, task, num_classes)
    return sum(t.numel() for t in model.state_dict().values())


@dataclass(frozen=True)
class TrialDisk:
    """One trial's folder in bytes: at most while it runs, and once it is final."""

    running: int
    final: int

    @property
    def epoch_file(self) -> int:
        """One epoch checkpoint: what the trial's next save needs free."""
        return self.running // (KEPT_EPOCH_FILES + 1)


def trial_disk(weights: int, optimizer: str, momentum: float, keep: str) -> TrialDisk:
    copies = OPTIMISER_COPIES.get(optimizer, max(OPTIMISER_COPIES.values()))
    if optimizer.startswith("sgd") and not momentum:
        copies = 0
    epoch_file = (2 + copies) * weights * BYTES_PER_WEIGHT
    final = {"selected": weights * BYTES_PER_WEIGHT, "none": 0, "checkpoint": KEPT_EPOCH_FILES * epoch_file}[keep]
    return TrialDisk(running=(KEPT_EPOCH_FILES + 1) * epoch_file, final=final)


def of_trial(trial, keep: str) -> TrialDisk:
    """A planned trial's disk (``trial``: a :class:`benchxfer.trial.Trial`)."""
    from benchxfer.data import DATASETS

    c = trial.config
    try:
        classes = DATASETS.get(trial.dataset).num_classes(c.root or None)
    except (BenchxferError, OSError):
        classes = 0
    # a folder dataset not on this machine, or whose class folders are not there yet (the dry run of a file whose
    # roots are still to be filled): count a 2-class head, a small part of the weights
    classes = classes or 2
    return trial_disk(weights_of(c.arch, trial.task, classes), c.optimizer, c.momentum, keep)


@dataclass(frozen=True)
class SweepDisk:
    """The whole sweep: every trial final, and at most, with ``at_once`` trials running beside the finished ones."""

    final: int
    most: int
    at_once: int


def of_sweep(disks: list[TrialDisk], at_once: int) -> SweepDisk:
    final = sum(d.final for d in disks)
    extra = sorted((d.running - d.final for d in disks), reverse=True)[:max(at_once, 0)]
    return SweepDisk(final, final + sum(extra), min(at_once, len(disks)))


def sweep_line(disks: list[TrialDisk], keep: str, at_once: int) -> str:
    """The dry run's disk line: per trial while it runs and once final, and the whole sweep's (``at_once``: the
    sweep's ``resources.max_concurrent``; 0, unbounded: the extra per trial running at once)."""
    if not disks:
        return "Disk: no trials"
    run, final = max(d.running for d in disks), max(d.final for d in disks)
    total = of_sweep(disks, at_once)
    line = (f"Disk (keep: {keep}): per trial up to {human(run)} while it runs, {human(final)} once final; "
            f"the sweep {human(total.final)} once every trial is final")
    if at_once:
        return line + f", up to {human(total.most)} with {total.at_once} trials running at once"
    return line + f", plus up to {human(run - final)} for each trial running at once"


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def existing(path: Path) -> Path:
    """``path`` or its nearest folder that exists (a sweep's folder before its first trial)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free(path: Path) -> int:
    """Free bytes on the file system of ``path`` (or of its nearest folder that exists)."""
    return shutil.disk_usage(existing(path)).free


def check_room(folder: Path, disks: list[TrialDisk], at_once: int, keep: str) -> str | None:
    """Before the first trial: refuse in one line when the trials that run at once cannot fit in the free space of
    ``folder``'s file system; return a warning line when the finished trials will not (else None)."""
    room = free(folder)
    at_once = min(at_once, len(disks))
    running = sum(sorted((d.running for d in disks), reverse=True)[:at_once])
    if running > room:
        raise BenchxferError(
            f"{existing(folder)}: {human(room)} free, but the {at_once} trials that run at once need up to "
            f"{human(running)} while they run (their training checkpoints); make room, or lower "
            "resources.max_concurrent")
    total = of_sweep(disks, at_once)
    if total.most > room:
        return (f"Warning: {existing(folder)} has {human(room)} free; this sweep's {len(disks)} trials need up to "
                f"{human(total.most)} (keep: {keep}, {human(total.final)} once all are final): the disk fills "
                "before the sweep ends unless room is made; `benchxfer resume` continues then")
    return None


def check_sweep(plan, at_once: Callable[[int], int]) -> str | None:
    """The real run's check before its first trial (``plan``: a :class:`benchxfer.plan.planning.Plan`): the trials
    that are not final yet, and an lr search's stage-1 trials (each cell's, at the first trial's size), against the
    free space of the sweep's folder (:func:`check_room`: one line when those that run at once cannot fit, a
    warning returned when the unfinished ones will not, once final). ``at_once(n)``: how many of ``n`` trials run
    at once (``cluster.max_trials``)."""
    from benchxfer.trialdir import SweepDir, TrialDir, TrialState

    spec = plan.spec
    todo = [t for t in plan.trials if TrialDir.of(spec.name, t.key).state() not in
            (TrialState.FINISHED, TrialState.STOPPED, TrialState.FAILED)]
    disks = [of_trial(t, spec.keep) for t in todo]
    if spec.mode == "tune-then-repeat" and todo:  # stage 1: each cell's search trials, the first trial's size
        disks += [disks[0]] * (len(plan.cells) * spec.lr.trials)
    if not disks:
        return None
    return check_room(SweepDir(spec.name).path, disks, at_once(len(disks)), spec.keep)
