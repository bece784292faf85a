"""The run commands: sweep, resume, status, train, pretrain, ui. Each parses options, calls one
function, and prints the result; the work lives in planning, runner, pretraining and tracking."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import click

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.plan.schema import check_address, check_knob_values, check_port_free
from benchxfer.trialdir import TrialState


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
def _address(ctx, param, value: str | None) -> str | None:
    """``--address``, or ``$RAY_ADDRESS`` as Ray itself reads it: the cluster to join; said in a line when it came
    from the environment, so that a sweep never joins (or, before, silently ignored) a cluster nobody named here."""
    from benchxfer.launch import cluster

    value = check_address(ctx, param, value)
    if value is not None and ctx.get_parameter_source(param.name) is click.core.ParameterSource.ENVIRONMENT \
            and value != cluster.SESSION_ADDRESS:  # not the session this process runs (set for its children)
        click.echo(f"Ray: joining the cluster at $RAY_ADDRESS={value}, as Ray itself does (unset RAY_ADDRESS for a "
                   "local session of this command's own)")
    return value


address_option = click.option(
    "--address", envvar="RAY_ADDRESS", default=None, metavar="ADDR", callback=_address,
    help="Ray cluster to join: 'auto', HOST:PORT or 'ray://HOST:10001' (default: $RAY_ADDRESS, as Ray reads it; "
         "else a local Ray session of this command's own).")
zoo_option = click.option("--zoo", "zoo_dir", default=None, type=click.Path(file_okay=False), metavar="DIR",
                          help="Init zoo folder (default: $BENCHXFER_ZOO, else $BENCHXFER_HOME/zoo).")


def _use_zoo(zoo_dir: str | None) -> None:
    if zoo_dir:
        os.environ["BENCHXFER_ZOO"] = str(Path(zoo_dir).expanduser().resolve())


verbose_option = click.option("--verbose", is_flag=True,
                              help="Show Ray's and MLflow's full output (Tune's tables, worker logs) instead of "
                                   "benchxfer's compact view and its log file.")


def _run(plan, tracking_uri, address, verbose=False, command="sweep"):
    from benchxfer.launch.runner import execute
    from benchxfer.report.results import check_store, record_store
    from benchxfer.tracking import tracking_uri as tracking

    started = time.time()
    check_store(plan.spec.name, tracking_uri, command)  # where its finished trials' runs are, or refused
    try:
        with tracking(tracking_uri, echo=click.echo) as uri:  # the caller holds the sweep's lock
            try:
                outcome = execute(plan, uri, address=address, echo=click.echo, verbose=verbose)
            except OSError as err:  # the disk filled under the driver itself: a fault, said in one line
                if err.errno != errno.ENOSPC:
                    raise
                name = plan.spec.name
                raise BenchxferError(f"sweep {name!r} stopped, the disk is full: {err.filename or paths.sweep_dir(name)}: "
                                     f"{err.strerror}; finished trials are kept; make room, then "
                                     f"`benchxfer resume {name}`") from None
            click.echo("\n" + outcome.summary.markdown() if outcome.summary else f"(no summary: {outcome.no_summary})")
    finally:
        record_store(plan.spec.name, tracking_uri)  # once the sweep is started (its sweep.yaml kept)
    click.echo(f"\nDone in {time.time() - started:.0f} s. Tables and figures: benchxfer report {plan.spec.name}")
    click.echo("Browse and compare the runs: benchxfer ui" + (f" --tracking-uri {tracking_uri}" if tracking_uri else ""))
    if outcome.unfinished:  # a sweep with unfinished trials is not a success, whatever it printed (runner counted)
        name = plan.spec.name
        raise BenchxferError(f"sweep {name!r}: {outcome.unfinished} of {outcome.total} trials did not finish; "
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
    from benchxfer.plan.identity import refuse_other_sweep
    from benchxfer.plan.planning import make_plan
    from benchxfer.plan.spec import load_spec

    _use_zoo(zoo_dir)
    spec = load_spec(file)  # read once, for the dry run and the real one (its name is the lock's)
    if dry_run:
        refuse_other_sweep(spec, file)  # what the real run refuses
        from benchxfer.plan.listing import lines

        for line in lines(make_plan(spec, zoo_dir, dry_run=True), None if limit == 0 else limit):
            click.echo(line)
        return
    from benchxfer import locks

    with locks.sweep(spec.name, echo=click.echo):  # before the synthetic data is written, to the end
        refuse_other_sweep(spec, file)  # under the lock: no other sweep starts under the name meanwhile
        _run(make_plan(spec, zoo_dir, write_synthetic=True), tracking_uri, address, verbose)


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
    from benchxfer.plan.identity import readable_source, refuse_changed_trials
    from benchxfer.plan.planning import make_plan
    from benchxfer.trialdir import SweepDir

    _use_zoo(zoo_dir)
    sdir = SweepDir(name)
    damage = sdir.missing()
    if damage:
        source = readable_source(sdir)
        raise BenchxferError(f"sweep {name!r} in {sdir.path} is damaged: {damage}; "
                             + (f"restore it, or start the sweep again with `benchxfer sweep {source}`" if source
                                else "restore it, or start the sweep again with `benchxfer sweep FILE`"))
    if not sdir.exists():
        known = sorted(p.name for p in paths.runs_dir().iterdir()) if paths.runs_dir().exists() else []
        raise BenchxferError(f"no sweep named {name!r} in {paths.runs_dir()}; known: {', '.join(known) or 'none'}")
    source = sdir.source()
    from benchxfer import locks

    with locks.sweep(name, echo=click.echo):  # held from the plan (it may write synthetic data) to the end
        from benchxfer.plan.spec import load_spec

        started = load_spec(sdir.spec_copy, base=Path(source).parent if source else None)  # relative roots: as run
        plan = make_plan(started, zoo_dir, write_synthetic=True)  # the sweep as it was started
        if source and Path(source).exists() and Path(source).resolve() != sdir.spec_copy.resolve():
            try:
                now = make_plan(source, zoo_dir, dry_run=True)
            except BenchxferError as err:  # the sweep runs from its own copy: a source broken since is said, not fatal
                click.echo(f"Note: {source} no longer reads as a sweep file ({str(err).removeprefix(source + ': ')}); "
                           f"resuming sweep {name!r} from its own copy {sdir.spec_copy}")
            else:
                refuse_changed_trials(name, plan, now, source)
        _run(plan, tracking_uri, address, verbose, command="resume")


# the states benchxfer status shows, in the order of its counts line
STATES = (TrialState.FINISHED, TrialState.STOPPED, TrialState.FAILED, TrialState.RETRYABLE, TrialState.INTERRUPTED,
          TrialState.PENDING, TrialState.DAMAGED)


def trial_states(name: str) -> list[dict]:
    """One row per trial: its state (finished, stopped by the search, failed, retryable, interrupted, pending), epoch, best,
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
    row = {"trial_key": tdir.key, "state": TrialState.PENDING.value, "epoch": "", "best": "", "error": "",
           "planned": planned}
    damage = tdir.damage()
    if damage:  # never shown as a state it is not: the file and what is wrong with it
        row.update(state=TrialState.DAMAGED.value, error=f"damaged: {damage}")
        return row
    prog = tdir.progress()
    if prog:
        row.update(state=TrialState.INTERRUPTED.value, epoch=prog.epoch)
        if prog.best:
            metric = next((k for k in prog.best if k.startswith("val_") and k != "val_loss"), "val_loss")
            row["best"] = f"{metric}={prog.best[metric]:.4f}@{prog.best_epoch}"
    state = tdir.state()
    if state is TrialState.FINISHED:
        res = tdir.result()
        row.update(state=TrialState.FINISHED.value, epoch=res.epochs_run - 1,
                   best=f"test_{res.metric}={res.value:.4f}@{res.best_epoch}")
    elif state is TrialState.STOPPED:
        stop = tdir.stopped()
        row.update(state=TrialState.STOPPED.value, epoch=stop.epoch, error=f"stopped by the search at rung {stop.rung}")
    elif state in (TrialState.FAILED, TrialState.RETRYABLE):  # retryable: `benchxfer resume` runs it again
        row.update(state=state.value, error=str(tdir.failure().reason)[:120])
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
    counts = {s.value: sum(r["state"] == s for r in planned) for s in STATES}
    line = ", ".join(f"{v} {k}" for k, v in counts.items() if k != TrialState.STOPPED
                     and (v or k not in (TrialState.DAMAGED, TrialState.RETRYABLE))) \
        + f" ({len(planned)} trials)"
    if others:
        n_stopped = sum(r["state"] == TrialState.STOPPED for r in rows)
        line += f"; lr search: {len(others)} other trials, {n_stopped} stopped by the search"
    click.echo(line)
    damaged = [r for r in rows if r["state"] == TrialState.DAMAGED]
    if damaged:  # shown above; the exit status says it too
        raise BenchxferError(f"sweep {name!r}: {len(damaged)} damaged trial(s), the first: {damaged[0]['trial_key']} "
                             f"({damaged[0]['error']}); restore or remove the file, then `benchxfer resume {name}`")


def set_key(key: str, planned: dict, config: dict) -> str:
    """The key of a ``train`` run: the trial's own when ``--set`` changed nothing that decides the result, else
    the trial's key and a hash of the values ``--set`` changed, so that it trains in a folder of its own (a run
    with other knobs never continues, nor reports, another's checkpoints and result)."""
    import hashlib

    from benchxfer.recipes.config import EXECUTION_ONLY

    changed = {k: config[k] for k in sorted(config) if k not in EXECUTION_ONLY and config[k] != planned.get(k)}
    if not changed:
        return key
    return f"{key}_set-{hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:8]}"


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
    import dataclasses

    import yaml

    from benchxfer.plan.planning import make_plan
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime

    _use_zoo(zoo_dir)
    plan = make_plan(file, zoo_dir, write_synthetic=True)
    if not 0 <= index < len(plan.trials):
        raise BenchxferError(f"--trial {index}: the sweep has trials 0 to {len(plan.trials) - 1}")
    trial = plan.trials[index]
    from benchxfer.plan.schema import check_combinations
    from benchxfer.recipes.config import check_knobs
    from benchxfer.recipes.parts import check_micro_batch
    from benchxfer.recipes.registry import check_names

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
    changes = check_knob_values(check_knobs(extra, "--set"), "--set")
    planned = trial.config.to_dict()
    config = {**planned, **changes}
    check_names(config, "--set")  # the same rules the sweep file is held to
    check_combinations(config, [trial.shot], "--set")
    check_micro_batch(config, trial.task, "--set")
    key = set_key(trial.key, planned, config)
    tdir = paths.sweep_dir(plan.spec.name) / "local" / key
    from benchxfer import locks

    with locks.held(locks.train_lock_path(plan.spec.name, key), f"trial {key} of sweep {plan.spec.name!r}",
                    echo=click.echo):
        click.echo(f"Training {key} in-process; folder {tdir}")
        threads = max(1, int(plan.spec.resources.cpus_per_worker))  # as a sweep's worker: same numbers
        result = train_run(dataclasses.replace(trial.config, **changes, trial_key=key),
                           Runtime(trial_dir=str(tdir), session="local", threads=threads)).to_dict()
    click.echo(json.dumps({k: result[k] for k in ("trial_key", "metric", "value", "test", "best_epoch",
                                                  "epochs_run", "wall_seconds")}, indent=1))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@tracking_option
@address_option
@zoo_option
@click.option("--force", is_flag=True, help="Replace an init of the same name already in the zoo (an import, or "
                                            "another pre-training's backbone).")
def pretrain(file, tracking_uri, address, zoo_dir, force):
    """Pre-train a new init from FILE on Ray Train and register it in the zoo under the file's name.

    Sources are merged on their common labels (missing and uncertain labels are masked out of the loss).
    Run the same command again after a kill: it continues from the last epoch checkpoint. A name the zoo
    already holds for something else is refused unless --force.
    """
    from benchxfer.launch.pretrain import run_pretrain
    from benchxfer.plan.pretraining import check_zoo_name, load_pretrain_spec, plan_pretrain
    from benchxfer.tracking import tracking_uri as tracking

    _use_zoo(zoo_dir)
    spec = load_pretrain_spec(file)
    check_zoo_name(spec, plan_pretrain(spec), zoo_dir, force)  # before MLflow and Ray start
    from benchxfer import locks

    with locks.pretrain(spec.name, echo=click.echo), tracking(tracking_uri, echo=click.echo) as uri:
        result = run_pretrain(spec, uri, echo=click.echo, zoo_override=zoo_dir, address=address, force=force)
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
