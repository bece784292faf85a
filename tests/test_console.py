"""The console of a sweep: benchxfer's compact view (counts, ETA, running trials) instead of Ray's output.

The view's arithmetic is tested without Ray; one small real sweep through the CLI checks that the console
names every trial key, stays within its documented line budget (docs/sweep-file.md, "What a sweep
prints"), and that Ray's and MLflow's output went to the log file it names."""

import logging
import os
import re
import time

import pytest

from benchxfer.launch import console
from benchxfer.launch.console import Board, Running, duration, running_line, val_score

# -- the view, without Ray -----------------------------------------------------------------------


@pytest.mark.fast
def test_counts_follow_starts_results_and_ends():
    b = Board(total=5, started=0.0)
    b.start("a", "k_a", 0.0, epochs=3)
    b.start("b", "k_b", 0.0)
    assert (b.done, len(b.running), b.pending, b.failed) == (0, 2, 3, 0)
    b.result("a", 2, ("val_auroc", 0.8125))
    assert running_line(b.running["a"]) == "k_a  epoch 2/3  val_auroc 0.8125"
    assert running_line(b.running["b"]) == "k_b  epoch -"
    b.end("a", 100.0, ok=True)
    b.end("b", 50.0, ok=False)
    assert (b.done, len(b.running), b.pending, b.failed) == (1, 0, 3, 1)
    assert b.counts(100.0) == "1/5 done, 0 running, 3 pending, 1 failed; elapsed 1m40s, ETA 2m30s"


@pytest.mark.fast
def test_eta_is_unknown_until_a_trial_finishes_then_mean_duration_over_slots():
    b = Board(total=6, started=0.0)
    b.start("a", "a", 0.0)
    b.start("b", "b", 0.0)
    assert b.eta(10.0) is None and b.counts(10.0).endswith("ETA ?")
    b.end("a", 40.0, ok=True)  # one trial took 40 s; 2 slots seen in use
    b.start("c", "c", 40.0)
    # pending 3 x 40 s, b is 60 s old (nothing left of the mean), c is 20 s old (20 s left): 140 s over 2 slots
    assert b.eta(60.0) == pytest.approx((3 * 40 + 0 + 20) / 2)
    # a failed trial adds no duration and is not pending
    b.end("c", 61.0, ok=False)
    assert b.pending == 3 and b.durations == [40.0]
    # a trial skipped as finished before counts as done, but its few seconds say nothing of the ETA
    b.start("d", "d", 61.0)
    b.end("d", 62.0, ok=True, timed=False)
    assert b.done == 2 and b.durations == [40.0]


@pytest.mark.fast
def test_durations_and_scores_read_as_people_write_them():
    assert [duration(s) for s in (0, 42, 185, 7620)] == ["0s", "42s", "3m05s", "2h07m"]
    assert val_score({"val_loss": 0.5, "val_auroc": 0.75}, "auroc") == ("val_auroc", 0.75)
    assert val_score({"val_loss": 0.5}, "dice") == ("val_loss", 0.5)
    assert val_score({"done": True}, "auroc") is None
    assert running_line(Running("k", 0.0, None, 4, None)) == "k  epoch 4"


def _in_ray_thread(fn, name="ray_listen_error_messages"):
    """Run ``fn`` as Ray's driver does its printing: on one of its named threads."""
    import threading

    t = threading.Thread(target=fn, name=name)
    t.start()
    t.join()


@pytest.mark.fast
def test_noise_goes_to_the_file_and_comes_back(tmp_path, capsys):
    noise = console.NoiseToFile(tmp_path / "logs" / "x.log")
    ray_log = logging.getLogger("ray.tune.test_console")
    before = logging.getLogger("ray").handlers[:]
    from ray._private import worker

    original = worker.print_to_stdstream
    noise.open()
    ray_log.warning("token authentication is disabled")
    logging.getLogger("mlflow").warning("mlflow says hello")
    # what Ray's driver prints of an actor's death goes through this function, on its listen_error_messages thread
    _in_ray_thread(lambda: worker.print_to_stdstream(
        {"lines": ["actor died: preemption watcher"], "pid": "raylet", "is_err": False}, ignore_prefix=False))
    noise.close()
    text = (tmp_path / "logs" / "x.log").read_text()
    assert "token authentication is disabled" in text and "mlflow says hello" in text
    assert "actor died: preemption watcher" in text and "\x1b[" not in text  # no terminal colours in a file
    out = capsys.readouterr()
    assert "token authentication" not in out.err and "actor died" not in out.out + out.err
    assert logging.getLogger("ray").handlers == before and worker.print_to_stdstream is original

    # the view closes with Ray's output still routed: Tune stops the trials' actors after the view's last hook,
    # and their dying words (a SIGTERM traceback) arrive then
    late = console.NoiseToFile(tmp_path / "logs" / "late.log")
    late.open()
    late.close(keep_ray_output=True)
    assert logging.getLogger("ray").handlers == before
    _in_ray_thread(lambda: worker.print_to_stdstream({"lines": ["SystemExit: 1"], "pid": 27702, "is_err": True},
                                                     ignore_prefix=False), "ray_print_logs")
    late.close()
    assert "SystemExit: 1" in (tmp_path / "logs" / "late.log").read_text()
    out = capsys.readouterr()
    assert "SystemExit" not in out.out + out.err and worker.print_to_stdstream is original


# -- a real sweep through the CLI ---------------------------------------------------------------

def line_budget(trials: int, experiments: int, seconds: float) -> int:
    """docs/sweep-file.md, "What a sweep prints": 2 lines per trial, 2 per Tune experiment plus one per minute
    it runs, and 16 more (header, what went to MLflow, closing table, hints)."""
    return 2 * trials + 2 * experiments + int(seconds // 60) + 16


@pytest.mark.e2e
def test_sweep_console_names_every_trial_within_its_line_budget(tmp_path, ray_session, mlflow_uri):
    from click.testing import CliRunner
    from e2e_support import write_sweep

    from benchxfer import paths
    from benchxfer.cli import main
    from benchxfer.plan.planning import make_plan

    path = write_sweep(tmp_path, "console", lr="[0.001, 0.01]", seeds=2, epochs=2, n_train=32, max_concurrent=None)
    keys = [t.key for t in make_plan(str(path), None, write_synthetic=True).trials]
    assert len(keys) == 4
    started = time.time()
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    out = res.output
    assert res.exit_code == 0, out
    # the threads console routes by (a coupling to Ray's internals) are the ones this running driver has
    import threading

    assert console.RAY_PRINT_THREADS <= {t.name for t in threading.enumerate()}
    # 26 lines for 4 trials in under a minute: a line per epoch per trial (8 more) would break it
    assert len(out.splitlines()) <= line_budget(4, 1, time.time() - started), out
    for key in keys:
        assert re.search(rf"^start +{re.escape(key)}$", out, re.M), (key, out)
        assert re.search(rf"^done +{re.escape(key)}  test_auroc [0-9.]+", out, re.M), (key, out)
    assert "4/4 done, 0 running, 0 pending, 0 failed" in out
    for noise in ("run_trial_", "Trial status", "+-----", "(pid=", "token"):
        assert noise not in out, (noise, out)

    # the log file named at the start holds Ray's side, and names the session folder of the workers' output
    log = re.search(r"Ray and MLflow output in (\S+\.log)", out)
    assert log, out
    text = open(log.group(1)).read()
    assert "workers' own stdout/stderr files are in" in text
    # Tune's trial folders are the trial keys
    tune_dirs = {p.name for p in (paths.sweep_dir("console") / "tune").glob("*/*") if p.is_dir()}
    assert set(keys) <= tune_dirs, tune_dirs


def _tune_trials(param_space, shared):
    """Tune's own trials for ``param_space``, made as ``tune.run`` makes them (placeholders injected first: with
    plain data they change nothing), with the creators of :func:`console.tune_settings`; no Ray session is needed
    to make them."""
    import copy

    from ray.tune.experiment import Experiment
    from ray.tune.impl.placeholder import create_resolvers_map, inject_placeholders
    from ray.tune.search.basic_variant import BasicVariantGenerator

    names = console.TrialNames.of(shared)
    config = inject_placeholders(copy.deepcopy(param_space), create_resolvers_map())
    exp = Experiment("names", lambda c: None, config=config, trial_name_creator=names.name,
                     trial_dirname_creator=names.dirname)
    gen = BasicVariantGenerator()
    gen.add_configurations([exp])
    return [t for t in iter(gen.next_trial, None)]


@pytest.mark.fast
def test_tune_names_and_folders_are_the_trial_keys(tmp_path):
    from ray import tune

    from benchxfer.launch.sweep import Launch
    from benchxfer.launch.tunespace import Shared, TrialIndex, planned, searched
    from benchxfer.recipes import TrainConfig
    from benchxfer.trial import Trial

    def trial(key, lr):
        return Trial(key=key, init="scratch", dataset="chestxray14", recipe="systematic-cls", lr=lr, seed=0,
                     shot=None, task="multilabel", metric="auroc", overrides={}, config=TrainConfig(epochs=2))

    class Cell:  # an lr search's cell: the trial exists once its lr is picked
        def make(self, lr):
            return trial(f"cell_lr{lr:g}", lr)

    grid = [trial("scratch_chestxray14_lr0.001_s0", 0.001), trial("a/b c_lr0.01", 0.01)]
    shared = Shared(TrialIndex.of(grid, {"scratch|chestxray14": Cell()}), Launch("s", "http://127.0.0.1:9"))
    made = _tune_trials({"trial": tune.grid_search([planned(t) for t in grid])}, shared)
    assert [t.config for t in made] == [{"trial": {"key": t.key, "lr": t.lr}} for t in grid]  # plain data
    assert [t.custom_trial_name for t in made] == [t.key for t in grid]
    assert [t.custom_dirname for t in made] == ["scratch_chestxray14_lr0.001_s0", "a_b_c_lr0.01"]
    (found,) = _tune_trials({"trial": searched("scratch|chestxray14", 0.5)}, shared)
    assert found.custom_trial_name == "cell_lr0.5"
    assert found.custom_dirname == f"cell_lr0.5-{found.trial_id.rsplit('_', 1)[-1]}"  # the searcher may pick twice


@pytest.mark.fast
def test_a_trials_saved_state_does_not_grow_with_the_experiment():
    """Tune pickles each trial's name creators into the trial's entry of the experiment state (cached per trial,
    saved again and again): they carry the lr search's cells, not the experiment's trials. They once held the whole
    trial index: 190 KB a creator at 256 trials, 100 MB of experiment state, 5.4 GB of driver at 1,024."""
    from ray import tune

    from benchxfer.launch.sweep import Launch
    from benchxfer.launch.tunespace import Shared, TrialIndex, planned
    from benchxfer.recipes import TrainConfig
    from benchxfer.trial import Trial

    def entry(n: int) -> int:
        grid = [Trial(key=f"scratch_chestxray14_lr0.001_s{s:04d}_e2da53be", init="scratch", dataset="chestxray14",
                      recipe="systematic-cls", lr=0.001, seed=s, shot=None, task="multilabel", metric="auroc",
                      overrides={}, config=TrainConfig(epochs=1)) for s in range(n)]
        shared = Shared(TrialIndex.of(grid), Launch("s", "http://127.0.0.1:9"))
        made = _tune_trials({"trial": tune.grid_search([planned(t) for t in grid])}, shared)
        assert made[0].custom_trial_name == grid[0].key
        return len(made[0].get_json_state()[0])

    small, large = entry(2), entry(1000)
    assert large - small < 16 and large < 20_000, (small, large)  # a few characters of its tag, not the grid


@pytest.mark.fast
def test_tune_settings_quiet_by_default_and_ray_full_output_when_verbose(monkeypatch, tmp_path):

    from benchxfer.launch.sweep import Launch
    from benchxfer.launch.tunespace import Shared, TrialIndex

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    space = Shared(TrialIndex(), Launch("s", "http://127.0.0.1:9"))  # the experiment's trials: none here
    tune_kw, run_kw = console.tune_settings("s", space, verbose=True)
    assert set(tune_kw) == {"trial_name_creator", "trial_dirname_creator"}
    assert run_kw == {"name": "s-01", "verbose": 1}
    tune_kw, run_kw = console.tune_settings("s", space, verbose=False, echo=lambda line: None)
    (view,) = run_kw.pop("callbacks")
    assert run_kw == {"name": "s-01", "verbose": 0} and isinstance(view, console.ConsoleView)
    # Tune's newer output engine prints a header even at verbose=0: off for the experiment, back after it
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    view.close()
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ


@pytest.mark.fast
def test_the_view_pickles_after_ray_replaced_print(monkeypatch, tmp_path):
    """Tune pickles its callbacks with the experiment; Ray's tqdm support swaps ``builtins.print`` in the driver
    once a worker's output arrives (ray.experimental.tqdm_ray), and pickle then refuses the original ``print``.
    A killed halving search once failed to start again on exactly this."""
    import builtins

    from ray import cloudpickle

    from benchxfer.launch.sweep import Launch
    from benchxfer.launch.tunespace import Shared, TrialIndex

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path))
    _, run_kw = console.tune_settings("s", Shared(TrialIndex(), Launch("s", "http://127.0.0.1:9")), echo=print)
    (view,) = run_kw["callbacks"]
    original = builtins.print
    monkeypatch.setattr(builtins, "print", lambda *a, **k: original(*a, **k))  # what tqdm_ray.instance() does
    copy = cloudpickle.loads(cloudpickle.dumps(view))
    assert copy.echo is builtins.print and copy.experiment == "s-01" and view.echo is original
    view.close()


@pytest.mark.fast
def test_the_printing_threads_are_named_as_rays_driver_names_them():
    """The names console routes by (``RAY_PRINT_THREADS``) are the names the installed Ray's driver gives the
    threads it starts (``threading.Thread(name=...)`` in its worker module): a Ray that renames them fails here (and
    in the console's sweep test, against the running driver's threads)."""
    import ast
    import inspect

    from ray._private import worker

    names = {kw.value.value for n in ast.walk(ast.parse(inspect.getsource(worker)))
             if isinstance(n, ast.Call) and ast.unparse(n.func) == "threading.Thread"
             for kw in n.keywords if kw.arg == "name" and isinstance(kw.value, ast.Constant)}
    assert console.RAY_PRINT_THREADS <= names, names


@pytest.mark.fast
def test_ray_s_printing_threads_go_to_the_log_file_and_the_rest_stays(tmp_path, capsys):
    """What Ray's driver threads print (the workers' forwarded output, actor deaths) lands in the log file, colour
    codes dropped; the main thread's lines stay on the console; closing puts sys.stdout and sys.stderr back."""
    import sys
    import threading

    noise = console.NoiseToFile(tmp_path / "x.log")
    before = sys.stdout, sys.stderr
    noise.open()
    try:
        print("ours")
        for name in sorted(console.RAY_PRINT_THREADS):
            t = threading.Thread(target=lambda n=name: print(f"\x1b[36m(pid=7)\x1b[0m from {n}", file=sys.stderr),
                                 name=name)
            t.start()
            t.join()
    finally:
        noise.close()
    assert (sys.stdout, sys.stderr) == before
    out = capsys.readouterr()
    assert out.out == "ours\n" and out.err == ""
    assert (tmp_path / "x.log").read_text().splitlines() == [
        f"(pid=7) from {n}" for n in sorted(console.RAY_PRINT_THREADS)]
