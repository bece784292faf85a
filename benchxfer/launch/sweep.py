"""Trials on Ray: the trial driver, the Tune experiment, concurrency and failure handling.

One Ray Tune experiment runs the planned trials. Every Tune trial reaches :func:`run_trial` (the "driver")
with its config, plain data (``{"trial": {"key": ..., "lr": ...}}`` for a planned trial: grid, pre-training;
``{"trial": {"cell": ..., "lr": ...}}`` for a cell whose lr the searcher picks), and the experiment's
:class:`~benchxfer.launch.tunespace.Shared` context, given once through ``tune.with_parameters``; it turns them back into
the typed trial with :func:`benchxfer.launch.tunespace.trial_of`. The driver asks the trial's :class:`TrialDir` whether it
is finished (then it is never run again, which is what makes ``resume`` exact), opens its MLflow run
(:class:`benchxfer.tracking.TrialRun`), and hands the worker a :class:`Runtime`: training runs with Ray Train's
``TorchTrainer`` (N workers, DDP) or, for 1-worker trials when asked, directly inside the Tune trial. How the
trial ended is recorded by :func:`settle`: a failure (retryable unless a retry cannot fix it), or an interruption
(Ctrl-C, the sweep stopped), which is no failure: the trial stays pending and ``benchxfer resume`` continues it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Callable

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.launch import cluster
from benchxfer.launch.cluster import Launch  # noqa: F401  (re-exported: how a batch of trials runs)
from benchxfer.launch.tunespace import (  # noqa: F401  (tune_name re-exported)
    Shared,
    TrialIndex,
    TrialSource,
    is_searched,
    planned,
    tune_name,
)
from benchxfer.plan import disk
from benchxfer.tracking import SweepRecorder, TrialRun
from benchxfer.train.session import FinishHook, Runtime
from benchxfer.trial import Trial
from benchxfer.trialdir import FULL_BELOW, Failure, SweepDir, TrialDir, TrialFailed

log = logging.getLogger("benchxfer")


# --- Ray session -----------------------------------------------------------------------------------

def ensure_ray(address: str | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local session of this sweep's own (never a cluster Ray
    recorded on the machine before); see :mod:`benchxfer.launch.cluster`."""
    from benchxfer.launch import cluster

    cluster.start(address)


# --- the trial driver (runs inside a Ray Tune trial) -----------------------------------------------

def run_trial(config: dict[str, Any], shared: Shared) -> None:
    """The Tune trainable: one trial, start to end (or continued from its last checkpoint). ``config`` is the
    trial's plain point, ``shared`` what the experiment's trials share (:mod:`benchxfer.launch.tunespace`)."""
    from ray import tune

    os.environ.update(shared.env)
    trial = shared.trial(config)
    launch = shared.launch
    tdir = TrialDir.of(launch.sweep, trial.key)
    done = tdir.result()
    if done:  # finished before: never run again
        tdir.tidy(launch.keep)
        tune.report({f"test_{k}": v for k, v in done.test.items()} | {
            "done": True, "skipped": True, "best_val_loss": done.best_val_loss})
        return
    given_up = tdir.failure()
    if launch.use_torch_trainer() and given_up is not None and given_up.experiment == shared.experiment:
        # A failure recorded by this launch's driver means Ray Train already spent the trial's retries on its
        # workers. Tune restarts a TorchTrainer trial only to survive the loss of this driver (its node).
        raise TrialFailed(given_up.reason)
    run = open_run(trial, launch, tdir)
    runtime = Runtime(trial_dir=str(tdir.path), tracking_uri=run.uri, run_id=run.run_id,
                      threads=max(1, int(launch.cpus_per_worker)),
                      record_shards=launch.record_shards, env=shared.env, finish=shared.finish,
                      metrics_each_epoch=is_searched(config), keep=launch.keep)  # its scheduler may stop it
    try:
        if launch.use_torch_trainer():
            _fit_with_torch_trainer(trial, runtime.with_session("train"), launch)
        else:
            from benchxfer.train.loop import train_run

            train_run(trial.config, runtime.with_session("tune"))
    except BaseException as err:
        full = disk_full(err)
        if full is not None:  # the trial's one line: the path, what is free, the room a trial needs
            need = disk.of_trial(trial, launch.keep).running
            err = TrialFailed(f"no space left on device writing {full}: "
                              f"{disk.human(disk.free(tdir.path))} free, a trial of this sweep needs up to "
                              f"{disk.human(need)} while it runs")
        settle(tdir, run, err, shared.experiment, retryable=True if full is not None else None)
        if full is not None:
            SweepDir(launch.sweep).write_disk_full(f"trial {trial.key}: {err}")  # the launch stops (disk_stopper)
            raise err from None
        raise
    if tdir.result() is None:
        raise TrialFailed(f"trial {trial.key} ended without a result")


def open_run(trial: Trial, launch: Launch, tdir: TrialDir) -> TrialRun:
    """The trial's MLflow run, opened and marked running on this driver's Ray node (the node that trains a 1-worker
    trial), with its dataset (lists, sizes, digests) as its input. MLflow away: a run that records nothing (the
    result stays on disk), and a warning; a dataset not logged only warns."""
    import ray

    try:
        run = TrialRun.open(SweepRecorder(launch.tracking_uri, launch.sweep), trial.key, trial.params(),
                            task=trial.task, metric=trial.metric, spill_dir=tdir.path)
        run.mark_running(ray.get_runtime_context().get_node_id())
    except BenchxferError as err:  # training goes on; the result record stays on disk
        log.warning("%s: MLflow unavailable at start (%s); logging to the trial folder only", trial.key, err)
        return TrialRun(None, None)
    c = trial.config
    if c.dataset:
        try:
            from benchxfer.data.facts import describe_dataset

            run.log_dataset(describe_dataset(c.dataset, c.root, shot=c.shot, seed=c.seed, **c.dataset_options))
        except Exception as err:  # noqa: BLE001
            log.warning("%s: dataset not logged in MLflow (%s)", trial.key, err)
    return run


def _fit_with_torch_trainer(trial: Trial, runtime: Runtime, launch: Launch) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from benchxfer.train.entry import train_loop_per_worker

    use_gpu = launch.gpus_per_worker > 0
    per_worker = {"CPU": launch.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = launch.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": trial.config.to_dict(), "runtime": runtime},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=launch.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=trial.key,
            storage_path=str(paths.sweep_dir(launch.sweep) / "train"),
            failure_config=FailureConfig(max_failures=launch.max_retries),
            callbacks=[TuneReportCallback()],
            worker_runtime_env={"env_vars": {**runtime.env, **cluster.train_worker_env(launch)}},
        ),
    )
    trainer.fit()


def disk_full(err: BaseException) -> str | None:
    """The path (or "the disk") when ``err`` is, or was caused by, a full disk (ENOSPC; Ray Train's wrapped errors
    by their text); else None."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return str(e.filename) if e.filename else "the disk"
        e = e.__cause__ or e.__context__
    return "the disk" if "No space left on device" in str(err) else None


def interrupted(err: BaseException) -> bool:
    """Whether the trial was stopped from outside rather than failing: Tune ends a trial it stops (the user's Ctrl-C,
    a stopper, the end of the experiment) by ``sys.exit(0)`` in its training thread at the trial's next report,
    and a Ctrl-C that reaches the process is a KeyboardInterrupt."""
    return isinstance(err, (SystemExit, KeyboardInterrupt))


def settle(tdir: TrialDir, run: TrialRun, err: BaseException, experiment: str, retryable: bool | None = None) -> None:
    """Record how a trial that raised ``err`` ended, unless its folder already says (a result, or a stop by the
    search). Interrupted (:func:`interrupted`): no failure, the trial stays pending (resumable; ``benchxfer
    status`` shows it interrupted once it has epochs) and its run says so. Else a failure of ``experiment``,
    retryable unless ``err`` is a TrialFailed (or as ``retryable`` says). A record that cannot be written (a full
    disk) is logged, never raised over the trial's own error."""
    if tdir.result() is not None or tdir.stopped() is not None:
        return
    if interrupted(err):
        run.mark_interrupted(retry_seconds=5)
        return
    try:
        failure = tdir.record_failure(Failure(
            _one_line(err), retryable=not isinstance(err, TrialFailed) if retryable is None else retryable,
            experiment=experiment))
    except OSError as why:
        log.warning("%s: failure not recorded (%s): %s", tdir.key, why, _one_line(err))
        return
    run.mark_failed(failure.reason, retry_seconds=5)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    # Ray wraps worker errors; the innermost line that names our error is the useful one
    for line in reversed(text):
        if "TrialFailed" in line or "BenchxferError" in line:
            return line.strip()[:500]
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


# --- the experiment --------------------------------------------------------------------------------

def run_trials(trials: list[Trial], launch: Launch, *, finish: FinishHook | None = None,
               cells: Mapping[str, TrialSource] | None = None, searcher: Any = None, scheduler: Any = None,
               num_samples: int = 1, trainable: Callable[..., None] | None = None,
               echo: Callable[[str], None] = print, verbose: bool = False):
    """Run ``trials`` as one Tune experiment, or, when ``searcher`` is given, the ``num_samples`` trials it
    suggests over ``cells`` (it fills each config's ``"trial"`` with :func:`benchxfer.launch.tunespace.searched`;
    ``scheduler`` may stop them early); return the ResultGrid. ``trainable(config, shared)`` defaults to
    :func:`run_trial`. The console shows benchxfer's view of the experiment, or with ``verbose`` Ray's own output
    (:mod:`benchxfer.launch.console`)."""
    from ray import tune

    from benchxfer.launch import console

    env = {k: os.environ[k] for k in paths.PINNED if k in os.environ}
    env.setdefault("BENCHXFER_HOME", str(paths.home()))
    experiment = tune_name(launch.sweep)
    shared = Shared(TrialIndex.of(trials, cells), launch, env, finish, experiment)
    if searcher is not None:
        n, param_space = num_samples, {}
    else:
        n, param_space = len(trials), {"trial": tune.grid_search([planned(t) for t in trials])}
    tune_kw, run_kw = console.tune_settings(launch.sweep, shared, verbose=verbose, echo=echo, name=experiment)
    cluster.watch(launch.sweep)  # the placement watcher names this sweep's trials
    SweepDir(launch.sweep).clear_disk_full()  # room was made since: this launch starts afresh
    stopper = disk_stopper(launch.sweep)
    tuner = tune.Tuner(
        # the shared context goes into Ray's object store once, not into every trial's config
        tune.with_resources(tune.with_parameters(trainable or run_trial, shared=shared), launch.tune_resources()),
        param_space=param_space,
        # 1-worker trials reuse their Tune actor, so torch is imported once per slot, not once per trial (each
        # trial seeds everything itself). A TorchTrainer's driver is not reused: Ray Train hangs in a reused actor.
        tune_config=tune.TuneConfig(max_concurrent_trials=cluster.max_trials(launch, n), search_alg=searcher,
                                    scheduler=scheduler, num_samples=num_samples,
                                    reuse_actors=not launch.use_torch_trainer(), **tune_kw),
        run_config=tune.RunConfig(
            storage_path=str(paths.sweep_dir(launch.sweep) / "tune"),
            # also for TorchTrainer trials: a lost driver node restarts the trial elsewhere (see run_trial)
            failure_config=tune.FailureConfig(max_failures=launch.max_retries),
            stop=stopper,
            **run_kw,
        ),
    )
    grid = tuner.fit()
    if stopper.error:
        raise BenchxferError(stopper.error)
    return grid


FULL_GRACE_S = 30.0  # a folder with no room this long, and no trial's line: the stopper says it itself


def disk_stopper(sweep: str):
    """A Tune stopper that ends the experiment once a trial ran out of disk (its driver wrote the line, see
    :func:`run_trial`) or the sweep's folder has no room left at all: no new trial starts into a full disk, the
    running ones stop at their last checkpoint, and ``benchxfer resume`` continues once room is made. Its
    ``error`` is the sweep's one line, set when it stopped the experiment. A stat per step of the experiment."""
    from ray import tune

    sdir = SweepDir(sweep)

    class DiskFull(tune.Stopper):
        error: str | None = None

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        low_since: float | None = None  # when the folder was first seen with no room (a write may be failing)

        def stop_all(self) -> bool:
            if self.error is None:
                line = sdir.disk_full()
                if line is None and disk.free(sdir.path) < FULL_BELOW:  # the failing trial says why, if it can
                    self.low_since = self.low_since or time.monotonic()
                    if time.monotonic() - self.low_since >= FULL_GRACE_S:
                        line = f"{disk.existing(sdir.path)} has {disk.human(disk.free(sdir.path))} free"
                elif line is None:
                    self.low_since = None
                if line is not None:
                    self.error = (f"sweep {sweep!r} stopped, the disk is full: {line}; finished trials are kept; "
                                  f"make room, then `benchxfer resume {sweep}`")
            return self.error is not None

    return DiskFull()
