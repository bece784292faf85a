"""Helpers for the end-to-end and fault-injection tests: tiny sweeps, a sweep driver in its own process (so that it can be
killed), waiting on a trial's files, and the MLflow runs of a sweep by trial key.

Every test here runs on the session's real local Ray (``ray_session``) and a real MLflow server."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchxfer import paths

SWEEP = """
name: {name}
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {{n_train: {n_train}, n_val: 32, n_test: 32, size: 32, seed: 5}}
lr: {lr}
seeds: {seeds}
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: {epochs}, patience: 10, loader_workers: 0,
            checkpoint_every_s: {checkpoint_every_s}}}
resources: {{workers: {workers}, cpus_per_worker: 1{limit}, trainer: {trainer}}}
failure: {{max_retries: {retries}}}
"""


def write_sweep(folder: Path, name: str, *, lr: str = "[0.001]", seeds: int = 1, epochs: int = 3, n_train: int = 64,
                workers: int = 1, trainer: str = "auto", retries: int = 0, max_concurrent: int | None = 1,
                checkpoint_every_s: float = 0.0) -> Path:
    """A sweep of ``seeds`` scratch trials per lr on a synthetic ChestX-ray14 set; ``max_concurrent=None`` lets the
    cluster's slots decide how many run at once. ``checkpoint_every_s`` 0: a checkpoint every epoch, so that a
    fault test knows where a retry continues (the cadence by time: tests/test_resume_exact.py)."""
    path = folder / f"{name}.yaml"
    limit = "" if max_concurrent is None else f", max_concurrent: {max_concurrent}"
    path.write_text(textwrap.dedent(SWEEP.format(name=name, lr=lr, seeds=seeds, epochs=epochs, n_train=n_train,
                                                 workers=workers, trainer=trainer, retries=retries, limit=limit,
                                                 checkpoint_every_s=checkpoint_every_s)))
    return path


def spawn(argv: list[str]) -> subprocess.Popen:
    """``python ARGV`` in a new process group (to be killed with SIGKILL), its output kept in a temporary file that
    ``wait_for`` shows if the process ends early; the file goes when the test run ends (a failing test shows its
    tail in its message)."""
    log = tempfile.NamedTemporaryFile("w+", prefix="driver-", suffix=".log", delete=False)
    atexit.register(Path(log.name).unlink, missing_ok=True)
    proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log.name
    log.close()
    return proc


def start_driver(args: list[str], ray_session) -> subprocess.Popen:
    """``benchxfer ARGS --address <the session's Ray>``, started by ``spawn``."""
    address = ray_session.get_runtime_context().gcs_address
    return spawn(["-m", "benchxfer.cli", *args, "--address", address])


def output_tail(proc: subprocess.Popen, lines: int = 30) -> str:
    path = getattr(proc, "log_path", None)
    if path is None or not os.path.exists(path):
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 240.0):
    """Poll ``condition()`` until it returns something truthy; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver ended (exit {proc.returncode}) before {what}; its output ends:\n"
                        f"{output_tail(proc)}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def progress_epoch(trial: Path) -> int:
    """The last epoch whose checkpoint is written (-1 before the first)."""
    try:
        return json.loads((trial / "progress.json").read_text())["checkpoint"]
    except (OSError, ValueError, KeyError):
        return -1


def epoch_log(trial: Path) -> list[dict]:
    path = trial / "epochs.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def only_trial(sweep: str) -> Path | None:
    found = sorted((paths.sweep_dir(sweep) / "trials").glob("*"))
    return found[0] if found else None


def runs_by_key(uri: str, sweep: str) -> dict[str, list]:
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(sweep)
    out: dict[str, list] = {}
    for r in c.search_runs([exp.experiment_id], max_results=200):
        if r.data.tags.get("benchxfer.role") == "trial":
            out.setdefault(r.data.tags["benchxfer.trial_key"], []).append(r)
    return out


def metric_steps(uri: str, run_id: str, name: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, name))


def kill_driver(proc: subprocess.Popen, trial: Path | None = None, timeout: float = 60.0) -> None:
    """SIGKILL the driver's process group, then wait until the process that trained ``trial`` is gone too
    (Ray ends the actors of a dead driver, a moment later), so that nothing writes into the folder after."""
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log = epoch_log(trial) if trial is not None else []
    if not log:
        return
    pid = log[-1]["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"the trial's process {pid} outlived its driver by {timeout:.0f} s")


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` (``mount -t tmpfs -o size=SIZE``) at ``folder``, unmounted after; a test that needs a disk
    that fills is skipped where none can be mounted (not root)."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("a tmpfs cannot be mounted here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
