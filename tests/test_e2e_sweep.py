"""End to end on a real local Ray session and a real MLflow server: a tiny sweep, its records, a rerun that
runs nothing twice, and a 2-worker DDP trial whose workers saw disjoint shards."""

import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

TINY = """
name: {name}
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {{n_train: 64, n_val: 32, n_test: 32, size: 32, seed: 3}}
lr: [0.001]
seeds: {seeds}
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: 2, loader_workers: 0}}
resources: {{workers: {workers}, cpus_per_worker: 1, trainer: {trainer}}}
failure: {{max_retries: 0}}
"""


def sweep_file(tmp_path, name, seeds=2, workers=1, trainer="auto"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(textwrap.dedent(TINY.format(name=name, seeds=seeds, workers=workers, trainer=trainer)))
    return p


def trial_runs(uri, sweep):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(sweep)
    runs = c.search_runs([exp.experiment_id], max_results=100)
    return c, [r for r in runs if r.data.tags.get("benchxfer.role") == "trial"], \
        [r for r in runs if r.data.tags.get("benchxfer.role") == "sweep"]


def test_sweep_records_every_trial_once(tmp_path, ray_session, mlflow_uri):
    path = sweep_file(tmp_path, "e2e")
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 of 2 trials finished." in res.output
    assert "| scratch |" in res.output  # the per-init mean +/- std table

    client, trials, parents = trial_runs(mlflow_uri, "e2e")
    assert len(parents) == 1 and len(trials) == 2
    for run in trials:
        key = run.data.tags["benchxfer.trial_key"]
        assert run.info.run_name == key and run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["init"] == "scratch" and run.data.params["dataset"] == "chestxray14"
        assert run.data.params["lr"] == "0.001" and run.data.params["epochs"] == "2"
        result = json.loads((paths.trial_dir("e2e", key) / "result.json").read_text())
        assert result["status"] == "finished" and result["mlflow_run_id"] == run.info.run_id
        assert run.data.metrics["test_auroc"] == pytest.approx(result["test"]["auroc"])
        assert 0.0 <= result["test"]["auroc"] <= 1.0
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
        kept = paths.trial_dir("e2e", key) / "selected.safetensors"  # the run links the weights the folder keeps
        assert run.data.tags["benchxfer.best_checkpoint"] == str(kept.resolve()) and kept.is_file()
        assert not (paths.trial_dir("e2e", key) / "checkpoints").exists()
    assert {r.data.params["seed"] for r in trials} == {"0", "1"}

    # the same sweep again: nothing runs twice, no second MLflow run appears
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 trials, 2 already finished, 0 to run" in res.output
    _, trials_again, parents_again = trial_runs(mlflow_uri, "e2e")
    assert len(trials_again) == 2 and len(parents_again) == 1

    res = CliRunner().invoke(main, ["status", "e2e"])
    assert res.exit_code == 0 and "2 finished, 0 failed, 0 interrupted, 0 pending" in res.output


def test_two_worker_ddp_trial_shards_and_whole_set_metric(tmp_path, ray_session, mlflow_uri):
    """Ray Train TorchTrainer with 2 gloo workers: disjoint shards that cover the training set, and a test
    metric equal to the metric of the best weights on the whole test set computed here in one process."""
    import contextlib

    from safetensors.torch import load_file

    from benchxfer import models
    from benchxfer.launch.runner import execute
    from benchxfer.plan.planning import make_plan
    from benchxfer.recipes.parts import loss_for
    from benchxfer.train import data_setup
    from benchxfer.train.loop import evaluate
    from benchxfer.train.session import local_session

    plan = make_plan(sweep_file(tmp_path, "ddp", seeds=1, workers=2, trainer="torch"), write_synthetic=True)
    results = execute(plan, mlflow_uri, echo=print, record_shards=True).results
    assert len(results) == 1
    res = results[0]
    tdir = paths.trial_dir("ddp", res["trial_key"])
    for epoch in range(2):
        r0 = json.loads((tdir / "shards" / f"epoch{epoch}_rank0.json").read_text())
        r1 = json.loads((tdir / "shards" / f"epoch{epoch}_rank1.json").read_text())
        assert set(r0).isdisjoint(r1)
        assert sorted(r0 + r1) == list(range(64))

    cfg = plan.trials[0].config
    rd = data_setup.build_data(cfg)
    model = models.build_model(cfg.arch, rd.task, rd.num_classes)
    # once the result is recorded the folder keeps the tested weights alone (keep: selected, the default)
    assert not (tdir / "checkpoints").exists() and (tdir / "selected.safetensors").is_file()
    model.load_state_dict(load_file(tdir / "selected.safetensors"))
    sess = local_session()
    loader = data_setup.eval_loader(rd.test, cfg, 0, 1, False)
    whole = evaluate(model, loader, rd, loss_for(cfg.loss, rd.task), sess, contextlib.nullcontext, ("auroc",))
    assert res["test"]["auroc"] == pytest.approx(whole["auroc"], abs=1e-6)
    assert np.isfinite(whole["loss"])
