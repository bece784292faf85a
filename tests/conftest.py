"""Shared fixtures: one benchxfer home, one real MLflow server and one real Ray session per test run.

The two tiers: a test marked ``fast`` (``make test-fast``) needs none of ``ray_session``/``mlflow_server``/``mlflow_uri``
and starts no Ray, MLflow server or subprocess sweep; ``tier_guard`` fails one that does. Every test without the mark is slow."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import scratch

from benchxfer.launch.cluster import token_auth_env

pytest_plugins = ["pytester", "tier_guard"]

# This process imports Ray itself and then joins clusters in-process (`benchxfer sweep --address` through click's
# runner): where a Ray token exists, token authentication is turned on here, before Ray is imported, as for any
# program that does so (the command line does the same at its start-up).
token_auth_env()


@pytest.fixture(scope="session", autouse=True)
def bx_home(tmp_path_factory) -> Path:
    """A fresh BENCHXFER_HOME for the whole run, for every test of either tier (set before Ray starts, so workers
    see it too): no test writes into the user's own home; a test that needs a home of its own sets one (``home``)."""
    home = tmp_path_factory.mktemp("bxhome")
    os.environ["BENCHXFER_HOME"] = str(home)
    os.environ.pop("BENCHXFER_ZOO", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return home


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A BENCHXFER_HOME of the test's own (for tests without Ray), no tracking URI, the test folder as cwd."""
    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture
def scratch_path() -> Path:
    """A fresh folder on tmpfs where there is room (``tests/scratch.py``), removed after the test: for a test that
    writes checkpoints of hundreds of MB and reads them back, instead of ``tmp_path`` on the disk."""
    path = scratch.scratch_base("benchxfer-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow server (``tracking.LocalServer``, started) on a temporary SQLite store, shared by the run."""
    from benchxfer.tracking import LocalServer

    server = LocalServer(home=tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_server) -> str:
    """The http://127.0.0.1:PORT URI of the run's MLflow server."""
    return mlflow_server.uri


@pytest.fixture(scope="session")
def ray_session(bx_home):
    """One local Ray session shared by every end-to-end test."""
    import ray

    from benchxfer.launch.sweep import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Modules that end the shared Ray session for a cluster of their own (``OWNS_RAY = True``) run first, before
    ``ray_session`` starts it: then there is no session to end and start again for them."""
    items.sort(key=lambda item: not getattr(getattr(item, "module", None), "OWNS_RAY", False))
