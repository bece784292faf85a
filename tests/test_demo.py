"""The demo of the README (`make demo`), run as shipped on the session's Ray and MLflow: it pre-trains its own
init, runs 8 trials, and keeps its promises. Every trial is well above chance (AUROC >= 0.75 on the
classification set, Dice >= 0.7 on the segmentation set) and the pre-trained init beats scratch on
classification. (A fresh run took 2 min 51 s on 2 cores; the time is measured, not asserted.)"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchxfer import paths
from benchxfer.cli import main

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"


def test_demo_sweep_keeps_its_promises(ray_session, mlflow_uri):
    res = CliRunner().invoke(main, ["sweep", str(DEMO), "--tracking-uri", mlflow_uri], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "8 of 8 trials finished." in res.output
    assert "| demo-cxr |" in res.output and "| scratch |" in res.output  # the mean +/- std table

    results = [json.loads(p.read_text()) for p in (paths.sweep_dir("demo") / "trials").glob("*/result.json")]
    assert len(results) == 8
    by = {}
    for r in results:
        floor = {"auroc": 0.75, "dice": 0.7}[r["metric"]]
        assert r["value"] >= floor, (r["trial_key"], r["value"])
        by.setdefault((r["init"], r["dataset"]), []).append(r["value"])
    mean = {k: sum(v) / len(v) for k, v in by.items()}
    print("demo means:", mean)
    assert mean[("demo-cxr", "chestxray14")] > mean[("scratch", "chestxray14")]
