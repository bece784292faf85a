"""The pre-training stage on Ray: one pre-training run (``benchxfer pretrain``, and a sweep's inits that the zoo
lacks), its backbone registered in the zoo by the run's finish hook (:class:`benchxfer.train.export.ExportBackbone`).

The file, the run it plans and the zoo name it may take are :mod:`benchxfer.plan.pretraining`'s; here the run is
launched as a trial like any other (:func:`benchxfer.launch.sweep.run_trials`, experiment ``pretrain``), and its
end is said in one line: finished (or finished before, its backbone in this zoo), interrupted, or failed.
"""

from __future__ import annotations

from typing import Any

from benchxfer.errors import BenchxferError
from benchxfer.launch import cluster
from benchxfer.launch.cluster import Launch
from benchxfer.launch.sweep import ensure_ray, run_trials
from benchxfer.plan.pretraining import EXPERIMENT, check_zoo_name, plan_pretrain
from benchxfer.plan.schema import PretrainSpec
from benchxfer.train.export import ExportBackbone
from benchxfer.trialdir import TrialDir


def run_pretrain(spec: PretrainSpec, tracking_uri: str, echo=print, zoo_override: str | None = None,
                 address: str | None = None, verbose: bool = False, force: bool = False) -> dict[str, Any]:
    """Run (or continue) the pre-training on Ray and register its backbone in the zoo. A name the zoo holds for
    something else (an import, another pre-training's backbone) is refused before any work, unless ``force``."""
    trial = plan_pretrain(spec)
    tdir = TrialDir.of(EXPERIMENT, trial.key)
    check_zoo_name(spec, trial, zoo_override, force)
    done = tdir.result()
    if done is None:
        launch = Launch.of(EXPERIMENT, tracking_uri, spec.resources, spec.failure)
        ensure_ray(address)
        echo(f"Pre-training {spec.name!r} ({spec.arch}, from {spec.start}) on "
             f"{' + '.join(s['dataset'] for s in trial.config.sources)}: run {trial.key}")
        from benchxfer.tracking import SweepRecorder

        SweepRecorder(tracking_uri, EXPERIMENT)  # the experiment and its parent run, made once on the driver
        run_trials([trial], launch, finish=ExportBackbone(spec.name, zoo_override, force), echo=echo,
                   verbose=verbose)
        done = tdir.result()
        if done is None:
            cluster.raise_if_stuck()  # the placement watcher stopped it: its line, not "interrupted"
            raise pretrain_unfinished(spec, tdir)
    else:
        _check_exported(spec, done, zoo_override)
    return done.to_dict()


def pretrain_unfinished(spec: PretrainSpec, tdir: TrialDir) -> BenchxferError:
    """Why a pre-training that ran has no result, in one line. A failure its driver recorded is named; none recorded
    means it was stopped from outside (Ctrl-C: :func:`benchxfer.launch.sweep.settle` records no failure for an
    interruption, the trial stays resumable), said with how to continue, as `sweep` says of its unfinished trials."""
    failure = tdir.failure()
    if failure is None:
        progress = tdir.progress()
        where = (f"from its checkpoint of epoch {progress.checkpoint}" if progress and progress.checkpoint >= 0
                 else "from the start (no epoch checkpoint was written yet)")
        return BenchxferError(f"pre-training {spec.name!r} was interrupted before it finished (Ctrl-C); "
                              f"`benchxfer pretrain {spec.path}` continues it {where}")
    return BenchxferError(f"pre-training {spec.name!r} failed: {' '.join(failure.reason.split())[:300]}")


def _check_exported(spec: PretrainSpec, done, zoo_override: str | None) -> None:
    """A pre-training that finished before wrote its backbone into the zoo of that run; a zoo that lacks it (another
    --zoo) would make every trial that uses it fail as an unknown init: said here, with what to do."""
    from benchxfer import zoo

    try:
        zoo.resolve_init(spec.name, zoo_override)
    except BenchxferError:
        where = done.zoo_path or "a zoo"
        raise BenchxferError(
            f"init {spec.name!r}: its pre-training ({spec.path}) finished before and wrote the backbone to {where}, "
            f"not into the zoo {zoo.zoo_dir(zoo_override)}; use that zoo (--zoo or $BENCHXFER_ZOO), or import it: "
            f"`benchxfer zoo import {spec.name} {where} --format benchxfer`") from None
