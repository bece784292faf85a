"""Fault 6: the disk fills while a sweep runs. The home is a tmpfs that holds the sweep's running trial; once the first
trial is final, a ballast file leaves less room than one epoch checkpoint. The sweep stops (no trial goes on into
the full disk) with one line naming the folder and the room a trial needs, the finished trial keeps its result and
weights, and ``benchxfer resume`` finishes the rest once room is made, with one MLflow run per trial."""

import json
import shutil

import pytest
from click.testing import CliRunner
from e2e_support import output_tail, runs_by_key, small_disk, start_driver, wait_for, write_sweep

from benchxfer import paths
from benchxfer.cli import main
from benchxfer.plan import disk
from benchxfer.trialdir import SELECTED

pytestmark = pytest.mark.e2e
# a ResNet-18 trial with Adam: two epoch checkpoints and the one being written, each 4x the weights (537 MB)
RUNNING = disk.trial_disk(disk.weights_of("resnet18", "multilabel", 14), "adam", 0.9, "selected").running


def finished(sweep: str) -> list:
    return sorted(p.parent for p in (paths.sweep_dir(sweep) / "trials").glob("*/result.json"))


def test_a_full_disk_stops_the_sweep_in_one_line_and_resume_finishes(tmp_path, ray_session, mlflow_uri, monkeypatch):
    with small_disk(tmp_path / "disk", "640m") as home:  # a running ResNet-18 trial (Adam) needs up to 537 MB
        monkeypatch.setenv("BENCHXFER_HOME", str(home))
        path = write_sweep(tmp_path, "full", seeds=3, epochs=1, max_concurrent=1)
        proc = start_driver(["sweep", str(path), "--tracking-uri", mlflow_uri], ray_session)
        first = wait_for(lambda: [t for t in finished("full") if not (t / "checkpoints").exists()],
                         "the first trial, final", proc)[0]
        ballast = home / "ballast"
        with open(ballast, "wb") as f:  # leave 100 MB: less than one epoch checkpoint (179 MB)
            for _ in range(max(shutil.disk_usage(home).free - 100 * 1000**2, 0) // 2**20):
                f.write(bytes(2**20))
        assert proc.wait(timeout=240) != 0
        out = output_tail(proc, 200)
        errors = [line for line in out.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "Traceback" not in out, out
        line = errors[0]
        assert line.startswith("Error: sweep 'full' stopped, the disk is full: trial ") and \
            f"no space left on device writing {home}/runs/full/trials/" in line and \
            f"a trial of this sweep needs up to {disk.human(RUNNING)} while it runs" in line and \
            line.endswith("make room, then `benchxfer resume full`"), line
        failed = [json.loads(f.read_text()) for f in (paths.sweep_dir("full") / "trials").glob("*/failed.json")]
        full = [f for f in failed if "no space left on device" in f["reason"]]
        assert len(full) == 1 and full[0]["retryable"], failed  # the trial that hit it, with its line
        assert f"no space left on device writing {home}/runs/full/trials/" in full[0]["reason"]
        done = finished("full")
        assert first in done and len(done) < 3 and (first / SELECTED).is_file()  # nothing finished is lost
        before = json.loads((first / "result.json").read_text())

        ballast.unlink()  # room is made
        res = CliRunner().invoke(main, ["resume", "full", "--tracking-uri", mlflow_uri], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        trials = finished("full")
        assert len(trials) == 3 and json.loads((first / "result.json").read_text()) == before
        for t in trials:
            assert {p.name for p in t.iterdir()} == {"result.json", "progress.json", "epochs.jsonl", SELECTED}
        runs = runs_by_key(mlflow_uri, "full")
        assert len(runs) == 3 and all(len(rs) == 1 for rs in runs.values())
