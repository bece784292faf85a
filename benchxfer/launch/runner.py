"""One sweep from plan to summary: pre-train missing inits (:mod:`benchxfer.launch.pretrain`), run the trials
on Ray, summarise.

``benchxfer sweep`` and ``benchxfer resume`` both come here. Trials that finished before (their
``result.json`` exists) are not launched again; interrupted ones continue from their last epoch
checkpoint; failed ones are retried, except those that failed for a reason a retry cannot fix (a NaN
loss): they stay failed, with their reason, until their folder is removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from benchxfer import locks
from benchxfer.errors import BenchxferError
from benchxfer.launch import cluster
from benchxfer.launch.cluster import Launch
from benchxfer.launch.pretrain import run_pretrain
from benchxfer.launch.sweep import ensure_ray, run_trials
from benchxfer.plan import disk
from benchxfer.plan.planning import Plan
from benchxfer.trial import Trial
from benchxfer.trialdir import DEFAULT_KEEP, SweepDir, TrialDir, TrialState

if TYPE_CHECKING:
    from benchxfer.report.summary import Summary


def save_plan(plan: Plan) -> SweepDir:
    """The sweep's folder keeps the sweep file as run, the list of expected trials and the data they read."""
    sdir = SweepDir(plan.spec.name)
    keep_history(sdir, Path(plan.spec.path))
    sdir.save_plan(plan.spec.path, [t.summary() for t in plan.trials])
    record_data(plan)
    return sdir


def keep_history(sdir: SweepDir, source: Path) -> None:
    """A sweep's record keeps every file it ran: a file that differs from the sweep's copy only in how it runs
    (``sweep`` refuses any other difference) replaces the copy, and the copy it replaces is kept first as
    ``history/sweep-N.yaml``."""
    import shutil

    copy = sdir.spec_copy
    if not copy.is_file() or source.resolve() == copy.resolve() or source.read_bytes() == copy.read_bytes():
        return
    history = sdir.path / "history"
    history.mkdir(exist_ok=True)
    n = 1 + max((int(p.stem.split("-")[-1]) for p in history.glob("sweep-*.yaml") if p.stem.split("-")[-1].isdigit()),
                default=0)
    shutil.copy2(copy, history / f"sweep-{n}.yaml")


DATA_RECORD = "data.json"  # runs/<sweep>/data.json: per dataset, the root its trials read and its listing's hash


def data_identity(root: str) -> dict[str, str]:
    """What a dataset's trials read: its root and a fingerprint of its listing (the names and sizes of the root's
    own files, the names of its folders: the list files and CSVs that define the splits, the image folders), read
    without walking the images."""
    import hashlib
    import os

    entries = []
    with os.scandir(root) as it:
        for e in it:
            if e.name.startswith("."):
                continue  # benchxfer's own markers and locks
            entries.append(f"{e.name}/" if e.is_dir() else f"{e.name}:{e.stat().st_size}")
    digest = hashlib.sha1("\n".join(sorted(entries)).encode()).hexdigest()[:12]
    return {"root": str(Path(root).resolve()), "listing": digest}


def _data_now(plan: Plan) -> dict[str, dict[str, str]]:
    return {name: data_identity(root) for name, root in sorted(plan.roots.items()) if Path(root).is_dir()}


def record_data(plan: Plan) -> None:
    """Keep the data the sweep's trials read; what is recorded stays (:func:`check_data` refused another before)."""
    from benchxfer.trialdir import read_json, write_json

    path = SweepDir(plan.spec.name).path / DATA_RECORD
    before = read_json(path, "the data the sweep read") if path.is_file() else {}
    merged = {**_data_now(plan), **(before if isinstance(before, dict) else {})}
    if merged != before:
        write_json(path, merged)


def check_data(plan: Plan) -> None:
    """A sweep (``sweep`` or ``resume``) reads the data its finished trials read: another root, or a root whose
    listing changed (other list files, another copy), would mix two data sets under one name; refused in one line."""
    from benchxfer.trialdir import read_json

    sdir = SweepDir(plan.spec.name)
    path = sdir.path / DATA_RECORD
    if not path.is_file():
        return
    before = read_json(path, "the data the sweep read")
    if not isinstance(before, dict):
        raise BenchxferError(f"{path}: expected a mapping of dataset to its root and listing; restore or remove it")
    for name, now in _data_now(plan).items():
        was = before.get(name)
        if isinstance(was, dict) and was != now:
            what = (f"its trials read {was.get('root')}, now {now['root']}" if was.get("root") != now["root"] else
                    f"the listing of {now['root']} changed since its trials read it (files added, removed or "
                    f"resized: {was.get('listing')} -> {now['listing']})")
            raise BenchxferError(
                f"sweep {plan.spec.name!r}: dataset {name!r} is not the data of the finished trials: {what}; give the "
                f"sweep another name: for this data, or restore the data (remove {path} only if the change does not "
                "matter to the results)")


def launch_of(plan: Plan, tracking_uri: str, record_shards: bool = False) -> Launch:
    """The sweep's run settings, from its ``resources:``, ``failure:`` and ``keep`` records."""
    s = plan.spec
    return Launch.of(s.name, tracking_uri, s.resources, s.failure, keep=s.keep, record_shards=record_shards)


def pending(trials: list[Trial], keep: str = DEFAULT_KEEP) -> tuple[list[Trial], int]:
    """The trials to launch, and how many are left out because they failed for good. A retryable failure
    is forgotten: the trial runs again from its last checkpoint. A trial the lr search stopped is final too,
    and not counted as failed (a stage-2 trial never is one: its lr won the search, so it was not stopped).
    A final trial's folder is left as ``keep`` asks (what a driver stopped before its tidy-up left behind)."""
    out, final = [], 0
    for t in trials:
        tdir = TrialDir.of(t.config.sweep, t.key)
        state = tdir.state()
        if state in (TrialState.FINISHED, TrialState.STOPPED):
            tdir.tidy(keep)
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
    """How a sweep ended: the result records of its finished trials out of its ``total``, and its summary table."""

    results: list[dict[str, Any]]
    total: int  # the sweep's trials (after a tune-then-repeat search: stage 2's)
    summary: Summary | None  # the per-init table (report.Summary), read once from MLflow, else the trial files
    no_summary: str = ""  # why there is no summary

    @property
    def unfinished(self) -> int:
        """Trials without a result: failed, stopped by a placement watcher or an interrupt, never started."""
        return self.total - len(self.results)


def execute(plan: Plan, tracking_uri: str, *, address: str | None = None, echo: Callable[[str], None] = print,
            record_shards: bool = False, verbose: bool = False) -> Outcome:
    """Run the sweep to its end: the result records of its trials and its summary, which is also published on the
    sweep's MLflow run (``verbose``: Ray's own console output instead of benchxfer's view)."""
    from benchxfer.tracking import SweepRecorder

    spec = plan.spec
    check_data(plan)  # the data its finished trials read, or refused
    recorder = SweepRecorder(tracking_uri, spec.name)  # an unreachable server fails here, in seconds, before Ray
    save_plan(plan)  # from here on `benchxfer resume NAME` finds the sweep
    launch = launch_of(plan, tracking_uri, record_shards)
    ensure_ray(address)
    cluster.preflight(launch)  # a request no node can ever hold: refused before any work
    cluster.gpu_preflight(launch, [(c.config(), c.task) for c in plan.cells])  # GPU memory, likewise
    warning = disk.check_sweep(plan, at_once=partial(cluster.max_trials, launch))  # the disk, likewise
    if warning:
        echo(warning)
    for pspec in plan.to_pretrain:
        with locks.pretrain(pspec.name, echo):  # as `benchxfer pretrain` holds it: one run of it at a time
            run_pretrain(pspec, tracking_uri, echo=echo, verbose=verbose)

    trials = plan.trials
    if spec.mode == "tune-then-repeat":  # the stage-2 trials are known only now
        from benchxfer.launch.search import tune_then_repeat

        trials = tune_then_repeat(plan, launch, recorder, echo=echo, verbose=verbose)
        save_plan(Plan(spec, plan.cells, trials, plan.roots, plan.to_pretrain))
    recorder.log_sweep({"mode": spec.mode, "trials": str(len(trials)), "inits": ",".join(i.name for i in spec.inits),
                        "datasets": ",".join(d.name for d in spec.datasets)},
                       Path(spec.path).read_text(), [t.summary() for t in trials])
    todo, final = pending(trials, spec.keep)
    echo(f"Sweep {spec.name!r}: {len(trials)} trials, {len(trials) - len(todo) - final} already finished, "
         + (f"{final} failed for a reason a retry cannot fix (not run again), " if final else "")
         + f"{len(todo)} to run.")
    if todo:
        run_trials(todo, launch, echo=echo, verbose=verbose)
        cluster.raise_if_stuck()  # the placement watcher stopped the experiment: say why, exit non-zero
    results = [r.to_dict() for t in trials if (r := TrialDir.of(spec.name, t.key).result())]
    summary, no_summary = conclude(spec.name, tracking_uri, echo)
    outcome = Outcome(results, len(trials), summary, no_summary)
    recorder.finish("FINISHED" if not outcome.unfinished else "FAILED")
    echo(f"\n{len(results)} of {len(trials)} trials finished" + (f", {outcome.unfinished} failed or unfinished "
         f"(see `benchxfer status {spec.name}`)." if outcome.unfinished else "."))
    echo(f"MLflow runs: {recorder.url()}")
    return outcome


def conclude(sweep: str, tracking_uri: str, echo: Callable[[str], None]) -> tuple[Summary | None, str]:
    """The end of a sweep, in one place: its runs read once (MLflow, else the trial files), the report written
    and published on the sweep's MLflow run (one line, never raises), and the summary returned, or why there
    is none."""
    import tempfile

    from benchxfer.report.publish import publish
    from benchxfer.report.results import collect, default_baseline, load_curves
    from benchxfer.report.write import write_report

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
