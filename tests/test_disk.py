"""A trial's disk. What its folder keeps (the sweep file's ``keep``): while it runs, the training checkpoint that a retry or
resume continues from; once its result is recorded, by default the tested weights alone in safetensors (at most
1.1x the fp32 weights, read by ``benchxfer zoo import``), or nothing, or the whole checkpoint. One real trial is
trained here (ResNet-18, 32 px, synthetic ChestX-ray14) and its folder copied for each choice. The disk estimate
of the dry run and the real run's check of the free space (benchxfer/plan/disk.py) are held against its files."""

import shutil
import textwrap
import types

import pytest
import torch
from e2e_support import small_disk
from safetensors import safe_open
from safetensors.torch import load_file

from benchxfer import data, models
from benchxfer.errors import BenchxferError
from benchxfer.plan.spec import load_spec
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import OPTIMIZERS
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.loop import train_run
from benchxfer.train.session import Runtime
from benchxfer.trialdir import KEEP, SELECTED, Failure, Stopped, TrialDir, TrialState
from benchxfer.zoo.formats import CANONICAL, read_backbone
from benchxfer.zoo.store import import_init

pytestmark = pytest.mark.fast


def folder_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def small_trial(folder) -> TrainConfig:
    """The trial trained here (and in tests/test_tracking.py): ResNet-18, 32 px, 2 epochs, on synthetic ChestX-ray14
    written into ``folder``, checkpointed every epoch, on one torch thread (CPU: deterministic)."""
    root = data.synthetic.write("chestxray14", folder / "cxr", n_train=32, n_val=16, n_test=16, size=32, seed=1)
    knobs = get_recipe("systematic-cls").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 16, "epochs": 2, "loader_workers": 0,
         "checkpoint_every_s": 0}, "test")
    torch.set_num_threads(1)
    return TrainConfig.from_dict({**knobs, "trial_key": "k", "dataset": "chestxray14", "root": str(root),
                                  "lr": 1e-3, "seed": 0})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The same trial trained twice (CPU, deterministic: the same weights): keeping its checkpoint (a bare
    ``train_run``'s default) and keeping the selected weights (a sweep's default). Returns the folder of the first
    with the second's weights added, as a worker leaves a folder just before its tidy-up; the config; the result;
    and the second's folder."""
    tmp = tmp_path_factory.mktemp("keep")
    cfg = small_trial(tmp)
    result = train_run(cfg, Runtime(trial_dir=str(tmp / "trial")))
    again = train_run(cfg, Runtime(trial_dir=str(tmp / "selected"), keep="selected"))
    assert again.test == result.test and again.best_epoch == result.best_epoch
    shutil.copy(tmp / "selected" / SELECTED, tmp / "trial" / SELECTED)
    return tmp / "trial", cfg, result, tmp / "selected"


def copy_of(trained, tmp_path):
    folder = tmp_path / "trial"
    shutil.copytree(trained[0], folder)
    return TrialDir(folder)


def test_a_sweeps_trial_keeps_the_tested_weights_alone_in_safetensors(trained):
    folder, cfg, result, kept = trained
    assert {p.name for p in kept.iterdir()} == {"result.json", "progress.json", "epochs.jsonl", SELECTED}
    assert not (folder / "checkpoints" / SELECTED).exists()
    ckpt = torch.load(CheckpointStore(folder / "checkpoints").path(1), weights_only=True)
    selected = load_file(kept / SELECTED)
    tested = ckpt["best_model"] if result.selected == "best-val" else ckpt["model"]
    assert selected.keys() == tested.keys()
    for k in tested:
        assert torch.equal(selected[k], tested[k]), k
    with safe_open(kept / SELECTED, "pt") as f:
        meta = f.metadata()
    assert meta["arch"] == "resnet18" and meta["trial_key"] == "k" and meta["selected"] == result.selected
    assert meta["best_epoch"] == str(result.best_epoch)


@pytest.mark.parametrize("keep", list(KEEP))
def test_a_final_trial_keeps_what_the_sweep_asks(trained, tmp_path, keep):
    tdir = copy_of(trained, tmp_path)
    assert tdir.state() is TrialState.FINISHED
    records = {"result.json", "progress.json", "epochs.jsonl"}
    tdir.tidy(keep)
    names = {p.name for p in tdir.path.iterdir()}
    expected = {"selected": records | {SELECTED}, "none": records, "checkpoint": records | {"checkpoints"}}[keep]
    assert names == expected
    tdir.tidy(keep)  # idempotent: a resume tidies again
    assert {p.name for p in tdir.path.iterdir()} == expected
    fp32 = 4 * models.count_parameters(models.build_model("resnet18", "multilabel", 14))
    size = folder_bytes(tdir.path)
    if keep == "selected":
        assert fp32 < size <= 1.1 * fp32  # the bound: at most 1.1x the fp32 weights
    elif keep == "none":
        assert size < 100_000
    else:
        assert size > 2 * fp32  # the training checkpoint: model, optimiser state, best weights


def test_a_trial_that_may_run_again_keeps_its_checkpoint(trained, tmp_path):
    """Retryable, pending (interrupted) and final-failed trials are left alone: resume continues from them."""
    tdir = copy_of(trained, tmp_path)
    (tdir.path / "result.json").unlink()  # interrupted after its last checkpoint: pending
    tdir.tidy("none")
    assert CheckpointStore(tdir.checkpoints).epochs() == [0, 1] and tdir.selected_weights.is_file()
    tdir.write_failure(Failure("worker died"))
    assert tdir.state() is TrialState.RETRYABLE
    tdir.tidy("selected")
    assert CheckpointStore(tdir.checkpoints).epochs() == [0, 1]
    with pytest.raises(BenchxferError, match="keep 'all': must be one of selected, none, checkpoint"):
        tdir.tidy("all")


def test_a_stopped_trial_loses_its_checkpoint(trained, tmp_path):
    tdir = copy_of(trained, tmp_path)
    (tdir.path / "result.json").unlink()
    (tdir.path / SELECTED).unlink()  # the search stops a trial before its finish
    tdir.write_stopped(Stopped(rung=1, epoch=0))
    tdir.tidy("selected")
    assert tdir.state() is TrialState.STOPPED and not tdir.checkpoints.exists()


def test_zoo_import_accepts_the_selected_weights(trained, tmp_path):
    folder = trained[0]
    back = read_backbone(folder / SELECTED)
    assert back.fmt == CANONICAL and back.arch == "resnet18"
    assert not any(k.startswith("fc.") for k in back.state)  # the head is dropped
    init, path, _ = import_init("mytrial", folder / SELECTED, zoo=tmp_path / "zoo")
    assert init.arch == "resnet18" and path.is_file()
    assert torch.equal(load_file(path)["conv1.weight"], load_file(folder / SELECTED)["conv1.weight"])


def test_finish_writes_no_weights_when_none_is_kept(trained, tmp_path):
    """The worker writes selected.safetensors only for keep: selected (a BiT-R152x4 trial's is GBs)."""
    _, cfg, _, _ = trained
    folder = tmp_path / "again"
    shutil.copytree(trained[0], folder)
    (folder / "result.json").unlink()
    (folder / SELECTED).unlink()  # the run restores its last checkpoint (epoch 1 of 2) and only finishes
    train_run(cfg, Runtime(trial_dir=str(folder), keep="none"))
    assert {p.name for p in folder.iterdir()} == {"result.json", "progress.json", "epochs.jsonl"}


SWEEP = """
name: k
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
lr: [0.001]
seeds: 2
overrides: {arch: resnet18, size: 32, epochs: 1}
"""


def test_keep_is_checked_and_is_no_part_of_a_trials_key(tmp_path, bx_home):
    from benchxfer.plan.planning import make_plan

    (tmp_path / "a.yaml").write_text(textwrap.dedent(SWEEP))
    (tmp_path / "b.yaml").write_text(textwrap.dedent(SWEEP) + "keep: none\n")
    (tmp_path / "c.yaml").write_text(textwrap.dedent(SWEEP) + "keep: everything\n")
    assert load_spec(tmp_path / "a.yaml").keep == "selected" and load_spec(tmp_path / "b.yaml").keep == "none"
    with pytest.raises(BenchxferError) as err:
        load_spec(tmp_path / "c.yaml")
    assert str(err.value) == (f"{tmp_path / 'c.yaml'}: keep: must be one of selected, none, checkpoint, "
                              "got 'everything'")
    keys = [[t.key for t in make_plan(tmp_path / f, dry_run=True).trials] for f in ("a.yaml", "b.yaml")]
    assert keys[0] == keys[1] and len(keys[0]) == 2


# --- the estimate (benchxfer/plan/disk.py) ----------------------------------------------------------------------------

def test_the_count_on_the_meta_device_is_the_models(trained):
    from benchxfer.plan import disk

    real = models.build_model("resnet18", "multilabel", 14)
    assert disk.weights_of("resnet18", "multilabel", 14) == sum(t.numel() for t in real.state_dict().values())
    assert set(disk.OPTIMISER_COPIES) == set(OPTIMIZERS.names())  # every optimiser's state is counted


def test_the_estimate_holds_against_the_files_a_trial_writes(trained):
    """The per-trial figures against a real trial (Adam: two moments): an epoch file, the selected weights."""
    from benchxfer.plan import disk

    folder, cfg, _, kept = trained
    assert cfg.optimizer == "adam"
    est = disk.trial_disk(disk.weights_of("resnet18", "multilabel", 14), cfg.optimizer, cfg.momentum, "selected")
    epoch_file = CheckpointStore(folder / "checkpoints").path(1).stat().st_size
    assert est.running / 3 == pytest.approx(epoch_file, rel=0.02)  # two kept + one being written
    assert est.final == pytest.approx((kept / SELECTED).stat().st_size, rel=0.01)
    both = folder_bytes(folder / "checkpoints")  # keep: checkpoint keeps the last two epoch files
    assert disk.trial_disk(est.final // 4, "adam", 0.9, "checkpoint").final == pytest.approx(both, rel=0.02)
    assert disk.trial_disk(est.final // 4, "sgd", 0.9, "none") == disk.TrialDisk(running=9 * est.final, final=0)


def test_the_home_must_hold_the_trials_that_run_at_once(tmp_path):
    from benchxfer.plan import disk

    free = shutil.disk_usage(tmp_path).free
    small = disk.TrialDisk(running=1000, final=10)
    assert disk.check_room(tmp_path / "not" / "yet", [small] * 4, 2, "selected") is None
    # two at once need a tenth more than is free: the other tier, running beside this test on the same file system,
    # can free or fill some space between the two reads of the free space (free // 2 + 1 failed that way once)
    big = disk.TrialDisk(running=free // 2 + free // 20, final=free // 4)
    with pytest.raises(BenchxferError) as err:  # two at once need more than is free: refused before any work
        disk.check_room(tmp_path, [big] * 3, 2, "selected")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{tmp_path}: ") and "the 2 trials that run at once need up to" in msg
    warning = disk.check_room(tmp_path, [big] * 5, 1, "selected")  # one at a time fits, five final do not
    assert warning.startswith(f"Warning: {tmp_path} has ") and "5 trials need up to" in warning


def test_the_dry_run_states_the_disk(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from benchxfer.cli import main
    from benchxfer.plan import disk

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SWEEP) + "resources: {max_concurrent: 2}\n")
    res = CliRunner().invoke(main, ["sweep", str(tmp_path / "s.yaml"), "--dry-run"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    one = disk.trial_disk(disk.weights_of("resnet18", "multilabel", 14), "adam", 0.9, "selected")
    per = f"{disk.human(one.running)} / {disk.human(one.final)}"
    assert res.output.count(per) == 2  # each trial's row
    assert (f"Disk (keep: selected): per trial up to {disk.human(one.running)} while it runs, "
            f"{disk.human(one.final)} once final; the sweep {disk.human(2 * one.final)} once every trial is final, "
            f"up to {disk.human(2 * one.running)} with 2 trials running at once") in res.output


# --- a full disk ---------------------------------------------------------------------------------------------------

def test_a_full_disk_is_enospc_naming_the_file(tmp_path):
    """torch.save says "unexpected pos" and safetensors its own words when the disk fills: each write a trial makes
    is ENOSPC naming its file, which the driver turns into the trial's one line (benchxfer/launch/sweep.py)."""
    import errno

    from benchxfer.train.loop import save_selected
    from benchxfer.trialdir import write_json

    with small_disk(tmp_path / "disk", "4m") as d:
        store = CheckpointStore(d / "trial" / "checkpoints")
        with pytest.raises(OSError) as err:
            store.save(0, {"model": {"w": torch.zeros(2_000_000)}})  # 8 MB
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(store.path(0))
        assert store.epochs() == [] and not list(store.folder.iterdir())  # no partial file left behind
        model = torch.nn.Linear(1000, 2000)
        cfg = TrainConfig.from_dict({**get_recipe("systematic-cls").resolve({"arch": "resnet18"}, "t"),
                                     "trial_key": "k", "dataset": "chestxray14", "lr": 1e-3, "seed": 0})
        with pytest.raises(OSError) as err:
            save_selected(model, d / "trial" / SELECTED, cfg, types.SimpleNamespace(
                selected="last", best_epoch=-1))
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(d / "trial" / SELECTED)
        (d / "ballast").write_bytes(b"\0" * (shutil.disk_usage(d).free - 4096))
        with pytest.raises(OSError) as err:
            write_json(d / "trial" / "progress.json", {"x": "y" * 100_000})
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(d / "trial" / "progress.json")


def test_the_driver_knows_a_full_disk_in_a_chain_or_in_rays_words():
    import errno

    from benchxfer.launch.sweep import disk_full

    direct = OSError(errno.ENOSPC, "No space left on device", "/h/runs/s/trials/k/checkpoints/epoch_0001.pt")
    assert disk_full(direct) == "/h/runs/s/trials/k/checkpoints/epoch_0001.pt"
    try:
        try:
            raise direct
        except OSError as inner:
            raise RuntimeError("the training function failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer) == "/h/runs/s/trials/k/checkpoints/epoch_0001.pt"
    wrapped = RuntimeError("ray::TrainController ... OSError: [Errno 28] No space left on device")  # Ray Train's text
    assert disk_full(wrapped) == "the disk"
    assert disk_full(OSError(errno.EACCES, "Permission denied", "/h/x")) is None
    assert disk_full(ValueError("nan")) is None
