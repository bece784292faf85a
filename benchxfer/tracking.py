"""The MLflow layer: the embedded local server, the sweep's parent run, one child run per trial key.

Ray's MLflow callback makes a second run when a trial is resumed and cannot nest runs, so benchxfer
keeps its own small layer (``shared/reference/ENGINES.md``):

- one experiment per sweep, named by the sweep; one parent run (tag ``benchxfer.role=sweep``);
- one child run per trial, named by its trial key and found again by the tag ``benchxfer.trial_key``,
  so a resumed or retried trial continues its own run and there is never a second one;
- a trial's run is written through one object, :class:`TrialRun`: opened and marked by the trial's driver, logged
  to by its worker, which buffers what the server did not take and delivers it later, so that an unreachable
  server never crashes training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from benchxfer import __version__, paths
from benchxfer.errors import BenchxferError
from benchxfer.trialdir import TrialState

if TYPE_CHECKING:
    from benchxfer.data.facts import DatasetFacts

log = logging.getLogger("benchxfer")

# The tag names benchxfer puts on MLflow runs, each written here only (tests/test_architecture.py checks that no
# other module spells one); besides these, version_tags' benchxfer.version, benchxfer.python, benchxfer.pkg.<name>
# and benchxfer.git_commit, a finished trial's env.<key> (TrialRun.mark_finished) and MLflow's own mlflow.runName /
# mlflow.parentRunId. A trial's run is written by TrialRun alone.
ROLE = "benchxfer.role"  # "sweep" (the parent run) or "trial"
SWEEP = "benchxfer.sweep"
KEY = "benchxfer.trial_key"  # finds a trial's run again on resume and retry
STATUS = "benchxfer.status"  # a TrialState value: pending, running, finished, failed, stopped
ERROR = "benchxfer.error"  # the failure's one line
RUNG = "benchxfer.rung"  # where the lr search's scheduler stopped the trial (STATUS "stopped")
NODE = "benchxfer.node_id"  # the Ray node of the trial's driver (the one that trains a 1-worker trial)
TASK = "benchxfer.task"
METRIC = "benchxfer.metric"  # the primary metric; its test value is the metric test_<metric>
CHECKPOINT_NOTE = "benchxfer.checkpoint_note"  # a damaged checkpoint skipped on resume
BEST_CHECKPOINT = "benchxfer.best_checkpoint"  # on a trial's run: its tested weights (a path, or an artifact URI)
BEST_CHECKPOINT_EPOCH = "benchxfer.best_checkpoint_epoch"  # their epoch, when the best validation epoch's
OUTAGES = "benchxfer.mlflow_outages"
REPORT = "benchxfer.report"  # on the sweep's run: its published report.html (report.publish)
# MLflow's own tag (mlflow.utils.mlflow_tags.MLFLOW_LOGGED_ARTIFACTS): which artifacts its UI renders as tables; spelled
# here so that publishing to the embedded store imports no MLflow (tests/test_runstore.py holds it to MLflow's)
LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"
# Fail fast instead of MLflow's default minutes of retries; TrialRun does the retrying. The links to runs are
# benchxfer's to print (once, at the end), not one pair per run from every worker.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no bar per learning-curve file in the console


# --- the embedded server ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


class LocalServer:
    """``mlflow server`` on the SQLite store in the benchxfer home, bound to 127.0.0.1.

    One home has one server. Without an explicit port, :meth:`start` first looks for the home's server in
    ``mlflow-server.json`` (pid, port) and uses it when it answers, instead of starting a second server on the
    same SQLite file. Every process that uses it is listed under ``mlflow-server.users/``; :meth:`stop`
    removes this one, and the last user stops the server (whoever started it). An explicit ``port`` (``benchxfer
    ui --port``, tests) gives a server of its own, as before."""

    STATE, USERS, LOCK = "mlflow-server.json", "mlflow-server.users", "mlflow-server.lock"

    def __init__(self, home: Path | None = None, port: int | None = None, host: str = "127.0.0.1"):
        self.home = Path(home or paths.home())
        self.host = host
        self.shared = port is None and host == "127.0.0.1"
        self.port = port or free_port()
        self.uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None  # the server's pid, started here or found running
        self.log_path = self.home / "mlflow-server.log"
        self._user = self.home / self.USERS / f"{os.getpid()}-{id(self)}"

    def start(self, timeout: float = 90.0) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.shared:
            return self._launch(timeout)
        with self._locked():
            found = self.running()
            if found:
                self.pid, self.port = found["pid"], found["port"]
                self.uri = f"http://127.0.0.1:{self.port}"
            else:
                self._launch(timeout)
                (self.home / self.STATE).write_text(json.dumps({"pid": self.pid, "port": self.port, "uri": self.uri}))
            self._user.parent.mkdir(exist_ok=True)
            self._user.touch()
        return self.uri

    def running(self) -> dict | None:
        """The home's server from its state file, when its process lives and it answers; else None."""
        try:
            state = json.loads((self.home / self.STATE).read_text())
            pid, port = int(state["pid"]), int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _alive(pid) and healthy(f"http://127.0.0.1:{port}"):
            return {"pid": pid, "port": port}
        return None

    def users(self) -> list[Path]:
        """The processes that use the home's server and still live."""
        folder = self.home / self.USERS
        found = []
        for p in folder.iterdir() if folder.exists() else []:
            if _alive(int(p.name.split("-")[0])):
                found.append(p)
            else:
                p.unlink(missing_ok=True)  # a user that died without stopping
        return found

    def _launch(self, timeout: float) -> str:
        cmd = [sys.executable, "-m", "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}",
               "--artifacts-destination", str(self.home / "mlartifacts"),
               "--host", self.host, "--port", str(self.port), "--workers", "1"]
        logf = open(self.log_path, "ab")
        # MLflow 3's job runner (GenAI scorers; six more processes of ~250 MB) has no use here
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchxferError(f"the MLflow server exited at start; see {self.log_path}")
            if healthy(self.uri, timeout=1.0):
                return self.uri
            time.sleep(0.3)
        self._kill()
        raise BenchxferError(f"the MLflow server did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if not self.shared:
            self._kill()
            return
        if self.pid is None:
            return
        with self._locked():
            self._user.unlink(missing_ok=True)
            if not self.users():
                self._kill()
                (self.home / self.STATE).unlink(missing_ok=True)
        self.pid = None

    def _kill(self) -> None:
        import signal

        pid = self.proc.pid if self.proc else self.pid
        if pid is None or (self.proc is not None and self.proc.poll() is not None):
            self.proc = self.pid = None
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None or self.proc is None and not _alive(pid):
                    self.proc = self.pid = None
                    return
                time.sleep(0.1)
        self.proc = self.pid = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with open(self.home / self.LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def tracking_uri(uri: str | None = None, echo=None) -> Iterator[str]:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else an embedded local server
    started for the duration of the block."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        yield uri
        return
    server = LocalServer()
    server.start()  # or joins the one already serving this home
    if echo:
        echo(f"MLflow: the local server on {server.uri} (store {server.home / 'mlflow.db'})")
    try:
        yield server.uri
    finally:
        server.stop()


def embedded_artifacts(uri: str) -> Path | None:
    """Where the home's embedded store keeps its runs' ``mlflow-artifacts:`` files (``<home>/mlartifacts``, the
    local server's ``--artifacts-destination``) when ``uri`` is that store -- its SQLite file, or the home's server
    as its ``mlflow-server.json`` names it --, else None. Read there, a run's files need no server."""
    home = paths.home()
    if uri == f"sqlite:///{home / 'mlflow.db'}":
        return home / "mlartifacts"
    if uri.startswith("http://127.0.0.1:"):
        try:
            state = json.loads((home / LocalServer.STATE).read_text())
        except (OSError, ValueError):
            return None
        if isinstance(state, dict) and state.get("uri") == uri.rstrip("/"):
            return home / "mlartifacts"
    return None


def local_artifact_dir(uri: str, artifact_uri: str) -> Path | None:
    """A run's artifact folder on this machine (``artifact_uri``: its ``RunInfo.artifact_uri`` in the store at
    ``uri``), or None when only a server can reach its files (another server's, an object store)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(artifact_uri)
    if parsed.scheme == "mlflow-artifacts" and not parsed.netloc:  # the server's --artifacts-destination
        root = embedded_artifacts(uri)
        return root / unquote(parsed.path).lstrip("/") if root is not None else None
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(unquote(parsed.path))
    if not parsed.scheme and uri.startswith("sqlite:"):  # a path, as MLflow's client names a sqlite store's runs'
        return Path(artifact_uri)
    return None


def ui_url(uri: str, experiment_id: str) -> str:
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def client(uri: str):
    for k, v in CLIENT_ENV.items():
        os.environ.setdefault(k, v)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def version_tags() -> dict[str, str]:
    tags = {"benchxfer.version": __version__, "benchxfer.python": platform.python_version()}
    for pkg in ("torch", "torchvision", "ray", "mlflow", "timm", "segmentation_models_pytorch"):
        mod = sys.modules.get(pkg)
        if mod is None:
            with contextlib.suppress(Exception):
                import importlib.metadata as md

                tags[f"benchxfer.pkg.{pkg}"] = md.version(pkg.replace("_", "-"))
                continue
        if mod is not None:
            tags[f"benchxfer.pkg.{pkg}"] = getattr(mod, "__version__", "?")
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
        if commit:
            tags["benchxfer.git_commit"] = commit
    return tags


# --- the sweep's experiment and parent run ---------------------------------------------------------

def by_key(key: str) -> str:
    """The MLflow filter that finds a trial's run again: its key tag."""
    return f"tags.`{KEY}` = '{key}'"


def _unreachable(uri: str, err: BaseException) -> BenchxferError:
    """The one line for a tracking server that could not be reached (or refused), for the user's setup."""
    return BenchxferError(f"cannot reach the MLflow tracking server at {uri}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200] if str(err) else ''}")


class SweepRecorder:
    """The experiment and parent run of one sweep. Safe to call again on resume: it finds what exists."""

    def __init__(self, uri: str, sweep: str):
        self.uri, self.sweep = uri, sweep
        try:
            self.client = client(uri)
            exp = self.client.get_experiment_by_name(sweep)
            self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(sweep)
        except Exception as err:  # noqa: BLE001 - any failure to reach the server is the user's setup
            raise _unreachable(uri, err) from None
        self.parent_run_id = self._parent()

    def _parent(self) -> str:
        runs = self.client.search_runs([self.experiment_id], max_results=1,
                                       filter_string=f"tags.`{ROLE}` = 'sweep' and tags.`{SWEEP}` = '{self.sweep}'")
        if runs:
            if runs[0].info.status != "RUNNING":
                self.client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
        tags = {ROLE: "sweep", SWEEP: self.sweep, "mlflow.runName": self.sweep, **version_tags()}
        return self.client.create_run(self.experiment_id, tags=tags, run_name=self.sweep).info.run_id

    def log_sweep(self, params: dict[str, str], spec_text: str, trials: list[dict]) -> None:
        with contextlib.suppress(Exception):  # params are immutable: identical on resume
            self.client.log_batch(self.parent_run_id, params=_params(params))
        self.client.log_text(self.parent_run_id, spec_text, "sweep.yaml")
        self.client.log_text(self.parent_run_id, json.dumps(trials, indent=1), "trials.json")

    def log_params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.parent_run_id, params=_params(params))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_run_id, status=status)

    def url(self) -> str:
        return ui_url(self.uri, self.experiment_id)


def _params(params: dict[str, str]):
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in params.items()]


# --- one trial's run ---------------------------------------------------------------------------------

ENV_PREFIX = "env."  # a finished trial's environment (its result.json's), one tag per key: env.<key>
CHECKPOINT_DIR = "checkpoint"  # where keep: checkpoint uploads a trial's tested weights among its artifacts
DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest; the profile holds the whole sha256


class TrialRun:
    """One trial's MLflow run, and the only writer of benchxfer's tags on it (its state among them).

    The driver opens it (:meth:`open`: found by the trial's key tag, else made once under the sweep's run,
    ``pending``), marks it running (:meth:`mark_running`) and logs its dataset (:meth:`log_dataset`); the worker
    makes its own from the run's id (``TrialRun(uri, run_id, trial folder)``) and logs the epochs, a damaged
    checkpoint it skipped (:meth:`note_checkpoint`), the kept weights (:meth:`link_weights`) and the end
    (:meth:`mark_finished`, or :meth:`mark_failed` for a loss that became NaN); the driver marks a failure or an
    interruption (:meth:`mark_interrupted`), the lr search a stop (:meth:`find`, :meth:`mark_stopped`).

    What the server does not take of the metrics, tags and texts is kept and sent with the next call, so that an
    unreachable server never stops training; :meth:`close` retries for a while, then writes what is left to
    ``mlflow_undelivered.json`` in the trial's folder and tags the number of outages on the run when it can.
    Without a run (no tracking URI, or the driver could not open it) every call does nothing."""

    def __init__(self, uri: str | None, run_id: str | None, spill_dir: Path | None = None, found: Any = None):
        self.uri, self.run_id, self.spill_dir = uri, run_id, spill_dir
        self.pending_metrics: list[tuple[str, float, int]] = []
        self.pending_tags: dict[str, str] = {}
        self.pending_artifacts: list[tuple[str, str]] = []
        self.failures = 0
        self._client = client(uri) if uri and run_id else None
        self._tags = dict(found.data.tags) if found is not None else {}  # as the run was when opened or found
        self._status = found.info.status if found is not None else None

    @property
    def enabled(self) -> bool:
        return self._client is not None

    # --- the driver's side: open, find, mark (raise a one-line BenchxferError when the server is away)

    @classmethod
    def open(cls, recorder: SweepRecorder, key: str, params: dict[str, str], *, task: str, metric: str,
             spill_dir: Path | None = None) -> TrialRun:
        """The run of trial ``key`` in ``recorder``'s sweep: found by its key tag (made RUNNING again), or made
        once under the sweep's run with the trial's ``params``, state ``pending``."""
        c = recorder.client
        try:
            runs = c.search_runs([recorder.experiment_id], filter_string=by_key(key), max_results=1)
            if runs:
                run = runs[0]
                if run.info.status != "RUNNING":
                    c.update_run(run.info.run_id, status="RUNNING")
            else:
                tags = {"mlflow.parentRunId": recorder.parent_run_id, ROLE: "trial", SWEEP: recorder.sweep, KEY: key,
                        STATUS: TrialState.PENDING.value, TASK: task, METRIC: metric, **version_tags()}
                run = c.create_run(recorder.experiment_id, tags=tags, run_name=key)
                c.log_batch(run.info.run_id, params=_params(params))
        except Exception as err:  # noqa: BLE001 - the server went away since the recorder reached it
            raise _unreachable(recorder.uri, err) from None
        return cls(recorder.uri, run.info.run_id, spill_dir, found=run)

    @classmethod
    def find(cls, uri: str, sweep: str, key: str) -> TrialRun | None:
        """The run of trial ``key`` in the experiment of ``sweep``, if there is one (nothing is made)."""
        c = client(uri)
        exp = c.get_experiment_by_name(sweep)
        runs = c.search_runs([exp.experiment_id], filter_string=by_key(key), max_results=1) if exp else []
        return cls(uri, runs[0].info.run_id, found=runs[0]) if runs else None

    def mark_running(self, node: str | None = None) -> None:
        """A driver has the trial: state ``running``, on Ray node ``node``; an earlier attempt's error is gone."""
        from mlflow.entities import RunTag

        tags = {STATUS: TrialState.RUNNING.value} | ({NODE: node} if node else {})
        try:
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if ERROR in self._tags:
                self._client.delete_tag(self.run_id, ERROR)
                del self._tags[ERROR]
        except Exception as err:  # noqa: BLE001
            raise _unreachable(self.uri, err) from None

    def log_dataset(self, facts: DatasetFacts, context: str = "train") -> None:
        """``facts`` (:func:`benchxfer.data.facts.describe_dataset`) as the run's dataset input: the UI's Dataset
        column and filter. Logging the same facts again (a resumed trial) keeps one input."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        profile = {"splits": facts.splits, "list_files": list(facts.list_files), "sha256": facts.sha256}
        ds = Dataset(name=facts.name, digest=facts.sha256[:DIGEST_CHARS], source_type="local",
                     source=json.dumps({"uri": facts.root}), profile=json.dumps(profile))
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(ds, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def mark_stopped(self, rung: int) -> None:
        """The lr search stopped the trial at ``rung``: state ``stopped``, with the rung and no error, the run
        ended KILLED. Idempotent."""
        self._client.set_tag(self.run_id, STATUS, TrialState.STOPPED.value)
        self._client.set_tag(self.run_id, RUNG, str(rung))
        if ERROR in self._tags:
            self._client.delete_tag(self.run_id, ERROR)
        if self._status != "KILLED":
            self._client.set_terminated(self.run_id, "KILLED")

    # --- the worker's side: robust to an unreachable server

    def log_metrics(self, metrics: dict[str, float], step: int, flush: bool = True) -> None:
        """``flush=False``: keep them for the next call that sends (many epochs in one request)."""
        self.pending_metrics += [(k, float(v), step) for k, v in metrics.items() if v == v]  # drop NaN
        if flush:
            self.flush()

    def attach(self, text: str, name: str) -> None:
        """``text`` as the run's artifact ``name`` (a learning curve, the trial's config)."""
        self.pending_artifacts.append((text, name))
        self.flush()

    def note_checkpoint(self, note: str) -> None:
        """A damaged checkpoint was skipped on resume (the note says which and why)."""
        self._set_tags({CHECKPOINT_NOTE: note})

    def link_weights(self, path: str | Path, best_epoch: int | None = None, upload: bool = False) -> str | None:
        """The trial's kept weights: the run is tagged with where they are (``path``, or with ``upload`` the
        artifact ``checkpoint/<name>`` it is logged as) and their epoch when ``best_epoch`` is given. An upload
        that fails is a warning and no tag (the trial does not fail for it). Returns where, or None."""
        if not self.enabled:
            return None
        path = Path(path)
        where = str(path.resolve())
        if upload:
            try:
                self._client.log_artifact(self.run_id, str(path), artifact_path=CHECKPOINT_DIR)
                where = f"{self._client.get_run(self.run_id).info.artifact_uri.rstrip('/')}/{CHECKPOINT_DIR}/{path.name}"
            except Exception as err:  # noqa: BLE001 - logging the weights never fails a finished trial
                log.warning("%s: weights not uploaded to MLflow (%s)", self.run_id, err)
                return None
        self._set_tags({BEST_CHECKPOINT: where} | ({BEST_CHECKPOINT_EPOCH: str(best_epoch)} if best_epoch is not None
                                                   else {}))
        return where

    def mark_failed(self, reason: str, retry_seconds: float) -> None:
        """The trial failed: state ``failed`` and the failure's one line, then the run ends FAILED."""
        self._set_tags({STATUS: TrialState.FAILED.value, ERROR: reason})
        self.close("FAILED", retry_seconds=retry_seconds)

    def mark_interrupted(self, retry_seconds: float) -> None:
        """The trial was stopped from outside before its end (Ctrl-C, the sweep stopped): no failure, state
        ``pending`` again, as its folder says (``benchxfer resume`` continues it); the run ends KILLED."""
        self._set_tags({STATUS: TrialState.PENDING.value})
        self.close("KILLED", retry_seconds=retry_seconds)

    def mark_finished(self, environment: dict[str, Any]) -> None:
        """The trial finished: state ``finished``, with its result's ``environment`` (tags ``env.<key>``); the caller
        ends the run (:meth:`close`) once the result is written."""
        self._set_tags({STATUS: TrialState.FINISHED.value, **{f"{ENV_PREFIX}{k}": v for k, v in environment.items()}})

    def _set_tags(self, tags: dict[str, Any]) -> None:
        self.pending_tags.update({k: str(v)[:5000] for k, v in tags.items()})
        self.flush()

    def flush(self) -> bool:
        if not self.enabled:
            return True
        from mlflow.entities import Metric, RunTag

        try:
            now = int(time.time() * 1000)
            while self.pending_metrics:
                chunk = self.pending_metrics[:900]
                self._client.log_batch(self.run_id, metrics=[Metric(k, v, now, s) for k, v, s in chunk])
                del self.pending_metrics[: len(chunk)]
            if self.pending_tags:
                self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in self.pending_tags.items()])
                self.pending_tags.clear()
            while self.pending_artifacts:
                text, name = self.pending_artifacts[0]
                self._client.log_text(self.run_id, text, name)
                self.pending_artifacts.pop(0)
            return True
        except Exception as err:  # noqa: BLE001 - the server may be down; keep the data and go on
            self.failures += 1
            log.warning("MLflow unreachable (%s); %d metric values kept for later",
                        type(err).__name__, len(self.pending_metrics))
            return False

    def close(self, status: str, retry_seconds: float = 60.0) -> None:
        if not self.enabled:
            return
        deadline = time.monotonic() + retry_seconds
        delay = 1.0
        while not self.flush() and time.monotonic() < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
        if self.pending_metrics or self.pending_tags:
            self._spill()
        with contextlib.suppress(Exception):
            if self.failures:
                self._client.set_tag(self.run_id, OUTAGES, str(self.failures))
            self._client.set_terminated(self.run_id, status=status)

    def _spill(self) -> None:
        if self.spill_dir is None:
            return
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        path = self.spill_dir / "mlflow_undelivered.json"
        path.write_text(json.dumps({"run_id": self.run_id, "metrics": self.pending_metrics,
                                    "tags": self.pending_tags}))
        log.warning("MLflow metrics not delivered were written to %s", path)
