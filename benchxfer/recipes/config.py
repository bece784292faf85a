"""The resolved configuration of one training run (a trial, or a pre-training run).

Identity fields (init, dataset, lr, seed, ...) come from the sweep's axes; every other field is a
*knob* whose default comes from the recipe and which a sweep may override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from benchxfer.errors import BenchxferError


@dataclass
class TrainConfig:
    # --- identity: set by the sweep's axes -------------------------------------------------------
    sweep: str = "adhoc"
    trial_key: str = "adhoc"
    init: str = "scratch"
    dataset: str = ""
    root: str = ""
    dataset_options: dict[str, Any] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)  # pre-training: [{dataset, root, options}]
    recipe: str = "systematic-cls"
    lr: float = 2e-4
    seed: int = 0
    shot: int | None = None
    # --- knobs: recipe defaults, overridable ------------------------------------------------------
    arch: str = "resnet50"
    size: int = 224
    batch_size: int = 32  # global batch, split over workers
    micro_batch: int = 0  # >0: each worker's batch runs in micro-batches of this many images, one optimiser step
    epochs: int = 1000  # at most; a stopping rule may end earlier
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "plateau"
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_threshold: float = 1e-4
    warmup_epochs: int = 0
    base_batch: int = 0  # >0: lr is scaled by batch_size / base_batch (linear scaling rule)
    max_steps: int = 0  # >0: stop after this many optimiser steps (step schedules set it)
    stopping: str = "early"
    patience: int = 10
    loss: str = "auto"
    augment: str = "systematic-cls"
    normalization: str = "init"  # "init" (as the study fed the init), "init-trained" (as it was pre-trained), or a
    # name in data.transforms.NORMALISATIONS
    tencrop: bool = False
    mixup: float = 0.0
    agc: float = 0.0  # >0: adaptive gradient clipping of every parameter but the new head (BiT: 0.01)
    select: str = "best-val"  # the weights tested: "best-val" (best validation loss) or "last" (the last step)
    binary_outputs: int = 2  # a binary task's head: 2 outputs + cross-entropy, or 1 logit + BCE (tasks.run_task)
    head_init: str = "normal"  # the new head: "normal" (N(0, 0.01), zero bias) or "default" (PyTorch's own)
    full_batches: bool = False  # every step a full batch, drawn with replacement when the set is smaller
    balance: str = "none"  # "class": class-balanced oversampling; "auto": the dataset's own rule (COVIDx, Flowers)
    amp: bool = True  # used only on a GPU
    channels_last: bool = True  # used only on a GPU
    loader_workers: int = 2
    checkpoint_every_s: float = 300.0  # save at most this often (and always at the run's end); 0: every epoch
    max_train_batches: int = 0  # >0: cap on batches per epoch (smoke tests)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BenchxferError(
                f"unknown training setting {unknown[0]!r}; known: {', '.join(sorted(names))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def images_per_pass(self, workers: int) -> int:
        """Images per forward and backward on each of ``workers`` workers: its share of the batch, or the
        micro-batches of it (:func:`micro_images`)."""
        return micro_images(self.micro_batch, per_worker_batch(self.batch_size, workers))


def per_worker_batch(batch_size: int, workers: int) -> int:
    """One worker's share of the global batch (at least one image)."""
    return max(1, batch_size // max(1, workers))


def micro_images(micro_batch: int, batch: int) -> int:
    """Images per forward and backward of a worker's ``batch``, the one rule of the ``micro_batch`` knob: pieces of
    ``micro_batch`` where that cuts the batch (0 < micro_batch < batch), else the whole batch at once."""
    return micro_batch if 0 < micro_batch < batch else batch


# knobs that change how a run is carried out, never what it computes: left out of the trial key, so that
# changing one continues the same trials
EXECUTION_ONLY = frozenset({"checkpoint_every_s"})
IDENTITY = (
    "sweep", "trial_key", "init", "dataset", "root", "dataset_options", "sources", "recipe", "lr", "seed", "shot",
)
SELECT = ("best-val", "last")  # the weights tested: the best validation loss's, or the last step's
BALANCE = ("none", "class", "auto")  # "auto": the dataset's own rule (its entry's auto_balanced)

KNOBS: dict[str, Any] = {
    f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
    for f in dataclasses.fields(TrainConfig)
    if f.name not in IDENTITY
}


def knob_names() -> list[str]:
    return sorted(KNOBS)


_KIND = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_knobs(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate override names and types against the knobs; return them with types coerced."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in KNOBS:
            raise BenchxferError(f"{where}: unknown override {key!r}; allowed: {', '.join(knob_names())}")
        default = KNOBS[key]
        try:
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError
                out[key] = value
            elif isinstance(default, int):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise TypeError
                out[key] = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise TypeError
                out[key] = float(value)
            elif isinstance(default, str):
                if not isinstance(value, str):
                    raise TypeError
                out[key] = value
            else:
                out[key] = value
        except (TypeError, ValueError):
            raise BenchxferError(
                f"{where}: override {key}={value!r} must be {_KIND.get(type(default), type(default).__name__)}"
            ) from None
    return out
