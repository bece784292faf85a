"""Issue 34: a name is not an identity. What a name already stands for (a trial's folder, a zoo init, a report
folder, a sweep, an environment path) is kept apart from what a later command means by it, through the command
line. The refusals themselves are rows of docs/errors.md (tests/test_errors.py); these tests check what is allowed
beside them and what must stay untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from test_errors import GOOD, plant_finished_sweep, snapshot, warm_run

pytestmark = pytest.mark.fast

TINY = GOOD.replace("n_train: 4, n_val: 2, n_test: 2, size: 24", "n_train: 4, n_val: 2, n_test: 2, size: 16") \
    .replace("size: 32", "size: 16")


def _train(args: list[str], home: Path, cwd: Path) -> dict:
    code, out, err = warm_run(["train", *args], {"BENCHXFER_HOME": str(home)}, cwd)
    assert code == 0, (out, err)
    return json.loads(out[out.index("{"):])


def test_train_set_trains_in_a_folder_of_its_own(tmp_path):
    """Item 6: `train --set epochs=2` and a plain `train` of the same trial never share a folder, so neither
    reports (or continues) the other's run; a --set that changes nothing is the plain trial."""
    home = tmp_path / "home"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(TINY)
    with_set = _train([str(sweep), "--set", "epochs=2"], home, tmp_path)
    plain = _train([str(sweep)], home, tmp_path)
    assert with_set["epochs_run"] == 2 and plain["epochs_run"] == 1
    assert with_set["trial_key"].startswith(plain["trial_key"] + "_set-")
    local = home / "runs" / "done" / "local"
    assert sorted(p.name for p in local.iterdir()) == sorted([plain["trial_key"], with_set["trial_key"]])
    for key, epochs in ((plain["trial_key"], 1), (with_set["trial_key"], 2)):
        assert json.loads((local / key / "result.json").read_text())["epochs_run"] == epochs
    # the same values as the file: the plain trial, already finished in its own folder
    code, out, err = warm_run(["train", str(sweep), "--set", "epochs=1"], {"BENCHXFER_HOME": str(home)}, tmp_path)
    assert code == 0 and f"Training {plain['trial_key']} in-process" in out, (out, err)
    assert not (home / "locks" / f"train-done-{plain['trial_key']}.lock").exists()  # released at the end


def test_report_out_replaces_only_its_own_files(tmp_path):
    """Item 2: a report written again into its folder replaces its own files; a file the user changed there,
    or wrote, is never replaced, and the refused report leaves the folder as it was."""
    home = tmp_path / "home"
    plant_finished_sweep(home)
    env = {"BENCHXFER_HOME": str(home)}
    out = tmp_path / "rep"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("mine\n")  # a file the report does not write: left alone
    for _ in range(2):
        code, stdout, err = warm_run(["report", "done", "--out", str(out)], env, tmp_path)
        assert code == 0, err
    manifest = json.loads((out / ".benchxfer-report.json").read_text())["files"]
    assert {"summary.csv", "table.md", "report.html", "runs.csv", "runs.parquet"} <= set(manifest)
    assert "notes.txt" not in manifest and (out / "notes.txt").read_text() == "mine\n"
    (out / "table.md").write_text("my edited table\n")
    before = snapshot(out)
    code, stdout, err = warm_run(["report", "done", "--out", str(out)], env, tmp_path)
    assert code == 1 and err.strip().startswith(f"Error: report folder {out}: 1 file(s) of the report are already "
                                                f"there and were not written by benchxfer (or were changed since), "
                                                f"the first: {out / 'table.md'}"), err
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".benchxfer-report-")]  # no staging folder left


def _resnet18_file(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_a_pre_training_writes_over_its_own_backbone_only(tmp_path):
    """Item 1, under the zoo's lock: the export of a pre-training run refuses a name held by an import (its
    provenance kept), writes over the same run's earlier export, and replaces another's only with force."""
    from benchxfer import zoo
    from benchxfer.errors import BenchxferError
    from benchxfer.zoo.store import claimed, import_init, read_index

    folder = tmp_path / "zoo"
    import_init("mine", _resnet18_file(tmp_path / "first.pth"), fmt="torchvision", zoo=folder)
    imported = read_index(folder)["mine"]
    state = torchvision.models.resnet18().state_dict()
    assert claimed("mine", "run-a", folder) is not None
    with pytest.raises(BenchxferError, match="init 'mine' is already in the zoo .*pass --force to replace it"):
        zoo.save_local_init("mine", state, "resnet18", {"trial_key": "run-a"}, zoo=folder, force=False)
    assert read_index(folder)["mine"] == imported
    assert {"source_file", "source_sha256", "imported_at"} <= set(imported)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    zoo.save_local_init("ours", state, "resnet18", {"trial_key": "run-a"}, zoo=folder, force=False)
    assert claimed("ours", "run-a", folder) is None  # run again after a kill: its own backbone
    zoo.save_local_init("ours", state, "resnet18", {"trial_key": "run-a"}, zoo=folder, force=False)
    assert claimed("ours", "run-b", folder) is not None  # another pre-training's
    with pytest.raises(BenchxferError, match="already in the zoo"):
        zoo.save_local_init("ours", state, "resnet18", {"trial_key": "run-b"}, zoo=folder, force=False)
    zoo.save_local_init("ours", state, "resnet18", {"trial_key": "run-b"}, zoo=folder, force=True)
    assert read_index(folder)["ours"]["provenance"]["trial_key"] == "run-b"


def test_a_sweep_file_may_change_how_it_runs_not_what_it_computes(tmp_path, monkeypatch):
    """Item 3: under a started sweep's name, a file that changes only its description, resources or failure
    policy continues the sweep; a changed root (absolute, or relative to another folder), lr or seed does not."""
    from benchxfer.errors import BenchxferError
    from benchxfer.plan.identity import refuse_other_sweep
    from benchxfer.plan.spec import load_spec

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    nih = tmp_path / "a" / "nih"
    nih.mkdir(parents=True)
    started = GOOD.replace("root: synthetic", "root: nih").replace(
        "    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}\n", "")
    source = tmp_path / "a" / "s.yaml"
    source.write_text(started)
    sdir = tmp_path / "home" / "runs" / "done"
    sdir.mkdir(parents=True)
    (sdir / "sweep.yaml").write_text(started)
    (sdir / "source.json").write_text(json.dumps({"path": str(source)}))
    fine = tmp_path / "b.yaml"
    fine.write_text(started.replace("root: nih", f"root: {nih}") + "description: more words\n"
                    "resources: {max_concurrent: 1}\nfailure: {max_retries: 1}\n")
    refuse_other_sweep(load_spec(fine), str(fine))  # the same root, written absolute; how it runs changed only
    refuse_other_sweep(load_spec(source), str(source))  # the very file
    same = tmp_path / "a" / "same.yaml"  # the same trials, written otherwise: the seeds listed, the defaults out
    same.write_text(started.replace("seeds: 1", "seeds: [0]") + "mode: grid\nrecipe: auto\n")
    refuse_other_sweep(load_spec(same), str(same))
    elsewhere = tmp_path / "c" / "s.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(started)  # root: nih, but beside another file: another copy of the data
    with pytest.raises(BenchxferError) as err:
        refuse_other_sweep(load_spec(elsewhere), str(elsewhere))
    assert f"datasets[0].root was '{nih}', now '{tmp_path / 'c' / 'nih'}'" in str(err.value), str(err.value)
    seeds = tmp_path / "d.yaml"
    seeds.write_text(started.replace("seeds: 1", "seeds: 2").replace("root: nih", f"root: {nih}"))
    with pytest.raises(BenchxferError, match=r"seeds was \[0\], now \[0, 1\]"):
        refuse_other_sweep(load_spec(seeds), str(seeds))
    # the very file again, named relative to where it is run (as `make demo` names sweeps/demo.yaml), with an init
    # that a pre-training file beside it makes: the same sweep (the copy's pre-training path reads absolute)
    mine = started.replace("inits: [scratch]", "inits: [scratch, {name: mine, pretrain: p.yaml}]").replace(
        "name: done", "name: relative")
    rel = tmp_path / "e" / "s.yaml"
    rel.parent.mkdir()
    rel.write_text(mine.replace("root: nih", f"root: {nih}"))
    rdir = tmp_path / "home" / "runs" / "relative"
    rdir.mkdir(parents=True)
    (rdir / "sweep.yaml").write_text(rel.read_text())
    (rdir / "source.json").write_text(json.dumps({"path": str(rel)}))
    monkeypatch.chdir(tmp_path)
    refuse_other_sweep(load_spec("e/s.yaml"), "e/s.yaml")
    other = tmp_path / "f" / "s.yaml"  # the same text beside another pre-training file: another sweep
    other.parent.mkdir()
    other.write_text(rel.read_text())
    with pytest.raises(BenchxferError, match=r"inits\[1\]\.pretrain was '.*/e/p\.yaml', now '.*/f/p\.yaml'"):
        refuse_other_sweep(load_spec("f/s.yaml"), "f/s.yaml")


def test_environment_paths_are_pinned_and_never_followed_to_nothing(tmp_path, monkeypatch):
    """Item 11: a relative $BENCHXFER_CACHE is made absolute once and reaches the workers with the home and the
    zoo; a $BENCHXFER_HOME under a link to nothing is refused and its target is never made."""
    from benchxfer import paths
    from benchxfer.errors import BenchxferError
    from benchxfer.launch import cluster

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCHXFER_HOME", "home")
    monkeypatch.setenv("BENCHXFER_CACHE", "cache")
    monkeypatch.delenv("BENCHXFER_ZOO", raising=False)
    paths.pin()
    assert os.environ["BENCHXFER_CACHE"] == str(tmp_path / "cache")
    env = cluster.session_env()
    assert env["BENCHXFER_CACHE"] == str(tmp_path / "cache") and env["BENCHXFER_HOME"] == str(tmp_path / "home")

    (tmp_path / "share").symlink_to(tmp_path / "mnt" / "share")
    code, out, err = warm_run(["status", "done"], {"BENCHXFER_HOME": str(tmp_path / "share" / "bx")}, tmp_path)
    assert code == 1 and "is a symbolic link to" in err and "which does not exist" in err, err
    assert not (tmp_path / "mnt").exists()
    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "share" / "bx"))
    with pytest.raises(BenchxferError, match="an unmounted share"):
        paths.home()


# keys of shipped sweeps as they were before issue 34 (a changed key would run a finished sweep again)
KNOWN_KEYS = {
    "demo.yaml": "scratch_chestxray14_lr0.001_s0_4ad8c38c",
    "systematic_seg.yaml": "scratch_drive_lr0.001_s0_2121f6bf",
    "fewshot_bit_natural.yaml": "bit-s-r50x1_cifar10_lr0.001_s0_k1_f44d841e",  # its cifar cells write micro_batch: 0
}


def _keys(args: list[str], home: Path, cwd: Path) -> list[str]:
    code, out, err = warm_run(["sweep", *args, "--dry-run", "--limit", "0"], {"BENCHXFER_HOME": str(home)}, cwd)
    assert code == 0, err
    return [line.split()[1] for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]


@pytest.mark.parametrize("name", sorted(KNOWN_KEYS))
def test_a_known_sweeps_keys_are_unchanged(name, tmp_path):
    keys = _keys([str(Path(__file__).parents[1] / "sweeps" / name)], tmp_path / "home", tmp_path)
    assert KNOWN_KEYS[name] in keys


def test_a_default_written_out_keeps_every_key_and_close_lrs_are_two_trials(tmp_path):
    """Item 15: `micro_batch: 0` (TrainConfig's default, not a recipe's) written out keeps the keys of the file
    without it; two lrs equal to 6 digits are two trials, not 'a repeated axis value'."""
    home = tmp_path / "home"
    plain = tmp_path / "plain.yaml"
    plain.write_text(GOOD)
    written = tmp_path / "written.yaml"
    written.write_text(GOOD.replace("epochs: 1}", "epochs: 1, micro_batch: 0}"))
    keys = _keys([str(plain)], home, tmp_path)
    assert keys == ["scratch_chestxray14_lr0.001_s0_7ee2f518", "scratch_chestxray14_lr0.0001_s0_7ee2f518"]
    assert _keys([str(written)], home, tmp_path) == keys
    other = tmp_path / "other.yaml"
    other.write_text(GOOD.replace("epochs: 1}", "epochs: 1, max_train_batches: 2}"))
    assert set(_keys([str(other)], home, tmp_path)).isdisjoint(keys)
    close = tmp_path / "close.yaml"
    close.write_text(GOOD.replace("[0.001, 0.0001]", "[0.0001234567, 0.0001234568]"))
    assert [k.split("_")[2] for k in _keys([str(close)], home, tmp_path)] == ["lr0.0001234567", "lr0.0001234568"]


def test_a_full_zoo_folder_is_one_line_and_leaves_no_temporary_file(tmp_path):
    """Item 14: `zoo import` into a zoo whose disk is full (here: a file-size limit, which fails the write as a
    full disk does) ends in one line naming the zoo folder, with no hidden temporary file left there."""
    import resource
    import signal
    import subprocess
    import sys

    r18 = _resnet18_file(tmp_path / "r18.pth")  # 45 MB as safetensors; the limit is 8 MB

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))

    zoo = tmp_path / "zoo"
    res = subprocess.run([sys.executable, "-m", "benchxfer.cli", "zoo", "import", "mine", str(r18), "--format",
                          "torchvision", "--zoo", str(zoo)], preexec_fn=full_disk, capture_output=True, text=True,
                         env={**os.environ, "BENCHXFER_HOME": str(tmp_path / "home")}, timeout=120, check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().startswith(f"Error: zoo folder {zoo}: cannot write mine.safetensors ("), res.stderr
    assert "File too large" in res.stderr and res.stderr.strip().endswith(
        "free space there, or use another zoo (--zoo DIR or $BENCHXFER_ZOO)"), res.stderr
    assert [p.name for p in zoo.iterdir() if p.name != ".zoo.lock"] == []


def test_ray_address_is_the_cluster_to_join_and_said(tmp_path, monkeypatch):
    """Item 10: $RAY_ADDRESS is read as Ray reads it (the cluster `sweep`, `resume` and `pretrain` join when no
    --address is given), and a line says so before anything starts; --address still wins."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(GOOD)
    env = {"BENCHXFER_HOME": str(tmp_path / "home"), "RAY_ADDRESS": "10.0.0.5:6379"}
    dead = ["--tracking-uri", "http://127.0.0.1:9"]  # refused before Ray: nothing is joined here
    code, out, err = warm_run(["sweep", str(sweep), *dead], env, tmp_path)
    assert code == 1 and "cannot reach the MLflow tracking server" in err, err
    assert out.splitlines()[0] == ("Ray: joining the cluster at $RAY_ADDRESS=10.0.0.5:6379, as Ray itself does "
                                   "(unset RAY_ADDRESS for a local session of this command's own)"), out
    code, out, err = warm_run(["sweep", str(sweep), *dead, "--address", "10.0.0.6:6379"], env, tmp_path)
    assert code == 1 and "RAY_ADDRESS" not in out, out
    code, out, err = warm_run(["sweep", str(sweep), *dead], {"BENCHXFER_HOME": str(tmp_path / "home")}, tmp_path)
    assert code == 1 and "Ray:" not in out, out
    from benchxfer.launch import cluster  # the address this process's own session set for its children: not announced

    monkeypatch.setattr(cluster, "SESSION_ADDRESS", "10.0.0.5:6379")
    code, out, err = warm_run(["sweep", str(sweep), *dead], env, tmp_path)
    assert code == 1 and "Ray:" not in out, out


def test_each_synthetic_setting_has_a_folder_of_its_own(tmp_path, monkeypatch):
    """Item 5: a sweep whose `synthetic:` settings differ from a running sweep's writes its own folder and never
    rewrites the images the other reads; the same settings share one folder, written once."""
    from benchxfer.plan.planning import make_plan

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    first = tmp_path / "first.yaml"
    first.write_text(GOOD)
    second = tmp_path / "second.yaml"
    second.write_text(GOOD.replace("name: done", "name: other").replace("n_train: 4", "n_train: 6"))
    root = Path(make_plan(first, write_synthetic=True).roots["chestxray14"])
    assert root.parent == tmp_path / "home" / "data" / "synthetic" and root.name.startswith("chestxray14-")
    before = snapshot(root)
    other = Path(make_plan(second, write_synthetic=True).roots["chestxray14"])
    assert other != root and other.is_dir()
    assert snapshot(root) == before  # not rewritten under the first sweep
    assert Path(make_plan(first, write_synthetic=True).roots["chestxray14"]) == root and snapshot(root) == before
    dry = Path(make_plan(second, dry_run=True).roots["chestxray14"])
    assert dry == other  # the dry run names the folder the real run reads


def test_a_sweep_name_refuses_another_copy_of_its_data(tmp_path, monkeypatch):
    """Item 4: the data a sweep's trials read (the root, and a fingerprint of its listing) is recorded with the
    sweep; running it again on a root whose listing changed (here: another set written over the same folder) is
    refused in one line, before MLflow or Ray, and the record is kept."""
    from benchxfer.data import synthetic
    from benchxfer.launch.runner import record_data
    from benchxfer.plan.planning import make_plan

    home = tmp_path / "home"
    nih = synthetic.write("chestxray14", tmp_path / "nih", n_train=4, n_val=2, n_test=2, size=16)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(GOOD.replace("root: synthetic", "root: nih").replace(
        "    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}\n", ""))
    env = {"BENCHXFER_HOME": str(home)}
    with monkeypatch.context() as m:
        m.setenv("BENCHXFER_HOME", str(home))
        record_data(make_plan(sweep))  # what the first run of the sweep recorded (the runner's own writer)
    record = home / "runs" / "done" / "data.json"
    kept = record.read_bytes()
    assert json.loads(kept)["chestxray14"]["root"] == str(nih)
    dead = ["--tracking-uri", "http://127.0.0.1:9"]
    code, out, err = warm_run(["sweep", str(sweep), *dead], env, tmp_path)
    assert code == 1 and "cannot reach the MLflow tracking server" in err, err  # the same data: past the check
    synthetic.write("chestxray14", nih, n_train=6, n_val=2, n_test=2, size=16)  # other images, same folder
    code, out, err = warm_run(["sweep", str(sweep), *dead], env, tmp_path)
    assert code == 1 and err.strip().startswith(
        f"Error: sweep 'done': dataset 'chestxray14' is not the data of the finished trials: the listing of {nih} "
        "changed since its trials read it (files added, removed or resized: "), err
    assert record.read_bytes() == kept


def test_report_from_a_store_checks_the_trials_own_results(tmp_path, monkeypatch):
    """Items 8 and 18: a report read from an MLflow store skips (and names) a trial whose result.json is damaged,
    though the store says finished, and counts a finished trial whose run the store lacks (recorded in another
    store) from its own result file, saying so; a report against a store other than the sweep's says which."""
    from mlflow.tracking import MlflowClient
    from test_report_mlflow import SWEEP, add_trial
    from test_results import result_record, write_sweep

    home = tmp_path / "home"
    monkeypatch.setenv("BENCHXFER_HOME", str(home))
    home.mkdir()
    store = f"file:{tmp_path / 'mlruns'}"  # read without a server (the embedded SQLite store's artifacts need one)
    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment(SWEEP)
    parent = client.create_run(exp, tags={"benchxfer.role": "sweep"}, run_name=SWEEP).info.run_id
    for seed, key in enumerate(("k0", "k1")):
        add_trial(client, exp, parent, key, "scratch", seed, 0.8, "finished")
    recs = [result_record(SWEEP, k, "scratch", "chestxray14", s, 0.8, task="multilabel") for s, k in
            enumerate(("k0", "k1", "k2"))]
    sdir = write_sweep(SWEEP, recs)
    bad = sdir / "trials" / "k1" / "result.json"
    bad.write_text(json.dumps({**recs[1], "value": "high"}))
    (sdir / "sweep.yaml").write_text("name: x\n")
    (sdir / "tracking.json").write_text(json.dumps({"store": "http://team.example:5000"}))
    code, out, err = warm_run(["report", SWEEP, "--out", str(tmp_path / "rep"), "--tracking-uri", store,
                               "--no-publish"], {"BENCHXFER_HOME": str(home)}, tmp_path)
    assert code == 0, err
    assert out.splitlines()[0] == (f"Note: sweep '{SWEEP}' records its runs in http://team.example:5000; this report "
                                   f"reads {store}"), out
    assert f"Skipped a damaged trial: {bad}: value='high' is not a number" in out, out
    assert f"and 1 result file(s) under {sdir / 'trials'} whose runs this store lacks" in out, out
    assert "2 finished trials averaged; not averaged: 0 failed, 1 unfinished." in out, out


def test_resume_runs_from_its_own_copy_when_the_source_no_longer_reads(tmp_path):
    """Item 16: `resume` of a sweep whose source file was since broken (a YAML syntax error) resumes from the
    sweep's own copy, saying so, instead of failing on a file it does not run; relative roots in the copy are
    found from the source's folder, as when the sweep started."""
    from benchxfer.data import synthetic

    home = tmp_path / "home"
    synthetic.write("chestxray14", tmp_path / "nih", n_train=4, n_val=2, n_test=2, size=16)
    text = GOOD.replace("name: done", "name: moved").replace("root: synthetic", "root: nih").replace(
        "    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}\n", "")
    sdir = home / "runs" / "moved"
    sdir.mkdir(parents=True)
    (sdir / "sweep.yaml").write_text(text)
    source = tmp_path / "s.yaml"
    source.write_text(text.replace("inits: [scratch]", "inits: [scratch"))
    (sdir / "source.json").write_text(json.dumps({"path": str(source)}))
    code, out, err = warm_run(["resume", "moved", "--tracking-uri", "http://127.0.0.1:9"],
                              {"BENCHXFER_HOME": str(home)}, tmp_path)
    assert code == 1 and "cannot reach the MLflow tracking server" in err, err  # past the plan: nothing runs here
    assert out.splitlines()[0].startswith(f"Note: {source} no longer reads as a sweep file (YAML syntax error at "
                                          "line 3"), out
    assert f"resuming sweep 'moved' from its own copy {sdir / 'sweep.yaml'}" in out.splitlines()[0]


def test_a_sweeps_record_keeps_every_file_it_ran(tmp_path, monkeypatch):
    """Item 3: when the sweep file changes only how the sweep runs (its description), the new file becomes the
    sweep's copy and the copy it replaces is kept under history/, so no file the sweep ran is lost."""
    from benchxfer.launch.runner import save_plan
    from benchxfer.plan.planning import make_plan

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    source = tmp_path / "s.yaml"
    source.write_text(GOOD)
    save_plan(make_plan(source))
    sdir = tmp_path / "home" / "runs" / "done"
    source.write_text(GOOD + "description: described later\n")
    save_plan(make_plan(source))
    save_plan(make_plan(source))  # the same file again: nothing more kept
    assert (sdir / "sweep.yaml").read_text() == GOOD + "description: described later\n"
    assert sorted(p.name for p in (sdir / "history").iterdir()) == ["sweep-1.yaml"]
    assert (sdir / "history" / "sweep-1.yaml").read_text() == GOOD


def test_importing_one_file_again_gives_the_same_sha256(tmp_path):
    """Item 16: safetensors writes its metadata in a hash map's order; the zoo sorts it, so the same checkpoint
    imported again is the same file (one SHA-256), and it still verifies and loads."""
    r18 = _resnet18_file(tmp_path / "r18.pth")
    env = {"BENCHXFER_HOME": str(tmp_path / "home")}
    digests = set()
    for _ in range(4):
        code, out, err = warm_run(["zoo", "import", "mine", str(r18), "--format", "torchvision", "--zoo",
                                   str(tmp_path / "zoo"), "--force"], env, tmp_path)
        assert code == 0, err
        digests.add(json.loads((tmp_path / "zoo" / "zoo.json").read_text())["inits"]["mine"]["sha256"])
    assert len(digests) == 1, digests
    code, out, err = warm_run(["zoo", "verify", "mine", "--zoo", str(tmp_path / "zoo")], env, tmp_path)
    assert code == 0, (out, err)


def test_commands_that_only_read_accept_a_read_only_home(tmp_path):
    """Item 16: `status` and `report` only read the home, so a home nobody may write (immutable for root, mode 0555
    otherwise) serves them; a command that writes there still refuses it in one line."""
    import subprocess

    home = tmp_path / "home"
    result = plant_finished_sweep(home) / "trials" / "k1" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "epochs_started": 1, "best_val_loss": 0.5}))
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(home)], check=True)
        undo = ["chattr", "-i", str(home)]
    else:
        home.chmod(0o555)
        undo = ["chmod", "755", str(home)]
    try:
        env = {"BENCHXFER_HOME": str(home)}
        code, out, err = warm_run(["status", "done"], env, tmp_path)
        assert code == 0 and "1 finished" in out, (out, err)
        code, out, err = warm_run(["report", "done", "--out", str(tmp_path / "rep"), "--no-publish"], env, tmp_path)
        assert code == 0, err
        sweep = tmp_path / "s.yaml"
        sweep.write_text(GOOD)
        code, out, err = warm_run(["sweep", str(sweep)], env, tmp_path)
        assert code == 1 and err.strip() == f"Error: $BENCHXFER_HOME {home}: {home} is not writable", err
    finally:
        subprocess.run(undo, check=False)


def test_a_finished_result_whose_value_is_nan_is_named(tmp_path):
    """Item 16: a result.json whose value is NaN is not averaged, and the report names the file (it used to count
    the trial as unfinished without a word)."""
    home = tmp_path / "home"
    sweep = plant_finished_sweep(home)
    good = sweep / "trials" / "k1" / "result.json"
    rec = {**json.loads(good.read_text()), "epochs_started": 1, "best_val_loss": 0.5}
    good.write_text(json.dumps(rec))
    (sweep / "trials" / "k2").mkdir()
    bad = sweep / "trials" / "k2" / "result.json"
    bad.write_text(json.dumps({**rec, "trial_key": "k2", "seed": 1, "value": float("nan")}))  # json writes NaN
    trials = json.loads((sweep / "trials.json").read_text())
    (sweep / "trials.json").write_text(json.dumps([*trials, {**trials[0], "trial_key": "k2", "seed": 1}]))
    code, out, err = warm_run(["report", "done", "--out", str(tmp_path / "rep")], {"BENCHXFER_HOME": str(home)},
                              tmp_path)
    assert code == 0, err
    assert (f"Skipped a damaged trial: {bad}: a finished trial's value=nan is not a finite number (its test auroc "
            "could not be computed, or the file was edited); it is not averaged") in out, out
    assert "1 finished trials averaged; not averaged: 0 failed, 1 unfinished." in out, out


def test_a_finished_pre_training_names_the_zoo_it_wrote_to(tmp_path, monkeypatch):
    """Item 16: a pre-training that finished before, run again with a --zoo that lacks its backbone, names the zoo
    it wrote to and how to use it (a sweep's `{name, pretrain}` init used to fail later as an unknown init)."""
    from test_errors import PRETRAIN

    from benchxfer.plan.pretraining import EXPERIMENT, load_pretrain_spec, plan_pretrain
    from benchxfer.trialdir import TrialDir, write_json

    home = tmp_path / "home"
    pfile = tmp_path / "p.yaml"
    pfile.write_text(PRETRAIN)
    with monkeypatch.context() as m:
        m.setenv("BENCHXFER_HOME", str(home))
        trial = plan_pretrain(load_pretrain_spec(pfile))
    elsewhere = tmp_path / "other-zoo" / "mine.safetensors"
    rec = {**result_record_for(trial.key), "zoo_path": str(elsewhere)}
    write_json(TrialDir(home / "runs" / EXPERIMENT / "trials" / trial.key).path / "result.json", rec)
    code, out, err = warm_run(["pretrain", str(pfile), "--zoo", str(tmp_path / "zoo"), "--tracking-uri",
                               "http://127.0.0.1:9"], {"BENCHXFER_HOME": str(home)}, tmp_path)
    assert code == 1 and err.strip() == (
        f"Error: init 'mine': its pre-training ({pfile}) finished before and wrote the backbone to {elsewhere}, not "
        f"into the zoo {tmp_path / 'zoo'}; use that zoo (--zoo or $BENCHXFER_ZOO), or import it: `benchxfer zoo "
        f"import mine {elsewhere} --format benchxfer`"), err


def result_record_for(key: str) -> dict:
    from test_results import result_record

    return {**result_record("pretrain", key, "scratch", "chexpert", 0, 0.7, task="multilabel"), "epochs_started": 1,
            "best_val_loss": 0.5}


@pytest.mark.parametrize("interruption", [SystemExit(0), KeyboardInterrupt()], ids=["ray-actor-ended", "in-process"])
def test_an_interrupted_pre_training_says_so_and_how_to_continue(interruption, tmp_path, monkeypatch):
    """Item 16: Ctrl-C during `pretrain` ends its trial's actor with the SystemExit (or KeyboardInterrupt) that its
    driver settles as run_trial does (sweep.settle: an interruption records no failure, the trial stays resumable).
    The pre-training says it was interrupted and how to continue, as `sweep` names its unfinished trials and
    `resume` (it said "failed: no result was written"); a real failure is still named a failure. (Function level:
    the command itself gets here only after a Ray session.)"""
    from test_errors import PRETRAIN

    from benchxfer.launch.pretrain import pretrain_unfinished
    from benchxfer.launch.sweep import settle
    from benchxfer.plan.pretraining import EXPERIMENT, load_pretrain_spec, plan_pretrain
    from benchxfer.tracking import TrialRun
    from benchxfer.trialdir import Failure, Progress, TrialDir

    pfile = tmp_path / "p.yaml"
    pfile.write_text(PRETRAIN)
    with monkeypatch.context() as m:
        m.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
        spec = load_pretrain_spec(pfile)
        trial = plan_pretrain(spec)
    tdir = TrialDir(tmp_path / "home" / "runs" / EXPERIMENT / "trials" / trial.key)
    tdir.path.mkdir(parents=True)
    settle(tdir, TrialRun(None, None), interruption, EXPERIMENT)  # as the trial's driver settles it
    assert tdir.failure() is None
    start = f"pre-training 'mine' was interrupted before it finished (Ctrl-C); `benchxfer pretrain {pfile}` continues it "
    assert str(pretrain_unfinished(spec, tdir)) == start + "from the start (no epoch checkpoint was written yet)"
    tdir.write_progress(Progress(epoch=3, best_epoch=2, epochs_max=10, checkpoint=2))
    assert str(pretrain_unfinished(spec, tdir)) == start + "from its checkpoint of epoch 2"
    tdir.write_failure(Failure("TrialFailed: the loss is NaN at epoch 3", retryable=False))
    assert str(pretrain_unfinished(spec, tdir)) == "pre-training 'mine' failed: TrialFailed: the loss is NaN at epoch 3"
