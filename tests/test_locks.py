"""Locks where two commands meet (benchxfer/locks.py, zoo import), and a resume that only reads.

The lock and zoo races run real processes started at the same moment; the two-resumes race starts two real
``benchxfer resume`` processes, joining the run's Ray session (the one that holds the sweep trains there)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_errors import GOOD, warm_run

from benchxfer import locks
from benchxfer.errors import BenchxferError

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _write_holder(path: Path, host: str, pid: int, since: float, command: str = "benchxfer sweep x.yaml") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "since": since, "command": command}))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.fast
def test_a_held_lock_refuses_naming_the_holder(tmp_path):
    lock = tmp_path / "sweep-x.lock"
    _write_holder(lock, socket.gethostname(), os.getpid(), time.time())
    with pytest.raises(BenchxferError) as err:
        locks.acquire(lock, "sweep 'x'")
    msg = str(err.value)
    assert msg.startswith(f"sweep 'x' is in use by `benchxfer sweep x.yaml` (pid {os.getpid()} on "
                          f"{socket.gethostname()}, since ") and msg.endswith("wait for it to end")


@pytest.mark.fast
def test_a_stale_lock_is_taken_over_with_a_line(tmp_path):
    lock = tmp_path / "sweep-x.lock"
    dead = _dead_pid()
    _write_holder(lock, socket.gethostname(), dead, time.time() - 60)
    said: list[str] = []
    with locks.held(lock, "sweep 'x'", echo=said.append) as me:
        assert me.pid == os.getpid() and json.loads(lock.read_text())["pid"] == os.getpid()
        assert len(said) == 1 and f"took over the stale lock {lock}" in said[0] and f"pid {dead}" in said[0]
    assert not lock.exists()  # released at the end


@pytest.mark.fast
def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    lock = tmp_path / "sweep-x.lock"
    _write_holder(lock, "some-other-node", 1, time.time())
    with pytest.raises(BenchxferError, match=f"on some-other-node, .*if that process is gone, remove {lock}"):
        locks.acquire(lock, "sweep 'x'")
    assert json.loads(lock.read_text())["host"] == "some-other-node"


@pytest.mark.fast
def test_a_pid_used_again_is_not_the_holder(tmp_path):
    """The pid is alive, but its process started after the lock was taken: the holder is gone."""
    lock = tmp_path / "sweep-x.lock"
    _write_holder(lock, socket.gethostname(), os.getpid(), 1_000_000.0)  # 1970: before this process started
    said: list[str] = []
    locks.release(lock, locks.acquire(lock, "sweep 'x'", echo=said.append))
    assert said and "took over the stale lock" in said[0]


@pytest.mark.fast
def test_a_killed_holder_not_yet_reaped_is_stale(tmp_path):
    """A holder killed but not yet waited for (a zombie) no longer runs: its lock is taken over."""
    lock = tmp_path / "sweep-x.lock"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _write_holder(lock, socket.gethostname(), proc.pid, time.time())
    proc.kill()
    time.sleep(0.5)  # dead, not reaped
    said: list[str] = []
    try:
        locks.release(lock, locks.acquire(lock, "sweep 'x'", echo=said.append))
    finally:
        proc.wait()
    assert said and "took over the stale lock" in said[0]


RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from benchxfer import locks
    from benchxfer.errors import BenchxferError
    lock, folder = Path(sys.argv[1]), Path(sys.argv[2])
    (folder / f"ready-{os.getpid()}").touch()
    while not (folder / "go").exists():  # all four start their attempt at once
        pass
    try:
        me = locks.acquire(lock, "sweep 'x'", echo=lambda s: None)
    except BenchxferError as err:
        print("refused", err)
        (folder / f"tried-{os.getpid()}").touch()
    else:
        print("got")
        deadline = time.time() + 60  # held until the other three have tried, however slowly they were scheduled
        while len(list(folder.glob("tried-*"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        locks.release(lock, me)
""")


@pytest.mark.fast
def test_processes_racing_for_one_lock_one_wins(tmp_path):
    lock = tmp_path / "sweep-x.lock"
    _write_holder(lock, socket.gethostname(), _dead_pid(), time.time() - 60)  # a stale lock to race for, too
    signals = tmp_path / "signals"
    signals.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(signals)], stdout=subprocess.PIPE,
                              text=True, env=ENV) for _ in range(4)]
    deadline = time.monotonic() + 120
    while len(list(signals.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    (signals / "go").touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["got", "refused", "refused", "refused"], outs
    assert not lock.exists()


def test_two_zoo_imports_of_one_name_leave_one_consistent_entry(tmp_path):
    """Two `zoo import mine FILE` processes at once (no --force): one succeeds, the other refuses in one line;
    the zoo's file is the winner's, and zoo.json's checksum is that file's."""
    import torch
    import torchvision

    from benchxfer.zoo.store import read_index, sha256_file

    files = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        files.append(tmp_path / f"r{seed}.pth")
        torch.save(torchvision.models.resnet18().state_dict(), files[-1])
    zoo = tmp_path / "zoo"
    env = {**ENV, "BENCHXFER_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-m", "benchxfer.cli", "zoo", "import", "mine", str(f), "--format",
                               "torchvision", "--zoo", str(zoo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for f in files]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser_err = results[1 - winner][2].strip().splitlines()
    assert len(loser_err) == 1 and "init 'mine' is already in the zoo" in loser_err[0], loser_err
    entry = read_index(zoo)["mine"]
    assert entry["source_file"] == str(files[winner].resolve())
    assert entry["sha256"] == sha256_file(zoo / entry["filename"])
    assert [p.name for p in zoo.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.fast
def test_resume_reads_and_a_renamed_source_is_still_refused(tmp_path, monkeypatch):
    """What `resume` plans from (the sweep's own copy) never rewrites source.json, the copy or trials.json; so a
    source renamed after a resume is refused as before."""
    from benchxfer.launch.runner import save_plan
    from benchxfer.plan.planning import make_plan
    from benchxfer.trialdir import SweepDir

    env = {"BENCHXFER_HOME": str(tmp_path / "home")}
    with monkeypatch.context() as patch:  # the run's own home comes back after (not unset)
        patch.setenv("BENCHXFER_HOME", env["BENCHXFER_HOME"])
        source = tmp_path / "s.yaml"
        source.write_text(GOOD.replace("name: done", "name: tiny"))
        save_plan(make_plan(str(source)))  # what `sweep s.yaml` saves
        sdir = SweepDir("tiny")
        before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sdir.path.iterdir() if p.is_file()}
        assert json.loads((sdir.path / "source.json").read_text()) == {"path": str(source)}
        time.sleep(0.01)
        save_plan(make_plan(str(sdir.spec_copy)))  # what `resume tiny` saves
        after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sdir.path.iterdir() if p.is_file()}
        assert after == before
    source.write_text(GOOD.replace("name: done", "name: renamed"))
    code, out, err = warm_run(["resume", "tiny"], env, tmp_path)
    assert code == 1 and err.strip() == (f"Error: resume tiny: {source} now names the sweep 'renamed'; run it with "
                                         f"`benchxfer sweep {source}`, or restore the name to resume"), err


@pytest.mark.e2e
def test_two_resumes_at_once_train_each_trial_once(tmp_path, ray_session, mlflow_uri):
    """Two `benchxfer resume tiny` started together: one holds the sweep, the other refuses in one line naming
    it; every trial trains once (each epoch started once), one MLflow run per trial, no metric logged twice."""
    from mlflow.tracking import MlflowClient

    from benchxfer.trialdir import SweepDir

    home = tmp_path / "home"
    source = tmp_path / "s.yaml"
    source.write_text(GOOD.replace("name: done", "name: tiny")
                      .replace("epochs: 1}", "epochs: 2, loader_workers: 0, batch_size: 2}"))
    sdir = home / "runs" / "tiny"
    sdir.mkdir(parents=True)
    (sdir / "sweep.yaml").write_text(source.read_text())
    (sdir / "source.json").write_text(json.dumps({"path": str(source)}))
    env = {k: v for k, v in ENV.items() if k not in ("BENCHXFER_ZOO", "RAY_ADDRESS")}
    env.update(BENCHXFER_HOME=str(home))
    address = ray_session.get_runtime_context().gcs_address  # no Ray session of its own to start
    procs = [subprocess.Popen([sys.executable, "-m", "benchxfer.cli", "resume", "tiny", "--tracking-uri", mlflow_uri,
                               "--address", address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], [(c, o[-2000:], e[-2000:]) for c, o, e in results]
    loser = next(e for code, _, e in results if code == 1).strip().splitlines()
    assert len(loser) == 1 and loser[0].startswith("Error: sweep 'tiny' is in use by `benchxfer resume tiny --tracking-uri "), loser
    assert json.loads((sdir / "source.json").read_text()) == {"path": str(source)}
    keys = [t["trial_key"] for t in SweepDir("tiny", sdir).trials()]
    assert len(keys) == 2
    for key in keys:
        tdir = SweepDir("tiny", sdir).trial(key)
        assert tdir.result() is not None
        assert tdir.epochs_started() == [0, 1], (key, tdir.epochs_started())
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], "tags.`benchxfer.trial_key` != ''")
    by_key = [r.data.tags["benchxfer.trial_key"] for r in runs]
    assert sorted(by_key) == sorted(keys), by_key
    for run in runs:
        for metric in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert len(steps) == len(set(steps)), (run.data.tags["benchxfer.trial_key"], metric, steps)
    assert not (home / "locks" / "sweep-tiny.lock").exists()
