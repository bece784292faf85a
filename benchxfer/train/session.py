"""Where a training function runs, and what the driver hands it.

:class:`Runtime` is what the trial's driver gives the training function besides its TrainConfig: where to
track, which folder is the trial's, which session it runs in. :class:`Session` is what the loop asks of
where it runs: rank, world size, device, and where to report metrics (a Ray Train worker, a Ray Tune
trial, or a plain process). torch is imported only when a session is made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from benchxfer.recipes import TrainConfig
    from benchxfer.trialdir import TrialResult

# A finish hook runs on rank 0 after the test, before result.json is written; it may return the result with
# more in it (pre-training's export of the backbone adds where it went).
FinishHook = Callable[["nn.Module", "TrainConfig", "TrialResult"], "TrialResult"]


@dataclass(frozen=True)
class Runtime:
    """What the driver hands the training function, besides its TrainConfig."""

    trial_dir: str
    session: str = "local"  # a name in SESSIONS: "train" (Ray Train worker), "tune" (Tune trial), "local"
    tracking_uri: str | None = None  # None: no MLflow (the trial folder still gets everything)
    run_id: str | None = None  # the trial's MLflow run, made by the driver
    threads: int | None = None  # torch threads per worker
    record_shards: bool = False  # write the sample indices each worker saw per epoch (tests)
    env: dict[str, str] = field(default_factory=dict)  # environment the workers need (BENCHXFER_HOME, ...)
    finish: FinishHook | None = None
    # send each epoch's metrics to MLflow at once (an lr search's trial, which its scheduler may stop between
    # epochs); else they go with each checkpoint and at least every METRICS_EVERY_S
    metrics_each_epoch: bool = False
    # what the trial's folder keeps once it is final (trialdir.KEEP): with "selected", finish writes the tested
    # weights to selected.safetensors; after result.json it leaves only what this names (TrialDir.tidy). A sweep's
    # driver passes the sweep file's choice; a bare train_run (benchxfer train, tests) keeps everything
    keep: str = "checkpoint"

    def with_session(self, session: str) -> Runtime:
        return dataclasses.replace(self, session=session)


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
    import torch

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
