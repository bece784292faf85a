"""The two test tiers: a test marked ``fast`` that asks for Ray or MLflow, or starts them (itself or in a process of
its own), fails with a message to move it to the slow tier; a test without the mark is slow (tests/tier_guard.py).

Each case runs a small test file in a pytest of its own (pytester) with the guard loaded, as tests/conftest.py does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tier_guard import what_it_is

TESTS = Path(__file__).resolve().parent
MOVE = "move it to the slow tier: remove its `fast` mark"
INI = """
[pytest]
markers =
    fast: the fast tier
    e2e: end to end
"""
CONFTEST = """
import pytest

pytest_plugins = ["tier_guard"]
STARTED = []


@pytest.fixture(scope="session")
def ray_session():
    STARTED.append("ray_session")
    yield None


@pytest.fixture(scope="session")
def mlflow_uri():
    STARTED.append("mlflow_uri")
    yield "http://127.0.0.1:9"


@pytest.fixture
def populated(mlflow_uri):
    return mlflow_uri


@pytest.fixture(scope="session", autouse=True)
def nothing_started_on_fast_tests():
    yield
    with open("started.txt", "w") as f:
        f.write(",".join(STARTED))
"""


@pytest.fixture
def inner(pytester):
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    return pytester


def failures(result) -> dict[str, str]:
    """Test name -> the guard's line for each test that failed or errored."""
    out = {}
    for rep in result.reprec.getreports("pytest_runtest_logreport"):
        if rep.failed:
            out[rep.nodeid.split("::")[-1]] = str(rep.longrepr)
    return out


@pytest.mark.fast
def test_a_fast_test_that_asks_for_ray_or_mlflow_fails_before_they_start(inner):
    inner.makepyfile(test_x="""
        import pytest

        @pytest.mark.fast
        def test_ray(ray_session):
            pass

        @pytest.mark.fast
        def test_mlflow_through_another_fixture(populated):
            pass

        @pytest.mark.fast
        @pytest.mark.e2e
        def test_both_marks():
            pass

        @pytest.mark.fast
        def test_fine(tmp_path):
            pass

        def test_slow(ray_session, mlflow_uri):
            pass
    """)
    result = inner.runpytest_inprocess("-m", "fast")
    result.assert_outcomes(passed=1, errors=3, deselected=1)
    got = failures(result)
    assert set(got) == {"test_ray", "test_mlflow_through_another_fixture", "test_both_marks"}
    assert "test_x.py::test_ray is marked `fast` but uses the fixture ray_session (a Ray session)" in got["test_ray"]
    assert "uses the fixture mlflow_uri (an MLflow server)" in got["test_mlflow_through_another_fixture"]
    assert "is marked `fast` but also marked `e2e`" in got["test_both_marks"]
    assert all(MOVE in line for line in got.values())
    assert (inner.path / "started.txt").read_text() == ""  # failed before the fixtures started anything


@pytest.mark.fast
def test_a_test_without_the_mark_runs_in_the_slow_tier_only(inner):
    inner.makepyfile(test_y="""
        import pytest

        pytestmark = pytest.mark.fast

        def test_marked_by_its_module():
            pass
    """, test_z="""
        def test_forgot_its_mark():
            pass
    """)
    fast = inner.runpytest_inprocess("-m", "fast", "-v")
    fast.assert_outcomes(passed=1, deselected=1)
    fast.stdout.fnmatch_lines(["*test_y.py::test_marked_by_its_module PASSED*"])
    slow = inner.runpytest_inprocess("-m", "not fast", "-v")
    slow.assert_outcomes(passed=1)  # test_y's module, marked fast as a whole, is not even collected
    slow.stdout.fnmatch_lines(["*test_z.py::test_forgot_its_mark PASSED*"])


@pytest.mark.fast
def test_a_run_that_can_select_no_fast_test_leaves_the_fast_modules_unimported(inner):
    """The slow tier does not import a module marked fast as a whole (here one that fails when imported); a run that
    may select a test of it does: no mark expression, ``fast``, or a mark its tests might carry besides."""
    inner.makepyfile(test_f="""
        import pytest

        pytestmark = pytest.mark.fast
        raise ImportError("test_f was imported")
    """, test_s="""
        def test_s():
            pass
    """)
    for expr, imported in (("not fast and not heavy", False), ("not fast", False), ("e2e and not fast", False),
                           ("", True), ("fast", True), ("heavy", True), ("not heavy", True), ("e2e or fast", True)):
        out = inner.runpytest_inprocess(*(["-m", expr] if expr else []), "--collect-only", "-q").stdout.str()
        assert ("test_f was imported" in out) == imported, (expr, out[-2000:])


@pytest.mark.fast
def test_the_processes_it_watches_for():
    """Command lines as `ps` shows them for a Ray node and an MLflow server, and ones the fast tier may start."""
    site = "/venv/lib/python3.11/site-packages"
    assert what_it_is([f"{site}/ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=0"]) == "a Ray session"
    assert what_it_is([f"{site}/ray/core/src/ray/raylet/raylet", "--node_id=1"]) == "a Ray session"
    assert what_it_is(["ray::IDLE"]) == "a Ray session"
    assert what_it_is(["/venv/bin/python", "-u", f"{site}/ray/_private/workers/default_worker.py"]) == "a Ray session"
    assert what_it_is(["/venv/bin/python", "-m", "mlflow", "server", "--port", "5000"]) == "an MLflow server"
    assert what_it_is(["/venv/bin/python", "-m", "uvicorn", "--port", "5000",
                       "mlflow.server.fastapi_app:app"]) == "an MLflow server"
    assert what_it_is(["/venv/bin/python", "-m", "benchxfer.cli", "sweep", "bad.yaml"]) is None
    assert what_it_is(["/venv/bin/python", "-c", "import benchxfer.trialdir, mlflow"]) is None
    assert what_it_is(["git", "rev-parse", "HEAD"]) is None


def test_a_fast_test_that_starts_ray_or_mlflow_itself_or_in_a_subprocess_fails(inner, monkeypatch):
    """Slow tier: it starts a real Ray session (in the test's process: its GCS and raylet are processes of its own too)
    and a real MLflow server (a process the test starts), in a pytest process of its own."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for k in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    inner.makepyfile(test_w="""
        import pytest

        pytestmark = pytest.mark.fast

        def test_leaves_ray_running():
            import ray

            ray.init(num_cpus=1, include_dashboard=False)  # the lightest real session: a GCS and a raylet

        def test_mlflow_server_started_and_stopped(tmp_path):
            from benchxfer.tracking import LocalServer

            server = LocalServer(home=tmp_path)
            server.start()
            server.stop()
    """)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rf", "--tb=line", timeout=300)
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    for name, why in [("test_leaves_ray_running", "left ray.is_initialized() true and started a Ray session"),
                      ("test_mlflow_server_started_and_stopped", "started an MLflow server (pid")]:
        assert f"test_w.py::{name} is marked `fast` but {why}" in out, out[-3000:]
    assert out.count(MOVE) >= 2
