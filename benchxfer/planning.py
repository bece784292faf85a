"""From a sweep file to a plan: every init, dataset root and recipe resolved, every trial listed.

Runs before Ray starts. Anything wrong ends here with one line naming the file, the key and the
allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchxfer import data, paths, zoo
from benchxfer.data.dataset import check_options
from benchxfer.errors import BenchxferError
from benchxfer.spec import Cell, SweepSpec, Trial, cells, expand, load_spec


@dataclass
class Plan:
    spec: SweepSpec
    cells: list[Cell]
    trials: list[Trial]
    roots: dict[str, str]
    to_pretrain: list[tuple[str, str]]  # (init name, pre-training file) for inits the zoo does not hold yet

    def describe(self) -> dict[str, Any]:
        s = self.spec
        lr = (f"search loguniform [{s.lr.low:g}, {s.lr.high:g}] x {s.lr.trials}" if s.lr is not None
              and not isinstance(s.lr, tuple) else ", ".join(f"{v:g}" for v in (s.lr or ())) or "recipe default")
        return {"inits": len(s.inits), "datasets": len(s.datasets), "lr": lr, "seeds": len(s.seeds),
                "shots": len(s.shots), "trials": len(self.trials)}


def _dataset_root(entry, path: str, index: int, write_synthetic: bool) -> str:
    if entry.root == "synthetic":
        root = paths.synthetic_dir() / entry.name
        if write_synthetic:
            return str(data.synthetic.ensure(entry.name, root, **entry.synthetic))
        return str(root)
    root = Path(entry.root)
    if not root.exists():
        raise BenchxferError(f"{path}: datasets[{index}].root: folder {root} does not exist "
                             f"(dataset {entry.name!r})")
    data.check_root(entry.name, root)
    return str(root)


def make_plan(spec_or_path: SweepSpec | str | Path, zoo_override: str | None = None,
              write_synthetic: bool = False) -> Plan:
    """Validate everything and expand the grid. ``write_synthetic`` writes missing synthetic data
    (a dry run leaves the disk alone)."""
    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    names = [d.name for d in spec.datasets]
    for i, name in enumerate(names):
        if name not in data.DATASETS:
            raise BenchxferError(f"{spec.path}: datasets[{i}].name: unknown dataset {name!r}; "
                                 f"known: {', '.join(data.DATASETS.names())}")
        if names.index(name) != i:
            raise BenchxferError(f"{spec.path}: datasets[{i}].name: {name!r} appears twice")
    for i, d in enumerate(spec.datasets):
        try:
            check_options(data.get_dataset(d.name), d.options)
        except BenchxferError as err:
            raise BenchxferError(f"{spec.path}: datasets[{i}].options: {err}") from None
    roots = {d.name: _dataset_root(d, spec.path, i, write_synthetic) for i, d in enumerate(spec.datasets)}
    tasks = {d.name: (data.get_dataset(d.name).task, data.get_dataset(d.name).metric) for d in spec.datasets}

    init_arch: dict[str, str | None] = {}
    to_pretrain: list[tuple[str, str]] = []
    known = {c.name for c in zoo.list_inits(zoo_override)}
    for i, entry in enumerate(spec.inits):
        if entry.name == "scratch":
            init_arch[entry.name] = None
            continue
        if entry.pretrain and entry.name not in known:
            from benchxfer.pretraining import load_pretrain_spec

            pspec = load_pretrain_spec(entry.pretrain)
            if pspec.name != entry.name:
                raise BenchxferError(f"{spec.path}: inits[{i}]: {entry.pretrain} makes {pspec.name!r}, "
                                     f"not {entry.name!r}")
            init_arch[entry.name] = pspec.arch
            to_pretrain.append((entry.name, entry.pretrain))
            continue
        if entry.name not in known:
            raise BenchxferError(f"{spec.path}: inits[{i}]: unknown init {entry.name!r}; "
                                 f"known: {', '.join(sorted(known))}")
        cfg, _ = zoo.resolve_init(entry.name, zoo_override)  # a missing file fails here, before Ray
        init_arch[entry.name] = cfg.arch
    cell_list = cells(spec, init_arch, tasks)
    return Plan(spec, cell_list, expand(spec, cell_list, roots), roots, to_pretrain)
