"""A trial the lr search stopped: its record, its state (final, never resumed as failed), and `benchxfer status`."""

import json

import pytest
from click.testing import CliRunner

from benchxfer.cli import main
from benchxfer.errors import BenchxferError
from benchxfer.trialdir import Failure, Stopped, SweepDir, TrialDir, TrialState

pytestmark = pytest.mark.fast


def test_stopped_is_final_and_wins_over_a_failure(tmp_path):
    tdir = TrialDir(tmp_path / "t")
    assert tdir.state() is TrialState.PENDING and tdir.stopped() is None
    tdir.write_failure(Failure("SystemExit: stopped", retryable=True))
    tdir.write_stopped(Stopped(rung=3, epoch=2, metrics={"val_loss": 0.7}))
    assert tdir.state() is TrialState.STOPPED
    assert tdir.stopped() == Stopped(3, 2, {"val_loss": 0.7})
    assert json.loads((tmp_path / "t" / "stopped.json").read_text())["status"] == "stopped"
    (tmp_path / "t" / "stopped.json").write_text('{"epoch": 2}')
    with pytest.raises(BenchxferError, match="stopped.json: the trial's stop record lacks the key"):
        tdir.stopped()


def test_status_lists_stopped_and_off_plan_search_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    sdir = SweepDir("s")
    sdir.save_plan(spec, [{"trial_key": "a_s0"}, {"trial_key": "a_s1"}])
    sdir.trial("lost_s0").write_stopped(Stopped(rung=1, epoch=0))
    sdir.trial("other_s0").write_failure(Failure("boom", retryable=False))
    res = CliRunner().invoke(main, ["status", "s"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    lost, = [x for x in lines if x.startswith("lost_s0")]
    assert "stopped" in lost and "stopped by the search at rung 1" in lost
    assert lines.index("lr search trials not in the sweep's trials (2):") > lines.index(
        next(x for x in lines if x.startswith("a_s1")))
    assert lines[-1] == ("0 finished, 0 failed, 0 interrupted, 2 pending (2 trials); "
                         "lr search: 2 other trials, 1 stopped by the search")
