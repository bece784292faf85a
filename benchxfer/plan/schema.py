"""The one validator of what a user hands over: the sweep file and the pre-training file, each checked in one pass
into typed, frozen records (:func:`sweep_spec` -> :class:`SweepSpec`, :func:`pretrain_spec` ->
:class:`PretrainSpec`: inits, datasets, the lr or its search, seeds, shots, knob overrides, mode, ``resources:``,
``failure:``, ``keep``), and ``--set``. Names and types of knobs live with the knobs (``recipes/config.py``); this
module adds what a type alone does not say: the range, or the allowed values. Each check raises one line naming
where the value came from and what is allowed. What needs the disk or the zoo (a dataset's root, an init's file)
is ``benchxfer.plan.planning``'s.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchxfer.errors import BenchxferError
from benchxfer.frozen import FrozenDict
from benchxfer.tasks import BINARY_HEADS
from benchxfer.trialdir import DEFAULT_KEEP, KEEP

if TYPE_CHECKING:
    from benchxfer.data.synthetic import SyntheticSet


def _num(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """A number in [low, high] (``None``: unbounded); ``open_high`` excludes ``high``."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    open_high: bool = False
    open_low: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"{kind} {'>' if self.open_low else '>='} {low}"
        return f"{kind} <= {high}" if self.high is not None else kind

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and not float(value).is_integer():
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values, or of a registry's names (read when checked)."""

    values: tuple[Any, ...] | Callable[[], list[str]]

    def allowed(self) -> list[Any]:
        return list(self.values() if callable(self.values) else self.values)

    def describe(self) -> str:
        return "one of " + ", ".join(str(v) for v in self.allowed())

    def ok(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.allowed())


def _augment_presets() -> list[str]:
    from benchxfer.data.transforms import PRESETS

    return PRESETS.names()


@dataclass(frozen=True)
class Names:
    """A non-empty list of non-empty strings (e.g. view names)."""

    what: str

    def describe(self) -> str:
        return f"a non-empty list of {self.what}"

    def ok(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) and v for v in value)


def _uncertain_policies() -> list[str]:
    from benchxfer.data.labels import UNCERTAIN

    return UNCERTAIN.names()


@dataclass(frozen=True)
class Name:
    """A name that becomes part of file names, MLflow experiment names and the zoo's index: lower-case letters,
    digits, '.', '_' or '-', starting with a letter or digit, at most ``MAX_NAME`` characters."""

    max_len: int = 0  # 0: MAX_NAME

    def limit(self) -> int:
        return self.max_len or MAX_NAME

    def describe(self) -> str:
        return f"a name of lower-case letters, digits, '.', '_' or '-' (at most {self.limit()} characters)"

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) <= self.limit() and NAME_RE.match(value) is not None


Rule = Range | OneOf | Names | Name

# Names become file and folder names (<home>/runs/<sweep>/logs/<sweep>-NN.log, the zoo's <init>.safetensors),
# MLflow experiment names and Ray Tune experiment names: 64 characters leave room for every derived name
# (the Tune experiment <sweep>-NN, its log file, a trial key of init, dataset, lr, seed, shot and a hash)
# within the 255 bytes a file name may have.
MAX_NAME = 64
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
SEED = Range(0, 2**32 - 1, integer=True)  # numpy's and torch's seeds: an unsigned 32-bit integer

# knob -> its range (the names and types are checked by recipes.config.check_knobs first)
KNOB_RULES: dict[str, Rule] = {
    "size": Range(8, 4096, integer=True),
    "batch_size": Range(1, None, integer=True),
    "micro_batch": Range(0, None, integer=True),
    "epochs": Range(1, None, integer=True),
    "momentum": Range(0, 1),
    "weight_decay": Range(0, None),
    "plateau_factor": Range(0, 1, open_high=True),
    "plateau_patience": Range(0, None, integer=True),
    "plateau_threshold": Range(0, None),
    "warmup_epochs": Range(0, None, integer=True),
    "base_batch": Range(0, None, integer=True),
    "max_steps": Range(0, None, integer=True),
    "patience": Range(0, None, integer=True),
    "augment": OneOf(_augment_presets),
    "mixup": Range(-1, None),
    "agc": Range(0, None),
    "binary_outputs": OneOf(BINARY_HEADS),
    "loader_workers": Range(0, 256, integer=True),
    "checkpoint_every_s": Range(0, None),
    "max_train_batches": Range(0, None, integer=True),
}

# reader option -> its rule (which datasets take which option is the dataset's own list)
OPTION_RULES: dict[str, Rule] = {
    "val_fraction": Range(0, 1, open_high=True),
    "official": OneOf(("first-study", "nih")),
    "views": Names("view names (the second study's: PA, AP, AP Supine, L, COSTAL, ...)"),
    "uncertain": OneOf(_uncertain_policies),
    "cache_size": Range(8, 4096, integer=True),
}

# resources: (the same for sweeps and pre-training files); a worker needs a CPU to run on
RESOURCE_RULES: dict[str, Rule] = {
    "workers": Range(1, 1024, integer=True),
    "cpus_per_worker": Range(0, 1024, open_low=True),
    "gpus_per_worker": Range(0, 64),
    "max_concurrent": Range(0, 100_000, integer=True),
    "trainer": OneOf(("auto", "torch", "direct")),
}
FAILURE_RULES: dict[str, Rule] = {"max_retries": Range(0, 1000, integer=True)}


def _synthetic_families() -> list[str]:
    from benchxfer.data.synthetic import FAMILIES

    return list(FAMILIES)


# the synthetic: block -> rule (the fields of data.synthetic.SyntheticSet, ensure's parameters, and their defaults)
SYNTHETIC_RULES: dict[str, Rule] = {
    "n_train": Range(0, 100_000, integer=True),
    "n_val": Range(0, 100_000, integer=True),
    "n_test": Range(0, 100_000, integer=True),
    "size": Range(8, 4096, integer=True),
    "seed": Range(0, 2**32 - 1, integer=True),
    "family": OneOf(_synthetic_families),
}


ADDRESS_RE = re.compile(r"^(?:auto|local|(?:ray://)?(?P<host>[A-Za-z0-9_.\-\[\]:]+?):(?P<port>\d{1,5}))$")


def check_address(ctx: Any, param: Any, value: str | None) -> str | None:
    """A click callback for ``--address``: 'auto', 'local', HOST:PORT or ray://HOST:PORT, port 1-65535."""
    if value is None:
        return None
    m = ADDRESS_RE.match(value.strip())
    if m is None or (m.group("port") is not None and not 0 < int(m.group("port")) < 65536):
        raise BenchxferError(f"--address {value!r}: use 'auto', HOST:PORT (a head node's GCS, e.g. 10.0.0.5:6379) "
                             "or ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001), with a port in 1-65535")
    return value.strip()


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that another program already listens on (the server would die with a log line)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError as err:
            raise BenchxferError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err}); "
                                 "it is in use, pick another port with --port") from None


def check_name(where: str, value: Any, rule: Name = Name()) -> str:
    """A name (sweep, init, pre-training output): ``where`` names the file and key."""
    if not rule.ok(value):
        raise BenchxferError(f"{where}: must be {rule.describe()}, got {_short(value)}")
    return value


# names a sweep may not take: what already stands under them (runs/NAME, the MLflow experiment NAME)
PRETRAIN_EXPERIMENT = "pretrain"
RESERVED_SWEEP_NAMES = {PRETRAIN_EXPERIMENT: "the pre-training runs' folder (runs/pretrain) and MLflow experiment"}


def check_sweep_name(where: str, name: str) -> str:
    """A sweep's name must not be one benchxfer keeps for something else (its folder and experiment would mix)."""
    if name in RESERVED_SWEEP_NAMES:
        raise BenchxferError(f"{where}: {name!r} is reserved for {RESERVED_SWEEP_NAMES[name]}; give the sweep "
                             "another name")
    return name


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value) if isinstance(value, str) else len(text)} characters)"


# knob combinations the ranges alone do not catch: (rule, message) over the resolved knobs and the run's shot
def _steps_without_budget(knobs: Mapping[str, Any], shot: Any) -> bool:
    return knobs.get("stopping") == "steps" and not knobs.get("max_steps") and knobs.get("schedule") != "bit-hyperrule"


def _class_balance_with_shots(knobs: Mapping[str, Any], shot: Any) -> bool:
    return knobs.get("balance") == "class" and shot is not None


COMBINATIONS: tuple[tuple[Callable[[Mapping[str, Any], Any], bool], str], ...] = (
    (_steps_without_budget, "stopping 'steps' needs max_steps > 0 (or schedule bit-hyperrule, which sets it); "
                            "set max_steps, or use stopping early or none"),
    (_class_balance_with_shots, "balance 'class' oversamples full-data runs only and cannot be combined with shots; "
                                "use balance none or auto, or drop shots"),
)


def check_combinations(knobs: Mapping[str, Any], shots: Any, where: str) -> None:
    """Knobs that each lie in range but do not go together (``shots``: the run's shot values)."""
    for shot in shots:
        for rule, message in COMBINATIONS:
            if rule(knobs, shot):
                raise BenchxferError(f"{where}: {message}")


def check_rules(mapping: Mapping[str, Any], rules: Mapping[str, Rule], where: str) -> dict[str, Any]:
    """Each key of ``mapping`` that has a rule must satisfy it; ``where`` names the file and block."""
    for key, value in mapping.items():
        if key in rules and not rules[key].ok(value):
            raise BenchxferError(f"{where}.{key}: must be {rules[key].describe()}, got {_short(value)}")
    return dict(mapping)


def _check(where: str, key: str, value: Any, rule: Rule) -> None:
    if not rule.ok(value):
        raise BenchxferError(f"{where}: {key} must be {rule.describe()}, got {value!r}")


def check_knob_values(knobs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every knob with a range must lie in it (call after the names and types are checked)."""
    for key, value in knobs.items():
        if key in KNOB_RULES:
            _check(where, key, value, KNOB_RULES[key])
    return dict(knobs)


def check_option_values(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Reader options: a known name with a value in its range (unknown names: the dataset's own check)."""
    for key, value in options.items():
        if key in OPTION_RULES:
            _check(where, key, value, OPTION_RULES[key])
    return dict(options)


def check_synthetic(block: Mapping[str, Any], where: str) -> SyntheticSet:
    """The ``synthetic:`` block: known keys, each in range, and not an empty set; the set it describes (the keys
    the block leaves out at ``SyntheticSet``'s defaults)."""
    unknown = sorted(set(block) - set(SYNTHETIC_RULES))
    if unknown:
        raise BenchxferError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(SYNTHETIC_RULES)}")
    for key, value in block.items():
        _check(where, key, value, SYNTHETIC_RULES[key])
    counts = [block.get(k, 1) for k in ("n_train", "n_val", "n_test")]
    if block.get("n_train", 1) == 0 or sum(counts) == 0:
        raise BenchxferError(f"{where}: an empty set (n_train {block.get('n_train', 'default')}, n_val "
                             f"{block.get('n_val', 'default')}, n_test {block.get('n_test', 'default')}); "
                             "n_train must be >= 1")
    return _synthetic_set(block)


def _synthetic_set(block: Mapping[str, Any] | None = None) -> SyntheticSet:
    """The record of a checked ``synthetic:`` block, none: the defaults (loaded on first use: the data package is
    not light, and a command line that reads no sweep file need not load it)."""
    from benchxfer.data.synthetic import SyntheticSet

    return SyntheticSet(**(block or {}), written=tuple(sorted(block or ())))


# --- the lr search's options (``lr: {search: ..., scheduler: ...}``; run by benchxfer.launch.search) ---------------

SCHEDULERS = ("none", "asha", "hyperband")
OPTION_KEYS = ("scheduler", "min_epochs", "eta", "metric", "mode")
SEARCH_METRIC = "best_val_loss"  # what each cell's study minimises, and what picks its lr


@dataclass(frozen=True)
class SearchOptions:
    """How the trials of one cell's lr search are run: to the end (``none``), or halved at rungs of epochs."""

    scheduler: str = "none"
    min_epochs: int = 1  # the first rung, and the least any trial trains (ASHA's grace period)
    eta: int = 3  # the reduction factor: 1/eta of a rung's trials go on to the next rung
    metric: str = "val_loss"  # compared at each rung: a per-epoch value the recipe reports
    mode: str = "min"

    def describe(self) -> str:
        """The search's scheduler in words, for the dry run's total line and stage 1's line."""
        if self.scheduler == "none":
            return "every trial to its end"
        return f"{self.scheduler} on {self.metric} from {self.min_epochs} epoch(s), eta {self.eta}"


def parse_search_options(raw: dict[str, Any], where: str) -> SearchOptions:
    """The scheduler keys of an lr search block (other keys are the caller's); ``where`` prefixes messages."""
    got = {k: raw[k] for k in OPTION_KEYS if k in raw and raw[k] is not None}
    scheduler = got.get("scheduler", SearchOptions.scheduler)
    if scheduler not in SCHEDULERS:
        raise BenchxferError(f"{where}.scheduler: must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    for key, least in (("min_epochs", 1), ("eta", 2)):
        v = got.get(key, getattr(SearchOptions, key))
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise BenchxferError(f"{where}.{key}: must be an integer >= {least}, got {v!r}")
    metric = got.get("metric", SearchOptions.metric)
    if not isinstance(metric, str) or not (metric == "val_loss" or metric.startswith("val_") or metric == SEARCH_METRIC):
        raise BenchxferError(f"{where}.metric: must be val_loss, best_val_loss or val_<metric> (a value "
                             f"reported each epoch), got {metric!r}")
    from benchxfer.train.metrics import higher_is_better

    # default: min for a loss, else the way the metric's registry entry says is better
    mode = got.get("mode", "min" if metric.endswith("loss") else
                   "max" if higher_is_better(metric.removeprefix("val_")) else "min")
    if mode not in ("min", "max"):
        raise BenchxferError(f"{where}.mode: must be min or max, got {mode!r}")
    if scheduler == "none" and set(got) - {"scheduler"}:
        extra = min(set(got) - {"scheduler"})
        raise BenchxferError(f"{where}.{extra}: only used with scheduler asha or hyperband")
    return SearchOptions(scheduler, got.get("min_epochs", 1), got.get("eta", 3), metric, mode)


# --- the sweep file and the pre-training file, read into typed records in one pass -------------------------
# (the YAML itself is read by benchxfer.plan.spec.read_yaml: bounded size, depth and aliases, no repeated keys)

TOP_KEYS = {"name", "description", "recipe", "inits", "datasets", "lr", "seeds", "shots", "overrides", "mode",
            "resources", "failure", "keep"}
DATASET_KEYS = {"name", "root", "options", "recipe", "overrides", "synthetic", "shots"}
INIT_KEYS = {"name", "pretrain"}
SEARCH_KEYS = {"search", "low", "high", "trials", *OPTION_KEYS}
MODES = ("grid", "tune-then-repeat")
MAX_TRIALS = 10_000  # what a sweep may expand to
PRETRAIN_KEYS = {"name", "description", "sources", "arch", "start", "recipe", "lr", "seed", "overrides",
                 "resources", "failure"}
SOURCE_KEYS = {"dataset", "root", "options", "synthetic"}


@dataclass(frozen=True)
class Resources:
    """``resources:`` (a sweep's or a pre-training's): what one trial asks of the cluster, and how many run at once.
    The field names are ``launch.cluster.Launch``'s, which is built from this record."""

    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_concurrent: int = 0  # 0: as many as the cluster holds
    trainer: str = "auto"  # auto: TorchTrainer for DDP, 1-worker trials inside the Tune trial; or torch / direct


@dataclass(frozen=True)
class FailurePolicy:
    """``failure:``: how often a trial whose worker died is started again from its last checkpoint."""

    max_retries: int = 2


def _defaults(record: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(record)}


RESOURCE_KEYS = _defaults(Resources)
FAILURE_KEYS = _defaults(FailurePolicy)


@dataclass(frozen=True)
class LrSearch:
    low: float
    high: float
    trials: int
    kind: str = "loguniform"
    options: SearchOptions = SearchOptions()  # how each cell's trials run: to the end, or halved at rungs


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # a name of the dataset registry
    root: str  # a folder, or "synthetic" (benchxfer writes a small synthetic set in the real layout)
    options: FrozenDict = field(default_factory=FrozenDict)  # reader options the dataset takes, each in range
    recipe: str | None = None
    overrides: FrozenDict = field(default_factory=FrozenDict)  # knobs: known names, right types, in range
    synthetic: SyntheticSet = field(default_factory=_synthetic_set)  # the set written for root "synthetic"
    shots: tuple[int | None, ...] | None = None  # this dataset's shots, instead of the sweep's


@dataclass(frozen=True)
class InitEntry:
    name: str
    pretrain: str | None = None  # a pre-training file (absolute) that produces this init when the zoo lacks it


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
    overrides: FrozenDict  # knobs: known names, right types, in range
    mode: str
    resources: Resources = Resources()
    failure: FailurePolicy = FailurePolicy()
    keep: str = DEFAULT_KEEP  # what a final trial's folder keeps (trialdir.KEEP); not part of any trial's key


@dataclass(frozen=True)
class Source:
    """One source of a pre-training: a dataset of the registry, its root (a folder made absolute, or
    "synthetic"), its reader options and its ``synthetic:`` block."""

    dataset: str
    root: str
    options: FrozenDict = field(default_factory=FrozenDict)
    synthetic: SyntheticSet = field(default_factory=_synthetic_set)


@dataclass(frozen=True)
class PretrainSpec:
    path: str
    name: str
    sources: tuple[Source, ...]
    arch: str
    start: str
    recipe: str
    lr: float | None
    seed: int
    overrides: FrozenDict
    resources: Resources = Resources()
    failure: FailurePolicy = FailurePolicy()


def fail(path: str, key: str, msg: str) -> BenchxferError:
    """The one-line error of a file's key: ``<file>: <key>: <what is wrong>``."""
    return BenchxferError(f"{path}: {key}: {msg}")


def check_keys(path: str, where: str, got: Mapping, allowed: set[str] | Mapping) -> None:
    unknown = sorted(set(got) - set(allowed))
    if unknown:
        raise fail(path, f"{where}{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _mapping(path: str, key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(path, key, f"must be a mapping, got {type(value).__name__}")
    return value


def _positive_float(path: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise fail(path, key, f"must be a positive number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise fail(path, key, f"must be a positive number, got {value!r}") from None
    if not out > 0 or out != out or out == float("inf"):
        raise fail(path, key, f"must be a positive number, got {value!r}")
    return out


def _int(path: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(path, key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def resources(path: str, raw: Any) -> Resources:
    """``resources:``: known keys, each in range, and a combination one trial can run with."""
    given = _mapping(path, "resources", raw)
    check_keys(path, "resources.", given, RESOURCE_KEYS)
    r = Resources(**check_rules({**RESOURCE_KEYS, **given}, RESOURCE_RULES, f"{path}: resources"))
    if r.gpus_per_worker > 1 and not float(r.gpus_per_worker).is_integer():
        raise fail(path, "resources.gpus_per_worker", f"must be a fraction of one GPU (e.g. 0.25, 0.5) or a whole "
                   f"number of GPUs, got {r.gpus_per_worker!r}")
    if 0 < r.gpus_per_worker < 1 and r.workers > 1:
        raise fail(path, "resources", f"gpus_per_worker {r.gpus_per_worker!r} shares a GPU between processes, but "
                   f"workers is {r.workers}: DDP needs one GPU per worker; use whole GPUs for DDP trials")
    if r.trainer == "direct" and r.workers != 1:
        raise fail(path, "resources", f"trainer 'direct' runs one process, but workers is {r.workers}; "
                   "use trainer 'torch' or 'auto' for more workers")
    return r


def failure(path: str, raw: Any) -> FailurePolicy:
    given = _mapping(path, "failure", raw)
    check_keys(path, "failure.", given, FAILURE_KEYS)
    return FailurePolicy(**check_rules({**FAILURE_KEYS, **given}, FAILURE_RULES, f"{path}: failure"))


def overrides(path: str, key: str, raw: Any) -> FrozenDict:
    """Knob overrides of a sweep or pre-training file: known names, right types, values in range."""
    from benchxfer.recipes.config import check_knobs

    where = f"{path}: {key}"
    return FrozenDict(check_knob_values(check_knobs(_mapping(path, key, raw), where), where))


def _recipe(path: str, key: str, value: Any, auto: bool = True) -> Any:
    """A recipe name (or, where ``auto``, nothing or "auto": the recipe follows the dataset's task)."""
    from benchxfer.recipes import RECIPES

    if (auto and (value is None or value == "auto")) or (isinstance(value, str) and value in RECIPES):
        return value
    raise fail(path, key, f"unknown recipe {value!r}; known: {'auto, ' if auto else ''}{', '.join(RECIPES.names())}")


def _dataset_name(path: str, key: str, value: Any) -> str:
    from benchxfer.data import DATASETS

    if value not in DATASETS:
        raise fail(path, key, f"unknown dataset {value!r}; known: {', '.join(DATASETS.names())}")
    return value


def _reader_options(path: str, key: str, dataset: str, raw: Any) -> FrozenDict:
    """A dataset's reader options: each in range, and each one the dataset takes."""
    from benchxfer.data import get_dataset
    from benchxfer.data.indexing import check_options

    options = check_option_values(_mapping(path, key, raw), f"{path}: {key}")
    try:  # a reader option the dataset does not take is refused now, not on a worker
        check_options(get_dataset(dataset), options)
    except BenchxferError as err:
        raise fail(path, key, str(err)) from None
    return FrozenDict(options)


def _lr(path: str, value: Any) -> tuple[float, ...] | LrSearch | None:
    if value is None:
        return None
    if isinstance(value, dict):
        check_keys(path, "lr.", value, SEARCH_KEYS)
        if value.get("search") != "loguniform":
            raise fail(path, "lr.search", f"must be 'loguniform', got {value.get('search')!r}")
        low, high = _positive_float(path, "lr.low", value.get("low")), _positive_float(path, "lr.high", value.get("high"))
        if low >= high:
            raise fail(path, "lr", f"low ({low:g}) must be below high ({high:g})")
        options = parse_search_options(value, f"{path}: lr")
        return LrSearch(low, high, _int(path, "lr.trials", value.get("trials", 8), 1), options=options)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise fail(path, "lr", "must not be empty")
    return tuple(_positive_float(path, f"lr[{i}]" if isinstance(value, list) else "lr", v)
                 for i, v in enumerate(values))


def _seeds(path: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_TRIALS:
        raise fail(path, "seeds", f"{value} seeds is more than a sweep may run ({MAX_TRIALS} trials)")
    if isinstance(value, list):
        if not value:
            raise fail(path, "seeds", "must not be empty")
        for i, v in enumerate(value):
            if not SEED.ok(v):
                raise fail(path, f"seeds[{i}]", f"must be {SEED.describe()}, got {v!r}")
        seeds = tuple(value)
        if len(set(seeds)) != len(seeds):
            raise fail(path, "seeds", f"repeats a seed: {list(seeds)}")
        return seeds
    return tuple(range(_int(path, "seeds", value, 1)))


def _shots(path: str, value: Any, key: str = "shots") -> tuple[int | None, ...]:
    if value is None:
        return (None,)
    values = value if isinstance(value, list) else [value]
    out: list[int | None] = []
    for i, v in enumerate(values):
        if v in ("full", None) and not isinstance(v, bool):
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise fail(path, f"{key}[{i}]" if isinstance(value, list) else key,
                       f"must be an integer >= 1 (images per class) or 'full', got {v!r}")
        else:
            out.append(v)
    if not out:
        raise fail(path, key, "must not be empty; use 'full' for the whole training set")
    return tuple(out)


def _keep(path: str, value: Any) -> str:
    if not isinstance(value, str) or value not in KEEP:
        raise fail(path, "keep", f"must be one of {', '.join(KEEP)}, got {value!r}")
    return value


def _sweep_name(path: str, doc: Mapping[str, Any]) -> str:
    if "name" in doc:
        name = check_name(f"{path}: name", doc["name"])
    else:
        name = Path(path).stem
        if not NAME_RE.match(name) or len(name) > MAX_NAME:
            raise fail(path, "name", f"not set, and the file name gives {name!r}, which is not lower-case letters, "
                       f"digits, '.', '_' or '-' (at most {MAX_NAME} characters); add a name: key")
    return check_sweep_name(f"{path}: name", name)


def _inits(path: str, raw: Any, folder: Path) -> tuple[InitEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(path, "inits", "must be a non-empty list of init names (see `benchxfer zoo list`)")
    inits = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            inits.append(InitEntry(item))
        elif isinstance(item, dict):
            check_keys(path, f"inits[{i}].", item, INIT_KEYS)
            if not isinstance(item.get("name"), str):
                raise fail(path, f"inits[{i}].name", "is required")
            check_name(f"{path}: inits[{i}].name", item["name"])
            pre = item.get("pretrain")
            if pre is not None and not isinstance(pre, str):
                raise fail(path, f"inits[{i}].pretrain", f"must be the path of a pre-training file (YAML), got {pre!r}")
            if pre:
                from benchxfer.zoo.inits import INITS

                if item["name"] in INITS:
                    raise fail(path, f"inits[{i}].name", f"{item['name']!r} is a built-in init; what {pre} "
                               "pre-trains needs a name of its own (change it here and in the pre-training file)")
            pre = str((folder / Path(pre).expanduser()).resolve()) if pre else None  # as a dataset's root is
            inits.append(InitEntry(item["name"], pre))
        else:
            raise fail(path, f"inits[{i}]", f"must be a name or a mapping, got {item!r}")
    return tuple(inits)


def _datasets(path: str, raw: Any, folder: Path) -> tuple[DatasetEntry, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(path, "datasets", "must be a non-empty list of {name, root} entries")
    datasets: list[DatasetEntry] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise fail(path, f"datasets[{i}]", f"must be a mapping with name and root, got {item!r}")
        check_keys(path, f"datasets[{i}].", item, DATASET_KEYS)
        if not isinstance(item.get("name"), str):
            raise fail(path, f"datasets[{i}].name", "is required (see `benchxfer data list`)")
        name = _dataset_name(path, f"datasets[{i}].name", item["name"])
        if any(d.name == name for d in datasets):
            raise fail(path, f"datasets[{i}].name", f"{name!r} appears twice")
        root = item.get("root")
        if not isinstance(root, str) or not root:
            raise fail(path, f"datasets[{i}].root", "is required: the dataset folder, or 'synthetic'")
        if root != "synthetic":
            root = str((folder / Path(root).expanduser()).resolve())
            if Path(root).is_dir() and not os.access(root, os.R_OK | os.X_OK):
                raise fail(path, f"datasets[{i}].root", f"cannot read the folder {root} (permission denied)")
        datasets.append(DatasetEntry(
            name=name, root=root,
            options=_reader_options(path, f"datasets[{i}].options", name, item.get("options")),
            recipe=_recipe(path, f"datasets[{i}].recipe", item.get("recipe")),
            overrides=overrides(path, f"datasets[{i}].overrides", item.get("overrides")),
            synthetic=check_synthetic(_mapping(path, f"datasets[{i}].synthetic", item.get("synthetic")),
                                      f"{path}: datasets[{i}].synthetic"),
            shots=_shots(path, item["shots"], f"datasets[{i}].shots") if "shots" in item else None,
        ))
    return tuple(datasets)


def sweep_spec(doc: Mapping[str, Any], path: str, base: str | Path | None = None) -> SweepSpec:
    """The whole sweep file (its YAML document) checked in one pass -- names, types, values, the combinations of
    sections -- and returned as typed records; no disk (but the readability of a dataset's folder) and no zoo.
    Relative roots and pre-training files are found from ``base`` (default: the file's folder)."""
    folder = Path(base) if base is not None else Path(path).parent
    check_keys(path, "", doc, TOP_KEYS)
    name = _sweep_name(path, doc)
    inits = _inits(path, doc.get("inits"), folder)
    datasets = _datasets(path, doc.get("datasets"), folder)
    mode = doc.get("mode", "grid")
    if mode not in MODES:
        raise fail(path, "mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    lr = _lr(path, doc.get("lr"))
    if mode == "tune-then-repeat" and not isinstance(lr, LrSearch):
        raise fail(path, "lr", "mode tune-then-repeat needs an lr search: {search: loguniform, low, high, trials}")
    if isinstance(lr, LrSearch) and mode != "tune-then-repeat":
        raise fail(path, "lr", f"an lr search needs mode: tune-then-repeat (mode is {mode!r}); "
                   "or give a list of lr values")
    res = resources(path, doc.get("resources"))
    keep = _keep(path, doc.get("keep", DEFAULT_KEEP))
    fail_policy = failure(path, doc.get("failure"))
    seeds = _seeds(path, doc.get("seeds", 1))
    shots = _shots(path, doc.get("shots"))
    _check_shots_task(path, datasets, shots)
    _check_count(path, len(inits) * len(datasets), lr, len(seeds), max(len(d.shots or shots) for d in datasets))
    return SweepSpec(
        path=path, name=name, description=str(doc.get("description", "")),
        recipe=str(_recipe(path, "recipe", doc.get("recipe", "auto"))), inits=inits, datasets=datasets, lr=lr,
        seeds=seeds, shots=shots, overrides=overrides(path, "overrides", doc.get("overrides")),
        mode=mode, resources=res, failure=fail_policy, keep=keep,
    )


def _check_count(path: str, n_cells: int, lr: Any, n_seeds: int, n_shots: int) -> None:
    """Count the trials before expanding them (a search adds its lr trials to the repeats)."""
    per_cell = lr.trials + n_seeds * n_shots if isinstance(lr, LrSearch) else len(lr or (None,)) * n_seeds * n_shots
    count = n_cells * per_cell
    if count > MAX_TRIALS:
        raise BenchxferError(f"{path}: the sweep expands to {count} trials ({n_cells} init x dataset cells, "
                             f"{per_cell} trials each); the limit is {MAX_TRIALS}")


def _check_shots_task(path: str, datasets: tuple[DatasetEntry, ...], shots: tuple[int | None, ...]) -> None:
    """Shots (images per class) apply to classification only."""
    from benchxfer.data import DATASETS

    for i, ds in enumerate(datasets):
        if all(s is None for s in ds.shots or shots):
            continue
        if DATASETS.get(ds.name).kind.dense:
            raise fail(path, "shots", f"dataset {ds.name!r} (datasets[{i}]) is a segmentation task; shots apply "
                       "to classification datasets only (use 'full' or drop shots)")


def _sources(path: str, raw: Any) -> tuple[Source, ...]:
    if not isinstance(raw, list) or not raw:
        raise fail(path, "sources", "must be a non-empty list of {dataset, root} entries")
    sources = []
    for i, src in enumerate(raw):
        if not isinstance(src, dict) or not isinstance(src.get("dataset"), str) or not src.get("root"):
            raise fail(path, f"sources[{i}]", "needs dataset and root")
        check_keys(path, f"sources[{i}].", src, SOURCE_KEYS)
        dataset = _dataset_name(path, f"sources[{i}].dataset", src["dataset"])
        root = src["root"] if src["root"] == "synthetic" else str((Path(path).parent / src["root"]).resolve())
        sources.append(Source(
            dataset, root, _reader_options(path, f"sources[{i}].options", dataset, src.get("options")),
            check_synthetic(_mapping(path, f"sources[{i}].synthetic", src.get("synthetic")),
                            f"{path}: sources[{i}].synthetic")))
    return tuple(sources)


def pretrain_spec(doc: Mapping[str, Any], path: str) -> PretrainSpec:
    """The whole pre-training file (its YAML document) checked in one pass and returned as typed records; the
    same rules as a sweep file's for the sections they share (resources, failure, overrides, reader options)."""
    check_keys(path, "", doc, PRETRAIN_KEYS)
    if "name" not in doc:
        raise fail(path, "name", "the new init's name is required (lower-case letters, digits, '.', '_', '-')")
    name = check_name(f"{path}: name", doc["name"])  # the zoo's file and index entry: refused before any work
    from benchxfer.zoo.inits import INITS

    if name in INITS:  # refused now, not after the whole pre-training has run
        raise fail(path, "name", f"{name!r} is a built-in init; give the pre-trained backbone a new name")
    sources = _sources(path, doc.get("sources"))
    recipe = _recipe(path, "recipe", doc.get("recipe", "supervised-pretrain"), auto=False)
    from benchxfer.models import ARCHS

    arch = doc.get("arch", "resnet50")
    ARCHS.get(arch)
    lr = doc.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise fail(path, "lr", f"must be a positive number, got {lr!r}")
    res = resources(path, doc.get("resources"))
    seed = doc.get("seed", 0)
    if not SEED.ok(seed):
        raise fail(path, "seed", f"must be {SEED.describe()}, got {seed!r}")
    start = doc.get("start", "scratch")
    if not isinstance(start, str):
        raise fail(path, "start", f"must be an init name (see `benchxfer zoo list`), got {start!r}")
    return PretrainSpec(
        path=path, name=name, sources=sources, arch=arch, start=start,
        recipe=recipe, lr=float(lr) if lr is not None else None, seed=int(seed),
        overrides=overrides(path, "overrides", doc.get("overrides")),
        resources=res, failure=failure(path, doc.get("failure")),
    )
