"""One sweep from plan to summary: pre-train missing inits, run the trials on Ray, summarise; and one
pre-training run (``benchxfer pretrain``).

``benchxfer sweep`` and ``benchxfer resume`` both come here. Trials that finished before (their
``result.json`` exists) are not launched again; interrupted ones continue from their last epoch
checkpoint; failed ones are retried, except those that failed for a reason a retry cannot fix (a NaN
loss): they stay failed, with their reason, until their folder is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from benchxfer import cluster
from benchxfer.cluster import Launch
from benchxfer.errors import BenchxferError
from benchxfer.planning import Plan, expand
from benchxfer.pretraining import EXPERIMENT, ExportBackbone, PretrainSpec, plan_pretrain
from benchxfer.spec import LrSearch, Trial
from benchxfer.sweep import ensure_ray, run_trials
from benchxfer.trialdir import SweepDir, TrialDir, TrialState

if TYPE_CHECKING:
    from benchxfer.summary import Summary


def save_plan(plan: Plan) -> SweepDir:
    """The sweep's folder keeps the sweep file as run and the list of expected trials."""
    sdir = SweepDir(plan.spec.name)
    sdir.save_plan(plan.spec.path, [t.summary() for t in plan.trials])
    return sdir


def launch_of(plan: Plan, tracking_uri: str) -> Launch:
    r, f = plan.spec.resources, plan.spec.failure
    return Launch(sweep=plan.spec.name, tracking_uri=tracking_uri, workers=r["workers"],
                  cpus_per_worker=r["cpus_per_worker"], gpus_per_worker=r["gpus_per_worker"],
                  max_concurrent=r["max_concurrent"], trainer=r["trainer"], max_retries=f["max_retries"])


def pending(trials: list[Trial]) -> tuple[list[Trial], int]:
    """The trials to launch, and how many are left out because they failed for good. A retryable failure
    is forgotten: the trial runs again from its last checkpoint. A trial the lr search stopped is final too,
    and not counted as failed (a stage-2 trial never is one: its lr won the search, so it was not stopped)."""
    out, final = [], 0
    for t in trials:
        tdir = TrialDir.of(t.config.sweep, t.key)
        state = tdir.state()
        if state in (TrialState.FINISHED, TrialState.STOPPED):
            continue
        if state is TrialState.FAILED:
            final += 1
            continue
        if state is TrialState.RETRYABLE:
            tdir.clear_retryable_failure()
        out.append(t)
    return out, final


@dataclass
class Outcome:
    """How a sweep ended: the result records of its finished trials, and its summary table."""

    results: list[dict[str, Any]]
    summary: Summary | None  # the per-init table (report.Summary), read once from MLflow, else the trial files
    no_summary: str = ""  # why there is no summary


def execute(plan: Plan, tracking_uri: str, *, address: str | None = None, echo: Callable[[str], None] = print,
            record_shards: bool = False, verbose: bool = False) -> Outcome:
    """Run the sweep to its end: the result records of its trials and its summary, which is also published on the
    sweep's MLflow run (``verbose``: Ray's own console output instead of benchxfer's view)."""
    from benchxfer.tracking import SweepRecorder

    spec = plan.spec
    recorder = SweepRecorder(tracking_uri, spec.name)  # an unreachable server fails here, in seconds, before Ray
    save_plan(plan)  # from here on `benchxfer resume NAME` finds the sweep
    ensure_ray(address)
    cluster.preflight(launch_of(plan, tracking_uri))  # a request no node can ever hold: refused before any work
    cluster.gpu_preflight(launch_of(plan, tracking_uri), [(c.knobs, c.task) for c in plan.cells])  # GPU memory, likewise
    for pspec in plan.to_pretrain:
        run_pretrain(pspec, tracking_uri, echo=echo, verbose=verbose)
    launch = launch_of(plan, tracking_uri)
    if record_shards:
        launch = Launch(**{**launch.__dict__, "record_shards": True})

    trials = plan.trials
    if spec.mode == "tune-then-repeat":  # the stage-2 trials are known only now
        trials = _tune_then_repeat(plan, launch, recorder, echo, verbose)
        save_plan(Plan(spec, plan.cells, trials, plan.roots, plan.to_pretrain))
    recorder.log_sweep({"mode": spec.mode, "trials": str(len(trials)), "inits": ",".join(i.name for i in spec.inits),
                        "datasets": ",".join(d.name for d in spec.datasets)},
                       Path(spec.path).read_text(), [t.summary() for t in trials])
    todo, final = pending(trials)
    echo(f"Sweep {spec.name!r}: {len(trials)} trials, {len(trials) - len(todo) - final} already finished, "
         + (f"{final} failed for a reason a retry cannot fix (not run again), " if final else "")
         + f"{len(todo)} to run.")
    if todo:
        run_trials(todo, launch, echo=echo, verbose=verbose)
        cluster.raise_if_stuck()  # the placement watcher stopped the experiment: say why, exit non-zero
    results = [r.to_dict() for t in trials if (r := TrialDir.of(spec.name, t.key).result())]
    failed = len(trials) - len(results)
    summary, no_summary = conclude(spec.name, tracking_uri, echo)
    recorder.finish("FINISHED" if not failed else "FAILED")
    echo(f"\n{len(results)} of {len(trials)} trials finished" + (f", {failed} failed or unfinished "
         f"(see `benchxfer status {spec.name}`)." if failed else "."))
    echo(f"MLflow runs: {recorder.url()}")
    return Outcome(results, summary, no_summary)


def conclude(sweep: str, tracking_uri: str, echo: Callable[[str], None]) -> tuple[Summary | None, str]:
    """The end of a sweep, in one place: its runs read once (MLflow, else the trial files), the report written
    and published on the sweep's MLflow run (one line, never raises), and the summary returned, or why there
    is none."""
    import tempfile

    from benchxfer.report import write_report
    from benchxfer.report_mlflow import publish
    from benchxfer.results import collect, default_baseline, load_curves

    try:
        runs = collect(sweep, tracking_uri)
    except BenchxferError as err:
        publish(sweep, tracking_uri, echo=echo)  # says in one line why nothing was published
        return None, str(err)
    with tempfile.TemporaryDirectory(prefix="benchxfer-report-") as tmp:
        try:
            rep = write_report(runs, tmp, baseline=default_baseline(runs.frame), title=f"benchxfer report: {sweep}",
                               history=load_curves(runs, tracking_uri))
        except BenchxferError as err:
            echo(f"MLflow: report not published ({' '.join(str(err).split())[:200]})")
            return None, str(err)
        publish(sweep, tracking_uri, report=rep, echo=echo)
    return rep.summary, ""


def _tune_then_repeat(plan: Plan, launch: Launch, recorder, echo, verbose: bool = False) -> list[Trial]:
    """Stage 1: every cell's lr search (:func:`benchxfer.search.run_stage1`: one Tune experiment, the best lrs in
    ``best_lr.json`` and the MLflow params ``best_lr.<init>.<dataset>``). Stage 2: every seed at each cell's best
    lr; the search trial that won is stage 2's first seed (same key), so it is not run again."""
    from benchxfer.search import run_stage1

    assert isinstance(plan.spec.lr, LrSearch)
    best = run_stage1(plan, launch, recorder, echo=echo, verbose=verbose)
    lrs = {(c.init, c.dataset.name): best[f"{c.init}|{c.dataset.name}"] for c in plan.cells}
    return expand(plan.spec, plan.cells, plan.roots, lrs=lrs, left_out=plan.left_out_shots)


def run_pretrain(spec: PretrainSpec, tracking_uri: str, echo=print, zoo_override: str | None = None,
                 address: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run (or continue) the pre-training on Ray and register its backbone in the zoo."""
    trial = plan_pretrain(spec)
    tdir = TrialDir.of(EXPERIMENT, trial.key)
    done = tdir.result()
    if done is None:
        r = spec.resources
        launch = Launch(sweep=EXPERIMENT, tracking_uri=tracking_uri, workers=r["workers"],
                        cpus_per_worker=r["cpus_per_worker"], gpus_per_worker=r["gpus_per_worker"],
                        trainer=r["trainer"], max_retries=spec.max_retries)
        ensure_ray(address)
        echo(f"Pre-training {spec.name!r} ({spec.arch}, from {spec.start}) on "
             f"{' + '.join(s['dataset'] for s in trial.config.sources)}: run {trial.key}")
        from benchxfer.tracking import SweepRecorder

        SweepRecorder(tracking_uri, EXPERIMENT)  # the experiment and its parent run, made once on the driver
        run_trials([trial], launch, finish=ExportBackbone(spec.name, zoo_override), echo=echo, verbose=verbose)
        done = tdir.result()
        if done is None:
            failure = tdir.failure()
            reason = failure.reason if failure else "no result was written"
            raise BenchxferError(f"pre-training {spec.name!r} failed: {reason.strip()[:300]}")
    return done.to_dict()
