"""``mode: tune-then-repeat`` end to end on a real local Ray session and a real MLflow server: each
(init, dataset) cell gets its own Optuna lr search on the first seed (all cells in one Tune experiment), its best lr is recorded (file and
MLflow), and stage 2 runs every seed at that lr. A rerun searches nothing and runs nothing again."""

import json
import math
import textwrap

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

SWEEP = """
name: search
mode: tune-then-repeat
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {n_train: 48, n_val: 32, n_test: 32, size: 32, seed: 4}
  - name: shenzhen
    root: synthetic
    synthetic: {n_train: 48, n_val: 32, n_test: 32, size: 32, seed: 4}
lr: {search: loguniform, low: 1.0e-5, high: 1.0, trials: 3}
seeds: 2
overrides: {arch: resnet18, size: 32, batch_size: 16, epochs: 1, loader_workers: 0}
resources: {workers: 1, cpus_per_worker: 1}
failure: {max_retries: 0}
"""


def test_lr_search_per_cell_then_seeds_at_the_best_lr(tmp_path, ray_session, mlflow_uri):
    path = tmp_path / "search.yaml"
    path.write_text(textwrap.dedent(SWEEP))
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.count("Stage 1: lr search") == 1  # one Tune experiment searches both cells
    assert "Stage 1: lr search for scratch on chestxray14, scratch on shenzhen (3 trials each" in res.output

    sdir = paths.sweep_dir("search")
    best = json.loads((sdir / "best_lr.json").read_text())
    assert set(best) == {"scratch|chestxray14", "scratch|shenzhen"}
    results = [json.loads(p.read_text()) for p in sdir.glob("trials/*/result.json")]
    for cell, best_lr in best.items():
        dataset = cell.split("|")[1]
        searched = [r for r in results if r["dataset"] == dataset and r["seed"] == 0]
        assert len(searched) == 3 and len({r["lr"] for r in searched}) == 3  # its own search, 3 lrs
        assert all(1e-5 <= r["lr"] <= 1.0 for r in searched)
        winner = min(searched, key=lambda r: r["best_val_loss"] if r["best_val_loss"] is not None else math.inf)
        assert best_lr == winner["lr"]
        assert f"best lr for scratch on {dataset}: {best_lr:g}" in res.output

    stage2 = json.loads((sdir / "trials.json").read_text())
    assert len(stage2) == 4
    for t in stage2:
        assert t["lr"] == best[f"{t['init']}|{t['dataset']}"]
    assert {(t["dataset"], t["seed"]) for t in stage2} == {(d, s) for d in ("chestxray14", "shenzhen") for s in (0, 1)}
    assert "4 of 4 trials finished." in res.output

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("search")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent, = [r for r in runs if r.data.tags.get("benchxfer.role") == "sweep"]
    assert float(parent.data.params["best_lr.scratch.chestxray14"]) == best["scratch|chestxray14"]
    assert float(parent.data.params["best_lr.scratch.shenzhen"]) == best["scratch|shenzhen"]
    keys = [r.data.tags["benchxfer.trial_key"] for r in runs if r.data.tags.get("benchxfer.role") == "trial"]
    assert len(keys) == len(set(keys)) == 6 + 2  # 3 searched per cell; the winner is stage 2's seed 0
    assert {t["trial_key"] for t in stage2} <= set(keys)

    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "Stage 1" not in res.output and "4 trials, 4 already finished, 0 to run" in res.output
