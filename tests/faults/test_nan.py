"""Fault 5: a trial's loss becomes NaN. Only that trial is marked failed, with the reason, in its folder,
in ``benchxfer status`` and on its MLflow run; the other trials of the sweep finish. A resume does not
retry it (a retry cannot fix it)."""

import json

import pytest
from click.testing import CliRunner
from e2e_support import runs_by_key, write_sweep

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e


def test_nan_loss_fails_only_its_trial(tmp_path, ray_session, mlflow_uri):
    path = write_sweep(tmp_path, "nanlr", lr="[0.001, 1.0e+30]", seeds=2, epochs=1, max_concurrent=None)  # 2 at once
    res = CliRunner().invoke(main, ["sweep", str(path), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert "2 of 4 trials finished, 2 failed or unfinished" in res.output, res.output
    assert res.exit_code == 1 and "2 of 4 trials did not finish" in res.output  # not a success
    runs = runs_by_key(mlflow_uri, "nanlr")
    assert len(runs) == 4
    for key, rs in runs.items():
        assert len(rs) == 1
        failed = paths.trial_dir("nanlr", key) / "failed.json"
        if "_lr1e+30_" in key:
            assert rs[0].info.status == "FAILED"
            assert "loss became nan" in rs[0].data.tags["benchxfer.error"].lower()
            info = json.loads(failed.read_text())
            assert info["retryable"] is False and "loss became nan" in info["reason"].lower()
        else:
            assert rs[0].info.status == "FINISHED" and not failed.exists()
    res = CliRunner().invoke(main, ["status", "nanlr"])
    assert "2 finished, 2 failed" in res.output
    assert res.output.lower().count("loss became nan") == 2

    res = CliRunner().invoke(main, ["resume", "nanlr", "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert "2 of 4 trials finished, 2 failed or unfinished" in res.output, res.output
    assert all(len(rs) == 1 for rs in runs_by_key(mlflow_uri, "nanlr").values())
