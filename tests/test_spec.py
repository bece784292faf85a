"""The sweep file: schema, bad input as one clear line, expansion and stable trial keys."""

import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchxfer.cli import main
from benchxfer.errors import BenchxferError
from benchxfer.plan.spec import load_spec
from benchxfer.trial import trial_key

pytestmark = pytest.mark.fast

GOOD = """
name: t
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
lr: [0.001, 0.0001]
seeds: 3
overrides: {arch: resnet18, size: 64, epochs: 2}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def run_cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_dry_run_lists_every_trial_and_the_total(tmp_path, bx_home, monkeypatch):
    bx_home = tmp_path / "home"  # a home of its own: other tests write synthetic data into the shared one
    monkeypatch.setenv("BENCHXFER_HOME", str(bx_home))
    res = run_cli("sweep", str(write(tmp_path, GOOD)), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "Total: 6 trials = 1 inits x 1 datasets x lr [0.001, 0.0001] x 3 seeds" in res.output
    assert res.output.count("scratch_chestxray14_lr") == 6
    assert not (bx_home / "data" / "synthetic" / "chestxray14").exists()  # a dry run writes nothing


def test_trial_keys_are_stable_and_cover_the_protocol(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.seeds == (0, 1, 2) and spec.lr == (0.001, 0.0001)
    k1 = trial_key("scratch", "chestxray14", 0.001, 0, None, "systematic-cls", {"epochs": 2}, {})
    assert k1 == trial_key("scratch", "chestxray14", 0.001, 0, None, "systematic-cls", {"epochs": 2}, {})
    assert k1.startswith("scratch_chestxray14_lr0.001_s0_")
    assert k1 != trial_key("scratch", "chestxray14", 0.001, 0, None, "systematic-cls", {"epochs": 3}, {})
    assert trial_key("scratch", "x", 0.1, 1, 5, "r", {}, {}).startswith("scratch_x_lr0.1_s1_k5_")


def test_the_keys_and_params_of_options_and_overrides_are_pinned(tmp_path, monkeypatch):
    """A sweep's trial with reader options and knob overrides at both levels, and a pre-training's run with a
    source's options: their exact keys and MLflow params (resume finds a trial by its key: they never change)."""
    from benchxfer.plan.planning import make_plan
    from benchxfer.plan.pretraining import load_pretrain_spec, plan_pretrain

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    sweep = write(tmp_path, GOOD.replace("root: synthetic", "root: synthetic\n    options: {val_fraction: 0.2, views: [PA]}"
                                         "\n    overrides: {weight_decay: 0.0005}")
                  .replace("[0.001, 0.0001]", "[0.001]").replace("seeds: 3", "seeds: 1")
                  .replace("epochs: 2}", "epochs: 2, augment: plain}"))
    trial = make_plan(str(sweep), None, dry_run=True).trials[0]
    assert trial.key == "scratch_chestxray14_lr0.001_s0_436b355f"
    assert trial.params() == {"init": "scratch", "dataset": "chestxray14", "recipe": "systematic-cls", "lr": "0.001",
                              "seed": "0", "shot": "full", "arch": "resnet18", "augment": "plain", "epochs": "2",
                              "size": "64", "weight_decay": "0.0005"}
    assert trial.config.dataset_options == {"val_fraction": 0.2, "views": ["PA"]}
    pre = plan_pretrain(load_pretrain_spec(write(tmp_path, """
        name: my-init
        sources: [{dataset: chestxray14, root: synthetic, options: {val_fraction: 0.1, views: [PA, AP]}}]
        arch: resnet18
        overrides: {epochs: 1, size: 64}
        """, "p.yaml")), write_synthetic=False)
    assert pre.key == "pretrain-my-init_chestxray14_lr0.01_s0_cbc19310"
    assert pre.params() == {"init": "scratch", "dataset": "chestxray14", "recipe": "supervised-pretrain", "lr": "0.01",
                            "seed": "0", "shot": "full", "arch": "resnet18", "epochs": "1", "output": "my-init",
                            "size": "64", "start": "scratch"}


BAD = [
    ("name: t\ninits: [scratch\n", "YAML syntax error at line"),
    (GOOD + "colour: red\n", "colour: unknown key; allowed: datasets, description"),
    (GOOD.replace("[scratch]", "[no-such-init]"), "inits[0]: unknown init 'no-such-init'; known:"),
    (GOOD.replace("name: chestxray14", "name: nih"), "datasets[0].name: unknown dataset 'nih'; known:"),
    (GOOD.replace("root: synthetic", "root: /does/not/exist"), "datasets[0].root: folder /does/not/exist does not exist"),
    (GOOD.replace("[0.001, 0.0001]", "[0.001, -1]"), "lr[1]: must be a positive number, got -1"),
    (GOOD.replace("[0.001, 0.0001]", "0"), "lr: must be a positive number, got 0"),
    (GOOD.replace("seeds: 3", "seeds: 0"), "seeds: must be an integer >= 1, got 0"),
    (GOOD.replace("epochs: 2", "epoch: 2"), "unknown override 'epoch'; allowed:"),
    (GOOD.replace("epochs: 2", "epochs: many"), "override epochs='many' must be an integer"),
    (GOOD + "mode: random\n", "mode: must be one of grid, tune-then-repeat"),
    (GOOD + "resources: {gpus: 1}\n", "resources.gpus: unknown key; allowed: cpus_per_worker"),
    (GOOD.replace("[0.001, 0.0001]", "{search: loguniform, low: 0.1, high: 0.01}"), "lr: low (0.1) must be below high"),
    (GOOD.replace("arch: resnet18", "arch: vgg16"), "unknown arch 'vgg16'; known:"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_sweep_is_one_line_before_ray(tmp_path, bx_home, text, message):
    path = write(tmp_path, text)
    t0 = time.monotonic()
    res = CliRunner().invoke(main, ["sweep", str(path)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln]
    assert len(lines) == 1, res.output
    assert message in lines[0], lines[0]
    assert time.monotonic() - t0 < 30


def test_missing_file_and_unknown_sweep(tmp_path, bx_home):
    res = CliRunner().invoke(main, ["sweep", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 1 and "nope.yaml: no such file" in res.output
    res = CliRunner().invoke(main, ["status", "never-ran"])
    assert res.exit_code == 1 and "no sweep named 'never-ran'" in res.output


def test_bad_values_raise_benchxfer_error(tmp_path):
    with pytest.raises(BenchxferError, match="seeds: repeats a seed"):
        load_spec(write(tmp_path, GOOD.replace("seeds: 3", "seeds: [1, 1]")))


def test_the_sections_are_typed_frozen_records_and_the_run_settings_are_built_from_them(tmp_path):
    """resources:, failure: and keep read once into records; Launch is made from them, field by field."""
    import dataclasses

    from benchxfer.launch.cluster import Launch
    from benchxfer.plan.schema import DatasetEntry, FailurePolicy, Resources

    spec = load_spec(write(tmp_path, GOOD + "resources: {workers: 2, cpus_per_worker: 3, gpus_per_worker: 1, "
                                           "max_concurrent: 4, trainer: torch}\nfailure: {max_retries: 5}\nkeep: none\n"))
    assert spec.resources == Resources(workers=2, cpus_per_worker=3, gpus_per_worker=1, max_concurrent=4,
                                       trainer="torch")
    assert spec.failure == FailurePolicy(max_retries=5) and spec.keep == "none"
    assert spec.datasets == (DatasetEntry("chestxray14", "synthetic"),)
    launch = Launch.of(spec.name, "file:x", spec.resources, spec.failure, keep=spec.keep, record_shards=True)
    assert launch == Launch("t", "file:x", workers=2, cpus_per_worker=3, gpus_per_worker=1, max_concurrent=4,
                            trainer="torch", max_retries=5, record_shards=True, keep="none")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resources.workers = 1  # type: ignore[misc]
    default = load_spec(write(tmp_path, GOOD, "d.yaml"))
    assert (default.resources, default.failure, default.keep) == (Resources(), FailurePolicy(), "selected")
    assert Launch.of("t", "", default.resources, default.failure) == Launch("t", "")  # the same defaults


def test_the_synthetic_block_is_a_frozen_record_and_names_the_folder_it_named(tmp_path, monkeypatch):
    """``synthetic:`` becomes ``SyntheticSet`` (its fields the schema's keys, ensure's defaults for the rest); the
    set's folder is still named by the keys the file wrote, so a file that writes a default out keeps its data."""
    import dataclasses

    from benchxfer.data.roots import resolve_root
    from benchxfer.data.synthetic import SyntheticSet
    from benchxfer.plan.schema import SYNTHETIC_RULES

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    spec = load_spec(write(tmp_path, GOOD.replace("root: synthetic", "root: synthetic\n    synthetic: {n_train: 4, seed: 0}")))
    block = spec.datasets[0].synthetic
    assert block == SyntheticSet(n_train=4, seed=0, written=("n_train", "seed"))
    assert (block.n_val, block.size, block.family) == (100, 96, "cxr")  # ensure's defaults
    assert [f.name for f in dataclasses.fields(SyntheticSet)] == [*SYNTHETIC_RULES, "written"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        block.n_train = 5  # type: ignore[misc]
    folder = Path(resolve_root("chestxray14", "synthetic", block, "x", write_synthetic=False))
    assert folder.name == "chestxray14-2d3fb815"  # the folder of the same block before it was a record
    assert Path(resolve_root("chestxray14", "synthetic", SyntheticSet(), "x", False)).name == "chestxray14"


def test_reader_options_and_overrides_are_read_only_past_the_schema_and_pickle_as_they_are(tmp_path, monkeypatch):
    """The open-keyed sections (reader options, knob overrides) are FrozenDicts from the schema to the trial: no
    later code can change them, Ray's pickling gives them back as they were, and TrainConfig holds plain data."""
    import copy
    import pickle

    from benchxfer.frozen import FrozenDict
    from benchxfer.plan.planning import make_plan

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    plan = make_plan(str(write(tmp_path, GOOD.replace("root: synthetic", "root: synthetic\n    options: {val_fraction: 0.2}"
                                                      "\n    overrides: {weight_decay: 0.0005}"))), None, dry_run=True)
    spec, trial = plan.spec, plan.trials[0]
    held = (spec.overrides, spec.datasets[0].options, spec.datasets[0].overrides, trial.overrides)
    assert held == ({"arch": "resnet18", "size": 64, "epochs": 2}, {"val_fraction": 0.2}, {"weight_decay": 0.0005},
                    {"arch": "resnet18", "size": 64, "epochs": 2, "weight_decay": 0.0005})
    for section in held:
        assert type(section) is FrozenDict
        for change in (lambda d: d.__setitem__("epochs", 3), lambda d: d.update(epochs=3), lambda d: d.pop("x", 0),
                       lambda d: d.setdefault("x", 0), lambda d: d.clear(), lambda d: d.__delitem__("x")):
            with pytest.raises(TypeError, match="FrozenDict is read-only"):
                change(section)
    assert {**spec.overrides, "epochs": 3}["epochs"] == 3 and spec.overrides["epochs"] == 2  # a copy changes
    again = pickle.loads(pickle.dumps(plan.trials))  # as Ray sends them (TrialIndex)
    assert again == plan.trials and type(again[0].overrides) is FrozenDict
    assert type(pickle.loads(pickle.dumps(spec)).datasets[0].options) is FrozenDict
    assert copy.deepcopy(spec) == spec
    assert type(trial.config.dataset_options) is dict  # TrainConfig: plain data, to the DDP workers as before


def test_a_pre_training_file_is_read_into_the_same_records(tmp_path):
    from benchxfer.plan.pretraining import load_pretrain_spec
    from benchxfer.plan.schema import FailurePolicy, Resources, Source

    spec = load_pretrain_spec(write(tmp_path, """
        name: my-init
        sources: [{dataset: chestxray14, root: synthetic, options: {val_fraction: 0.1}}]
        arch: resnet18
        resources: {workers: 2}
        failure: {max_retries: 0}
        """, "p.yaml"))
    assert spec.sources == (Source("chestxray14", "synthetic", {"val_fraction": 0.1}),)
    assert spec.resources == Resources(workers=2) and spec.failure == FailurePolicy(max_retries=0)
