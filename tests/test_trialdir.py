"""The trial record (benchxfer.trialdir): a trial's state from the files in its folder, and damaged files as
one line naming the file. No Ray, no torch: the files are written here by hand."""

import json
import subprocess
import sys

import pytest

from benchxfer.errors import BenchxferError
from benchxfer.trialdir import Failure, Progress, SweepDir, TrialDir, TrialResult, TrialState

pytestmark = pytest.mark.fast

RESULT = {
    "sweep": "s", "trial_key": "k", "recipe": "systematic-cls", "init": "scratch", "dataset": "chestxray14",
    "task": "multilabel", "shot": None, "lr": 0.001, "seed": 0, "metric": "auroc", "value": 0.7,
    "test": {"auroc": 0.7}, "best_epoch": 1, "epochs_run": 2, "epochs_started": 3, "status": "finished",
    "error": None, "wall_seconds": 1.5, "accelerator_hours": 0.0, "mlflow_run_id": None, "best_val_loss": 0.4,
    "selected": "best-val", "last_step": None, "environment": {"threads": 1, "torch": "2"},
}


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def test_states_follow_the_files(tmp_path):
    t = TrialDir(tmp_path / "k")
    assert t.state() is TrialState.PENDING and t.result() is None and t.failure() is None
    (t.path).mkdir()
    (t.path / "failed.json").write_text(json.dumps({"reason": "worker died", "retryable": True}))
    assert t.state() is TrialState.RETRYABLE
    (t.path / "failed.json").write_text(json.dumps({"reason": "loss became nan at epoch 0", "retryable": False}))
    assert t.state() is TrialState.FAILED and t.failure().final
    (t.path / "result.json").write_text(json.dumps(RESULT))
    assert t.state() is TrialState.FINISHED  # a result wins over any failure
    assert t.result().value == 0.7 and t.result().test == {"auroc": 0.7}


def test_result_round_trips_and_only_a_finished_one_counts(tmp_path):
    t = TrialDir(tmp_path / "k")
    res = TrialResult(**{k: v for k, v in RESULT.items()})
    t.write_result(res)
    assert json.loads((t.path / "result.json").read_text()) == RESULT  # no zoo_path key unless one was set
    assert t.result() == res
    (t.path / "result.json").write_text(json.dumps({**RESULT, "status": "failed"}))
    assert t.result() is None and t.state() is TrialState.PENDING


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b'{"sweep": "s",', b"[1, 2]",
                                     json.dumps({"trial_key": "k"}).encode()])
def test_a_damaged_result_is_pending_for_the_runner_and_one_line_for_the_report(tmp_path, content):
    t = TrialDir(tmp_path / "k")
    t.path.mkdir()
    (t.path / "result.json").write_bytes(content)
    assert t.result() is None and t.state() is TrialState.PENDING  # the documented policy: run it again
    if content.startswith(b"{") and content.endswith(b"}"):
        assert t.result_record() == {"trial_key": "k"}  # the report checks the keys it needs itself
    else:
        with pytest.raises(BenchxferError) as err:
            t.result_record()
        one_line(err, str(t.path / "result.json"))


@pytest.mark.parametrize("name, content, what", [
    ("failed.json", b"\x80\x81binary", "not a text file"),
    ("failed.json", b'{"reason": "x", ', "not valid JSON (line 1"),
    ("failed.json", b'{"retryable": false}', "lacks the key(s) reason"),
    ("failed.json", b'"just a string"', "a JSON object), got str"),
    ("progress.json", b'{"epoch": 1}', "lacks the key(s) best_epoch, epochs_max"),
    ("epochs.jsonl", b'{"epoch": 0, "pid": 1, "time": 0}\nnot json\n', "line 2 is not valid JSON"),
])
def test_damaged_state_files_are_one_line_naming_the_file(tmp_path, name, content, what):
    t = TrialDir(tmp_path / "k")
    t.path.mkdir()
    (t.path / name).write_bytes(content)
    read = {"failed.json": t.state, "progress.json": t.progress, "epochs.jsonl": t.epochs_started}[name]
    with pytest.raises(BenchxferError) as err:
        read()
    one_line(err, str(t.path / name), what)


def test_the_first_failure_recorded_wins_and_a_final_one_stays_final(tmp_path):
    t = TrialDir(tmp_path / "k")
    t.write_failure(Failure("loss became nan at epoch 3", retryable=False, epoch=3))
    kept = t.record_failure(Failure("RayTaskError: the worker died", retryable=True))
    assert kept == Failure("loss became nan at epoch 3", retryable=False, epoch=3)
    t.clear_retryable_failure()
    assert t.state() is TrialState.FAILED  # not forgotten on the next launch

    u = TrialDir(tmp_path / "u")
    u.record_failure(Failure("worker died", retryable=True))
    assert u.state() is TrialState.RETRYABLE
    u.clear_retryable_failure()
    assert u.state() is TrialState.PENDING and not (u.path / "failed.json").exists()


def test_epoch_log_and_progress(tmp_path):
    t = TrialDir(tmp_path / "k")
    for e in (0, 1, 1, 2):
        t.log_epoch_start(e)
    assert t.epochs_started() == [0, 1, 1, 2]
    t.write_progress(Progress(2, 1, 5, {"val_loss": 0.3}))
    assert t.progress() == Progress(2, 1, 5, {"val_loss": 0.3})


def test_sweep_files_read_through_one_reader(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    sdir = SweepDir("s", tmp_path / "runs" / "s")
    assert sdir.trials() is None and sdir.best_lr() == {} and not sdir.exists()
    sdir.save_plan(spec, [{"trial_key": "a"}, {"trial_key": "b"}])
    assert sdir.exists() and sdir.source() == str(spec.resolve())
    assert [t["trial_key"] for t in sdir.trials()] == ["a", "b"]
    assert sdir.trial("a").path == sdir.path / "trials" / "a"
    sdir.write_best_lr({"scratch|chestxray14": 0.01})
    assert sdir.best_lr() == {"scratch|chestxray14": 0.01}
    for name, content, what in [("trials.json", "{}", "expected a JSON list of trials, got dict"),
                                ("trials.json", '[{"init": "x"}]', "item 0 lacks the key trial_key"),
                                ("source.json", "[", "not valid JSON"),
                                ("best_lr.json", '{"a|b": "fast"}', "a|b='fast' is not a number")]:
        (sdir.path / name).write_text(content)
        read = {"trials.json": sdir.trials, "source.json": sdir.source, "best_lr.json": sdir.best_lr}[name]
        with pytest.raises(BenchxferError) as err:
            read()
        one_line(err, str(sdir.path / name), what)


def test_the_trial_record_imports_neither_torch_nor_ray():
    code = ("import sys, benchxfer.trialdir, benchxfer.tasks, benchxfer.train.session, benchxfer.commands; "
            "print(sorted(m for m in ('torch', 'ray', 'pandas', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
