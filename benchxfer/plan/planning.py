"""From a sweep file to a plan: every init, dataset root and recipe resolved, every trial listed.

Runs before Ray starts. Anything wrong ends here with one line naming the file, the key and the
allowed values.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchxfer import data, zoo
from benchxfer.data.roots import resolve_root
from benchxfer.errors import Absences, Absent, BenchxferError
from benchxfer.frozen import FrozenDict
from benchxfer.plan.schema import DatasetEntry, PretrainSpec, SweepSpec, check_combinations
from benchxfer.plan.spec import load_spec
from benchxfer.recipes import TrainConfig, get_recipe, recipe_for_task
from benchxfer.recipes.parts import check_micro_batch
from benchxfer.recipes.registry import check_names, check_task
from benchxfer.trial import Trial, trial_key

# --- the grid --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One (init, dataset) cell with its resolved recipe and knobs; the lr/seed/shot axes expand it."""

    init: str
    dataset: DatasetEntry
    recipe: str
    task: str
    metric: str
    knobs: FrozenDict  # the recipe's, the sweep file's overrides, the init's arch
    overrides: FrozenDict  # what the sweep file set, for the MLflow params

    unsaid: frozenset[str] = frozenset()  # knobs written out at their default: not in the key (written_defaults)

    def config(self) -> TrainConfig:
        """The cell's knobs, typed (the axes' fields at their defaults): what each of its trials runs with."""
        return TrainConfig.from_dict(self.knobs)

    def trial(self, sweep: str, lr: float, seed: int, shot: int | None, root: str) -> Trial:
        key_knobs = {k: v for k, v in self.knobs.items() if k not in self.unsaid}
        key = trial_key(self.init, self.dataset.name, lr, seed, shot, self.recipe, key_knobs, self.dataset.options)
        config = TrainConfig.from_dict({
            **self.knobs, "sweep": sweep, "trial_key": key, "init": self.init, "dataset": self.dataset.name,
            "root": root, "dataset_options": dict(self.dataset.options), "recipe": self.recipe, "lr": lr,
            "seed": seed, "shot": shot,
        })
        return Trial(key, self.init, self.dataset.name, self.recipe, lr, seed, shot, self.task, self.metric,
                     self.overrides, config)


def cells(spec: SweepSpec, init_arch: dict[str, str | None], tasks: dict[str, tuple[str, str]]) -> list[Cell]:
    """Resolve recipe and knobs per (init, dataset). ``init_arch`` maps init -> arch (None for scratch);
    ``tasks`` maps dataset name -> (task, primary metric)."""
    out = []
    for ds, init in itertools.product(spec.datasets, spec.inits):
        task, metric = tasks[ds.name]
        rname = ds.recipe or spec.recipe
        if rname == "auto":
            rname = recipe_for_task(task)
        where = f"{spec.path}: datasets[{spec.datasets.index(ds)}] ({ds.name})"
        recipe = get_recipe(rname)
        check_task(recipe, task, where)
        overrides = {**spec.overrides, **ds.overrides}
        knobs = recipe.resolve(overrides, where)
        check_names(knobs, where)
        check_combinations(knobs, ds.shots or spec.shots, where)
        if spec.mode == "tune-then-repeat":
            _check_search_has_val(knobs, ds, rname, where)
        arch = init_arch.get(init.name)
        if "arch" not in overrides and arch:
            knobs["arch"] = arch  # the init decides the architecture unless the sweep says otherwise
        elif arch and knobs["arch"] != arch:
            raise BenchxferError(
                f"{spec.path}: inits: {init.name!r} is a {arch} backbone but the sweep sets arch "
                f"{knobs['arch']!r}; remove the arch override or pick an init of that architecture"
            )
        check_micro_batch(knobs, task, where)
        out.append(Cell(init.name, ds, rname, task, metric, FrozenDict(knobs), FrozenDict(overrides),
                        written_defaults(recipe.defaults, spec.overrides, ds.overrides)))
    return out


_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def written_defaults(recipe_defaults: dict[str, Any], sweep_level: dict[str, Any], dataset_level: dict[str, Any]
                     ) -> frozenset[str]:
    """The knobs a sweep file writes out at TrainConfig's default (``micro_batch: 0``) where leaving them out
    computes the same: the recipe does not set them, and a dataset's value does not undo another value of the
    sweep's. They stay out of the trial key, so that writing a default out keeps every key (and a finished
    sweep finished); the keys of files that do not write one are as before."""
    merged = {**sweep_level, **dataset_level}
    return frozenset(k for k, v in merged.items()
                     if k not in recipe_defaults and k in _CONFIG_DEFAULTS and v == _CONFIG_DEFAULTS[k]
                     and isinstance(v, bool) == isinstance(_CONFIG_DEFAULTS[k], bool)
                     and sweep_level.get(k, v) == v)


def expand(spec: SweepSpec, cell_list: list[Cell], roots: dict[str, str],
           lrs: dict[tuple[str, str], float] | None = None, seeds: tuple[int, ...] | None = None,
           left_out: dict[str, set[int]] | None = None) -> list[Trial]:
    """The grid: cells x lr x seed x shot. ``lrs`` fixes one lr per (init, dataset) (stage 2 of
    tune-then-repeat); otherwise the sweep's lr list, or the recipe's default lr. ``left_out``: per dataset, the
    shots its data cannot draw (:func:`_check_shots`), not planned."""
    trials = []
    for cell in cell_list:
        if lrs is not None:
            lr_values: tuple[float, ...] = (lrs[(cell.init, cell.dataset.name)],)
        elif isinstance(spec.lr, tuple):
            lr_values = spec.lr
        else:
            lr_values = (get_recipe(cell.recipe).default_lr,)
        shots = [k for k in cell.dataset.shots or spec.shots if k not in (left_out or {}).get(cell.dataset.name, ())]
        for lr, seed, shot in itertools.product(lr_values, seeds or spec.seeds, shots):
            trials.append(cell.trial(spec.name, lr, seed, shot, roots[cell.dataset.name]))
    keys = [t.key for t in trials]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise BenchxferError(f"{spec.path}: two trials share the key {dup}; remove the repeated axis value")
    return trials


def _refuse_checkpoint_as_pretrain(path: str, i: int, name: str, file: Path) -> None:
    """``{name, pretrain: FILE}`` takes a pre-training file (YAML); a checkpoint there is named for what it is, with
    the command that makes it an init."""
    from benchxfer.zoo.checkpoint import is_safetensors_file

    try:
        with open(file, "rb") as f:
            head = f.read(4)
    except OSError:
        return  # the pre-training file's own reader names what is wrong
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80") or is_safetensors_file(file):
        raise BenchxferError(f"{path}: inits[{i}].pretrain: {file} is a checkpoint, not a pre-training file (YAML); "
                             f"to start from a checkpoint, import it (`benchxfer zoo import {name} {file}`) and list "
                             f"it as `inits: [{name}]`")


@dataclass
class Plan:
    spec: SweepSpec
    cells: list[Cell]
    trials: list[Trial]
    roots: dict[str, str]
    to_pretrain: list[PretrainSpec]  # the pre-training files (parsed once, here) of inits the zoo lacks
    absent: list[str] = field(default_factory=list)  # what this machine lacks (dry run only; a real run refuses)
    left_out: list[str] = field(default_factory=list)  # cells the data cannot draw, one line each (not planned)
    left_out_shots: dict[str, set[int]] = field(default_factory=dict)  # those cells: dataset -> its shots left out

    def describe(self) -> dict[str, Any]:
        s = self.spec
        lr = (f"search loguniform [{s.lr.low:g}, {s.lr.high:g}] x {s.lr.trials}" if s.lr is not None
              and not isinstance(s.lr, tuple) else ", ".join(f"{v:g}" for v in (s.lr or ())) or "recipe default")
        counts = sorted({len(d.shots or s.shots) for d in s.datasets})
        shots: int | str = counts[0] if len(counts) == 1 else " or ".join(map(str, counts)) + " (per dataset)"
        return {"inits": len(s.inits), "datasets": len(s.datasets), "lr": lr, "seeds": len(s.seeds),
                "shots": shots, "trials": len(self.trials)}


def make_plan(spec_or_path: SweepSpec | str | Path, zoo_override: str | None = None,
              write_synthetic: bool = False, dry_run: bool = False) -> Plan:
    """Validate everything and expand the grid. ``write_synthetic`` writes missing synthetic data
    (a dry run leaves the disk alone). The checks are the same for a dry run and a real run; only what this
    machine lacks (a dataset root, an init's file: :class:`Absent`) differs: a real run refuses it, a dry run
    (``dry_run``) lists it in ``Plan.absent`` and plans the trials anyway."""
    absent = Absences(dry_run)
    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    roots = {}
    too_many: dict[str, set[int]] = {}
    left_out: list[str] = []
    for i, d in enumerate(spec.datasets):
        try:
            roots[d.name] = resolve_root(d.name, d.root, d.synthetic, f"{spec.path}: datasets[{i}].root",
                                         write_synthetic)
        except Absent as err:
            absent.add(err)
            roots[d.name] = d.root
            continue
        _check_cache(d, roots[d.name], f"{spec.path}: datasets[{i}].options.cache_size", write_synthetic)
        if d.root != "synthetic" or write_synthetic:
            where = f"{spec.path}: " + (f"datasets[{i}].shots" if d.shots else "shots")
            line = _check_shots(d, roots[d.name], d.shots or spec.shots, where)
            if line:
                too_many[d.name] = set(line[0])
                left_out.append(line[1])
    tasks = {d.name: (data.get_dataset(d.name).task, data.get_dataset(d.name).metric) for d in spec.datasets}

    init_arch: dict[str, str | None] = {}
    to_pretrain: list[PretrainSpec] = []
    known = {c.name for c in zoo.list_inits(zoo_override)}
    for i, entry in enumerate(spec.inits):
        if entry.name == "scratch":
            init_arch[entry.name] = None
            continue
        if entry.pretrain and entry.name not in known:
            from benchxfer.plan.pretraining import load_pretrain_spec

            _refuse_checkpoint_as_pretrain(spec.path, i, entry.name, Path(entry.pretrain))
            pspec = load_pretrain_spec(entry.pretrain)
            for j, src in enumerate(pspec.sources):
                if src.root != "synthetic" and not Path(src.root).exists():
                    absent.add(Absent(f"{pspec.path}: sources[{j}].root: folder {src.root} does not exist "
                                      f"(dataset {src.dataset!r}, pre-training init {pspec.name!r})"))
            if pspec.name != entry.name:
                raise BenchxferError(f"{spec.path}: inits[{i}]: {entry.pretrain} makes {pspec.name!r}, "
                                     f"not {entry.name!r}")
            init_arch[entry.name] = pspec.arch
            to_pretrain.append(pspec)
            continue
        if entry.name not in known:
            raise BenchxferError(f"{spec.path}: inits[{i}]: unknown init {entry.name!r}; "
                                 f"known: {', '.join(sorted(known))}")
        try:
            cfg, _ = zoo.resolve_init(entry.name, zoo_override)  # a missing file fails here, before Ray
        except Absent as err:
            absent.add(Absent(f"{spec.path}: inits[{i}]: {err}"))
            cfg = zoo.get_init(entry.name, zoo_override)
        init_arch[entry.name] = cfg.arch
    cell_list = cells(spec, init_arch, tasks)
    return Plan(spec, cell_list, expand(spec, cell_list, roots, left_out=too_many), roots, to_pretrain,
                absent.lines, left_out, too_many)


def _check_shots(d: DatasetEntry, root: str, axis: Sequence[int | None], where: str) -> tuple[list[int], str] | None:
    """Shots against the data, where it is there: k images per class draws every class whole once k reaches the
    largest class, so the few-shot run would be the full-data run. Such shots are left out of the plan and named
    (the shots, and the one line that says why); where no shot of the dataset is left, the sweep is refused."""
    cfg = data.get_dataset(d.name)
    shots = [k for k in axis if k is not None]
    if not shots or cfg.kind.dense:
        return None
    import numpy as np

    from benchxfer.data.catalog import Problems
    from benchxfer.data.indexing import build_index, make_targets

    options = {k: v for k, v in d.options.items() if k not in ("cache_size", "uncertain")}
    records = build_index(cfg, Path(root), "train", None, options, Problems()).records
    targets = make_targets(cfg, records, d.options.get("uncertain") or cfg.uncertain, 0)
    if targets is None or not len(targets):
        return None
    counts = (targets >= 0.5).sum(axis=0) if targets.ndim == 2 else np.bincount(targets.astype(int))
    largest = int(counts.max())
    too_many = [k for k in shots if k > largest]
    if not too_many:
        return None
    why = (f"more than {d.name} at {root} has in any class (its largest holds {largest} of {len(records)} "
           f"training images), so the few-shot set would be the whole set")
    if len(too_many) == len(axis):
        raise BenchxferError(f"{where}: {too_many[0]} images per class is {why}; use shots <= {largest}, or 'full'")
    cells = ", ".join(f"{d.name} {k}-shot" for k in too_many)
    return too_many, f"{where}: {cells} left out: {'each is' if len(too_many) > 1 else 'it is'} {why}"


def _check_cache(d: DatasetEntry, root: str, where: str, written: bool) -> None:
    """``cache_size`` reads a preprocessed cache: it must have been built for this root and size (a synthetic
    set not yet written has none to check)."""
    size = d.options.get("cache_size")
    if size is None or (d.root == "synthetic" and not written):
        return
    from benchxfer.data.cache import cache_path

    missing = [s for s in data.get_dataset(d.name).splits if not (cache_path(d.name, Path(root), s, size)
                                                                     / "manifest.json").is_file()]
    if missing:
        raise BenchxferError(f"{where}: no cache of size {size} for {d.name} at {root} (split {missing[0]}); "
                             f"build it with `benchxfer data cache {d.name} --root {root} --size {size}`, "
                             "or drop cache_size")


def _check_search_has_val(knobs: dict, ds, recipe: str, where: str) -> None:
    """The lr search minimises the validation loss: refuse a cell that has no validation set."""
    from benchxfer.data import get_dataset
    from benchxfer.recipes.config import KNOBS
    from benchxfer.train.sampling import validation_set

    select = knobs.get("select", KNOBS["select"])
    if not validation_set(select, get_dataset(ds.name).splits, ds.options):
        raise BenchxferError(
            f"{where}: the lr search (mode tune-then-repeat) minimises the validation loss, but recipe "
            f"{recipe!r} on {ds.name} has no validation set; give the dataset option val_fraction > 0, "
            f"or use mode grid")
