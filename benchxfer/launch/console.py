"""What a running sweep prints: benchxfer's own compact view of a Tune experiment, and Ray's noise in a file.

:func:`tune_settings` gives a Tune experiment its ``TuneConfig`` / ``RunConfig`` arguments: trials named and
foldered by their trial key, Tune's own progress tables off (``verbose=0``), and a :class:`ConsoleView`
callback that shows counts (done / running / pending / failed), an ETA, and per running trial its key,
epoch and current validation score. On a terminal the view is a rich ``Live`` panel; elsewhere (CI, pipes,
``CliRunner``) it prints one line per trial start, finish or failure and a summary at most every
``SUMMARY_EVERY_S`` seconds, never a line per epoch.

While the experiment runs, the Python loggers of Ray, MLflow and their helpers, and the worker output and
error messages Ray forwards to the driver, go to ``runs/<sweep>/logs/<experiment>.log``, named in the first
line. ``--verbose`` (``verbose=True``) leaves all of that on the console, with Tune's own progress tables.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from benchxfer import paths
from benchxfer.launch.tunespace import Shared, TrialSource, is_searched, key_of, tune_name

SUMMARY_EVERY_S = 60.0  # plain output: at most one summary line per this many seconds
NOISY_LOGGERS = ("ray", "mlflow", "alembic", "urllib3", "filelock", "py.warnings")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
MAX_DIRNAME = 200
# the threads of Ray's driver that print the workers' forwarded stdout/stderr and the cluster's error messages: a
# coupling to Ray's internals (the names its driver gives them), pinned by tests/test_console.py against the installed
# Ray's source and against the running driver's threads
RAY_PRINT_THREADS = frozenset({"ray_print_logs", "ray_listen_error_messages"})


# --- names -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialNames:
    """Tune's trial names and folders (``trial_name_creator``, ``trial_dirname_creator``): the trial keys
    (:func:`benchxfer.launch.tunespace.key_of`). Tune keeps both creators in each of its trials and writes them, pickled,
    into the trial's entry of the experiment state, cached and saved again and again: so they hold only the lr
    search's cells (a planned point carries its key), never the experiment's trial index. With the index, each
    trial's entry held every trial: O(N) a trial, O(N^2) a sweep -- 100 MB of experiment state at 256 trials, and
    the driver's memory grew to 5.4 GB at 1,024 (``benchmarks/scale.py``, BENCHMARKS.md)."""

    cells: Mapping[str, TrialSource] = field(default_factory=dict)

    @classmethod
    def of(cls, shared: Shared) -> TrialNames:
        return cls(dict(shared.index.cells))

    def name(self, trial: Any) -> str:
        return key_of(trial.config, self.cells)

    def dirname(self, trial: Any) -> str:
        """The key, made filesystem-safe. A searched trial (whose lr the searcher may pick twice) gets Tune's
        trial number too, so that two folders never coincide."""
        safe = _UNSAFE.sub("_", self.name(trial))[:MAX_DIRNAME]
        return f"{safe}-{str(trial.trial_id).rsplit('_', 1)[-1]}" if is_searched(trial.config) else safe


# --- the state, without Ray ------------------------------------------------------------------------

@dataclass
class Running:
    key: str
    started: float
    epochs: int | None = None
    epoch: int | None = None  # last finished epoch, 1-based
    score: tuple[str, float] | None = None  # (name, value) of the latest validation score


@dataclass
class Board:
    """Counts, ETA and running trials of one experiment. Pure: every method takes ``now``."""

    total: int
    started: float
    done: int = 0
    failed: int = 0
    running: dict[str, Running] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    slots: int = 1  # the most trials seen running at once

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed - len(self.running))

    def start(self, tid: str, key: str, now: float, epochs: int | None = None) -> None:
        self.running[tid] = Running(key, now, epochs)
        self.slots = max(self.slots, len(self.running))

    def result(self, tid: str, epoch: int | None, score: tuple[str, float] | None) -> None:
        if (r := self.running.get(tid)) is not None:
            r.epoch = epoch if epoch is not None else r.epoch
            r.score = score or r.score

    def end(self, tid: str, now: float, ok: bool, timed: bool = True) -> Running | None:
        """A trial ended; ``timed``: its duration counts for the ETA (not so for one skipped as finished before)."""
        r = self.running.pop(tid, None)
        if ok:
            self.done += 1
            if r is not None and timed:
                self.durations.append(now - r.started)
        else:
            self.failed += 1
        return r

    def eta(self, now: float) -> float | None:
        """Seconds left: the mean duration of the finished trials for each pending one, less the age of each
        running one, spread over the slots seen in use. None until a trial has finished."""
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        work = self.pending * mean + sum(max(0.0, mean - (now - r.started)) for r in self.running.values())
        return work / self.slots

    def counts(self, now: float) -> str:
        eta = self.eta(now)
        return (f"{self.done}/{self.total} done, {len(self.running)} running, {self.pending} pending, "
                f"{self.failed} failed; elapsed {duration(now - self.started)}, "
                f"ETA {'?' if eta is None else duration(eta)}")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def running_line(r: Running) -> str:
    epoch = "epoch -" if r.epoch is None else f"epoch {r.epoch}" + (f"/{r.epochs}" if r.epochs else "")
    score = f"  {r.score[0]} {r.score[1]:.4f}" if r.score else ""
    return f"{r.key}  {epoch}{score}"


def val_score(result: dict[str, Any], metric: str | None) -> tuple[str, float] | None:
    """The validation score a trial reported: ``val_<metric>``, else its validation loss."""
    for name in ([f"val_{metric}"] if metric else []) + ["val_loss"]:
        v = result.get(name)
        if isinstance(v, (int, float)):
            return name, float(v)
    return None


# --- where the noise goes --------------------------------------------------------------------------

class NoiseToFile:
    """Send the noisy loggers, and the worker output and errors Ray prints on the driver, to ``path``; undo on
    :meth:`close`. Ray prints those from two threads of its driver (:data:`RAY_PRINT_THREADS`) to whatever
    ``sys.stdout`` / ``sys.stderr`` are then: while the file is open they are :class:`_RayToFile`, which sends only
    those threads' lines to the file. No Ray API is touched: if Ray renames its threads, their output stays on
    the console and nothing breaks (and tests/test_console.py fails)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("a", encoding="utf-8", buffering=1)
        self.handler = logging.StreamHandler(self.file)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.saved: list[tuple[logging.Logger, list[logging.Handler], bool]] = []
        self._ray_print: Any = None

    def open(self) -> None:
        if self.saved:  # already open
            return
        names = set(NOISY_LOGGERS) | {n for n in logging.root.manager.loggerDict
                                      if n.split(".")[0] in NOISY_LOGGERS}
        for name in sorted(names):
            lg = logging.getLogger(name)
            if name in NOISY_LOGGERS or lg.handlers:
                self.saved.append((lg, lg.handlers[:], lg.propagate))
                lg.handlers, lg.propagate = [self.handler], False
        logging.captureWarnings(True)
        self._route_ray_prints()

    def _route_ray_prints(self) -> None:
        self._ray_print = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _RayToFile(sys.stdout, self.file), _RayToFile(sys.stderr, self.file)

    def close(self, keep_ray_output: bool = False) -> None:
        """Put the loggers back; with ``keep_ray_output`` what Ray prints on the driver still goes to the file (a
        later :meth:`open`, of this or another file, routes it again)."""
        for lg, handlers, propagate in self.saved:
            lg.handlers, lg.propagate = handlers, propagate
        self.saved = []
        logging.captureWarnings(False)
        if self._ray_print is not None and not keep_ray_output:
            out, err = self._ray_print
            if isinstance(sys.stdout, _RayToFile) and sys.stdout.file is self.file:  # nobody swapped it since
                sys.stdout = out
            if isinstance(sys.stderr, _RayToFile) and sys.stderr.file is self.file:
                sys.stderr = err
            self._ray_print = None
        self.file.flush()


class _RayToFile:
    """Stands in for ``sys.stdout`` / ``sys.stderr`` while an experiment runs: what Ray's driver threads print
    (the workers' forwarded output, and error messages such as actor deaths; :data:`RAY_PRINT_THREADS`) goes to
    ``file`` without the terminal colour codes Ray puts around its prefixes; everything else to ``stream``."""

    CODE = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text: str) -> int:
        if threading.current_thread().name in RAY_PRINT_THREADS:
            return self.file.write(self.CODE.sub("", text))
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


# --- the Tune callback -----------------------------------------------------------------------------

class ConsoleView(Callback):
    """benchxfer's view of one Tune experiment (see the module docstring)."""

    def __init__(self, sweep: str, experiment: str, shared: Shared, echo: Callable[[str], None] = print, *,
                 live: bool | None = None, quiet: bool = True, every: float = SUMMARY_EVERY_S,
                 air_output: str | None = None):
        self.air_output = air_output  # RAY_AIR_NEW_OUTPUT before tune_settings set it
        self.sweep, self.experiment, self.shared, self.echo = sweep, experiment, shared, echo
        self.live = sys.stdout.isatty() if live is None else live
        self.quiet, self.every = quiet, every
        self.log_path = paths.sweep_dir(sweep) / "logs" / f"{experiment}.log"
        self.board: Board | None = None
        self.noise: NoiseToFile | None = None
        self.panel: Any = None
        self.last_summary = 0.0
        self.metric_of: dict[str, str | None] = {}

    # Tune saves its callbacks with the experiment (tuner.pkl). What only this process can use stays out of the
    # copy: ``echo`` may be ``print``, which Ray's tqdm support replaces in the driver once a worker's output
    # arrives, after which pickle refuses the original ("not the same object as builtins.print").
    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"echo": None, "noise": None, "panel": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state | {"echo": print})

    # Tune hooks ---------------------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        now = time.time()
        self.board = Board(total=int(total_num_samples or num_samples or 0), started=now)
        self.last_summary = now
        if self.quiet:
            self.noise = NoiseToFile(self.log_path)
            self.noise.open()
            self.log_session_folder()
            self.echo(f"Tune experiment {self.experiment}: {self.board.total} trials; Ray and MLflow output "
                      f"in {self.log_path}")
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self.panel = Live(self.render(), console=Console(), refresh_per_second=1, transient=True,
                              get_renderable=self.render)
            self.panel.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        t = self.shared.trial(trial.config)
        self.metric_of[trial.trial_id] = getattr(t, "metric", None)
        self.board.start(trial.trial_id, t.key, time.time(), _epochs(t))
        self.say(f"start   {t.key}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        epoch = result.get("epoch")
        self.board.result(trial.trial_id, None if epoch is None or result.get("done") else int(epoch) + 1,
                          val_score(result, self.metric_of.get(trial.trial_id)))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        now = time.time()
        last = trial.last_result or {}
        r = self.board.end(trial.trial_id, now, ok=True, timed=not last.get("skipped"))
        metric = self.metric_of.get(trial.trial_id)
        key = r.key if r else self.shared.trial(trial.config).key
        if last.get("skipped"):
            self.say(f"skip    {key} (finished before)")
            return
        test = last.get(f"test_{metric}")
        score = f"  test_{metric} {test:.4f}" if isinstance(test, (int, float)) else ""
        self.say(f"done    {key}{score}" + (f"  ({duration(now - r.started)})" if r else ""))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        r = self.board.end(trial.trial_id, time.time(), ok=False)
        key = r.key if r else self.shared.trial(trial.config).key
        self.say(f"FAILED  {key}: {_reason(self.sweep, key)}")

    def on_step_begin(self, iteration, trials, **info) -> None:
        now = time.time()
        if not self.live and self.board and now - self.last_summary >= self.every:
            self.last_summary = now
            self.echo(f"        {self.board.counts(now)}")

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    def close(self) -> None:
        if os.environ.get("RAY_AIR_NEW_OUTPUT") == "0" and self.quiet:
            if self.air_output is None:
                os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
            else:
                os.environ["RAY_AIR_NEW_OUTPUT"] = self.air_output
        if self.panel is not None:
            self.panel.stop()
            self.panel = None
        if self.noise is not None:
            # Tune stops the trials' reused actors after this last hook; what they print as they die (a SIGTERM
            # traceback) reaches the driver later, and belongs in the log file, not under the closing table
            self.noise.close(keep_ray_output=True)
            self.noise = None
        if self.board is not None:
            self.echo(f"Tune experiment {self.experiment}: {self.board.counts(time.time())}")
            self.board = None

    def say(self, line: str) -> None:
        if self.panel is not None:
            self.panel.console.print(line, markup=False, highlight=False)
        else:
            self.echo(line)

    def render(self):
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        if self.board is None:
            return table
        table.add_row(self.board.counts(time.time()))
        for r in self.board.running.values():
            table.add_row("  " + running_line(r))
        return table

    def log_session_folder(self) -> None:
        folder = _session_logs()
        where = folder or "the head node's Ray session folder (/tmp/ray/session_latest/logs)"
        self.noise.file.write(f"benchxfer: Tune experiment {self.experiment}; the workers' own stdout/stderr "
                              f"files are in {where}\n")


def _session_logs() -> str | None:
    """The ``logs`` folder of this node's Ray session: beside the ``sockets`` folder that ``ray.nodes()`` names
    for the node's object store (None when joined through ``ray://``, or Ray says otherwise)."""
    try:
        import ray

        me = ray.get_runtime_context().get_node_id()
        for node in ray.nodes():
            if node.get("NodeID") == me and node.get("ObjectStoreSocketName"):
                logs = Path(node["ObjectStoreSocketName"]).parent.parent / "logs"
                return str(logs) if logs.is_dir() else None
    except Exception:  # noqa: BLE001 - a client session: no node of its own
        return None
    return None


def _epochs(trial: Any) -> int | None:
    v = getattr(getattr(trial, "config", None), "epochs", None)
    return int(v) if isinstance(v, (int, float)) else None


def _reason(sweep: str, key: str) -> str:
    from benchxfer.trialdir import TrialDir

    try:
        failure = TrialDir.of(sweep, key).failure()
    except Exception:  # noqa: BLE001 - an unreadable record must not stop the view
        failure = None
    return failure.reason if failure else "see `benchxfer status " + sweep + "`"


# --- the one entry point for Tune experiments ------------------------------------------------------

def tune_settings(sweep: str, shared: Shared, *, verbose: bool = False, echo: Callable[[str], None] = print,
                  name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(TuneConfig kwargs, RunConfig kwargs)`` for the Tune experiment of ``sweep`` whose trials share
    ``shared`` (:mod:`benchxfer.launch.tunespace`): trial names and folders by trial key,
    the experiment's name (``name``, by default the next ``<sweep>-NN``), and the console: benchxfer's view with Ray's noise in a log file,
    or with ``verbose`` Ray's own full output."""
    name, names = name or tune_name(sweep), TrialNames.of(shared)
    tune_kw = {"trial_name_creator": names.name, "trial_dirname_creator": names.dirname}
    if verbose:
        return tune_kw, {"name": name, "verbose": 1}  # Tune's tables, as before this view
    # Tune's newer output engine prints its experiment header even at verbose=0; its older one prints nothing
    # there. The view puts the variable back when the experiment ends.
    view = ConsoleView(sweep, name, shared, echo, air_output=os.environ.get("RAY_AIR_NEW_OUTPUT"))
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return tune_kw, {"name": name, "verbose": 0, "callbacks": [view]}
