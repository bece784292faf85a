"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with 0 CPUs and two worker
nodes with 1 CPU and their own resource each, every node its own raylet), and sweeps run against it with
``--address``, as on a real cluster:

- the trials run on both worker nodes, each has exactly one MLflow run, and their scores equal those of the same
  trials trained in one process;
- a request that no node can hold is refused before trials start, with one line;
- a worker node is lost (its raylet and its workers killed with SIGKILL) mid-trial: the sweep finishes on the
  other node, the interrupted trial continues from its checkpoint (at most one epoch redone) in the same run;
- a 2-worker TorchTrainer (DDP) trial whose workers sit on two nodes loses the node of its driver (the Tune
  trial and Ray Train's controller): Tune restarts the trial on the nodes left, and it continues from its
  checkpoint.

This module owns Ray while it runs: it ends the shared local session (``ray_session``) first and starts a fresh
local one at the end for the modules that follow. Run it under the Ray lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from e2e_support import epoch_log, progress_epoch, runs_by_key, wait_for, write_sweep

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e
OWNS_RAY = True  # conftest.py runs this module before the shared session starts


@pytest.fixture(scope="module")
def cluster(bx_home):
    import ray
    from ray.cluster_utils import Cluster

    from benchxfer.launch.sweep import ensure_ray

    was_up = ray.is_initialized()
    if not was_up:
        # A local session first, as when the module runs after others: it writes Ray's token and turns token
        # authentication on in this process, so the nodes started below and the driver that joins them agree
        # (run alone without it, the nodes start without authentication, the driver with it, and no actor starts)
        ensure_ray()
    ray.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # the ended session's; the nodes must not inherit them
        os.environ.pop(k, None)
    # the head trains nothing, and has too little memory for a TorchTrainer trial's driver (cluster.DRIVER_MEMORY)
    # a lost node is declared dead after 3 failed health checks 1 s apart (Ray's default: 5 checks 3 s apart, about
    # 15 s of waiting per lost node here); a live node answers within the default 10 s timeout
    head = {"num_cpus": 0, "memory": 64 * 1024**2, "dashboard_host": "127.0.0.1",
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}}
    c = Cluster(initialize_head=True, head_node_args=head)
    nodes = [c.add_node(num_cpus=1, resources={f"w{i}": 1}) for i in range(2)]
    c.wait_for_nodes()
    yield c, nodes
    ray.shutdown()
    c.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(k, None)
    if was_up:
        ensure_ray()


def node_of_pid(pid: int) -> str:
    """The Ray node id of the actor that ran in process ``pid`` (Ray's State API keeps dead actors)."""
    from ray.util.state import list_actors

    found = list_actors(filters=[("pid", "=", pid)], detail=True, limit=10, raise_on_missing_output=False)
    assert found, f"no Ray actor had pid {pid}"
    return found[0].node_id


def results(sweep: str) -> dict[str, dict]:
    out = {}
    for p in (paths.sweep_dir(sweep) / "trials").glob("*/result.json"):
        out[p.parent.name] = json.loads(p.read_text())
    return out


def test_trials_run_on_both_nodes_once_each_with_one_node_scores(cluster, tmp_path, mlflow_uri):
    import ray
    import torch

    from benchxfer.plan.planning import make_plan
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime

    c, nodes = cluster
    path = write_sweep(tmp_path, "multinode", lr="[0.001, 0.003]", seeds=2, epochs=2, n_train=64)
    text = path.read_text().replace("max_concurrent: 1, ", "")  # as many at once as the cluster holds
    path.write_text(text)
    res = CliRunner().invoke(main, ["sweep", str(path), "--address", c.address, "--tracking-uri", mlflow_uri],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "4 of 4 trials finished." in res.output

    done = results("multinode")
    assert len(done) == 4
    worker_ids = {n.node_id for n in nodes}
    used = {key: node_of_pid(epoch_log(paths.trial_dir("multinode", key))[0]["pid"]) for key in done}
    assert set(used.values()) == worker_ids  # both worker nodes trained, the 0-CPU head none

    runs = runs_by_key(mlflow_uri, "multinode")
    assert set(runs) == set(done) and all(len(r) == 1 for r in runs.values())
    for key, (run,) in runs.items():
        assert run.info.status == "FINISHED" and done[key]["mlflow_run_id"] == run.info.run_id
        tag = run.data.tags.get("benchxfer.node_id")
        assert tag == used[key]  # the driver records the node it ran on (TrialRun.mark_running)

    # the same trials on one node (this process, one thread as a 1-CPU trial has): the same scores
    ray.shutdown()
    torch.set_num_threads(1)
    plan = make_plan(str(path), write_synthetic=True)
    for t in plan.trials[:2]:
        alone = train_run(t.config, Runtime(trial_dir=str(tmp_path / "alone" / t.key)))
        assert alone.test == pytest.approx(done[t.key]["test"], abs=1e-6), t.key
        assert alone.best_epoch == done[t.key]["best_epoch"]


def test_request_no_node_can_hold_is_refused_before_trials_start(cluster, tmp_path, mlflow_uri):
    c, _ = cluster
    path = write_sweep(tmp_path, "toobig", epochs=1)
    path.write_text(path.read_text().replace("cpus_per_worker: 1", "cpus_per_worker: 1, gpus_per_worker: 1"))
    res = CliRunner().invoke(main, ["sweep", str(path), "--address", c.address, "--tracking-uri", mlflow_uri])
    assert res.exit_code != 0
    lines = [x for x in res.output.splitlines() if "no node of the cluster can hold" in x]
    assert len(lines) == 1 and "{CPU: 1, GPU: 1}" in lines[0] and "{CPU: 1, w0: 1}" in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (paths.sweep_dir("toobig") / "trials").exists()  # no trial started


def test_trial_that_cannot_be_placed_is_reported_then_stops_the_sweep(cluster, tmp_path, mlflow_uri):
    """Both worker CPUs are held by someone else; the cluster cannot grow. The sweep says so (the trial, its
    request, what is free) within the warning time and ends after $BENCHXFER_PLACEMENT_TIMEOUT_S."""
    import ray

    c, _ = cluster
    ray.shutdown()
    ray.init(address=c.address)

    @ray.remote(num_cpus=1)
    class Hog:
        def ready(self):
            return True

    hogs = [Hog.options(resources={f"w{i}": 1}).remote() for i in range(2)]
    ray.get([h.ready.remote() for h in hogs])
    path = write_sweep(tmp_path, "stuck", epochs=1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCHXFER_PLACEMENT_TIMEOUT_S": "6"}
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchxfer.cli", "sweep", str(path), "--address", c.address,
                               "--tracking-uri", mlflow_uri], env=env, capture_output=True, text=True, timeout=180,
                              check=False)
    finally:
        for h in hogs:
            ray.kill(h)
        ray.shutdown()
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    print(f"exit {proc.returncode} after {took:.0f} s;",
          *[x for x in out.splitlines() if x.startswith("benchxfer:") or "trials finished" in x], sep="\n")
    warned = [x for x in out.splitlines() if "has waited" in x and "cannot grow" in x and "stops after" in x]
    stopped = [x for x in out.splitlines() if "Stopped after 6 s" in x]
    assert warned and stopped, out[-3000:]
    assert "{CPU: 1}" in warned[0] and "free" in warned[0] and "scratch_chestxray14_" in warned[0], warned[0]  # request, trial
    assert proc.returncode != 0 or "0 of 1 trials finished" in out, out[-3000:]
    assert took < 120, took


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def raylet_pid(node) -> int:
    return node.all_processes["raylet"][0].process.pid


def node_running(nodes, pid: int):
    """The cluster_utils node whose raylet started process ``pid``."""
    return next(n for n in nodes if pid in _descendants(raylet_pid(n)))


def kill_node(node) -> None:
    """Lose a node as a machine is lost: its raylet and every process under it, with SIGKILL."""
    for p in _descendants(raylet_pid(node)):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def process_titles(node) -> list[str]:
    """The Ray process titles (``ray::RayTrainWorker``, ...) under ``node``'s raylet, one per process."""
    out = []
    for pid in _descendants(raylet_pid(node))[1:]:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::"):
            out.append(title)
    return out


def train_workers(node) -> list[str]:
    """The Ray Train worker processes under ``node``'s raylet."""
    return [t for t in process_titles(node) if "RayTrainWorker" in t]


def start_sweep(path: Path, address: str, uri: str, log) -> subprocess.Popen:
    """``benchxfer sweep PATH --address ADDRESS`` in its own process (as a user runs it from a fresh shell: without the
    RAY_AUTH_MODE that this process's local session set, the command turns token authentication on itself, as the
    cluster's token on this machine asks), output to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        env.pop(k, None)
    return subprocess.Popen([sys.executable, "-m", "benchxfer.cli", "sweep", str(path), "--address", address,
                             "--tracking-uri", uri], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def assert_continued(log: list[dict], epochs: int) -> None:
    """Every epoch ran; at most one was redone; a second process continued the trial where it was cut, not from 0."""
    starts = [e["epoch"] for e in log]
    assert len({e["pid"] for e in log}) == 2, log  # a second process continued it
    assert len(starts) - len(set(starts)) <= 1 and sorted(set(starts)) == list(range(epochs)), starts
    assert starts[0] == 0 and starts.index(max(starts)) == len(starts) - 1, starts  # continued, not restarted
    assert starts.count(0) == 1, starts


def test_lost_node_mid_trial_sweep_finishes_on_the_other(cluster, tmp_path, mlflow_uri):
    """Two trials, one per worker node; the node of the first is killed (raylet and workers, SIGKILL) after its
    second epoch began. The sweep finishes on the other node; the interrupted trial continues from its last
    checkpoint in the same MLflow run."""
    import ray

    ray.shutdown()  # the driver runs in its own process, as `benchxfer sweep --address` does
    c, nodes = cluster
    epochs = 3
    path = write_sweep(tmp_path, "nodeloss", seeds=2, epochs=epochs, n_train=256, retries=2)
    path.write_text(path.read_text().replace("max_concurrent: 1, ", ""))
    log = (tmp_path / "driver.log").open("w")
    proc = start_sweep(path, c.address, mlflow_uri, log)
    try:
        tdir = paths.sweep_dir("nodeloss") / "trials"
        def both_started():
            found = sorted(tdir.glob("*"))
            return found if len(found) == 2 and all(epoch_log(t) for t in found) else None

        started = wait_for(both_started, "both trials to start", proc)
        victim = started[0]
        wait_for(lambda: progress_epoch(victim) >= 0 and len(epoch_log(victim)) >= 2, "its second epoch", proc)
        kill_node(node_running(nodes, epoch_log(victim)[-1]["pid"]))
        killed_at = time.monotonic()
        assert proc.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        print(f"sweep finished {time.monotonic() - killed_at:.0f} s after the node was lost")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    out = (tmp_path / "driver.log").read_text()
    assert "2 of 2 trials finished." in out, out[-3000:]
    done = results("nodeloss")
    runs = runs_by_key(mlflow_uri, "nodeloss")
    assert set(runs) == set(done) and all(len(r) == 1 for r in runs.values())
    from e2e_support import metric_steps

    for key in done:
        assert metric_steps(mlflow_uri, runs[key][0].info.run_id, "val_loss") == list(range(epochs))
        assert done[key]["epochs_run"] == epochs
    assert_continued(epoch_log(victim), epochs)


def test_lost_driver_node_mid_ddp_trial_tune_restarts_it_from_its_checkpoint(cluster, tmp_path, mlflow_uri):
    """A 2-worker TorchTrainer trial on 1-CPU nodes has its DDP workers on two nodes. Its driver (the Tune trial,
    which holds no CPU) and Ray Train's controller sit on a worker node, as the head has no memory for them. That
    node is lost after the trial's second epoch began: Tune restarts the trial on the nodes left
    (``failure.max_retries``), and it continues from its checkpoint, in its one MLflow run. (Ray Train's own restart
    of a worker group whose driver lives is tests/faults/test_worker_kill.py.)"""
    import ray

    ray.shutdown()
    c, nodes = cluster
    # room for the restarted group (add_node waits for each; the cluster still lists the node lost before)
    extra = [c.add_node(num_cpus=1, resources={f"x{i}": 1}) for i in range(2)]
    alive = [n for n in nodes + extra if n.all_processes["raylet"][0].process.poll() is None]
    epochs = 3
    path = write_sweep(tmp_path, "ddploss", epochs=epochs, n_train=256, workers=2, trainer="torch", retries=2)
    log = (tmp_path / "driver.log").open("w")
    proc = start_sweep(path, c.address, mlflow_uri, log)
    try:
        trial = wait_for(lambda: next(iter((paths.sweep_dir("ddploss") / "trials").glob("*")), None),
                         "the trial folder", proc)
        wait_for(lambda: progress_epoch(trial) >= 0 and len(epoch_log(trial)) >= 2, "its second epoch", proc)
        holding = [n for n in alive if train_workers(n)]
        assert len(holding) == 2, "the two DDP workers are not on two nodes"
        (victim,) = [n for n in alive if any(t.startswith("ray::ImplicitFunc") for t in process_titles(n))]
        print("the lost node ran", sorted(set(process_titles(victim))))  # a DDP worker there too, or not
        kill_node(victim)
        killed_at = time.monotonic()
        assert proc.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        print(f"sweep finished {time.monotonic() - killed_at:.0f} s after the node was lost")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()

    out = (tmp_path / "driver.log").read_text()
    assert "1 of 1 trials finished." in out, out[-3000:]
    (key, result), = results("ddploss").items()
    assert result["epochs_run"] == epochs, result
    (run,), = runs_by_key(mlflow_uri, "ddploss").values()
    from e2e_support import metric_steps

    assert run.info.status == "FINISHED" and result["mlflow_run_id"] == run.info.run_id
    assert metric_steps(mlflow_uri, run.info.run_id, "val_loss") == list(range(epochs))
    assert_continued(epoch_log(trial), epochs)
