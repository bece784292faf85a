"""results: the run table from the trial folders (the fallback when MLflow is out of reach)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pandas as pd
import pytest

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.report.results import (
    RUN_COLUMNS,
    RUN_DTYPES,
    collect,
    frame_from_records,
    load_runs,
    read_runs,
    write_runs,
)

pytestmark = pytest.mark.fast


def result_record(sweep: str, key: str, init: str, dataset: str, seed: int, value: float | None,
                  metric: str = "auroc", task: str = "binary", shot: int | None = None, lr: float = 1e-3,
                  status: str = "finished", error: str | None = None, recipe: str = "systematic-cls") -> dict:
    """One result.json in the exact layout the sweep writes."""
    test = {} if value is None else {metric: value, "accuracy": 0.5}
    return {"sweep": sweep, "trial_key": key, "recipe": recipe, "init": init, "dataset": dataset, "task": task,
            "shot": shot, "lr": lr, "seed": seed, "metric": metric, "value": value, "test": test,
            "best_epoch": None if value is None else 4, "epochs_run": 6, "status": status, "error": error,
            "wall_seconds": 12.5, "accelerator_hours": 0.0035, "mlflow_run_id": None}


def write_sweep(sweep: str, records: list[dict], unfinished: list[dict] = ()) -> Path:
    """Write trial folders with result.json for ``records``, bare folders for ``unfinished``, and trials.json."""
    expected = []
    for rec in [*records, *unfinished]:
        folder = paths.trial_dir(sweep, rec["trial_key"])
        folder.mkdir(parents=True, exist_ok=True)
        if rec in records:
            (folder / "result.json").write_text(json.dumps(rec))
        expected.append({k: rec[k] for k in ("trial_key", "init", "dataset", "recipe", "lr", "seed", "shot")})
    (paths.sweep_dir(sweep) / "trials.json").write_text(json.dumps(expected))
    return paths.sweep_dir(sweep)


def demo_records(sweep: str = "demo") -> tuple[list[dict], list[dict]]:
    """imagenet and scratch on one dataset, 3 seeds each; one failed and one unfinished scratch trial."""
    vals = {"imagenet": [0.80, 0.82, 0.81], "scratch": [0.70, 0.72, 0.74]}
    recs = [result_record(sweep, f"{i}-nih-s{s}", i, "nih", s, v) for i, vs in vals.items() for s, v in enumerate(vs)]
    recs.append(result_record(sweep, "scratch-nih-s3", "scratch", "nih", 3, None, status="failed",
                              error="RuntimeError: CUDA out of memory"))
    unfinished = [result_record(sweep, "scratch-nih-s4", "scratch", "nih", 4, None)]
    return recs, unfinished


def test_result_files_make_the_typed_table(home):
    recs, unfinished = demo_records()
    write_sweep("demo", recs, unfinished)
    df = load_runs("demo")
    assert tuple(df.columns) == RUN_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == RUN_DTYPES
    assert len(df) == 8
    by_key = df.set_index("trial_key")
    assert by_key.loc["imagenet-nih-s1", "value"] == 0.82
    assert by_key.loc["imagenet-nih-s1", "lr"] == 1e-3 and by_key.loc["imagenet-nih-s1", "seed"] == 1
    assert pd.isna(by_key.loc["imagenet-nih-s1", "shot"])
    assert by_key.loc["scratch-nih-s3", "status"] == "failed"
    # listed in trials.json, folder without result.json: unfinished, metric and task taken from its dataset
    assert by_key.loc["scratch-nih-s4", "status"] == "unfinished"
    assert by_key.loc["scratch-nih-s4", "metric"] == "auroc"
    assert pd.isna(by_key.loc["scratch-nih-s4", "value"])
    assert "result files" in df.attrs["source"]


def test_errors_are_kept_per_trial(home):
    recs, unfinished = demo_records()
    write_sweep("demo", recs, unfinished)
    runs = collect("demo")
    assert runs.errors == {"demo/scratch-nih-s3": "RuntimeError: CUDA out of memory"}


def test_parquet_and_csv_round_trip(home, tmp_path):
    recs, unfinished = demo_records()
    recs.append(result_record("demo", "imagenet-nih-k5-s0", "imagenet", "nih", 0, 0.6, shot=5))
    write_sweep("demo", recs, unfinished)
    df = load_runs("demo")
    parquet, csv = write_runs(df, tmp_path / "out")
    back = read_runs(parquet)
    pd.testing.assert_frame_equal(back, df, check_like=False)
    assert str(pd.read_parquet(parquet).dtypes["shot"]) == "Int64"
    header = csv.read_text().splitlines()[0]
    assert header == ",".join(RUN_COLUMNS)


def test_shot_full_and_integers(home):
    recs = [result_record("fs", "a", "imagenet", "nih", 0, 0.7, shot=10),
            {**result_record("fs", "b", "imagenet", "nih", 1, 0.7), "shot": "full"}]
    write_sweep("fs", recs)
    df = load_runs("fs").set_index("trial_key")
    assert df.loc["a", "shot"] == 10 and pd.isna(df.loc["b", "shot"])


def test_unreachable_server_falls_back_to_result_files(home):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recs, unfinished = demo_records()
    write_sweep("demo", recs, unfinished)
    runs = collect("demo", tracking_uri=f"http://127.0.0.1:{port}")
    assert runs.source.startswith("result files")
    assert any("unreachable" in place for place in runs.looked)
    assert len(runs.frame) == 8


def test_no_runs_anywhere_names_the_sweep_and_the_places(home):
    with pytest.raises(BenchxferError) as err:
        collect("ghost")
    msg = str(err.value)
    assert "'ghost'" in msg and "result.json" in msg and "trials.json" in msg and "\n" not in msg


@pytest.mark.parametrize("bad, culprit", [
    ({"seed": "x"}, "seed='x'"), ({"shot": 0}, "shot=0"), ({"lr": "fast"}, "lr='fast'"),
    ({"status": "done"}, "status='done'"),
])
def test_bad_values_name_the_file_and_key(home, bad, culprit):
    """A damaged result file is skipped (the trial counts as unfinished) and named with the key."""
    rec = result_record("bad", "t", "imagenet", "nih", 0, 0.7)
    write_sweep("bad", [rec])
    (paths.trial_dir("bad", "t") / "result.json").write_text(json.dumps({**rec, **bad}))
    runs = collect("bad")
    assert len(runs.damaged) == 1 and "t/result.json" in runs.damaged[0] and culprit in runs.damaged[0]
    assert list(runs.frame["status"]) == ["unfinished"]


def test_invalid_json_names_the_file_and_line(home):
    write_sweep("bad", [result_record("bad", "t", "imagenet", "nih", 0, 0.7)])
    (paths.trial_dir("bad", "t") / "result.json").write_text('{"seed": 1,\n oops}')
    (damaged,) = collect("bad").damaged
    assert re.search(r"t/result.json: not valid JSON \(line 2", damaged), damaged


def test_bad_sweep_name(home):
    with pytest.raises(BenchxferError, match="bad sweep name"):
        load_runs("../etc")


def test_frame_from_records_fills_missing_columns():
    df = frame_from_records([{"sweep": "s", "trial_key": "k", "seed": 3, "status": "unfinished"}])
    assert tuple(df.columns) == RUN_COLUMNS
    assert df.loc[0, "seed"] == 3 and pd.isna(df.loc[0, "value"]) and pd.isna(df.loc[0, "shot"])


def test_a_run_the_lr_search_stopped_is_no_row_of_the_report(home, tmp_path):
    """tune-then-repeat with halving: the stage-1 runs the search stopped carry `benchxfer.status: stopped` in the
    sweep's experiment; the report leaves them out (they have no result, as their folders say), it does not refuse
    the whole experiment. Written with MLflow's own client on a sqlite store (no server)."""
    from mlflow.tracking import MlflowClient

    from benchxfer.report.results import collect
    from benchxfer.tracking import KEY, METRIC, ROLE, STATUS, TASK

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("halving")
    for key, status, value in (("done-key", "finished", 0.75), ("stopped-key", "stopped", None)):
        run = client.create_run(exp, run_name=key, tags={ROLE: "trial", KEY: key, STATUS: status, METRIC: "auroc",
                                                         TASK: "binary"})
        for name, v in {"recipe": "systematic-cls", "init": "scratch", "dataset": "nih", "lr": "0.001",
                        "seed": "0"}.items():
            client.log_param(run.info.run_id, name, v)
        if value is not None:
            client.log_metric(run.info.run_id, "test_auroc", value)
        client.set_terminated(run.info.run_id, "FINISHED" if value is not None else "KILLED")
    runs = collect("halving", uri)
    assert list(runs.frame["trial_key"]) == ["done-key"] and list(runs.frame["value"]) == [0.75]
