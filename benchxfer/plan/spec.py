"""The sweep file: its schema and its validation.

A sweep file is YAML (``docs/sweep-file.md`` documents every key). :func:`load_spec` parses and checks
the schema; ``benchxfer.planning`` resolves every init, dataset root and recipe and expands the grid into
:class:`benchxfer.trial.Trial` objects. Both run before Ray starts, so that a bad sweep fails in seconds with one line
that names the file, the key and the allowed values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from benchxfer.errors import BenchxferError
from benchxfer.plan.schema import (
    FAILURE_RULES,
    MAX_NAME,
    NAME_RE,
    OPTION_KEYS,
    RESOURCE_RULES,
    SEED,
    SearchOptions,
    check_knob_values,
    check_name,
    check_option_values,
    check_rules,
    check_sweep_name,
    check_synthetic,
    parse_search_options,
)
from benchxfer.recipes import RECIPES
from benchxfer.recipes.config import check_knobs
from benchxfer.textfile import looks_utf16, open_problem, utf8_text, utf16
from benchxfer.trialdir import DEFAULT_KEEP, KEEP

TOP_KEYS = {"name", "description", "recipe", "inits", "datasets", "lr", "seeds", "shots", "overrides", "mode",
            "resources", "failure", "keep"}
DATASET_KEYS = {"name", "root", "options", "recipe", "overrides", "synthetic", "shots"}
INIT_KEYS = {"name", "pretrain"}
RESOURCE_KEYS = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_concurrent": 0, "trainer": "auto"}
FAILURE_KEYS = {"max_retries": 2}
SEARCH_KEYS = {"search", "low", "high", "trials", *OPTION_KEYS}
MODES = ("grid", "tune-then-repeat")
# what a YAML file may be before it is parsed fully, and what a sweep may expand to
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class LrSearch:
    low: float
    high: float
    trials: int
    kind: str = "loguniform"
    options: SearchOptions = SearchOptions()  # how each cell's trials run: to the end, or halved at rungs


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    root: str  # a folder, or "synthetic" (benchxfer writes a small synthetic set in the real layout)
    options: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    shots: tuple[int | None, ...] | None = None  # this dataset's shots, instead of the sweep's


@dataclass(frozen=True)
class InitEntry:
    name: str
    pretrain: str | None = None  # a pre-training file that produces this init when the zoo lacks it


@dataclass(frozen=True)
class SweepSpec:
    path: str
    name: str
    description: str
    recipe: str
    inits: tuple[InitEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    lr: tuple[float, ...] | LrSearch | None
    seeds: tuple[int, ...]
    shots: tuple[int | None, ...]
    overrides: dict[str, Any]
    mode: str
    resources: dict[str, Any]
    failure: dict[str, Any]
    keep: str = DEFAULT_KEEP  # what a final trial's folder keeps (trialdir.KEEP); not part of any trial's key


# --- parsing ---------------------------------------------------------------------------------------

def _fail(path: str, key: str, msg: str) -> BenchxferError:
    return BenchxferError(f"{path}: {key}: {msg}")


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, with two mends: a repeated key is an error (not the last one winning), and
    ``1e-3`` is a number (YAML 1.1 reads a float without a dot as a string)."""

    yaml_implicit_resolvers: ClassVar[dict] = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base loader reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _text(path: str, p: Path) -> str:
    """The file as text, bounded in size, without a BOM; binary files are refused."""
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise BenchxferError(f"{path}: {size} bytes; a sweep or pre-training file may have at most "
                                 f"{MAX_YAML_BYTES} bytes")
        raw = p.read_bytes()
    except PermissionError:
        raise BenchxferError(f"{path}: cannot read it (permission denied)") from None
    except IsADirectoryError:
        raise BenchxferError(f"{path}: is a folder, not a YAML file") from None
    if looks_utf16(raw):
        raise utf16(path, "a sweep or pre-training file")
    if b"\x00" in raw:
        raise BenchxferError(f"{path}: not a text file (it holds NUL bytes); expected YAML")
    return utf8_text(path, raw, "a sweep or pre-training file")


def _check_shape(path: str, text: str) -> None:
    """Bound nesting depth and aliases from the event stream, before anything is built."""
    depth = aliases = nodes = 0
    sizes: dict[str, int] = {}  # anchor -> nodes under it, aliases expanded
    open_: list[tuple[str | None, int]] = []  # the collections being read: (anchor, nodes before them)
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: nested more than "
                                     f"{MAX_YAML_DEPTH} levels deep")
            open_.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = nodes - before
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            nodes += sizes.get(event.anchor, 1)
            if aliases > MAX_YAML_ALIASES:
                raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: more than {MAX_YAML_ALIASES} "
                                     "YAML aliases (*name); write the values out")
        if nodes > MAX_YAML_NODES:
            raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: the document expands to more than "
                                 f"{MAX_YAML_NODES} values (YAML aliases repeat what they name)")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise BenchxferError(f"{path}: is a folder, not a YAML file")
    if not p.is_file():
        if p.is_symlink():  # a loop, or a link to nothing
            try:
                os.stat(p)
            except OSError as err:
                raise open_problem(p, err, "YAML file") from None
        raise BenchxferError(f"{path}: no such file")
    text = _text(str(path), p)
    try:
        _check_shape(str(path), text)
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BenchxferError(f"{path}: YAML syntax error at {where}{problem}") from None
    except RecursionError:
        raise BenchxferError(f"{path}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BenchxferError(f"{path}: expected a mapping of keys at the top level, got {type(doc).__name__}")
    return doc


def _check_keys(path: str, where: str, got: dict, allowed: set[str] | dict) -> None:
    unknown = sorted(set(got) - set(allowed))
    if unknown:
        raise _fail(path, f"{where}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _positive_float(path: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(path, key, f"must be a positive number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise _fail(path, key, f"must be a positive number, got {value!r}") from None
    if not out > 0 or out != out or out == float("inf"):
        raise _fail(path, key, f"must be a positive number, got {value!r}")
    return out


def _int(path: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_lr(path: str, value: Any) -> tuple[float, ...] | LrSearch | None:
    if value is None:
        return None
    if isinstance(value, dict):
        _check_keys(path, "lr.", value, SEARCH_KEYS)
        if value.get("search") != "loguniform":
            raise _fail(path, "lr.search", f"must be 'loguniform', got {value.get('search')!r}")
        low, high = _positive_float(path, "lr.low", value.get("low")), _positive_float(path, "lr.high", value.get("high"))
        if low >= high:
            raise _fail(path, "lr", f"low ({low:g}) must be below high ({high:g})")
        options = parse_search_options(value, f"{path}: lr")
        return LrSearch(low, high, _int(path, "lr.trials", value.get("trials", 8), 1), options=options)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _fail(path, "lr", "must not be empty")
    return tuple(_positive_float(path, f"lr[{i}]" if isinstance(value, list) else "lr", v)
                 for i, v in enumerate(values))


def _parse_seeds(path: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TRIALS:
        raise _fail(path, "seeds", f"{value} seeds is more than a sweep may run ({MAX_TRIALS} trials)")
    if isinstance(value, list):
        if not value:
            raise _fail(path, "seeds", "must not be empty")
        for i, v in enumerate(value):
            if not SEED.ok(v):
                raise _fail(path, f"seeds[{i}]", f"must be {SEED.describe()}, got {v!r}")
        seeds = tuple(value)
        if len(set(seeds)) != len(seeds):
            raise _fail(path, "seeds", f"repeats a seed: {list(seeds)}")
        return seeds
    return tuple(range(_int(path, "seeds", value, 1)))


def _parse_shots(path: str, value: Any, key: str = "shots") -> tuple[int | None, ...]:
    if value is None:
        return (None,)
    values = value if isinstance(value, list) else [value]
    out: list[int | None] = []
    for i, v in enumerate(values):
        if v in ("full", None) and not isinstance(v, bool):
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(path, f"{key}[{i}]" if isinstance(value, list) else key,
                        f"must be an integer >= 1 (images per class) or 'full', got {v!r}")
        else:
            out.append(v)
    if not out:
        raise _fail(path, key, "must not be empty; use 'full' for the whole training set")
    return tuple(out)


def _recipe(path: str, key: str, value: Any, auto: bool = True) -> Any:
    """A recipe name (or, where ``auto``, nothing or "auto": the recipe follows the dataset's task)."""
    if (auto and (value is None or value == "auto")) or (isinstance(value, str) and value in RECIPES):
        return value
    raise _fail(path, key, f"unknown recipe {value!r}; known: {'auto, ' if auto else ''}{', '.join(RECIPES.names())}")


def _mapping(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a mapping, got {type(value).__name__}")
    return value


def parse_resources(path: str, raw: Any) -> dict[str, Any]:
    resources = _mapping(path, "resources", raw)
    _check_keys(path, "resources.", resources, RESOURCE_KEYS)
    resources = check_rules({**RESOURCE_KEYS, **resources}, RESOURCE_RULES, f"{path}: resources")
    gpus = resources["gpus_per_worker"]
    if gpus > 1 and not float(gpus).is_integer():
        raise _fail(path, "resources.gpus_per_worker", f"must be a fraction of one GPU (e.g. 0.25, 0.5) or a whole "
                    f"number of GPUs, got {gpus!r}")
    if 0 < gpus < 1 and resources["workers"] > 1:
        raise _fail(path, "resources", f"gpus_per_worker {gpus!r} shares a GPU between processes, but workers is "
                    f"{resources['workers']}: DDP needs one GPU per worker; use whole GPUs for DDP trials")
    if resources["trainer"] == "direct" and resources["workers"] != 1:
        raise _fail(path, "resources", f"trainer 'direct' runs one process, but workers is {resources['workers']}; "
                    "use trainer 'torch' or 'auto' for more workers")
    return resources


def parse_failure(path: str, raw: Any) -> dict[str, Any]:
    failure = _mapping(path, "failure", raw)
    _check_keys(path, "failure.", failure, FAILURE_KEYS)
    return check_rules({**FAILURE_KEYS, **failure}, FAILURE_RULES, f"{path}: failure")


def load_spec(path: str | Path, base: str | Path | None = None) -> SweepSpec:
    """Parse a sweep file and check its schema (names, types, values). No data or zoo access. Relative roots and
    pre-training files are found from ``base`` (default: the file's folder; a sweep's own copy passes the folder
    of the file it was started from)."""
    path = str(path)
    folder = Path(base) if base is not None else Path(path).parent
    doc = read_yaml(path)
    _check_keys(path, "", doc, TOP_KEYS)
    if "name" in doc:
        name = check_name(f"{path}: name", doc["name"])
    else:
        name = Path(path).stem
        if not NAME_RE.match(name) or len(name) > MAX_NAME:
            raise _fail(path, "name", f"not set, and the file name gives {name!r}, which is not lower-case letters, "
                        f"digits, '.', '_' or '-' (at most {MAX_NAME} characters); add a name: key")
    check_sweep_name(f"{path}: name", name)

    raw_inits = doc.get("inits")
    if not isinstance(raw_inits, list) or not raw_inits:
        raise _fail(path, "inits", "must be a non-empty list of init names (see `benchxfer zoo list`)")
    inits = []
    for i, item in enumerate(raw_inits):
        if isinstance(item, str):
            inits.append(InitEntry(item))
        elif isinstance(item, dict):
            _check_keys(path, f"inits[{i}].", item, INIT_KEYS)
            if not isinstance(item.get("name"), str):
                raise _fail(path, f"inits[{i}].name", "is required")
            check_name(f"{path}: inits[{i}].name", item["name"])
            pre = item.get("pretrain")
            if pre:
                from benchxfer.zoo.inits import INITS

                if item["name"] in INITS:
                    raise _fail(path, f"inits[{i}].name", f"{item['name']!r} is a built-in init; what {pre} "
                                "pre-trains needs a name of its own (change it here and in the pre-training file)")
            inits.append(InitEntry(item["name"], str((folder / pre)) if pre else None))
        else:
            raise _fail(path, f"inits[{i}]", f"must be a name or a mapping, got {item!r}")

    raw_ds = doc.get("datasets")
    if not isinstance(raw_ds, list) or not raw_ds:
        raise _fail(path, "datasets", "must be a non-empty list of {name, root} entries")
    datasets = []
    for i, item in enumerate(raw_ds):
        if not isinstance(item, dict):
            raise _fail(path, f"datasets[{i}]", f"must be a mapping with name and root, got {item!r}")
        _check_keys(path, f"datasets[{i}].", item, DATASET_KEYS)
        if not isinstance(item.get("name"), str):
            raise _fail(path, f"datasets[{i}].name", "is required (see `benchxfer data list`)")
        root = item.get("root")
        if not isinstance(root, str) or not root:
            raise _fail(path, f"datasets[{i}].root", "is required: the dataset folder, or 'synthetic'")
        if root != "synthetic":
            root = str((folder / Path(root).expanduser()).resolve())
            if Path(root).is_dir() and not os.access(root, os.R_OK | os.X_OK):
                raise _fail(path, f"datasets[{i}].root", f"cannot read the folder {root} (permission denied)")
        datasets.append(DatasetEntry(
            name=item["name"], root=root,
            options=check_option_values(_mapping(path, f"datasets[{i}].options", item.get("options")),
                                        f"{path}: datasets[{i}].options"),
            recipe=_recipe(path, f"datasets[{i}].recipe", item.get("recipe")),
            overrides=check_overrides(path, f"datasets[{i}].overrides", item.get("overrides")),
            synthetic=check_synthetic(_mapping(path, f"datasets[{i}].synthetic", item.get("synthetic")),
                                      f"{path}: datasets[{i}].synthetic"),
            shots=_parse_shots(path, item["shots"], f"datasets[{i}].shots") if "shots" in item else None,
        ))

    mode = doc.get("mode", "grid")
    if mode not in MODES:
        raise _fail(path, "mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    lr = _parse_lr(path, doc.get("lr"))
    if mode == "tune-then-repeat" and not isinstance(lr, LrSearch):
        raise _fail(path, "lr", "mode tune-then-repeat needs an lr search: {search: loguniform, low, high, trials}")
    if isinstance(lr, LrSearch) and mode != "tune-then-repeat":
        raise _fail(path, "lr", f"an lr search needs mode: tune-then-repeat (mode is {mode!r}); "
                    "or give a list of lr values")

    resources = parse_resources(path, doc.get("resources"))
    keep = doc.get("keep", DEFAULT_KEEP)
    if not isinstance(keep, str) or keep not in KEEP:
        raise _fail(path, "keep", f"must be one of {', '.join(KEEP)}, got {keep!r}")
    failure = parse_failure(path, doc.get("failure"))

    seeds = _parse_seeds(path, doc.get("seeds", 1))
    shots = _parse_shots(path, doc.get("shots"))
    _check_shots_task(path, datasets, shots)
    _check_count(path, len(inits) * len(datasets), lr, len(seeds), max(len(d.shots or shots) for d in datasets))

    return SweepSpec(
        path=path, name=name, description=str(doc.get("description", "")),
        recipe=str(_recipe(path, "recipe", doc.get("recipe", "auto"))), inits=tuple(inits), datasets=tuple(datasets), lr=lr,
        seeds=seeds, shots=shots, overrides=check_overrides(path, "overrides", doc.get("overrides")),
        mode=mode, resources=resources, failure=failure, keep=keep,
    )


def _check_count(path: str, n_cells: int, lr: Any, n_seeds: int, n_shots: int) -> None:
    """Count the trials before expanding them (a search adds its lr trials to the repeats)."""
    per_cell = lr.trials + n_seeds * n_shots if isinstance(lr, LrSearch) else len(lr or (None,)) * n_seeds * n_shots
    count = n_cells * per_cell
    if count > MAX_TRIALS:
        raise BenchxferError(f"{path}: the sweep expands to {count} trials ({n_cells} init x dataset cells, "
                             f"{per_cell} trials each); the limit is {MAX_TRIALS}")


def check_overrides(path: str, key: str, raw: Any) -> dict[str, Any]:
    """Knob overrides of a sweep or pre-training file: known names, right types, values in range."""
    where = f"{path}: {key}"
    return check_knob_values(check_knobs(_mapping(path, key, raw), where), where)


def _check_shots_task(path: str, datasets: list[DatasetEntry], shots: tuple[int | None, ...]) -> None:
    """Shots (images per class) apply to classification only."""
    from benchxfer.data import DATASETS

    for i, ds in enumerate(datasets):
        if all(s is None for s in ds.shots or shots):
            continue
        if ds.name in DATASETS and DATASETS.get(ds.name).kind.dense:
            raise _fail(path, "shots", f"dataset {ds.name!r} (datasets[{i}]) is a segmentation task; shots apply "
                        "to classification datasets only (use 'full' or drop shots)")
