"""The identity of a trial: :class:`Trial` (one cell of the grid, fully resolved) and its key (:func:`trial_key`).

``benchxfer.plan.planning`` makes the trials of a sweep and ``benchxfer.plan.pretraining`` the run of a pre-training; the
key names the trial's folder (:class:`benchxfer.trialdir.TrialDir`), its Ray Train run and its MLflow run. This
module imports neither torch nor Ray.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from benchxfer.frozen import FrozenDict
from benchxfer.recipes.config import EXECUTION_ONLY, TrainConfig


@dataclass(frozen=True)
class Trial:
    """One cell of the grid, fully resolved. ``config`` is the whole TrainConfig the trial trains with."""

    key: str
    init: str
    dataset: str
    recipe: str
    lr: float
    seed: int
    shot: int | None
    task: str
    metric: str
    overrides: FrozenDict  # what the file set (knobs; a pre-training's arch, start and output), the MLflow params
    config: TrainConfig

    def params(self) -> dict[str, str]:
        """The MLflow params: the axes under plain names, then every override."""
        out = {"init": self.init, "dataset": self.dataset, "recipe": self.recipe, "lr": f"{self.lr:g}",
               "seed": str(self.seed), "shot": "full" if self.shot is None else str(self.shot)}
        out.update({k: json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                    for k, v in sorted(self.overrides.items())})
        return out

    def summary(self) -> dict[str, Any]:
        return {"trial_key": self.key, "init": self.init, "dataset": self.dataset, "recipe": self.recipe,
                "lr": self.lr, "seed": self.seed, "shot": self.shot, "task": self.task,
                "arch": self.config.arch}


def trial_key(init: str, dataset: str, lr: float, seed: int, shot: int | None, recipe: str,
              knobs: dict[str, Any], options: dict[str, Any]) -> str:
    """A stable, readable key from the axis values; the hash covers the recipe, every resolved knob and the
    dataset options, so that a change of protocol is a new trial and the same protocol the same trial (a default
    written out is left out of ``knobs`` by the planner: :func:`benchxfer.plan.planning.written_defaults`).

    The lr is written with 6 significant digits (``lr0.001``) unless that would name another lr, then exactly
    (``lr0.0001234567``): two lrs that differ in the 7th digit are two trials, and every key of an lr that 6
    digits give exactly is as before."""
    knobs = {k: v for k, v in knobs.items() if k not in EXECUTION_ONLY}
    blob = json.dumps({"recipe": recipe, "knobs": knobs, "options": options}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:8]
    shot_part = "" if shot is None else f"_k{shot}"
    lr_part = f"{lr:g}" if float(f"{lr:g}") == lr else repr(float(lr))
    return f"{init}_{dataset}_lr{lr_part}_s{seed}{shot_part}_{digest}"
