"""A halving lr search end to end on the shared Ray session and a real MLflow server: two cells searched in one
Tune experiment, one trial at a time, each cell halved by its own ASHA. Its driver is killed with SIGKILL midway
and the search resumed. Which trials stop, and where, is recomputed here from the asynchronous successive halving
rule (Li et al. 2020) applied to the validation losses the trials logged to MLflow, across the kill; then stage 2
runs every seed at the picked lr."""

import json
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from benchxfer import paths
from benchxfer.trialdir import TrialDir


def read_stopped(tdir):
    stop = TrialDir(tdir).stopped()
    return None if stop is None else {"rung": stop.rung, "epoch": stop.epoch}


def read_result(tdir):
    res = TrialDir(tdir).result()
    return None if res is None else res.to_dict()

pytestmark = pytest.mark.e2e

SWEEP = """
name: halving
mode: tune-then-repeat
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {n_train: 32, n_val: 32, n_test: 32, size: 32, seed: 4}
  - name: shenzhen
    root: synthetic
    synthetic: {n_train: 32, n_val: 32, n_test: 32, size: 32, seed: 4}
lr: {search: loguniform, low: 1.0e-4, high: 1.0, trials: 5, scheduler: asha, min_epochs: 1, eta: 3}
seeds: 2
overrides: {arch: resnet18, size: 32, batch_size: 16, epochs: 3, patience: 10, loader_workers: 0}
resources: {workers: 1, cpus_per_worker: 1, max_concurrent: 1}
failure: {max_retries: 0}
"""
ETA, RUNGS = 3, (1,)  # epochs 3, min_epochs 1, eta 3: rungs at 1 (and 3, the last epoch, which is no rung)


def expected_stops(curves: list[list[float]]) -> dict[int, int]:
    """Trial index -> rung it stops at, for trials run one after another: at each rung, a trial whose loss is
    worse than the (1 - 1/eta) quantile of the rewards recorded there before it stops (the first never does)."""
    recorded: dict[int, list[float]] = {r: [] for r in RUNGS}
    out = {}
    for i, curve in enumerate(curves):
        for rung in RUNGS:
            reward = -curve[rung - 1]
            seen = recorded[rung]
            cut = np.nanpercentile(seen, (1 - 1 / ETA) * 100) if seen else None
            recorded[rung].append(reward)
            if cut is not None and reward < cut:
                out[i] = rung
                break
    return out


DRIVER = """
import sys
from benchxfer.plan.planning import make_plan
from benchxfer.launch.runner import launch_of
from benchxfer.launch.search import parse_search_options, run_stage1
from benchxfer.launch.sweep import ensure_ray
from benchxfer.tracking import SweepRecorder
path, uri, address = sys.argv[1:4]
plan = make_plan(path, write_synthetic=True)
ensure_ray(address)
opts = parse_search_options({"scheduler": "asha", "min_epochs": 1, "eta": 3}, "lr")
run_stage1(plan, launch_of(plan, uri), SweepRecorder(uri, plan.spec.name), echo=print, options=opts)
"""


def test_a_halving_search_killed_midway_resumes_by_the_rule_and_stage2_uses_the_pick(tmp_path, ray_session,
                                                                                     mlflow_uri):
    """Stage 1 in a driver of its own, killed once two trials are done and the third trains; resumed here, it trains
    no finished or stopped trial again and redoes at most the interrupted epoch, in one MLflow run per trial; the
    stops follow the rule on the curves as trained across the kill, and each cell's lr is its best finished trial's.
    Stage 2 runs the other seed at that lr; a rerun of stage 1 searches nothing."""
    import os
    import signal

    from e2e_support import epoch_log, runs_by_key, spawn, wait_for

    from benchxfer.launch.runner import launch_of, pending
    from benchxfer.launch.search import parse_search_options, run_stage1
    from benchxfer.launch.sweep import run_trials
    from benchxfer.plan.planning import expand, make_plan
    from benchxfer.tracking import SweepRecorder

    path = tmp_path / "halving.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    tdirs = paths.sweep_dir("halving") / "trials"
    address = ray_session.get_runtime_context().gcs_address
    proc = spawn(["-c", DRIVER, str(path), mlflow_uri, address])

    def third_started():  # mid-search: two trials done (finished or stopped), the third training
        return tdirs.exists() and len([t for t in tdirs.iterdir() if epoch_log(t)]) >= 3

    wait_for(third_started, "the third trial", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.name: len(epoch_log(t)) for t in tdirs.iterdir()}
    done_before = {t.name for t in tdirs.iterdir() if read_result(t) or read_stopped(t)}
    wait_for(lambda: not any(os.path.exists(f"/proc/{epoch_log(t)[-1]['pid']}") for t in tdirs.iterdir()
                             if epoch_log(t) and not read_result(t) and not read_stopped(t)), "the trial's end",
             timeout=60)

    plan = make_plan(str(path), write_synthetic=True)
    launch = launch_of(plan, mlflow_uri)
    recorder = SweepRecorder(mlflow_uri, "halving")
    opts = parse_search_options({"scheduler": "asha", "min_epochs": 1, "eta": ETA}, "lr")
    assert plan.spec.lr.options == opts  # the sweep file's keys, parsed by spec.py
    lines: list[str] = []
    best = run_stage1(plan, launch, recorder, echo=lines.append, options=opts)
    assert set(best) == {"scratch|chestxray14", "scratch|shenzhen"}

    runs = runs_by_key(mlflow_uri, "halving")
    assert len(runs) == 10 and all(len(v) == 1 for v in runs.values())  # 5 per cell, one run each, none new
    client = MlflowClient(mlflow_uri)
    for dataset in ("chestxray14", "shenzhen"):
        mine = sorted((v[0] for v in runs.values() if v[0].data.params["dataset"] == dataset),
                      key=lambda r: r.info.start_time)
        curves = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, "val_loss"),
                                           key=lambda m: m.step)] for r in mine]
        want = expected_stops(curves)  # the rule, on the curves as trained across the kill
        assert want, "the fixed seed gives at least one stop per cell"
        for i, r in enumerate(mine):
            key = r.data.tags["benchxfer.trial_key"]
            tdir = tdirs / key
            if key in done_before:  # finished or stopped before the kill: not trained again
                assert len(epoch_log(tdir)) == before[key]
            assert len(epoch_log(tdir)) <= len(curves[i]) + 1  # the interrupted one redoes at most 1 epoch
            marker = read_stopped(tdir)
            if i in want:
                assert marker is not None and marker["rung"] == want[i] and marker["epoch"] == want[i] - 1
                assert r.data.tags["benchxfer.status"] == "stopped" and r.data.tags["benchxfer.rung"] == str(want[i])
                assert r.info.status == "KILLED" and len(curves[i]) == want[i]
                assert read_result(tdir) is None and not (tdir / "failed.json").exists()
            else:
                assert marker is None and read_result(tdir) is not None and len(curves[i]) == 3
                assert r.data.tags["benchxfer.status"] == "finished"
        finished = [read_result(tdirs / r.data.tags["benchxfer.trial_key"]) for i, r in enumerate(mine)
                    if i not in want]
        assert best[f"scratch|{dataset}"] == min((f["best_val_loss"], f["lr"]) for f in finished)[1]

    parent = client.get_run(recorder.parent_run_id)
    assert float(parent.data.params["best_lr.scratch.shenzhen"]) == best["scratch|shenzhen"]

    # stage 2: every seed at the picked lr; the winner (seed 0) is not trained again
    trials = expand(plan.spec, plan.cells, plan.roots, lrs={(c.init, c.dataset.name): best[f"{c.init}|{c.dataset.name}"]
                                                            for c in plan.cells})
    todo, _ = pending(trials)
    assert sorted((t.dataset, t.seed) for t in todo) == [("chestxray14", 1), ("shenzhen", 1)]
    run_trials(todo, launch, echo=lambda _: None)
    for t in trials:
        res = read_result(paths.trial_dir("halving", t.key))
        assert res is not None and res["lr"] == best[f"scratch|{t.dataset}"]

    # a rerun of stage 1 searches nothing: best_lr.json holds every cell
    assert run_stage1(plan, launch, recorder, echo=lines.append, options=opts) == best
    assert json.loads((paths.sweep_dir("halving") / "best_lr.json").read_text()) == best
