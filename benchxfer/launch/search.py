"""``mode: tune-then-repeat``: stage 1, the lr search of every (init, dataset) cell in ONE Tune experiment, and
stage 2's trials at each cell's best lr (:func:`tune_then_repeat`).

Each cell keeps its own Optuna study (``OptunaSearch``, seeded with the sweep's first seed, minimising
``best_val_loss``); :class:`benchxfer.launch.cellsearch.CellSearcher` routes Tune's suggest/complete calls to the study of the trial's cell,
so all cells' trials run at once, limited only by the cluster's slots.

With ``scheduler: asha`` (or ``hyperband``) each cell also has its own Ray Tune ``AsyncHyperBandScheduler``
(successive halving over epochs; ``hyperband`` runs several brackets): :class:`~benchxfer.launch.cellsearch.CellScheduler`
routes each epoch's
result to the scheduler of its cell, so that lrs are only ever compared with lrs of the same cell. A trial the
scheduler stops keeps its MLflow run (tagged ``benchxfer.status=stopped``, ``benchxfer.rung``) and gets a
``stopped.json`` marker in its folder; it is final, like a finished trial.

Resume is exact. (1) An Optuna study seeded alike suggests the same lrs: its first ``n_startup_trials`` (10)
suggestions are random draws that do not depend on results. (2) Every result a cell's scheduler saw is appended,
in order, to ``search_events.jsonl`` in the sweep folder; a resumed search replays them into fresh schedulers, so
the rungs hold what they held, under the trial keys. (3) Finished trials report their ``result.json`` and stopped
ones their ``stopped.json`` (:class:`benchxfer.trialdir.Stopped`), without training; interrupted ones continue
from their epoch checkpoint. Every trial reaches :func:`benchxfer.launch.sweep.run_trial` as plain data,
``{"trial": {"cell": <cell id>, "lr": <lr>}}`` (:func:`benchxfer.launch.tunespace.searched`), and becomes a trial again
through :func:`benchxfer.launch.tunespace.trial_of` with the cells' :class:`Searched` sources, which reach the trainable
once through ``tune.with_parameters``; its files are read and written only through :class:`TrialDir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchxfer.errors import BenchxferError
from benchxfer.launch.tunespace import Shared, TrialIndex, cell_of, trial_of
from benchxfer.plan.schema import (  # noqa: F401  (the sweep file's options, re-exported)
    OPTION_KEYS,
    SCHEDULERS,
    SEARCH_METRIC,
    LrSearch,
    SearchOptions,
    parse_search_options,
)
from benchxfer.trialdir import SweepDir, TrialDir

if TYPE_CHECKING:
    from benchxfer.plan.planning import Cell
    from benchxfer.trial import Trial



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


# --- the trainable ------------------------------------------------------------------------------------

def search_trial(config: dict[str, Any], shared: Shared) -> None:
    """One search trial: a stopped trial reports its marker and does not train; any other runs as usual."""
    from ray import tune

    from benchxfer.launch.sweep import run_trial

    # A stopped trial's thread ends with Tune's SystemExit; give it time before its actor is reused.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
    os.environ.update(shared.env)
    marker = TrialDir.of(shared.launch.sweep, shared.trial(config).key).stopped()
    if marker:
        tune.report({**marker.metrics, "done": True, "replayed": True})
        return
    run_trial(config, shared)


# --- stage 1 ------------------------------------------------------------------------------------------

def run_stage1(plan, launch, recorder, echo: Callable[[str], None] = print,
               options: SearchOptions | None = None, verbose: bool = False) -> dict[str, float]:
    """Search the lr of every cell whose best lr is not yet in ``best_lr.json``, all in one Tune experiment;
    return ``{cell id: best lr}`` for all cells. The best lr of a cell is the lr of its finished search trial
    with the least ``best_val_loss`` (ties: the lower lr); it is written to ``best_lr.json`` and logged on the
    sweep's MLflow run as ``best_lr.<init>.<dataset>``. The winning trial has the key of stage 2's first-seed
    trial at that lr, so stage 2 does not run it again. ``options`` defaults to the sweep file's."""
    from benchxfer.launch.cellsearch import CellScheduler, CellSearcher, settle_stopped
    from benchxfer.launch.sweep import run_trials

    spec = plan.spec
    search = spec.lr
    opts = options or search.options
    sdir = SweepDir(spec.name)
    best = sdir.best_lr()
    seed0, shot0 = spec.seeds[0], spec.shots[0]
    todo = [c for c in plan.cells if cell_id(c) not in best]
    if todo:
        names = ", ".join(f"{c.init} on {c.dataset.name}" for c in todo)
        echo(f"Stage 1: lr search for {names} ({search.trials} trials each, {opts.describe()})")
        sources = {cell_id(c): Searched(c, spec.name, seed0, shot0, plan.roots[c.dataset.name]) for c in todo}
        searcher = CellSearcher(list(sources), search.low, search.high, search.trials, seed0)
        scheduler = None
        if opts.scheduler != "none":
            scheduler = CellScheduler(spec.name, opts, {cell_id(c): int(c.knobs["epochs"]) for c in todo},
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
                    tdir.tidy(launch.keep)  # final: never resumed, so its training checkpoint goes
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


def tune_then_repeat(plan, launch, recorder, echo: Callable[[str], None] = print, verbose: bool = False) -> list[Trial]:
    """Stage 1: every cell's lr search (:func:`run_stage1`: one Tune experiment, the best lrs in ``best_lr.json``
    and the MLflow params ``best_lr.<init>.<dataset>``). Stage 2's trials, returned: every seed at each cell's
    best lr; the search trial that won is stage 2's first seed (same key), so it is not run again."""
    from benchxfer.plan.planning import expand

    assert isinstance(plan.spec.lr, LrSearch)
    best = run_stage1(plan, launch, recorder, echo=echo, verbose=verbose)
    lrs = {(c.init, c.dataset.name): best[cell_id(c)] for c in plan.cells}
    return expand(plan.spec, plan.cells, plan.roots, lrs=lrs, left_out=plan.left_out_shots)
