"""Stage 1 of ``mode: tune-then-repeat``: the lr search of every (init, dataset) cell, in ONE Tune experiment.

Each cell keeps its own Optuna study (``OptunaSearch``, seeded with the sweep's first seed, minimising
``best_val_loss``); :class:`CellSearcher` routes Tune's suggest/complete calls to the study of the trial's cell,
so all cells' trials run at once, limited only by the cluster's slots.

With ``scheduler: asha`` (or ``hyperband``) each cell also has its own Ray Tune ``AsyncHyperBandScheduler``
(successive halving over epochs; ``hyperband`` runs several brackets): :class:`CellScheduler` routes each epoch's
result to the scheduler of its cell, so that lrs are only ever compared with lrs of the same cell. A trial the
scheduler stops keeps its MLflow run (tagged ``benchxfer.status=stopped``, ``benchxfer.rung``) and gets a
``stopped.json`` marker in its folder; it is final, like a finished trial.

Resume is exact. (1) An Optuna study seeded alike suggests the same lrs: its first ``n_startup_trials`` (10)
suggestions are random draws that do not depend on results. (2) Every result a cell's scheduler saw is appended,
in order, to ``search_events.jsonl`` in the sweep folder; a resumed search replays them into fresh schedulers, so
the rungs hold what they held, under the trial keys. (3) Finished trials report their ``result.json`` and stopped
ones their ``stopped.json`` (:class:`benchxfer.trialdir.Stopped`), without training; interrupted ones continue
from their epoch checkpoint. Every trial reaches :func:`benchxfer.sweep.run_trial` as plain data,
``{"trial": {"cell": <cell id>, "lr": <lr>}}`` (:func:`benchxfer.tunespace.searched`), and becomes a trial again
through :func:`benchxfer.tunespace.trial_of` with the cells' :class:`Searched` sources, which reach the trainable
once through ``tune.with_parameters``; its files are read and written only through :class:`TrialDir`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.schema import (  # noqa: F401  (the sweep file's options, re-exported)
    OPTION_KEYS,
    SCHEDULERS,
    SEARCH_METRIC,
    SearchOptions,
    parse_search_options,
)
from benchxfer.trialdir import Stopped, SweepDir, TrialDir
from benchxfer.tunespace import Shared, TrialIndex, TrialSource, cell_of, searched, trial_of

if TYPE_CHECKING:
    from benchxfer.planning import Cell
    from benchxfer.spec import Trial

EVENTS = "search_events.jsonl"
log = logging.getLogger("benchxfer")


@dataclass(frozen=True)
class Searched:
    """A cell of an lr search: the trial exists once the searcher has picked its lr."""

    cell: Cell
    sweep: str
    seed: int
    shot: int | None
    root: str

    def make(self, lr: float) -> Trial:
        return self.cell.trial(self.sweep, lr, self.seed, self.shot, self.root)



def cell_id(cell) -> str:
    return f"{cell.init}|{cell.dataset.name}"


# --- a trial the search stopped -----------------------------------------------------------------------

def write_stopped(tdir: TrialDir, rung: int, result: dict[str, Any]) -> Stopped:
    """Mark a trial as stopped by the search at ``rung`` (epochs trained), keeping its last reported metrics."""
    metrics = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and (k in ("epoch", SEARCH_METRIC, "train_loss", "lr") or k.startswith("val_"))}
    marker = Stopped(rung=int(rung), epoch=int(result["epoch"]), metrics=metrics)
    tdir.write_stopped(marker)
    return marker


def settle_stopped(sweep: str, key: str, marker: Stopped, tracking_uri: str | None) -> None:
    """Tag a stopped trial's MLflow run stopped, with its rung, and end it KILLED. Idempotent: run when the
    scheduler stops the trial and again after the experiment (MLflow may have been down the first time)."""
    if not tracking_uri:
        return
    from benchxfer.tracking import ERROR, RUNG, STATUS, client, trial_runs

    c = client(tracking_uri)
    for run in trial_runs(c, sweep, key):
        c.set_tag(run.info.run_id, STATUS, "stopped")
        c.set_tag(run.info.run_id, RUNG, str(marker.rung))
        if ERROR in run.data.tags:
            c.delete_tag(run.info.run_id, ERROR)
        if run.info.status != "KILLED":
            c.set_terminated(run.info.run_id, "KILLED")


# --- the trainable ------------------------------------------------------------------------------------

def search_trial(config: dict[str, Any], shared: Shared) -> None:
    """One search trial: a stopped trial reports its marker and does not train; any other runs as usual."""
    from ray import tune

    from benchxfer.sweep import run_trial

    # A stopped trial's thread ends with Tune's SystemExit; give it time before its actor is reused.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
    os.environ.update(shared.env)
    marker = TrialDir.of(shared.launch.sweep, shared.trial(config).key).stopped()
    if marker:
        tune.report({**marker.metrics, "done": True, "replayed": True})
        return
    run_trial(config, shared)


# --- routing by cell ----------------------------------------------------------------------------------

def _searcher_class():
    from ray.tune.search import Searcher

    class CellSearcher(Searcher):
        """One OptunaSearch per cell; trials are handed out round-robin over the cells with trials left."""

        def __init__(self, cells: list[str], low: float, high: float, n_trials: int, seed: int):
            from ray import tune
            from ray.tune.search.optuna import OptunaSearch

            super().__init__(metric=SEARCH_METRIC, mode="min")
            self.fixed = list(cells)  # the cell ids, in turn
            self.studies = {c: OptunaSearch(space={"lr": tune.loguniform(low, high)}, metric=SEARCH_METRIC,
                                            mode="min", seed=seed) for c in cells}
            self.left = {c: n_trials for c in cells}
            self.cell_of: dict[str, str] = {}
            self.turn = 0

        def suggest(self, trial_id: str):
            order = list(self.fixed)
            for i in range(len(order)):
                c = order[(self.turn + i) % len(order)]
                if self.left[c] > 0:
                    self.turn = (self.turn + i + 1) % len(order)
                    self.left[c] -= 1
                    self.cell_of[trial_id] = c
                    return {"trial": searched(c, self.studies[c].suggest(trial_id)["lr"])}
            return Searcher.FINISHED

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self.cell_of:
                self.studies[self.cell_of[trial_id]].on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            c = self.cell_of.pop(trial_id, None)
            if c is not None:
                if result is not None and result.get(SEARCH_METRIC) is None:
                    result, error = None, True  # a trial with no finite loss tells the study nothing
                self.studies[c].on_trial_complete(trial_id, result=result, error=error)

    return CellSearcher


class _Key:
    """What a cell's scheduler sees of a trial: its key, stable across launches (Tune's trial ids are not)."""

    def __init__(self, key: str):
        self.trial_id = key


def _scheduler_class():
    from ray.tune.schedulers import (
        AsyncHyperBandScheduler,
        FIFOScheduler,
        TrialScheduler,
    )

    class CellScheduler(FIFOScheduler):
        """One AsyncHyperBandScheduler per cell, fed ``epochs`` (epochs trained) as its time; every result it is
        fed is logged, so that a resumed search rebuilds its rungs by replay. On STOP it writes the marker."""

        def __init__(self, sweep: str, opts: SearchOptions, max_epochs: dict[str, int], tracking_uri: str | None,
                     cells: Mapping[str, TrialSource]):
            super().__init__()
            self.index = TrialIndex(cells=dict(cells))  # a trial's key from its config
            self.sweep, self.opts, self.uri = sweep, opts, tracking_uri
            self.max_t = dict(max_epochs)  # a cell's budget in epochs: the knob its trials train to
            self.inner = {}
            for c, max_t in max_epochs.items():
                grace = min(opts.min_epochs, max_t)
                rungs = int(math.log(max_t / grace) / math.log(opts.eta)) + 1
                self.inner[c] = AsyncHyperBandScheduler(
                    time_attr="epochs", metric=opts.metric, mode=opts.mode, max_t=max_t, grace_period=grace,
                    reduction_factor=opts.eta, brackets=rungs if opts.scheduler == "hyperband" else 1,
                    stop_last_trials=False)  # a trial at its last epoch ends by itself: that is finishing
            self.added: set[str] = set()
            self.stopped: dict[str, Stopped] = {}
            self.log = paths.sweep_dir(sweep) / EVENTS
            self.replay()

        def add_key(self, c: str, key: str) -> None:
            if key in self.added:
                return
            import numpy as np

            state = np.random.get_state()  # hyperband's bracket draw, made the same for a key on every launch
            np.random.seed(zlib.crc32(key.encode()))
            try:
                self.inner[c].on_trial_add(None, _Key(key))
            finally:
                np.random.set_state(state)
            self.added.add(key)

        def replay(self) -> None:
            if not self.log.exists():
                return
            for line in self.log.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if ev["cell"] not in self.inner:
                    continue  # a cell whose lr is known
                self.add_key(ev["cell"], ev["key"])
                action = self.inner[ev["cell"]].on_trial_result(None, _Key(ev["key"]), ev["result"])
                tdir = TrialDir.of(self.sweep, ev["key"])
                if action == TrialScheduler.STOP and tdir.stopped() is None:
                    write_stopped(tdir, ev["result"]["epochs"], ev["result"])  # killed between log and marker

        @property
        def supports_buffered_results(self) -> bool:
            return False  # one decision per epoch

        def ids(self, trial) -> tuple[str, str]:
            return cell_of(trial.config), trial_of(trial.config, self.index).key

        def on_trial_add(self, tune_controller, trial) -> None:
            c, key = self.ids(trial)
            self.add_key(c, key)

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            if result.get("done") or "epoch" not in result or self.opts.metric not in result:
                return TrialScheduler.CONTINUE  # a final or replayed report: nothing to decide
            c, key = self.ids(trial)
            if int(result["epoch"]) + 1 >= self.max_t[c]:
                return TrialScheduler.CONTINUE  # the last epoch is no rung: the trial ends by itself, tested
            fed = {"epochs": int(result["epoch"]) + 1, self.opts.metric: result[self.opts.metric],
                   **{k: result[k] for k in ("epoch", SEARCH_METRIC, "train_loss", "val_loss", "lr") if k in result}}
            with self.log.open("a") as fh:
                fh.write(json.dumps({"cell": c, "key": key, "result": fed}) + "\n")
            action = self.inner[c].on_trial_result(tune_controller, _Key(key), fed)
            if action == TrialScheduler.STOP:
                self.stopped[key] = write_stopped(TrialDir.of(self.sweep, key), fed["epochs"], fed)
                try:
                    settle_stopped(self.sweep, key, self.stopped[key], self.uri)
                except Exception as err:  # noqa: BLE001 - MLflow down: settled again after the experiment
                    log.warning("%s: stopped, MLflow not yet told (%s)", key, err)
            return action

        def on_trial_complete(self, tune_controller, trial, result) -> None:
            pass  # every epoch was already fed; the final report adds nothing to a rung

        def on_trial_remove(self, tune_controller, trial) -> None:
            pass

        def debug_string(self) -> str:
            return f"Successive halving per cell ({self.opts.scheduler}, eta {self.opts.eta})"

    return CellScheduler


# --- stage 1 ------------------------------------------------------------------------------------------

def describe(opts: SearchOptions) -> str:
    """The search's scheduler in words, for the plan and the stage-1 line."""
    if opts.scheduler == "none":
        return "every trial to its end"
    return f"{opts.scheduler} on {opts.metric} from {opts.min_epochs} epoch(s), eta {opts.eta}"


def run_stage1(plan, launch, recorder, echo: Callable[[str], None] = print,
               options: SearchOptions | None = None, verbose: bool = False) -> dict[str, float]:
    """Search the lr of every cell whose best lr is not yet in ``best_lr.json``, all in one Tune experiment;
    return ``{cell id: best lr}`` for all cells. The best lr of a cell is the lr of its finished search trial
    with the least ``best_val_loss`` (ties: the lower lr); it is written to ``best_lr.json`` and logged on the
    sweep's MLflow run as ``best_lr.<init>.<dataset>``. The winning trial has the key of stage 2's first-seed
    trial at that lr, so stage 2 does not run it again. ``options`` defaults to the sweep file's."""
    from benchxfer.sweep import run_trials

    spec = plan.spec
    search = spec.lr
    opts = options or search.options
    sdir = SweepDir(spec.name)
    best = sdir.best_lr()
    seed0, shot0 = spec.seeds[0], spec.shots[0]
    todo = [c for c in plan.cells if cell_id(c) not in best]
    if todo:
        names = ", ".join(f"{c.init} on {c.dataset.name}" for c in todo)
        echo(f"Stage 1: lr search for {names} ({search.trials} trials each, {describe(opts)})")
        sources = {cell_id(c): Searched(c, spec.name, seed0, shot0, plan.roots[c.dataset.name]) for c in todo}
        searcher = _searcher_class()(list(sources), search.low, search.high, search.trials, seed0)
        scheduler = None
        if opts.scheduler != "none":
            scheduler = _scheduler_class()(spec.name, opts, {cell_id(c): int(c.knobs["epochs"]) for c in todo},
                                           launch.tracking_uri, sources)
        grid = run_trials([], launch, cells=sources, searcher=searcher, scheduler=scheduler,
                          num_samples=search.trials * len(todo), trainable=search_trial, echo=echo, verbose=verbose)
        index = TrialIndex(cells=sources)
        keys: dict[str, dict[str, float]] = {}  # cell id -> {trial key: lr}, as Tune ran them
        for r in grid:
            trial = trial_of(r.config, index)
            keys.setdefault(cell_of(r.config), {})[trial.key] = trial.lr
        for c in todo:
            cid, scored, stopped = cell_id(c), [], 0
            for key, lr in keys.get(cid, {}).items():
                tdir = sdir.trial(key)
                marker = tdir.stopped()
                if marker:
                    stopped += 1
                    settle_stopped(spec.name, key, marker, launch.tracking_uri)
                    continue
                res = tdir.result()
                if res and res.best_val_loss is not None:
                    scored.append((res.best_val_loss, lr))
            if not scored:
                raise BenchxferError(f"lr search for {cid} produced no finished trial; "
                                     f"see `benchxfer status {spec.name}`")
            best[cid] = float(min(scored)[1])
            sdir.write_best_lr(best)
            echo(f"  best lr for {c.init} on {c.dataset.name}: {best[cid]:g}"
                 + (f" ({stopped} of {len(keys[cid])} trials stopped by the search)" if stopped else ""))
    recorder.log_params({f"best_lr.{c.init}.{c.dataset.name}": best[cell_id(c)] for c in plan.cells})
    return {cell_id(c): best[cell_id(c)] for c in plan.cells}
