"""Trials on Ray: the trial driver, the Tune experiment, concurrency and failure handling.

One Ray Tune experiment runs the planned trials. Each Tune trial runs :func:`run_trial` (the
"driver"), which finds or creates the trial's MLflow run and then trains either with Ray Train's
``TorchTrainer`` (N workers, DDP) or, for 1-worker trials when asked, directly inside the Tune trial.
Trials whose ``result.json`` exists are final and never run again, which is what makes ``resume`` exact.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.spec import Trial
from benchxfer.train.loop import FAILED, RESULT, TrialFailed, write_json

log = logging.getLogger("benchxfer")
DRIVER_MEMORY = 256 * 1024**2


@dataclass(frozen=True)
class Launch:
    """How to run a batch of trials: the sweep, where to track, and the resources of one trial."""

    sweep: str
    tracking_uri: str
    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_concurrent: int = 0
    trainer: str = "auto"  # auto: TorchTrainer for DDP, 1-worker trials inside the Tune trial; or torch/direct
    max_retries: int = 2
    record_shards: bool = False

    def use_torch_trainer(self) -> bool:
        return self.trainer == "torch" or self.workers > 1


# --- Ray session -----------------------------------------------------------------------------------

def ensure_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local session of this sweep's own (never a cluster Ray
    recorded on the machine before); see :mod:`benchxfer.cluster`."""
    from benchxfer import cluster

    cluster.start(address)


def concurrency(launch: Launch, n_trials: int) -> int:
    """How many trials may run at once: ``max_concurrent`` when set, else what the cluster holds at its largest
    (an autoscaler's node types included). Refuses a request that no node can hold."""
    from benchxfer import cluster

    return cluster.max_trials(launch, n_trials)


NODE_TAG = "benchxfer.node_id"


def tag_node(client: Any, run_id: str) -> None:
    """Record on a trial's MLflow run the Ray node its driver runs on (the node that trains a 1-worker trial)."""
    import ray

    client.set_tag(run_id, NODE_TAG, ray.get_runtime_context().get_node_id())


# --- the trial driver (runs inside a Ray Tune trial) -----------------------------------------------

def payload_of(trial: Trial) -> dict[str, Any]:
    """What one Tune trial receives: the TrainConfig, the MLflow params and the trial's tags."""
    return {"config": trial.config, "params": trial.params(),
            "tags": {"benchxfer.task": trial.task, "benchxfer.metric": trial.metric}}


def read_result(trial_dir: Path) -> dict[str, Any] | None:
    path = trial_dir / RESULT
    if not path.exists():
        return None
    try:
        out = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return out if out.get("status") == "finished" else None


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one trial, start to end (or continued from its last checkpoint)."""
    from ray import tune

    ctx = config["ctx"]
    os.environ.update(ctx.get("env", {}))
    payload = config["trial"] if "trial" in config else payload_of(
        config["cell"].trial(ctx["sweep"], float(config["lr"]), int(config["seed"]), config["shot"], config["root"]))
    trial = payload["config"]
    key = trial["trial_key"]
    tdir = paths.trial_dir(ctx["sweep"], key)
    done = read_result(tdir)
    if done:  # finished before: never run again
        tune.report({f"test_{k}": v for k, v in done["test"].items()} | {
            "done": True, "skipped": True, "best_val_loss": done.get("best_val_loss")})
        return
    launch = Launch(**ctx["launch"])
    from benchxfer.tracking import SweepRecorder

    run_id = None
    try:
        rec = SweepRecorder(launch.tracking_uri, launch.sweep)
        run_id = rec.trial_run(key, payload["params"], payload["tags"])
        rec.client.set_tag(run_id, "benchxfer.status", "running")
    except BenchxferError as err:  # training goes on; the result record stays on disk
        log.warning("%s: MLflow unavailable at start (%s); logging to the trial folder only", key, err)
    runtime = {"tracking_uri": launch.tracking_uri if run_id else None, "run_id": run_id,
               "trial_dir": str(tdir), "record_shards": launch.record_shards, "env": ctx.get("env", {}),
               "threads": max(1, int(launch.cpus_per_worker))}
    if "on_finish" in ctx:
        runtime["on_finish"] = ctx["on_finish"]
    try:
        if launch.use_torch_trainer():
            _fit_with_torch_trainer(trial, runtime, launch)
        else:
            from benchxfer.train.loop import train_run

            train_run({**trial, "_runtime": {**runtime, "session": "tune"}})
    except BaseException as err:
        if read_result(tdir) is None:
            _record_failure(tdir, launch, run_id, err)
        raise
    if read_result(tdir) is None:
        raise TrialFailed(f"trial {key} ended without a result")


def _fit_with_torch_trainer(trial: dict, runtime: dict, launch: Launch) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from benchxfer.train.loop import train_run

    use_gpu = launch.gpus_per_worker > 0
    per_worker = {"CPU": launch.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = launch.gpus_per_worker
    trainer = TorchTrainer(
        train_run,
        train_loop_config={**trial, "_runtime": {**runtime, "session": "train"}},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=launch.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=trial["trial_key"],
            storage_path=str(paths.sweep_dir(launch.sweep) / "train"),
            failure_config=FailureConfig(max_failures=launch.max_retries),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": runtime.get("env", {})},
        ),
    )
    trainer.fit()


def _record_failure(tdir: Path, launch: Launch, run_id: str | None, err: BaseException) -> None:
    reason = _one_line(err)
    path = tdir / FAILED
    previous = json.loads(path.read_text()) if path.exists() else {}
    retryable = previous.get("retryable", True) and not isinstance(err, TrialFailed)
    write_json(path, {"reason": previous.get("reason", reason), "retryable": retryable})
    if run_id:
        from benchxfer.tracking import RunLogger

        tl = RunLogger(launch.tracking_uri, run_id, tdir)
        tl.set_tags({"benchxfer.status": "failed", "benchxfer.error": previous.get("reason", reason)})
        tl.close("FAILED", retry_seconds=5)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # Ray wraps worker errors; the innermost line that names our error is the useful one
    for line in reversed(text):
        if "TrialFailed" in line or "BenchxferError" in line:
            return line.strip()[:500]
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


# --- the experiment --------------------------------------------------------------------------------

def tune_name(sweep: str) -> str:
    """A new Tune experiment name for each launch of a sweep (``<sweep>-01``, ``-02``, ...)."""
    base = paths.sweep_dir(sweep) / "tune"
    n = len([p for p in base.iterdir() if p.is_dir()]) + 1 if base.exists() else 1
    return f"{sweep}-{n:02d}"


def run_trials(trials: list[Trial], launch: Launch, *, extra_ctx: dict[str, Any] | None = None, searcher: Any = None, num_samples: int = 1,
               param_space: dict[str, Any] | None = None, echo: Callable[[str], None] = print):
    """Run ``trials`` (or a search, when ``searcher`` is given) as one Tune experiment; return the ResultGrid."""
    from ray import tune

    env = {k: os.environ[k] for k in ("BENCHXFER_HOME", "BENCHXFER_ZOO") if k in os.environ}
    env.setdefault("BENCHXFER_HOME", str(paths.home()))
    ctx = {"sweep": launch.sweep, "launch": launch.__dict__, "env": env, **(extra_ctx or {})}
    if launch.use_torch_trainer():
        # The driver only waits on its TorchTrainer, whose workers hold the CPUs and GPUs. Ray refuses an empty
        # request, so the driver reserves the memory it really uses and no CPU.
        resources = {"cpu": 0, "memory": DRIVER_MEMORY}
    else:
        resources = {"cpu": launch.cpus_per_worker, "gpu": launch.gpus_per_worker}
    n = num_samples if searcher is not None else len(trials)
    space = param_space or {"trial": tune.grid_search([payload_of(t) for t in trials])}
    tuner = tune.Tuner(
        tune.with_resources(run_trial, resources),
        param_space={**space, "ctx": ctx},
        # 1-worker trials reuse their Tune actor, so torch is imported once per slot, not once per trial (each
        # trial seeds everything itself). A TorchTrainer's driver is not reused: Ray Train hangs in a reused actor.
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency(launch, n), search_alg=searcher,
                                    num_samples=num_samples, reuse_actors=not launch.use_torch_trainer()),
        run_config=tune.RunConfig(
            name=tune_name(launch.sweep), storage_path=str(paths.sweep_dir(launch.sweep) / "tune"),
            failure_config=tune.FailureConfig(max_failures=0 if launch.use_torch_trainer() else launch.max_retries),
            verbose=1,
        ),
    )
    return tuner.fit()


