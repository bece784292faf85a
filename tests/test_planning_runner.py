"""The planner (sweep file -> trials) and the runner's choice of the trials to launch, without Ray: the trial
folders are written here by hand through the files a trial leaves."""

import itertools
import json
import textwrap

import pytest

from benchxfer import paths
from benchxfer.errors import BenchxferError
from benchxfer.launch.runner import pending
from benchxfer.plan.planning import expand, make_plan
from benchxfer.recipes import get_recipe
from benchxfer.trialdir import TrialState

pytestmark = pytest.mark.fast

SWEEP = """
name: plan
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
  - name: montgomery-lungs
    root: synthetic
recipe: auto
seeds: [0, 7]
overrides: {arch: resnet18, size: 32, epochs: 2}
"""


def plan_of(tmp_path, text=SWEEP):
    f = tmp_path / "plan.yaml"
    f.write_text(textwrap.dedent(text))
    return make_plan(f)  # a dry plan: writes no synthetic data


def test_the_grid_is_every_cell_seed_and_shot_at_the_recipes_default_lr(tmp_path, home):
    plan = plan_of(tmp_path)
    want = {(d, s, None) for d, s in itertools.product(("chestxray14", "montgomery-lungs"), (0, 7))}
    assert {(t.dataset, t.seed, t.shot) for t in plan.trials} == want and len(plan.trials) == 4
    by_dataset = {t.dataset: t for t in plan.trials}
    assert by_dataset["chestxray14"].recipe == "systematic-cls" and by_dataset["chestxray14"].task == "multilabel"
    assert by_dataset["montgomery-lungs"].recipe == "systematic-seg"
    for t in plan.trials:
        assert t.lr == get_recipe(t.recipe).default_lr  # no lr in the file: the recipe's own
        assert t.config.root == str(paths.synthetic_dir() / t.dataset)
        assert t.key.startswith(f"scratch_{t.dataset}_lr{t.lr:g}_s{t.seed}" + ("" if t.shot is None else f"_k{t.shot}"))
    assert len({t.key for t in plan.trials}) == 4
    assert not paths.synthetic_dir().exists()  # planning wrote nothing
    assert [t.key for t in plan_of(tmp_path).trials] == [t.key for t in plan.trials]  # stable


def test_shots_multiply_the_classification_grid(tmp_path, home):
    text = SWEEP.replace("montgomery-lungs", "shenzhen").replace("seeds: [0, 7]", "seeds: [0, 7]\nshots: [5, null]")
    plan = plan_of(tmp_path, text)
    want = set(itertools.product(("chestxray14", "shenzhen"), (0, 7), (5, None)))
    assert {(t.dataset, t.seed, t.shot) for t in plan.trials} == want and len({t.key for t in plan.trials}) == 8
    assert all(t.key.endswith("_k5_" + t.key.rsplit("_", 1)[1]) for t in plan.trials if t.shot == 5)


def test_stage_two_fixes_one_lr_per_cell(tmp_path, home):
    plan = plan_of(tmp_path)
    lrs = {("scratch", "chestxray14"): 0.05, ("scratch", "montgomery-lungs"): 0.002}
    trials = expand(plan.spec, plan.cells, plan.roots, lrs=lrs)
    assert sorted({(t.dataset, t.lr) for t in trials}) == [("chestxray14", 0.05), ("montgomery-lungs", 0.002)]
    assert len(trials) == 4 and {t.key for t in trials}.isdisjoint(t.key for t in plan.trials)


def test_a_repeated_axis_value_is_one_line(tmp_path, home):
    with pytest.raises(BenchxferError, match="two trials share the key|appears|repeated"):
        plan_of(tmp_path, SWEEP.replace("seeds: [0, 7]", "seeds: [7, 7]"))


def write_state(sweep, key, result=None, failed=None):
    d = paths.trial_dir(sweep, key)
    d.mkdir(parents=True)
    if result is not None:
        (d / "result.json").write_bytes(result if isinstance(result, bytes) else json.dumps(result).encode())
    if failed is not None:
        (d / "failed.json").write_text(json.dumps(failed))
    return d


def test_pending_launches_all_but_the_finished_and_the_final_failures(tmp_path, home):
    trials = plan_of(tmp_path, SWEEP.replace("seeds: [0, 7]", "seeds: [0, 1, 2, 7]")).trials
    t = {i: tr.key for i, tr in enumerate(trials)}
    finished = {"status": "finished", "sweep": "plan", "trial_key": t[0], "recipe": "r", "init": "scratch",
                "dataset": "d", "task": "multilabel", "shot": None, "lr": 0.1, "seed": 0, "metric": "auroc",
                "value": 0.5, "test": {"auroc": 0.5}, "best_epoch": 0, "epochs_run": 1, "epochs_started": 1,
                "wall_seconds": 1.0, "accelerator_hours": 0.0, "mlflow_run_id": None, "best_val_loss": 0.1}
    write_state("plan", t[0], result=finished)
    write_state("plan", t[1], failed={"reason": "loss became nan at epoch 0", "retryable": False})
    retry = write_state("plan", t[2], failed={"reason": "worker died", "retryable": True})
    write_state("plan", t[3], result=b"\x00 half-written")  # a damaged result: the trial runs again
    write_state("plan", t[4], result={**finished, "status": "failed"})
    todo, final = pending(trials)
    assert final == 1
    assert [x.key for x in todo] == [t[i] for i in range(2, 8)]
    assert not (retry / "failed.json").exists()  # a retryable failure is forgotten when launched again


def test_status_tells_a_retryable_failure_from_a_final_one(tmp_path, home):
    """``benchxfer status`` shows a failure that ``resume`` runs again as retryable, a final one as failed, and
    counts each apart (a retryable count only when there is one)."""
    from click.testing import CliRunner

    from benchxfer.commands import status
    from benchxfer.launch.runner import save_plan

    plan = plan_of(tmp_path)
    save_plan(plan)
    t = [tr.key for tr in plan.trials]
    write_state("plan", t[0], failed={"reason": "loss became nan at epoch 0", "retryable": False})
    write_state("plan", t[1], failed={"reason": "worker died", "retryable": True})
    out = CliRunner().invoke(status, ["plan"])
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split()[1] for line in out.output.splitlines()[1:len(t) + 1]}
    assert rows[t[0]] == "failed" and rows[t[1]] == "retryable" and rows[t[2]] == "pending"
    assert f"0 finished, 1 failed, 1 retryable, 0 interrupted, {len(t) - 2} pending ({len(t)} trials)" in out.output
    (paths.runs_dir() / "plan" / "trials" / t[1] / "failed.json").unlink()
    assert "retryable" not in CliRunner().invoke(status, ["plan"]).output


def test_pending_stops_at_a_damaged_failure_record_with_one_line(tmp_path, home):
    trials = plan_of(tmp_path).trials
    d = write_state("plan", trials[0].key)
    (d / "failed.json").write_text("{not json")
    with pytest.raises(BenchxferError) as err:
        pending(trials)
    assert str(d / "failed.json") in str(err.value) and "not valid JSON" in str(err.value)


def test_state_names_are_what_status_prints():
    """One vocabulary: the words of files, MLflow's status tag, ``benchxfer status`` and the report are TrialState's
    values, and they stay the words users and stored runs already have."""
    from benchxfer.commands import STATES
    from benchxfer.report.results import STATUSES
    from benchxfer.trialdir import FOLDER_STATES

    assert [s.value for s in FOLDER_STATES] == ["pending", "finished", "retryable", "failed", "stopped"]
    assert [s.value for s in TrialState] == ["pending", "finished", "retryable", "failed", "stopped", "running",
                                             "interrupted", "damaged", "unfinished"]
    assert [str(s) for s in STATES] == ["finished", "stopped", "failed", "retryable", "interrupted", "pending",
                                        "damaged"]
    assert STATUSES == ("finished", "failed", "running", "pending", "unfinished")
    assert f"{TrialState.FINISHED}" == str(TrialState.FINISHED) == "finished"  # written as its value everywhere


def test_a_torch_trainer_trial_restarted_by_tune_after_its_failure_does_not_train_again(tmp_path, home):
    """Tune restarts a TorchTrainer trial only so that the loss of its driver's node is survived. A failure recorded
    by this launch's driver (its Tune experiment) means Ray Train spent the trial's retries: the restarted driver
    ends at once, with that reason, before it opens an MLflow run or builds a trainer (the tracking URI here has no
    server behind it). A failure left by an earlier launch does not stop it: the trial goes on to train, which
    here, outside a Tune session, ends in Ray Train's own complaint."""
    from benchxfer.launch.sweep import Launch, run_trial
    from benchxfer.launch.tunespace import Shared, TrialIndex, planned
    from benchxfer.trialdir import Failure, TrialDir, TrialFailed

    trial = plan_of(tmp_path).trials[0]
    tdir = TrialDir.of("plan", trial.key)
    tdir.record_failure(Failure("worker group failed 3 times", retryable=True, experiment="plan-02"))
    launch = Launch(sweep="plan", tracking_uri="http://127.0.0.1:9", trainer="torch")
    config, index = {"trial": planned(trial)}, TrialIndex.of([trial])
    with pytest.raises(TrialFailed, match="worker group failed 3 times"):
        run_trial(config, Shared(index, launch, experiment="plan-02"))
    assert sorted(p.name for p in tdir.path.iterdir()) == ["failed.json"]

    with pytest.raises(RuntimeError, match="Tune session"):  # the next launch (a resume)
        run_trial(config, Shared(index, launch, experiment="plan-03"))
    assert tdir.failure().experiment == "plan-03"  # recorded again, by this launch
