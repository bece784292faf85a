"""Ray Train's entry point: one dict in, the typed :func:`benchxfer.train.loop.train_run` behind it.

A module of its own, away from the loop and the sessions, so that the trial's driver, which only builds the
TorchTrainer, does not import torchvision, albumentations and the models; each worker imports them when it
starts training.
"""

from __future__ import annotations

from typing import Any


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """``config``: ``{"cfg": TrainConfig as a dict, "runtime": Runtime}``."""
    from benchxfer.recipes import TrainConfig
    from benchxfer.train.loop import train_run

    train_run(TrainConfig.from_dict(config["cfg"]), config["runtime"])
