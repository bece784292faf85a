"""The guard of the fast tier (a pytest plugin, loaded by conftest.py).

A test marked ``fast`` runs in ``make test-fast``: it needs no Ray session, no cluster, no MLflow server and no
subprocess sweep. This plugin fails a ``fast`` test that breaks that promise, with a message to move it to the slow
tier (the slow tier is every test without the mark, so a test that forgets its mark is slow, never fast):

- it asks for a fixture that starts Ray or an MLflow server (``ray_session``, ``mlflow_server``, ``mlflow_uri``,
  or any fixture built on them): it fails at set-up, before the fixture starts anything;
- it is also marked ``e2e`` (the two marks contradict each other);
- it leaves ``ray.is_initialized()`` true where it was false before;
- it, or a process it started (a ``benchxfer sweep`` in a subprocess), starts a Ray node's processes or an MLflow
  server: a watcher polls this process's descendants while the test runs.

And a run that can select no ``fast`` test (the slow tier) does not import the modules marked fast as a whole.
"""

from __future__ import annotations

import itertools
import sys
import threading

import psutil
import pytest

FAST = "fast"
SLOW_FIXTURES = {"ray_session": "a Ray session", "mlflow_server": "an MLflow server", "mlflow_uri": "an MLflow server"}
POLL_S = 0.5
MOVE = "move it to the slow tier: remove its `fast` mark (every test without the mark runs in the slow tier)"

guard_key = pytest.StashKey["Watch"]()


def what_it_is(cmdline: list[str]) -> str | None:
    """What a process is, by its command line, when it is one the fast tier must not start."""
    text = " ".join(cmdline)
    if "mlflow" in text and ("server" in text.split() or "mlflow.server" in text):
        return "an MLflow server"
    names = ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard/agent.py", "ray/dashboard")
    if any(n in text for n in names):
        return "a Ray session"
    return None


class Watch:
    """Polls this process's descendants for Ray and MLflow server processes that appear while a test runs.

    Descendants that lived before the test (and their own children: a slow-tier Ray session of the same pytest run
    starting a worker) are not the test's doing."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.before = {p.pid for p in self._descendants()}
        self.ray_before = _ray_initialized()
        self.seen: dict[int, tuple[str, str]] = {}
        self.reported: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fast-tier-guard", daemon=True)
        self._thread.start()

    def _descendants(self) -> list[psutil.Process]:
        try:
            return self.me.children(recursive=True)
        except psutil.Error:
            return []

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.poll()

    def poll(self) -> None:
        for p in self._descendants():
            if p.pid in self.before or p.pid in self.seen:
                continue
            try:
                if any(a.pid in self.before for a in p.parents()):
                    continue
                kind = what_it_is(p.cmdline())
            except psutil.Error:
                continue
            if kind:
                self.seen[p.pid] = (kind, " ".join(p.cmdline())[:160])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def problems(self) -> list[str]:
        first: dict[str, str] = {}
        for pid, (kind, cmd) in sorted(self.seen.items()):
            first.setdefault(kind, f"started {kind} (pid {pid}: {cmd})")
        found = sorted(first.values())
        if _ray_initialized() and not self.ray_before:
            found.insert(0, "left ray.is_initialized() true")
        return found


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and hasattr(ray, "is_initialized") and ray.is_initialized())


def _fail(item: pytest.Item, why: str) -> None:
    pytest.fail(f"{item.nodeid} is marked `fast` but {why}; {MOVE}", pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(FAST) is None:
        return
    if item.get_closest_marker("e2e") is not None:
        _fail(item, "also marked `e2e`")
    used = [f"{name} ({what})" for name, what in SLOW_FIXTURES.items() if name in item.fixturenames]
    if used:
        _fail(item, f"uses the fixture {', '.join(used)}")
    item.stash[guard_key] = Watch()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield
    watch = item.stash.get(guard_key, None)
    if watch is not None:
        watch.poll()
        watch.reported = watch.problems()
        if watch.reported:
            _fail(item, " and ".join(watch.reported))
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    result = yield
    watch = item.stash.get(guard_key, None)
    if watch is not None:
        del item.stash[guard_key]
        watch.stop()
        late = [p for p in watch.problems() if p not in watch.reported]
        if late:
            _fail(item, " and ".join(late))
    return result


FAST_MODULE = f"pytestmark = pytest.mark.{FAST}"  # the line of a module whose every test is in the fast tier


def _may_select_a_fast_test(markexpr: str) -> bool:
    """Could ``-m MARKEXPR`` run a test marked ``fast``, whatever its other marks? A mark expression is names joined
    by ``and``, ``or``, ``not`` and parentheses: Python's own boolean syntax, evaluated with ``fast`` true and every
    other name true or false in turn. An expression beyond that (a mark with arguments): yes, as nothing is known."""
    if not markexpr.strip():
        return True
    try:
        code = compile(markexpr, "-m", "eval")
        others = [name for name in code.co_names if name != "fast"]
        return any(eval(code, {"__builtins__": {}}, {"fast": True, **dict(zip(others, values))})
                   for values in itertools.product((False, True), repeat=len(others)))
    except Exception:
        return True


def pytest_ignore_collect(collection_path, config):
    """A run that can select no ``fast`` test -- the slow tier, ``-m "not fast and not heavy"`` (tests/run_tiers.sh)
    -- does not import the modules marked fast as a whole (49 of 79: they cost the slow tier about 6 of its 17
    seconds of collection); every other run collects them as usual."""
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if _may_select_a_fast_test(config.getoption("markexpr") or ""):
        return None
    with open(collection_path, encoding="utf-8") as f:
        return True if any(line.rstrip() == FAST_MODULE for line in f) else None
