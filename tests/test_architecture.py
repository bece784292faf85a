"""ARCHITECTURE.md tells the truth about what the source does: every environment variable benchxfer reads or sets
is in its table and none is read when a module is imported; only tracking.py spells an MLflow tag name, and only
it writes a trial's MLflow run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "ARCHITECTURE.md").read_text()
# the families of environment variables benchxfer and the libraries it configures read
VARIABLE = re.compile(r"(?:BENCHXFER|RAY|TUNE|MLFLOW|OMP|MKL|NO_ALBUMENTATIONS|CUDA|NCCL|TORCH|PYTORCH)(?:_[A-Z0-9]+)+")
TAG = re.compile(r"\bbenchxfer\.[a-z_]+(?:\.[a-z_]+)*")
# "benchxfer.<word>" strings that are no tag: click's ctx.meta key for --debug
NOT_TAGS = {"benchxfer.debug"}


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), str(p)) for p in sorted((REPO / "benchxfer").rglob("*.py"))}


TREES = _trees()
MODULES = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__") for p in TREES}


def _strings(tree: ast.Module) -> list[ast.Constant]:
    """The string constants of ``tree`` but docstrings (f-strings' literal parts included)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def variables_in_source() -> dict[str, str]:
    """Every environment variable's name written as a string in benchxfer, with the first file that writes it."""
    out: dict[str, str] = {}
    for path, tree in TREES.items():
        for node in _strings(tree):
            if VARIABLE.fullmatch(node.value):
                out.setdefault(node.value, str(path.relative_to(REPO)))
    return out


def variables_in_doc() -> set[str]:
    section = DOC.split("### Environment variables", 1)[1].split("\n### ", 1)[0]
    return {v for row in section.splitlines() if row.startswith("| `") for v in re.findall(r"`([A-Z0-9_]+)`",
                                                                                             row.split(" | ")[0])}


def test_every_environment_variable_is_in_the_table_and_no_other():
    found = variables_in_source()
    assert len(found) > 15  # the walk found them
    assert sorted(set(found) - variables_in_doc()) == []
    assert sorted(variables_in_doc() - set(found)) == []


def reads_at_import(path: Path, tree: ast.Module) -> list[str]:
    """``os.environ`` / ``os.getenv`` in code that runs when the module is imported (outside any function)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside |= {id(n) for n in ast.walk(node)}
    return [f"{path.relative_to(REPO)}:{n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree)
            if id(n) not in inside and isinstance(n, ast.Attribute) and ast.unparse(n) in ("os.environ", "os.getenv")]


def test_no_variable_is_read_at_import():
    """A variable is read when used, after the command line's start-up check (environment.check) has refused a bad
    value; the two exceptions, in the package's entry, set libraries' variables before the libraries can be
    imported: albumentations' (no network on import) and MLflow's file store."""
    found = [r for path, tree in TREES.items() for r in reads_at_import(path, tree)]
    assert found == ['benchxfer/__init__.py:10: os.environ', 'benchxfer/__init__.py:13: os.environ'], found
    probe = ast.parse("import os\nLIMIT = float(os.environ.get('X', '1'))\ndef f():\n    return os.getenv('Y')\n")
    assert reads_at_import(REPO / "probe.py", probe) == ["probe.py:2: os.environ"]  # the check sees one


def test_the_placement_timeout_is_read_when_the_watch_is_made(monkeypatch):
    from benchxfer.launch.cluster import PLACEMENT_LIMIT_S, WARN_S, PlacementWatch

    monkeypatch.delenv("BENCHXFER_PLACEMENT_TIMEOUT_S", raising=False)
    w = PlacementWatch()
    assert (w.limit_s, w.warn_s) == (PLACEMENT_LIMIT_S, WARN_S)
    monkeypatch.setenv("BENCHXFER_PLACEMENT_TIMEOUT_S", "30")
    w = PlacementWatch()
    assert (w.limit_s, w.warn_s) == (30.0, 15.0)


def test_only_tracking_spells_a_tag_name():
    """A tag name ("benchxfer.<name>") in any module but tracking.py is a second statement of a tracking fact;
    module names ("benchxfer.data", "benchxfer.zoo.store:x") and ``NOT_TAGS`` are not tags."""
    out = []
    for path, tree in TREES.items():
        if path.name == "tracking.py" and path.parent.name == "benchxfer":
            continue
        for node in _strings(tree):
            for m in TAG.findall(node.value):
                if m not in MODULES and m not in NOT_TAGS:
                    out.append(f"{path.relative_to(REPO)}:{node.lineno}: {m}")
    assert out == []
    from benchxfer import tracking

    tags = {v for k, v in vars(tracking).items() if k.isupper() and isinstance(v, str) and TAG.fullmatch(v)}
    assert len(tags) >= 14 and all(f"`{t}`" in DOC or f"`.{t.split('.', 1)[1]}`" in DOC for t in tags), sorted(tags)


def test_only_tracking_writes_a_trial_runs_state():
    """A trial run's ``benchxfer.status`` tag is written by ``tracking.TrialRun``'s methods alone (open, mark_running,
    mark_failed, mark_interrupted, mark_finished, mark_stopped): any other module that names the STATUS constant only
    reads it (results.py, the report's rows)."""
    readers = {"benchxfer/report/results.py"}
    out = []
    for path, tree in TREES.items():
        where = str(path.relative_to(REPO))
        if where == "benchxfer/tracking.py" or where in readers:
            continue
        for node in ast.walk(tree):
            named = (isinstance(node, ast.ImportFrom) and node.module == "benchxfer.tracking"
                     and any(a.name == "STATUS" for a in node.names)) \
                or (isinstance(node, ast.Attribute) and node.attr == "STATUS"
                    and isinstance(node.value, ast.Name) and node.value.id == "tracking")
            if named:
                out.append(f"{where}:{node.lineno}")
    assert out == []


def run_writes() -> set[str]:
    """MlflowClient's methods that write a run: those that take its ``run_id`` first (but the reads: get_, list_,
    download_), and create_run; taken from the installed MLflow, so a method it adds counts."""
    import inspect

    from mlflow.tracking import MlflowClient

    takes_run = {m for m, f in vars(MlflowClient).items() if callable(f) and not m.startswith("_")
                 and list(inspect.signature(f).parameters)[1:2] == ["run_id"]}
    return {m for m in takes_run if not m.startswith(("get_", "list_", "download_"))} | {"create_run"}


def writes_to_runs(path: Path, tree: ast.Module, writes: set[str]) -> list[str]:
    """The calls ``<anything>.<a run-writing method>(...)`` in ``tree``."""
    return [f"{path.relative_to(REPO)}:{n.lineno}: {n.func.attr}" for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in writes]


def test_only_tracking_writes_a_trial_run():
    """A trial's MLflow run is written by ``tracking.TrialRun`` alone (the driver, the loop and the lr search call
    its methods, none of which is named as MlflowClient's): no other module calls a method of MLflow's client that
    writes a run, but ``report/publish.py``, which publishes the report on the sweep's run and names no tag of a
    trial's run, and the store it sets that run's report tags through (``report/runstore.py``: tags only)."""
    writes = run_writes()
    assert {"set_tag", "log_batch", "log_inputs", "log_artifact", "set_terminated", "delete_tag"} <= writes
    from benchxfer.tracking import TrialRun

    assert not writes & set(vars(TrialRun)), "TrialRun's methods would read as MlflowClient's here"
    publish = REPO / "benchxfer/report/publish.py"
    store = REPO / "benchxfer/report/runstore.py"  # the store publish writes the sweep run's two report tags through
    found = [w for path, tree in TREES.items() if path.name != "tracking.py" or path.parent.name != "benchxfer"
             for w in writes_to_runs(path, tree, writes) if path not in (publish, store)]
    assert found == []
    assert writes_to_runs(publish, TREES[publish], writes)  # the check sees the sweep run's writes
    assert writes_to_runs(store, TREES[store], writes) == [f"{store.relative_to(REPO)}:{n.lineno}: set_tag"
                                                           for n in ast.walk(TREES[store]) if isinstance(n, ast.Call)
                                                           and isinstance(n.func, ast.Attribute)
                                                           and n.func.attr == "set_tag"]  # only tags, no other write
    named = {a.name for path in (publish, store) for n in ast.walk(TREES[path]) if isinstance(n, ast.ImportFrom)
             and n.module == "benchxfer.tracking" for a in n.names if a.name.isupper()}
    # they find the sweep's run and tag its report (MLflow's table list included); no trial run's tag
    assert named <= {"ROLE", "REPORT", "LOGGED_ARTIFACTS"} and {"ROLE", "REPORT"} <= named, named
    probe = ast.parse("def f(run, client):\n    run.attach('x', 'a.txt')\n    client.set_tag(run.run_id, 'k', 'v')\n")
    assert writes_to_runs(REPO / "probe.py", probe, writes) == ["probe.py:3: set_tag"]
