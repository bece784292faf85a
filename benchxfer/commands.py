"""The run commands: sweep, resume, status, train, pretrain, ui. Each parses options, calls one
function, and prints the result; the work lives in planning, runner, pretraining and tracking."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.schema import check_address, check_knob_values, check_port_free


def _check_tracking_uri(ctx, param, value: str | None) -> str | None:
    from benchxfer.environment import VARIABLES

    var = next(v for v in VARIABLES if v.name == "MLFLOW_TRACKING_URI")
    if value is not None and (problem := var.check(value)):
        raise BenchxferError(f"--tracking-uri {value!r}: {problem}; allowed: {var.allowed}")
    return value


tracking_option = click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, metavar="URI", callback=_check_tracking_uri,
    help="MLflow tracking server (default: $MLFLOW_TRACKING_URI, else a local server that benchxfer starts "
         "on 127.0.0.1 with the SQLite store in $BENCHXFER_HOME).")
address_option = click.option(
    "--address", default=None, metavar="ADDR", callback=check_address,
    help="Ray cluster to join: 'auto' or 'ray://HOST:10001' (default: a local Ray session).")
zoo_option = click.option("--zoo", "zoo_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
                          help="Init zoo folder (default: $BENCHXFER_ZOO, else $BENCHXFER_HOME/zoo).")


def _use_zoo(zoo_dir: str | None) -> None:
    if zoo_dir:
        os.environ["BENCHXFER_ZOO"] = str(Path(zoo_dir).expanduser().resolve())


def _print_plan(plan, limit: int | None) -> None:
    d = plan.describe()
    trials = plan.trials
    shown = trials if limit is None else trials[:limit]
    click.echo(f"{'#':>5}  {'trial key':<60} {'recipe':<15} {'arch':<10} {'task':<12} {'micro':>5} "
               f"{'GPU memory':>12} {'per GPU':>7}")
    for i, t in enumerate(shown):
        g = _gpu_columns(plan, t)
        click.echo(f"{i:>5}  {t.key:<60} {t.recipe:<15} {t.config.arch:<10} {t.task:<12} {g['micro']:>5} "
                   f"{g['gpu_memory']:>12} {g['per_gpu']:>7}")
    if len(shown) < len(trials):
        click.echo(f"  ... {len(trials) - len(shown)} more (use --limit 0 to list all)")
    click.echo(f"Total: {d['trials']} trials = {d['inits']} inits x {d['datasets']} datasets x lr [{d['lr']}] "
               f"x {d['seeds']} seeds" + (f" x {d['shots']} shots" if d["shots"] != 1 else "") + _search_budget(plan))
    if any(_gpu_columns(plan, t)["gpu_memory"].endswith("*") for t in shown):
        click.echo("GPU memory: * extrapolated from the measured peaks (benchxfer/gpu_memory.py)")
    for pspec in plan.to_pretrain:
        click.echo(f"Before the trials: pre-train init {pspec.name!r} from {pspec.path}")
    _print_left_out(plan)
    if plan.absent:
        click.echo(f"Not on this machine ({len(plan.absent)}); the real run refuses until they are there:")
        for line in plan.absent:
            click.echo(f"  absent: {line}")


def _print_left_out(plan) -> None:
    for line in plan.left_out:  # cells the data cannot draw: the others are planned
        click.echo(f"  left out: {line}")


def _gpu_columns(plan, trial) -> dict[str, str]:
    """Per trial: images per micro-batch on a worker, the estimated GPU memory of each worker (* extrapolated
    from the measured table, benchxfer/gpu_memory.py) and how many trials share one GPU."""
    from benchxfer.gpu_memory import plan_columns

    r = plan.spec.resources
    return plan_columns(trial.config.to_dict(), trial.task, r["workers"], r["gpus_per_worker"])


def _search_budget(plan) -> str:
    """The lr search's stage 1, for the plan's summary line: its trials and how they run ('' for no search)."""
    from benchxfer.search import describe
    from benchxfer.spec import LrSearch

    lr = plan.spec.lr
    if not isinstance(lr, LrSearch):
        return ""
    n = len(plan.cells)
    return f"; stage 1 before them: {n} cells x {lr.trials} search trials = {n * lr.trials}, {describe(lr.options)}"


verbose_option = click.option("--verbose", is_flag=True,
                              help="Show Ray's and MLflow's full output (Tune's tables, worker logs) instead of "
                                   "benchxfer's compact view and its log file.")


def _run(plan, tracking_uri, address, verbose=False):
    from benchxfer.runner import execute
    from benchxfer.tracking import tracking_uri as tracking
    from benchxfer.trialdir import SweepDir

    started = time.time()
    _print_left_out(plan)
    with tracking(tracking_uri, echo=click.echo) as uri:  # the caller holds the sweep's lock
        outcome = execute(plan, uri, address=address, echo=click.echo, verbose=verbose)
        click.echo("\n" + outcome.summary.markdown() if outcome.summary else f"(no summary: {outcome.no_summary})")
        results = outcome.results
    click.echo(f"\nDone in {time.time() - started:.0f} s. Tables and figures: benchxfer report {plan.spec.name}")
    click.echo("Browse and compare the runs: benchxfer ui" + (f" --tracking-uri {tracking_uri}" if tracking_uri else ""))
    expected = len(SweepDir(plan.spec.name).trials() or [])
    if len(results) < expected:  # a sweep with unfinished trials is not a success, whatever it printed
        name = plan.spec.name
        raise BenchxferError(f"sweep {name!r}: {expected - len(results)} of {expected} trials did not finish; "
                             f"see `benchxfer status {name}`, then `benchxfer resume {name}`")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate, list every trial and the total, and start nothing.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0),
              help="Trials listed by --dry-run (0: all).")
@tracking_option
@address_option
@zoo_option
@verbose_option
def sweep(file, dry_run, limit, tracking_uri, address, zoo_dir, verbose):
    """Validate a sweep FILE, then run all its trials as one Ray Tune experiment.

    Everything is checked before Ray starts: keys, values, inits (and their files in the zoo), dataset
    folders. Trials that finished in an earlier run of the same sweep are not run again. The sweep ends
    with the per-init mean +/- std table; `benchxfer report NAME` makes the full report.
    """
    from benchxfer.planning import make_plan

    _use_zoo(zoo_dir)
    if dry_run:
        _print_plan(make_plan(file, zoo_dir, dry_run=True), None if limit == 0 else limit)
        return
    from benchxfer import locks
    from benchxfer.spec import load_spec

    with locks.sweep(load_spec(file).name, echo=click.echo):  # before the synthetic data is written, to the end
        _run(make_plan(file, zoo_dir, write_synthetic=True), tracking_uri, address, verbose)


@click.command()
@click.argument("name")
@tracking_option
@address_option
@zoo_option
@verbose_option
def resume(name, tracking_uri, address, zoo_dir, verbose):
    """Continue the interrupted or partly failed sweep NAME.

    Finished trials are not run again; interrupted and failed ones continue from their last epoch
    checkpoint, in the same MLflow runs.
    """
    from benchxfer.planning import make_plan
    from benchxfer.trialdir import SweepDir

    _use_zoo(zoo_dir)
    sdir = SweepDir(name)
    damage = sdir.missing()
    if damage:
        source = _readable_source(sdir)
        raise BenchxferError(f"sweep {name!r} in {sdir.path} is damaged: {damage}; "
                             + (f"restore it, or start the sweep again with `benchxfer sweep {source}`" if source
                                else "restore it, or start the sweep again with `benchxfer sweep FILE`"))
    if not sdir.exists():
        known = sorted(p.name for p in paths.runs_dir().iterdir()) if paths.runs_dir().exists() else []
        raise BenchxferError(f"no sweep named {name!r} in {paths.runs_dir()}; known: {', '.join(known) or 'none'}")
    source = sdir.source()
    from benchxfer import locks

    with locks.sweep(name, echo=click.echo):  # held from the plan (it may write synthetic data) to the end
        plan = make_plan(sdir.spec_copy, zoo_dir, write_synthetic=True)  # the sweep as it was started
        if source and Path(source).exists() and Path(source).resolve() != sdir.spec_copy.resolve():
            _refuse_changed(name, plan, make_plan(source, zoo_dir, write_synthetic=True), source)
        _run(plan, tracking_uri, address, verbose)


def _readable_source(sdir) -> str | None:
    try:
        return sdir.source()
    except BenchxferError:
        return None


def _refuse_changed(name: str, started, now, source: str) -> None:
    """``resume NAME`` resumes the sweep that was started. A sweep file since renamed or given other trials
    would make a different sweep: refuse, and show the difference."""
    if now.spec.name != name:
        raise BenchxferError(f"resume {name}: {source} now names the sweep {now.spec.name!r}; run it with "
                             f"`benchxfer sweep {source}`, or restore the name to resume")
    before, after = {t.key for t in started.trials}, {t.key for t in now.trials}
    if before != after:
        added, removed = sorted(after - before), sorted(before - after)
        diff = "; ".join(f"{label} {len(keys)} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
                         for label, keys in (("added", added), ("removed", removed)) if keys)
        raise BenchxferError(f"resume {name}: {source} has changed its trials since the sweep started: {diff}; "
                             f"run it as a new sweep under another name, or restore the file")


STATES = ("finished", "stopped", "failed", "interrupted", "pending", "damaged")


def trial_states(name: str) -> list[dict]:
    """One row per trial: its state (finished, stopped by the search, failed, interrupted, pending), epoch, best,
    error, and ``planned``: whether it is in ``trials.json``. The expected trials come first; then the other
    trial folders of the sweep (stage-1 search trials that lost or were stopped), each with ``planned`` False."""
    from benchxfer.trialdir import SweepDir

    sdir = SweepDir(name)
    trials = sdir.trials()
    if trials is None:
        raise BenchxferError(f"no sweep named {name!r} in {paths.runs_dir()} (run `benchxfer sweep FILE` first)")
    planned = [t["trial_key"] for t in trials]
    known = set(planned)
    folders = sdir.path / "trials"
    others = sorted(p.name for p in folders.iterdir() if p.is_dir() and p.name not in known) if folders.is_dir() else []
    return [_trial_row(sdir.trial(k), True) for k in planned] + [_trial_row(sdir.trial(k), False) for k in others]


def _trial_row(tdir, planned: bool) -> dict:
    from benchxfer.trialdir import TrialState

    row = {"trial_key": tdir.key, "state": "pending", "epoch": "", "best": "", "error": "", "planned": planned}
    damage = tdir.damage()
    if damage:  # never shown as a state it is not: the file and what is wrong with it
        row.update(state="damaged", error=f"damaged: {damage}")
        return row
    prog = tdir.progress()
    if prog:
        row.update(state="interrupted", epoch=prog.epoch)
        if prog.best:
            metric = next((k for k in prog.best if k.startswith("val_") and k != "val_loss"), "val_loss")
            row["best"] = f"{metric}={prog.best[metric]:.4f}@{prog.best_epoch}"
    state = tdir.state()
    if state is TrialState.FINISHED:
        res = tdir.result()
        row.update(state="finished", epoch=res.epochs_run - 1,
                   best=f"test_{res.metric}={res.value:.4f}@{res.best_epoch}")
    elif state is TrialState.STOPPED:
        stop = tdir.stopped()
        row.update(state="stopped", epoch=stop.epoch, error=f"stopped by the search at rung {stop.rung}")
    elif state in (TrialState.FAILED, TrialState.RETRYABLE):
        row.update(state="failed", error=str(tdir.failure().reason)[:120])
    return row


@click.command()
@click.argument("name")
def status(name):
    """Print every trial of sweep NAME with its state, epoch, best score and error line; then the lr search's
    other trials (those that lost, or that the search stopped), if any."""
    rows = trial_states(name)
    header = f"{'trial key':<60} {'state':<12} {'epoch':>5}  {'best':<28} error"
    click.echo(header)
    planned = [r for r in rows if r["planned"]]
    others = [r for r in rows if not r["planned"]]
    for r in planned:
        click.echo(f"{r['trial_key']:<60} {r['state']:<12} {r['epoch']!s:>5}  {r['best']:<28} {r['error']}")
    if others:
        click.echo(f"\nlr search trials not in the sweep's trials ({len(others)}):")
        click.echo(header)
        for r in others:
            click.echo(f"{r['trial_key']:<60} {r['state']:<12} {r['epoch']!s:>5}  {r['best']:<28} {r['error']}")
    counts = {s: sum(r["state"] == s for r in planned) for s in STATES}
    line = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "stopped" and (v or k != "damaged")) \
        + f" ({len(planned)} trials)"
    if others:
        n_stopped = sum(r["state"] == "stopped" for r in rows)
        line += f"; lr search: {len(others)} other trials, {n_stopped} stopped by the search"
    click.echo(line)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--trial", "index", default=0, show_default=True, help="Which trial of the sweep (its # in --dry-run).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a training setting for this run (e.g. --set epochs=2). Repeatable.")
@zoo_option
def train(file, index, sets, zoo_dir):
    """Run one trial of sweep FILE in this process, without Ray or MLflow (for debugging).

    It uses the same training function as the sweep, and its own trial folder, so it also resumes.
    """
    import yaml

    from benchxfer.planning import make_plan
    from benchxfer.recipes import TrainConfig
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime

    _use_zoo(zoo_dir)
    plan = make_plan(file, zoo_dir, write_synthetic=True)
    if not 0 <= index < len(plan.trials):
        raise BenchxferError(f"--trial {index}: the sweep has trials 0 to {len(plan.trials) - 1}")
    trial = plan.trials[index]
    config = trial.config.to_dict()
    from benchxfer.recipes.config import check_knobs
    from benchxfer.recipes.registry import check_names
    from benchxfer.schema import check_combinations

    extra = {}
    for item in sets:
        if "=" not in item:
            raise BenchxferError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            extra[k] = yaml.safe_load(v)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise BenchxferError(f"--set {item!r}: the value is not valid YAML ({problem}); quote a string, "
                                 "e.g. --set 'augment=plain'") from None
    config.update(check_knob_values(check_knobs(extra, "--set"), "--set"))
    check_names(config, "--set")  # the same names the sweep file is held to
    check_combinations(config, [trial.shot], "--set")
    tdir = paths.sweep_dir(plan.spec.name) / "local" / trial.key
    click.echo(f"Training {trial.key} in-process; folder {tdir}")
    threads = max(1, int(plan.spec.resources["cpus_per_worker"]))  # as a sweep's worker: same numbers
    result = train_run(TrainConfig.from_dict(config),
                       Runtime(trial_dir=str(tdir), session="local", threads=threads)).to_dict()
    click.echo(json.dumps({k: result[k] for k in ("trial_key", "metric", "value", "test", "best_epoch",
                                                  "epochs_run", "wall_seconds")}, indent=1))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@tracking_option
@address_option
@zoo_option
def pretrain(file, tracking_uri, address, zoo_dir):
    """Pre-train a new init from FILE on Ray Train and register it in the zoo under the file's name.

    Sources are merged on their common labels (missing and uncertain labels are masked out of the loss).
    Run the same command again after a kill: it continues from the last epoch checkpoint.
    """
    from benchxfer.pretraining import load_pretrain_spec
    from benchxfer.runner import run_pretrain
    from benchxfer.tracking import tracking_uri as tracking

    _use_zoo(zoo_dir)
    spec = load_pretrain_spec(file)
    with tracking(tracking_uri, echo=click.echo) as uri:
        result = run_pretrain(spec, uri, echo=click.echo, zoo_override=zoo_dir, address=address)
    click.echo(f"Init {spec.name!r} is in the zoo ({result.get('zoo_path', 'already there')}); "
               f"use it in a sweep as `inits: [{spec.name}]`.")


@click.command()
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the UI on 127.0.0.1.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Anything but 127.0.0.1 exposes your runs to the network.")
def ui(port, host):
    """Open the MLflow UI on the local store ($BENCHXFER_HOME/mlflow.db). Ctrl-C stops it."""
    from benchxfer.tracking import LocalServer, client, ui_url

    check_port_free(host, port)
    server = LocalServer(port=port, host=host)
    uri = server.start()
    try:
        exps = [e for e in client(uri).search_experiments() if e.name != "Default"]
        click.echo(f"MLflow UI: {uri}")
        for e in exps:
            click.echo(f"  {e.name}: {ui_url(uri, e.experiment_id)}")
        click.echo("Ctrl-C to stop.")
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
