"""The lr search's scheduler options, and the per-cell halving scheduler's decisions and replay (no Ray session:
Ray Tune's real ASHAScheduler is driven with the results a trial would report)."""

import json
import textwrap
from types import SimpleNamespace

import pytest

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.launch.cellsearch import EVENTS, CellScheduler
from benchxfer.launch.search import Searched, SearchOptions, parse_search_options
from benchxfer.launch.tunespace import searched
from benchxfer.trialdir import TrialDir

pytestmark = pytest.mark.fast


def test_defaults_and_a_valid_block():
    assert parse_search_options({}, "lr") == SearchOptions("none", 1, 3, "val_loss", "min")
    got = parse_search_options({"scheduler": "hyperband", "min_epochs": 2, "eta": 2, "metric": "val_auroc"}, "f: lr")
    assert got == SearchOptions("hyperband", 2, 2, "val_auroc", "max")


@pytest.mark.parametrize("raw, culprit", [
    ({"scheduler": "median"}, "lr.scheduler: must be one of none, asha, hyperband, got 'median'"),
    ({"scheduler": "asha", "eta": 1}, "lr.eta: must be an integer >= 2, got 1"),
    ({"scheduler": "asha", "min_epochs": 0}, "lr.min_epochs: must be an integer >= 1, got 0"),
    ({"scheduler": "asha", "min_epochs": True}, "lr.min_epochs: must be an integer >= 1, got True"),
    ({"scheduler": "asha", "metric": "test_auroc"}, "lr.metric: must be val_loss, best_val_loss or val_<metric>"),
    ({"scheduler": "asha", "mode": "up"}, "lr.mode: must be min or max, got 'up'"),
    ({"eta": 2}, "lr.eta: only used with scheduler asha or hyperband"),
])
def test_bad_options_are_one_line_errors(raw, culprit):
    with pytest.raises(BenchxferError) as err:
        parse_search_options(raw, "lr")
    assert str(err.value).startswith(culprit) and "\n" not in str(err.value)


SWEEP = """
name: unit
mode: tune-then-repeat
inits: [scratch]
datasets:
  - {name: chestxray14, root: synthetic}
  - {name: shenzhen, root: synthetic}
lr: {search: loguniform, low: 1.0e-4, high: 1.0, trials: 8}
overrides: {arch: resnet18, size: 32, epochs: 9}
"""


def test_rungs_follow_the_rule_per_cell_and_replay_exactly(tmp_path, monkeypatch):
    from benchxfer.plan.planning import make_plan

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    (tmp_path / "unit.yaml").write_text(textwrap.dedent(SWEEP))
    plan = make_plan(str(tmp_path / "unit.yaml"))
    a_cell, b_cell = plan.cells
    paths.sweep_dir("unit").mkdir(parents=True)
    opts = parse_search_options({"scheduler": "asha", "min_epochs": 1, "eta": 3}, "lr")
    cls = CellScheduler
    cells = {f"scratch|{c.dataset.name}": Searched(c, "unit", 0, None, plan.roots[c.dataset.name]) for c in plan.cells}
    first = cls("unit", opts, {"scratch|chestxray14": 9, "scratch|shenzhen": 9}, None, cells)

    def trial(cell, lr):  # what Tune hands the scheduler: the trial's plain config
        return SimpleNamespace(config={"trial": searched(f"scratch|{cell.dataset.name}", lr)})

    t1, t2, t3, u1 = trial(a_cell, 0.1), trial(a_cell, 0.01), trial(a_cell, 0.001), trial(b_cell, 0.5)
    for t in (t1, t2, t3, u1):
        first.on_trial_add(None, t)

    def feed(s, t, epoch, loss):
        return s.on_trial_result(None, t, {"epoch": epoch, "val_loss": loss, "best_val_loss": loss, "done": False})

    assert feed(first, t1, 0, 1.0) == "CONTINUE"  # the first at a rung always goes on
    assert feed(first, u1, 0, 9.0) == "CONTINUE"  # another cell: not compared with t1
    assert feed(first, t2, 0, 2.0) == "STOP"  # worse than the 2/3 quantile of {1.0}
    assert feed(first, t3, 0, 0.5) == "CONTINUE"
    assert feed(first, t1, 1, 0.9) == "CONTINUE"  # epoch 2: no rung
    assert feed(first, t1, 8, 0.1) == "CONTINUE"  # the last epoch is no rung: the trial ends by itself
    stopped = TrialDir.of("unit", a_cell.trial("unit", 0.01, 0, None, plan.roots["chestxray14"]).key).stopped()
    assert stopped.rung == 1 and stopped.epoch == 0 and stopped.metrics["val_loss"] == 2.0
    log = [json.loads(x) for x in (paths.sweep_dir("unit") / EVENTS).read_text().splitlines()]
    assert [e["result"]["epochs"] for e in log] == [1, 1, 1, 1, 2]

    # a new driver (a resumed sweep) rebuilds the same rungs from the log and decides the same way
    second = cls("unit", opts, {"scratch|chestxray14": 9, "scratch|shenzhen": 9}, None, cells)
    for c in ("scratch|chestxray14", "scratch|shenzhen"):
        assert [r for _, r in first.inner[c]._brackets[0]._rungs] == [r for _, r in second.inner[c]._brackets[0]._rungs]
    t4 = trial(a_cell, 0.3)
    for s in (first, second):
        s.on_trial_add(None, t4)
    # rung 1 holds {-1.0, -2.0, -0.5}: cutoff = 2/3 quantile = -0.8333; -0.9 is below it
    assert feed(first, t4, 0, 0.9) == feed(second, t4, 0, 0.9) == "STOP"


def test_the_stand_in_trial_has_what_rays_scheduler_reads():
    """CellScheduler feeds each cell's AsyncHyperBandScheduler a ``cellsearch._Key`` (a trial's stable key) and no
    controller, in place of Tune's ``Trial``. Read from Ray's installed source: its scheduler and brackets read
    only attributes of a trial that the stand-in has, and the two hooks it is given never touch the controller.
    A Ray that reads more of a trial fails here, not in a sweep."""
    import ast
    import inspect

    from ray.tune.schedulers import async_hyperband

    from benchxfer.launch.cellsearch import _Key

    tree = ast.parse(inspect.getsource(async_hyperband))
    read = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "trial"}
    read |= {n.args[1].value for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "getattr"
             and len(n.args) > 1 and ast.unparse(n.args[0]) == "trial" and isinstance(n.args[1], ast.Constant)}
    assert read and read <= set(vars(_Key("k"))), read
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AsyncHyperBandScheduler")
    for hook in ("on_trial_add", "on_trial_result"):
        fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == hook)
        assert [a.arg for a in fn.args.args[:3]] == ["self", "tune_controller", "trial"], hook
        assert "tune_controller" not in {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}, hook
