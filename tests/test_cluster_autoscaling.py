"""Ray's real autoscaler on this machine: a head with 0 CPUs and no worker node, and one node type (1 CPU, at most
2 nodes) that Ray's fake provider starts as local processes (what ``ray.cluster_utils.AutoscalingCluster`` does;
its config template is not shipped in this Ray wheel, so the same config is written here). A sweep with
``--address`` must make the cluster grow and finish on the added nodes; a request that none of the node types
can hold is refused before trials start.

This module owns Ray while it runs (see test_cluster_multinode.py). Run it under the Ray lock."""

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
from e2e_support import epoch_log, runs_by_key, write_sweep

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e
OWNS_RAY = True  # conftest.py runs this module before the shared session starts

NODE_TYPE = "cpu1"


def fake_config(gcs_address: str) -> dict:
    return {
        "cluster_name": "benchxfer-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            NODE_TYPE: {"resources": {"CPU": 1, "object_store_memory": 200 * 1024**2}, "node_config": {},
                        "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"}, "docker": {},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _session_pids(port: int) -> list[int]:
    """This cluster's processes: every process of this user whose command line names its GCS port."""
    mine, me = [], os.getuid()
    for cmd in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmd.stat().st_uid != me:
                continue
            args = cmd.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(f":{port}".encode()) and (b"address" in a or b"redis" in a)
               or a == f"--gcs_server_port={port}".encode() for a in args):
            mine.append(int(cmd.parent.name))
    return mine


@pytest.fixture(scope="module")
def autoscaling(bx_home, tmp_path_factory):
    import ray
    from ray._private.services import get_node_ip_address

    from benchxfer.tracking import free_port

    was_up = ray.is_initialized()
    ray.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(k, None)
    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    cfg = tmp_path_factory.mktemp("autoscaler") / "cluster.json"
    cfg.write_text(json.dumps(fake_config(address)))
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
                    f"--autoscaling-config={cfg}", "--dashboard-host=127.0.0.1", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True)
    try:
        yield address
    finally:
        ray.shutdown()
        pids = _session_pids(port)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        current = Path("/tmp/ray/ray_current_cluster")  # written by `ray start`; never leave it naming a dead cluster
        if current.exists() and address in current.read_text():
            current.unlink(missing_ok=True)
        for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            os.environ.pop(k, None)
        if was_up:
            from benchxfer.launch.sweep import ensure_ray

            ensure_ray()


def test_sweep_grows_the_cluster_from_zero_worker_nodes(autoscaling, tmp_path, mlflow_uri):
    import ray

    path = write_sweep(tmp_path, "autoscale", seeds=2, epochs=2, n_train=64)
    path.write_text(path.read_text().replace("max_concurrent: 1, ", ""))
    started = time.monotonic()
    res = CliRunner().invoke(main, ["sweep", str(path), "--address", autoscaling, "--tracking-uri", mlflow_uri],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 of 2 trials finished." in res.output
    print(f"sweep on an autoscaled cluster: {time.monotonic() - started:.0f} s")

    from ray.util.state import list_actors

    added = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU", 0) > 0}
    assert 1 <= len(added) <= 2  # the head has no CPU: every trial ran on a node the autoscaler added
    for key in json.loads((paths.sweep_dir("autoscale") / "trials.json").read_text()):
        tdir = paths.trial_dir("autoscale", key["trial_key"])
        pid = epoch_log(tdir)[0]["pid"]
        (actor,) = list_actors(filters=[("pid", "=", pid)], detail=True, raise_on_missing_output=False)
        assert actor.node_id in added
    runs = runs_by_key(mlflow_uri, "autoscale")
    assert len(runs) == 2 and all(len(r) == 1 and r[0].info.status == "FINISHED" for r in runs.values())


def test_request_no_node_type_can_hold_is_refused(autoscaling, tmp_path, mlflow_uri):
    path = write_sweep(tmp_path, "autoscale-gpu", epochs=1)
    path.write_text(path.read_text().replace("cpus_per_worker: 1", "cpus_per_worker: 1, gpus_per_worker: 1"))
    res = CliRunner().invoke(main, ["sweep", str(path), "--address", autoscaling, "--tracking-uri", mlflow_uri])
    assert res.exit_code != 0
    lines = [x for x in res.output.splitlines() if "no node of the cluster can hold" in x]
    assert len(lines) == 1 and f"{NODE_TYPE} (up to 2): {{CPU: 1}}" in lines[0], res.output
    assert "Traceback" not in res.output
    assert not (paths.sweep_dir("autoscale-gpu") / "trials").exists()
