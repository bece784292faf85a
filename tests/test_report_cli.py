"""``benchxfer report`` and ``benchxfer compare`` through click, reading the result.json fallback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from test_results import demo_records, result_record, write_sweep

from benchxfer import paths
from benchxfer.cli import main
from benchxfer.report.results import RUN_COLUMNS

pytestmark = pytest.mark.fast


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_report_writes_every_file_and_prints_the_table(home, tmp_path):
    recs, unfinished = demo_records()
    write_sweep("demo", recs, unfinished)
    res = invoke("report", "demo")
    assert res.exit_code == 0, res.output
    out = tmp_path / "reports" / "demo"  # the default folder
    for name in ("runs.parquet", "runs.csv", "summary.csv", "table.md", "report.html", "bars_nih.png"):
        assert (out / name).is_file(), name
        assert f"  reports/demo/{name}" in res.output  # the paths written, as given
    runs = pd.read_parquet(out / "runs.parquet")
    assert list(runs.columns) == list(RUN_COLUMNS) and len(runs) == 8
    im = np.array([0.80, 0.82, 0.81]) * 100  # the ± is np.std (ddof 0), as the studies computed it
    assert f"| imagenet | **{im.mean():.2f} ± {im.std():.2f}** (1 failed, 1 unfinished) |" not in res.output
    assert f"| imagenet | **{im.mean():.2f} ± {im.std():.2f}** |" in res.output
    assert "(1 failed, 1 unfinished)" in res.output  # on scratch's cell
    assert "6 finished trials averaged; not averaged: 1 failed, 1 unfinished" in res.output
    assert "Source: result files" in res.output
    summary = pd.read_csv(out / "summary.csv")
    scratch = summary.set_index("init").loc["scratch"]
    assert scratch["n"] == 3 and scratch["mean"] == pytest.approx(72.0) and scratch["stars"] == "**"
    assert Image.open(out / "bars_nih.png").size[0] > 100


def test_report_student_and_custom_out(home, tmp_path):
    recs, _ = demo_records()
    write_sweep("demo", recs)
    res = invoke("report", "demo", "--test", "student", "--baseline", "scratch", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert "Student's t-test against 'scratch'" in res.output
    assert (tmp_path / "o" / "report.html").is_file()


def test_report_without_imagenet_runs_no_tests(home):
    write_sweep("noim", [result_record("noim", f"s{s}", "scratch", "nih", s, 0.7 + s / 100) for s in range(3)])
    res = invoke("report", "noim")
    assert res.exit_code == 0, res.output
    assert "no baseline, no significance tests" in res.output


def test_compare_puts_sweeps_side_by_side(home, tmp_path):
    for sweep, shift in (("cls-a", 0.0), ("cls-b", 0.05)):
        recs = [result_record(sweep, f"{i}-s{s}", i, "nih", s, 0.7 + shift + 0.01 * s + (0.03 if i == "chexpert" else 0))
                for i in ("imagenet", "chexpert") for s in range(3)]
        write_sweep(sweep, recs)
    res = invoke("compare", "cls-a", "cls-b")
    assert res.exit_code == 0, res.output
    assert "| init | cls-a / nih (auroc) | cls-b / nih (auroc) |" in res.output
    out = tmp_path / "reports" / "compare-cls-a-cls-b"
    summary = pd.read_csv(out / "summary.csv")
    means = summary.set_index(["sweep", "init"])["mean"]
    assert means[("cls-b", "imagenet")] - means[("cls-a", "imagenet")] == pytest.approx(5.0)
    assert sorted(p.name for p in out.glob("*.png")) == ["bars_cls-a_nih.png", "bars_cls-b_nih.png",
                                                        "heatmap_vs_baseline.png"]
    assert set(pd.read_parquet(out / "runs.parquet")["sweep"]) == {"cls-a", "cls-b"}


def assert_one_line_error(res, *culprits: str):
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    err = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1, res.output
    for c in culprits:
        assert c in err[0], res.output


def test_missing_sweep_is_one_line(home):
    assert_one_line_error(invoke("report", "ghost"), "'ghost'", str(paths.sweep_dir("ghost")), "result.json")


def test_unknown_baseline_is_one_line(home):
    recs, _ = demo_records()
    write_sweep("demo", recs)
    assert_one_line_error(invoke("report", "demo", "--baseline", "bit"), "'bit'", "imagenet, scratch")


def test_bad_result_file_is_skipped_and_named(home):
    """A damaged result.json (a value of the wrong type, a key missing) is skipped by the report and named; the
    other trials are reported."""
    write_sweep("bad", [result_record("bad", f"t{i}", "imagenet", "nih", i, 0.7) for i in range(3)])
    (paths.trial_dir("bad", "t0") / "result.json").write_text(json.dumps({"seed": "three"}))
    rec = json.loads((paths.trial_dir("bad", "t1") / "result.json").read_text())
    (paths.trial_dir("bad", "t1") / "result.json").write_text(json.dumps({**rec, "value": "high"}))
    res = invoke("report", "bad")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    t0, t1 = (str(paths.trial_dir("bad", k) / "result.json") for k in ("t0", "t1"))
    assert f"Skipped a damaged trial: {t0}: seed='three' is not an integer" in res.output
    assert f"Skipped a damaged trial: {t1}: value='high' is not a number" in res.output


def test_compare_with_one_missing_sweep_is_one_line(home):
    recs, _ = demo_records()
    write_sweep("demo", recs)
    assert_one_line_error(invoke("compare", "demo", "nope"), "'nope'")


def test_bad_test_name_is_refused(home):
    res = invoke("report", "demo", "--test", "paired")
    assert res.exit_code != 0 and "Traceback" not in res.output and "'paired'" in res.output
