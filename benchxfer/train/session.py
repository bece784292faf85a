"""Where a training function runs: a Ray Train worker, a Ray Tune trial, or a plain process.

The loop asks the session for its rank, world size and device, and hands it metrics to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class Session:
    rank: int
    world: int
    device: torch.device
    report: Callable[[dict[str, Any]], None]
    name: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device_local() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def ray_train_session() -> Session:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    return Session(ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
                   lambda m: ray.train.report(m), "ray-train")


def ray_tune_session() -> Session:
    from ray import tune

    return Session(0, 1, _device_local(), lambda m: tune.report(m), "ray-tune")


def local_session() -> Session:
    return Session(0, 1, _device_local(), lambda m: None, "local")


SESSIONS: dict[str, Callable[[], Session]] = {
    "train": ray_train_session,
    "tune": ray_tune_session,
    "local": local_session,
}
