"""Where a trial's state lives: its folder, read and written only through :class:`TrialDir`.

A trial's folder is ``<home>/runs/<sweep>/trials/<trial key>/``:

    result.json      the :class:`TrialResult`, written last by rank 0: the trial is finished and final
    failed.json      the :class:`Failure`: why it failed and whether a retry can fix it (a NaN loss cannot)
    stopped.json     the :class:`Stopped` record: the lr search's scheduler stopped it at a rung: final
    progress.json    the :class:`Progress` after each epoch (for ``benchxfer status``)
    epochs.jsonl     one :class:`EpochStart` per epoch started, counting those started again after a failure
    checkpoints/     the epoch checkpoints (``benchxfer.train.checkpoint.CheckpointStore`` writes them): what a
                     retry or resume continues from, removed once the trial is final unless the sweep keeps them
    selected.safetensors  the weights the test used (the best validation epoch's, or the last step's), written
                     before result.json when the sweep's ``keep`` is ``selected`` (the default)
    shards/          the sample indices each worker saw per epoch (only when asked, for tests)

:meth:`TrialDir.state` decides what a trial is: ``finished`` (a valid result), ``failed`` (final: a failure
that a retry cannot fix), ``stopped`` (stopped by the lr search at a rung: final, never resumed as if it had
failed), ``retryable`` (failed, will run again from its checkpoint) or ``pending``.

Damage policy. A damaged state file (not JSON, not an object, a key missing) is a :class:`BenchxferError`
of one line naming the file and what is wrong, with one exception: a damaged ``result.json`` makes the
trial *pending* for the runner (:meth:`TrialDir.result`), because result.json is written atomically as the
trial's last act, so a damaged one means the trial must run again. :meth:`TrialDir.damage` names the first
damaged file ('<file>: <what>', a value of the wrong type included): ``benchxfer status`` shows such a trial as
``damaged``, never as a state, and ``benchxfer report`` skips it and names it.

The sweep's own files (``sweep.yaml``, ``source.json``, ``trials.json``, ``best_lr.json``) are read and
written through :class:`SweepDir`, by the same rules. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

from benchxfer import paths
from benchxfer.errors import BenchxferError

RESULT, FAILED, PROGRESS, EPOCH_LOG = "result.json", "failed.json", "progress.json", "epochs.jsonl"
STOPPED = "stopped.json"
CHECKPOINTS, SHARDS, SELECTED = "checkpoints", "shards", "selected.safetensors"

# What a final trial's folder keeps besides its records (the sweep file's ``keep``); while it runs it keeps its
# training checkpoint whatever the choice, since a retry or resume continues from it.
KEEP = {
    "selected": "the weights the test used, in safetensors (about the size of the fp32 weights)",
    "none": "the records only (result, progress, epochs): no weights",
    "checkpoint": "the whole training checkpoint (model, optimiser state, best weights, RNG: about 4x the weights)",
}
DEFAULT_KEEP = "selected"
SPEC_COPY, SOURCE, TRIALS, BEST_LR = "sweep.yaml", "source.json", "trials.json", "best_lr.json"
DISK_FULL = "disk_full.txt"  # a trial's line when it ran out of disk: the sweep's launch stops (sweep.disk_stopper)


# --- files ------------------------------------------------------------------------------------------

FULL_BELOW = 1024**2  # a write that failed with less than this free failed for want of room


def no_space(path: str | os.PathLike, err: BaseException) -> OSError | None:
    """The ENOSPC error naming ``path`` when the write of ``path`` that failed with ``err`` failed because its file
    system is full (torch.save and safetensors say so in other words, a plain write without the path); else None."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        full = shutil.disk_usage(folder).free < FULL_BELOW or "No space left on device" in str(err)
    except OSError:
        return None
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) if full else None


def write_atomically(target: Path, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file beside ``target``, then rename it there; a full disk is ENOSPC naming
    ``target`` (torch.save says "unexpected pos", safetensors its own words), and the temporary file goes."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp_", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except Exception as err:
        full = no_space(target, err)
        if full is None:
            raise
        raise full from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (:func:`write_atomically`); a full disk is ENOSPC naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=1, default=str)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def read_json(path: Path, what: str = "a JSON value") -> Any:
    """The JSON in ``path``; unreadable or invalid JSON is one line naming the file."""
    try:
        text = Path(path).read_text()
    except UnicodeDecodeError:
        raise BenchxferError(f"{path}: not a text file (expected {what})") from None
    except OSError as err:
        raise BenchxferError(f"{path}: cannot be read ({err.strerror or type(err).__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchxferError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def _object(path: Path, obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BenchxferError(f"{path}: expected {what} (a JSON object), got {type(obj).__name__}")
    return obj


def _record(cls: type, path: Path, obj: Any, what: str):
    """A typed record from a JSON object: missing required keys name the file and the keys."""
    obj = _object(path, obj, what)
    fields = dataclasses.fields(cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    missing = [k for k in required if k not in obj]
    if missing:
        raise BenchxferError(f"{path}: {what} lacks the key(s) {', '.join(missing)}")
    return cls(**{f.name: obj[f.name] for f in fields if f.name in obj})


def check_result_values(path: Path, rec: dict[str, Any]) -> None:
    """The values of a result record that readers compute with have their types (a key may be absent)."""
    for key in ("value", "lr", "wall_seconds"):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise BenchxferError(f"{path}: {key}={v!r} is not a number")
    for key in ("seed", "best_epoch", "epochs_run"):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise BenchxferError(f"{path}: {key}={v!r} is not an integer")
    if not isinstance(rec.get("test") or {}, dict):
        raise BenchxferError(f"{path}: test={rec.get('test')!r} is not a mapping of metric to score")


class TrialFailed(RuntimeError):
    """A trial that must not be retried as it is (its loss became NaN, say)."""


# --- the records --------------------------------------------------------------------------------------

class TrialState(StrEnum):
    """benchxfer's one vocabulary for a trial's state: each value is the word its files, its MLflow run's
    ``benchxfer.status`` tag, ``benchxfer status`` and the report use. :meth:`TrialDir.state` decides among the
    folder's states (:data:`FOLDER_STATES`, the first five); the others are what a reader adds to them."""

    PENDING = "pending"
    FINISHED = "finished"
    RETRYABLE = "retryable"  # failed; runs again from its last checkpoint
    FAILED = "failed"  # failed for a reason a retry cannot fix: final
    STOPPED = "stopped"  # stopped by the search at a rung: final, like finished
    RUNNING = "running"  # the MLflow tag while a driver runs the trial (a report's row read from it)
    INTERRUPTED = "interrupted"  # benchxfer status: pending, with epochs done (progress.json)
    DAMAGED = "damaged"  # benchxfer status: a state file does not read (TrialDir.damage)
    UNFINISHED = "unfinished"  # a report's row: listed in trials.json, no record anywhere


FOLDER_STATES = (TrialState.PENDING, TrialState.FINISHED, TrialState.RETRYABLE, TrialState.FAILED,
                 TrialState.STOPPED)  # what TrialDir.state() returns


@dataclass(frozen=True)
class TrialResult:
    """``result.json``: the trial's test scores and costs. Its existence makes the trial final."""

    sweep: str
    trial_key: str
    recipe: str
    init: str
    dataset: str
    task: str
    shot: int | None
    lr: float
    seed: int
    metric: str
    value: float
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    epochs_started: int | None
    wall_seconds: float
    accelerator_hours: float
    mlflow_run_id: str | None
    best_val_loss: float | None
    status: str = TrialState.FINISHED.value
    error: str | None = None
    zoo_path: str | None = None  # pre-training: where the backbone went
    selected: str = "best-val"  # the weights tested: "best-val" (epoch best_epoch) or "last" (step last_step)
    last_step: int | None = None  # the optimiser step whose weights were tested, when selected is "last"
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)  # threads, CPU, torch version

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["zoo_path"] is None:
            del out["zoo_path"]
        return out


@dataclass(frozen=True)
class Failure:
    """``failed.json``: why the trial failed, and whether a retry can fix it."""

    reason: str
    retryable: bool = True
    epoch: int | None = None
    experiment: str | None = None  # the Tune experiment (one per launch: <sweep>-NN) whose driver recorded it

    @property
    def final(self) -> bool:
        return not self.retryable


@dataclass(frozen=True)
class Stopped:
    """``stopped.json``: the lr search's scheduler stopped the trial after ``rung`` epochs (its last epoch index
    is ``epoch``), with the metrics it had reported then."""

    rung: int
    epoch: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    status: str = TrialState.STOPPED.value


@dataclass(frozen=True)
class Progress:
    """``progress.json``: the last epoch done, the best so far (its validation row), and the last epoch whose
    checkpoint is written (where a retry continues; -1: none yet)."""

    epoch: int
    best_epoch: int
    epochs_max: int
    best: dict[str, Any] | None = None
    checkpoint: int = -1


@dataclass(frozen=True)
class EpochStart:
    """One line of ``epochs.jsonl``: an epoch started, by which process, when."""

    epoch: int
    pid: int
    time: float


# --- one trial ----------------------------------------------------------------------------------------

class TrialDir:
    """The folder of one trial, and the only code that reads or writes its state files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def of(cls, sweep: str, key: str) -> TrialDir:
        return cls(paths.trial_dir(sweep, key))

    def __repr__(self) -> str:
        return f"TrialDir({str(self.path)!r})"

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def selected_weights(self) -> Path:
        return self.path / SELECTED

    def tidy(self, keep: str) -> None:
        """Leave what ``keep`` asks for in the folder of a final trial (finished, or stopped by the search): the
        training checkpoint goes unless ``keep`` is ``checkpoint``, the selected weights unless it is ``selected``.
        Anything else is left alone: a trial that may still run keeps what a retry needs."""
        if keep not in KEEP:
            raise BenchxferError(f"keep {keep!r}: must be one of {', '.join(KEEP)}")
        if self.state() not in (TrialState.FINISHED, TrialState.STOPPED):
            return
        if keep != "checkpoint":
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        if keep != "selected":
            self.selected_weights.unlink(missing_ok=True)

    # result.json
    def result_record(self) -> dict[str, Any] | None:
        """The raw result object (None when there is none); damage is one line naming the file."""
        path = self.path / RESULT
        if not path.is_file():
            return None
        return _object(path, read_json(path, "the trial's result"), "the trial's result")

    def result_checked(self) -> TrialResult | None:
        """The result as a typed record (None when there is none); damage, including a value of the wrong type,
        is one line naming the file and what is wrong."""
        rec = self.result_record()
        if rec is None:
            return None
        path = self.path / RESULT
        out = _record(TrialResult, path, rec, "the trial's result")
        check_result_values(path, rec)
        return out

    def damage(self) -> str | None:
        """The first damaged state file of the trial, as '<file>: <what>' (None when every file reads)."""
        for read in (self.result_checked, self.stopped, self.failure, self.progress):
            try:
                read()
            except BenchxferError as err:
                return str(err)
        return None

    def result(self) -> TrialResult | None:
        """The finished result, or None: no file, or a damaged one (policy: the trial is pending again)."""
        try:
            out = self.result_checked()
        except (BenchxferError, TypeError):
            return None
        return out if out is not None and out.status == TrialState.FINISHED else None

    def _read(self, name: str, cls: type, what: str):
        """The record in file ``name``, or None when there is none; a damaged file is one line naming it."""
        path = self.path / name
        if not path.is_file():
            return None
        return _record(cls, path, read_json(path, what), what)

    def write_result(self, result: TrialResult) -> None:
        write_json(self.path / RESULT, result.to_dict())

    # failed.json
    def failure(self) -> Failure | None:
        return self._read(FAILED, Failure, "the trial's failure")

    def write_failure(self, failure: Failure) -> None:
        write_json(self.path / FAILED, dataclasses.asdict(failure))

    def record_failure(self, failure: Failure) -> Failure:
        """Record a failure seen by the driver. An earlier record wins: its reason is kept, and a final
        failure stays final (a NaN loss recorded by the worker is not made retryable by the crash it causes);
        the experiment is the one recording now."""
        previous = self.failure()
        if previous is not None:
            failure = Failure(previous.reason, previous.retryable and failure.retryable, previous.epoch,
                              failure.experiment)
        self.write_failure(failure)
        return failure

    def clear_retryable_failure(self) -> None:
        """A retryable failure is forgotten when the trial is launched again; a final one is kept."""
        f = self.failure()
        if f is not None and f.retryable:
            (self.path / FAILED).unlink(missing_ok=True)

    # stopped.json
    def stopped(self) -> Stopped | None:
        return self._read(STOPPED, Stopped, "the trial's stop record")

    def write_stopped(self, stopped: Stopped) -> None:
        write_json(self.path / STOPPED, dataclasses.asdict(stopped))

    def state(self) -> TrialState:
        if self.result() is not None:
            return TrialState.FINISHED
        if self.stopped() is not None:
            return TrialState.STOPPED
        f = self.failure()
        if f is None:
            return TrialState.PENDING
        return TrialState.FAILED if f.final else TrialState.RETRYABLE

    # progress.json
    def progress(self) -> Progress | None:
        return self._read(PROGRESS, Progress, "the trial's progress")

    def write_progress(self, progress: Progress) -> None:
        write_json(self.path / PROGRESS, dataclasses.asdict(progress))

    # epochs.jsonl
    def log_epoch_start(self, epoch: int) -> None:
        """Append one line per epoch started (with the process that runs it): the record of work done, redone
        after a failure, and the pid that fault-injection tests kill."""
        self.path.mkdir(parents=True, exist_ok=True)
        line = EpochStart(epoch, os.getpid(), time.time())
        with open(self.path / EPOCH_LOG, "a") as f:
            f.write(json.dumps(dataclasses.asdict(line)) + "\n")

    def epoch_starts(self) -> list[EpochStart]:
        path = self.path / EPOCH_LOG
        if not path.is_file():
            return []
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            raise BenchxferError(f"{path}: not a text file (expected one JSON object per line)") from None
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise BenchxferError(f"{path}: line {n} is not valid JSON ({err.msg})") from None
            out.append(_record(EpochStart, Path(f"{path} line {n}"), obj, "an epoch start"))
        return out

    def epochs_started(self) -> list[int]:
        """The epochs started in this folder, in order, counting those started again after a failure."""
        return [e.epoch for e in self.epoch_starts()]

    # shards/
    def write_shard(self, epoch: int, rank: int, indices: list[int]) -> None:
        write_json(self.path / SHARDS / f"epoch{epoch}_rank{rank}.json", indices)


# --- one sweep ----------------------------------------------------------------------------------------

class SweepDir:
    """The folder of one sweep: the sweep file as run, where it came from, its trials, the best lrs."""

    def __init__(self, name: str, path: str | os.PathLike | None = None):
        self.name = name
        self.path = Path(path) if path is not None else paths.sweep_dir(name)

    def trial(self, key: str) -> TrialDir:
        return TrialDir(self.path / "trials" / key)

    @property
    def spec_copy(self) -> Path:
        return self.path / SPEC_COPY

    def exists(self) -> bool:
        return self.spec_copy.is_file()

    def save_plan(self, spec_path: str | os.PathLike, trials: list[dict[str, Any]]) -> None:
        """Keep the sweep file as run, where it came from, and the list of expected trials. A resume (which
        plans from the sweep's own copy) only reads: the copy and ``source.json`` stay as the sweep started them,
        so a source renamed or edited later is still refused; ``trials.json`` is written only when it changes
        (stage 2 of tune-then-repeat)."""
        self.path.mkdir(parents=True, exist_ok=True)
        src = Path(spec_path).resolve()
        if src != self.spec_copy.resolve():
            shutil.copyfile(src, self.spec_copy)
            write_json(self.path / SOURCE, {"path": str(src)})
        path = self.path / TRIALS
        if not path.is_file() or read_json(path, "a JSON list of trials") != json.loads(json.dumps(trials, default=str)):
            write_json(path, trials)

    def missing(self) -> str | None:
        """What makes a started sweep's folder unusable (None when it is whole, or was never started)."""
        if not self.path.is_dir() or self.spec_copy.is_file():
            return None
        if self.spec_copy.exists() or self.spec_copy.is_symlink():
            return f"{self.spec_copy} is not a readable file"
        if (self.path / TRIALS).exists() or (self.path / SOURCE).exists():
            return f"{self.spec_copy} (the sweep file as it was started) is missing"
        return None

    def source(self) -> str | None:
        """The sweep file's original path (None when there is no record)."""
        path = self.path / SOURCE
        if not path.is_file():
            return None
        obj = _object(path, read_json(path, "the sweep file's path"), "the sweep file's path")
        if not isinstance(obj.get("path"), str):
            raise BenchxferError(f"{path}: the key path (the sweep file's path, a string) is missing")
        return obj["path"]

    def trials_raw(self) -> Any:
        """The content of ``trials.json`` (None when there is none), for readers that check it themselves."""
        path = self.path / TRIALS
        return read_json(path, "a JSON list of trials") if path.is_file() else None

    def trials(self) -> list[dict[str, Any]] | None:
        """The expected trials (each with at least ``trial_key``), or None when the sweep never started."""
        data = self.trials_raw()
        if data is None:
            return None
        path = self.path / TRIALS
        if not isinstance(data, list):
            raise BenchxferError(f"{path}: expected a JSON list of trials, got {type(data).__name__}")
        for i, t in enumerate(data):
            if not isinstance(t, dict) or not isinstance(t.get("trial_key"), str):
                raise BenchxferError(f"{path}: item {i} lacks the key trial_key")
        return data

    def best_lr(self) -> dict[str, float]:
        """``best_lr.json``: the best lr of each cell (``init|dataset``) found by the search so far."""
        path = self.path / BEST_LR
        if not path.is_file():
            return {}
        obj = _object(path, read_json(path, "the best lr of each cell"), "the best lr of each cell")
        for k, v in obj.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BenchxferError(f"{path}: {k}={v!r} is not a number")
        return {k: float(v) for k, v in obj.items()}

    def write_best_lr(self, best: dict[str, float]) -> None:
        write_json(self.path / BEST_LR, best)

    # disk_full.txt
    def disk_full(self) -> str | None:
        """The line of the trial that ran out of disk in this launch (None: none did)."""
        try:
            return (self.path / DISK_FULL).read_text(errors="replace").strip() or "a trial ran out of disk"
        except FileNotFoundError:
            return None

    def write_disk_full(self, line: str) -> None:
        """Record it; never raises (a disk with no byte free: the stopper sees that itself)."""
        try:
            (self.path / DISK_FULL).write_text(line + "\n")
        except OSError:
            pass

    def clear_disk_full(self) -> None:
        (self.path / DISK_FULL).unlink(missing_ok=True)
