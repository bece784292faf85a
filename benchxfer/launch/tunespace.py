"""The seam between benchxfer and Ray Tune: what crosses into Tune, in which shape, and the one way back.

A Tune trial's config is plain data, nothing else::

    {"trial": {"key": "<trial key>", "lr": 0.001}}     a planned trial (a grid point, a pre-training run)
    {"trial": {"cell": "<init>|<dataset>", "lr": 0.01}}  a cell of the lr search, at the lr its searcher picked

so Tune stores, names and shows it as it is (no placeholders, no pickled objects in the param space). What every
trial of one experiment shares, :class:`Shared` (the plan's trials by key and the search's cells by id, the
launch, the environment, the finish hook, the experiment's name), reaches the trainable once, through
``tune.with_parameters``. :func:`trial_of` turns a config back into the typed :class:`~benchxfer.trial.Trial`:
the driver (:func:`benchxfer.launch.sweep.run_trial`), the lr search (:mod:`benchxfer.launch.search`) and the console
(:mod:`benchxfer.launch.console`) all call it; Tune's trial names ask only for the key (:func:`key_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from benchxfer import paths
from benchxfer.launch.cluster import Launch

if TYPE_CHECKING:
    from benchxfer.train.session import FinishHook
    from benchxfer.trial import Trial


class TrialSource(Protocol):
    """A trial that exists once its lr is known (an lr search's cell: :class:`benchxfer.launch.search.Searched`)."""

    def make(self, lr: float) -> Trial: ...


@dataclass(frozen=True)
class TrialIndex:
    """What a config's point refers to: the planned trials by key, the searched cells by id."""

    planned: Mapping[str, Trial] = field(default_factory=dict)
    cells: Mapping[str, TrialSource] = field(default_factory=dict)

    @classmethod
    def of(cls, trials: list[Trial], cells: Mapping[str, TrialSource] | None = None) -> TrialIndex:
        return cls({t.key: t for t in trials}, dict(cells or {}))


class Point(dict):
    """A planned trial's point: plain data (its key and lr) that nothing changes once made. Tune deep-copies the
    whole grid for every trial it generates (O(N) a trial, O(N^2) a sweep: 12 s of the driver's controller in a
    160-trial sweep, ``benchmarks/scale.py``); a point copies as itself. Pickled it is a dict of this class, in
    Tune's JSON a plain object: :func:`trial_of` reads either."""

    def __deepcopy__(self, memo: dict) -> Point:
        return self


def planned(trial: Trial) -> dict[str, Any]:
    """A planned trial as Tune sees it."""
    return Point(key=trial.key, lr=trial.lr)


def searched(cell: str, lr: Any) -> dict[str, Any]:
    """A cell's trial as Tune sees it; ``lr`` is a number (or the searcher's domain)."""
    return {"cell": cell, "lr": lr}


def point_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config["trial"]


def is_searched(config: Mapping[str, Any]) -> bool:
    return "cell" in point_of(config)


def cell_of(config: Mapping[str, Any]) -> str:
    """The search cell id of a searched trial's config."""
    return str(point_of(config)["cell"])


def trial_of(config: Mapping[str, Any], index: TrialIndex) -> Trial:
    """THE way back from a Tune config to the typed trial."""
    point = point_of(config)
    lr = float(point["lr"])
    if "key" in point:
        trial = index.planned[point["key"]]
        assert lr == trial.lr, (lr, trial.lr)
        return trial
    return _searched_trial(point, index.cells)


def key_of(config: Mapping[str, Any], cells: Mapping[str, TrialSource]) -> str:
    """The trial key of a config, needing only the lr search's cells (a planned point carries its key): what Tune's
    trial names and folders need (:class:`benchxfer.launch.console.TrialNames`), without the experiment's trial index."""
    point = point_of(config)
    return str(point["key"]) if "key" in point else _searched_trial(point, cells).key


def _searched_trial(point: Mapping[str, Any], cells: Mapping[str, TrialSource]) -> Trial:
    """A searched point's trial: its cell's, at the point's lr."""
    return cells[point["cell"]].make(float(point["lr"]))


@dataclass(frozen=True)
class Shared:
    """What every trial of one Tune experiment shares; handed to the trainable by ``tune.with_parameters``."""

    index: TrialIndex
    launch: Launch
    env: dict[str, str] = field(default_factory=dict)
    finish: FinishHook | None = None
    experiment: str = ""  # the Tune experiment of this launch

    def trial(self, config: Mapping[str, Any]) -> Trial:
        return trial_of(config, self.index)


def tune_name(sweep: str) -> str:
    """A new Tune experiment name for each launch of a sweep (``<sweep>-01``, ``-02``, ...)."""
    base = paths.sweep_dir(sweep) / "tune"
    n = len([p for p in base.iterdir() if p.is_dir()]) + 1 if base.exists() else 1
    return f"{sweep}-{n:02d}"
