"""Safety promises: checkpoints are read with ``weights_only=True`` everywhere (a pickle that runs code is
refused, never run), and the servers benchxfer starts listen on 127.0.0.1 only."""

import ast
import os
from pathlib import Path

import psutil
import pytest
import torch

from benchxfer.train.checkpoint import CheckpointStore

PACKAGE = Path(__file__).resolve().parents[1] / "benchxfer"


@pytest.mark.fast
def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((f"{path.relative_to(PACKAGE)}:{node.lineno}", ok))
    assert len(calls) >= 2  # the trial checkpoints, the zoo reader
    assert [c for c, ok in calls if not ok] == []


class RunsCode:
    """Unpickling this creates a file: a checkpoint that would run code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.fast
def test_a_trial_checkpoint_that_runs_code_is_refused_and_skipped(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(0, {"epoch": 0, "model": {"w": torch.ones(2)}})
    pwned = tmp_path / "pwned"
    torch.save({"epoch": 1, "model": RunsCode(pwned)}, store.path(1))
    state, notes = store.load_latest()
    assert not pwned.exists()
    assert state["epoch"] == 0 and torch.equal(state["model"]["w"], torch.ones(2))
    assert len(notes) == 1 and "epoch_0001.pt is unreadable" in notes[0]


def _listening(pid: int) -> set[str]:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    pids = {p.pid for p in procs}
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


def test_the_embedded_mlflow_server_listens_on_localhost_only(mlflow_server):
    """The run's own server (conftest.py: a ``tracking.LocalServer`` as a sweep starts it; none started here)."""
    assert mlflow_server.uri.startswith("http://127.0.0.1:")
    assert _listening(mlflow_server.proc.pid) == {"127.0.0.1"}


@pytest.mark.e2e
def test_the_ray_dashboard_listens_on_localhost_only(ray_session):
    from ray._private.worker import global_worker

    url = global_worker.node.address_info["webui_url"]
    host, port = url.rsplit(":", 1)
    assert host == "127.0.0.1"
    on_port = {c.laddr.ip for c in psutil.net_connections("inet")
               if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)}
    assert on_port == {"127.0.0.1"}
    assert os.environ.get("RAY_DASHBOARD_HOST") in (None, "127.0.0.1")
