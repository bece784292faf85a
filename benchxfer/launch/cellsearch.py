"""Ray Tune's side of an lr search: one Optuna study and one successive-halving scheduler per cell.

:class:`CellSearcher` routes Tune's suggest/complete calls to the study of the trial's cell; it suggests plain data,
``{"trial": {"cell": <cell id>, "lr": <lr>}}`` (:func:`benchxfer.launch.tunespace.searched`). :class:`CellScheduler` feeds
each epoch's result to the ``AsyncHyperBandScheduler`` of the trial's cell (keyed by the trial key, which
:func:`benchxfer.launch.tunespace.trial_of` gives), logs it to ``search_events.jsonl`` for an exact replay on resume, and
records a stop (:func:`write_stopped`, :func:`settle_stopped`). Used by :func:`benchxfer.launch.search.run_stage1`.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from benchxfer import paths
from benchxfer.launch.tunespace import TrialIndex, TrialSource, cell_of, searched, trial_of
from benchxfer.plan.schema import SEARCH_METRIC, SearchOptions
from benchxfer.trialdir import Stopped, TrialDir

EVENTS = "search_events.jsonl"
log = logging.getLogger("benchxfer")


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
    from benchxfer.tracking import TrialRun

    run = TrialRun.find(tracking_uri, sweep, key)
    if run is not None:
        run.mark_stopped(marker.rung)


# --- routing by cell ----------------------------------------------------------------------------------

class CellSearcher(Searcher):
    """One OptunaSearch per cell; trials are handed out round-robin over the cells with trials left."""

    def __init__(self, cells: list[str], low: float, high: float, n_trials: int, seed: int):
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



class _Key:
    """What a cell's scheduler sees of a trial: its key, stable across launches (Tune's trial ids are not).

    A coupling to Ray's internals: it stands in for Tune's ``Trial`` (and ``None`` for the controller) where
    :class:`CellScheduler` calls an ``AsyncHyperBandScheduler``'s ``on_trial_add`` / ``on_trial_result``, which
    read only ``trial.trial_id``. ``tests/test_search_options.py::test_the_stand_in_trial_has_what_rays_scheduler_reads``
    checks that against Ray's installed source."""

    def __init__(self, key: str):
        self.trial_id = key


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
