"""The value ranges of everything a user hands over: knobs (sweep and pre-training overrides, ``--set``),
reader options and the ``synthetic:`` block. Names and types of knobs live with the knobs
(``recipes/config.py``); this module adds what a type alone does not say: the range, or the allowed
values. Each check raises one line naming where the value came from and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from benchxfer.errors import BenchxferError
from benchxfer.tasks import BINARY_HEADS


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

# the synthetic: block -> rule (data.synthetic.ensure's parameters)
SYNTHETIC_RULES: dict[str, Rule] = {
    "n_train": Range(0, 100_000, integer=True),
    "n_val": Range(0, 100_000, integer=True),
    "n_test": Range(0, 100_000, integer=True),
    "size": Range(8, 4096, integer=True),
    "seed": Range(0, 2**32 - 1, integer=True),
    "family": OneOf(("cxr", "cxr-source")),
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


def check_synthetic(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``synthetic:`` block: known keys, each in range, and not an empty set."""
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
    return dict(block)


# --- the lr search's options (``lr: {search: ..., scheduler: ...}``; run by benchxfer.search) ---------------

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
