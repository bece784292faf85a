"""Property (issue 34): no report ever averages two different things under one sweep name.

A sweep ``prop`` has run (its records written in the real layout by the runner's own writers: the sweep file as
run, its trials, the data they read, its tracking store, and a result.json per trial). Then one thing that decides
a result is changed: a knob, an lr, the seeds, a reader option, the recipe, the data under its root, the root
itself, the tracking store, or a knob given by ``train --set``; and the same name is run again through the command
line. Whatever it answers, the sweep's folder is as it was unless the command was entitled to change it, and
``benchxfer report prop`` averages exactly the trials of the first protocol. A change that decides nothing (the
description, the resources) must get past every identity check (it reaches the tracking server, which is down
here, so nothing runs): the checks cannot pass by refusing everything.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from test_errors import GOOD, snapshot, warm_run
from test_results import result_record

from benchxfer.data import synthetic

pytestmark = pytest.mark.fast

NAME = "prop"
DEAD = "http://127.0.0.1:9"  # the sweep's own store, down: a command that passes every check stops there, before Ray
SMALL = {"n_train": 4, "n_val": 2, "n_test": 2, "size": 16}
BASE = GOOD.replace("name: done", f"name: {NAME}").replace("root: synthetic", "root: nih").replace(
    "    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}\n", "")


def ran(tmp: Path, home: Path, monkeypatch) -> tuple[Path, list[str]]:
    """The first run of sweep ``prop``, as the runner leaves it: sweep.yaml, source.json, trials.json, data.json,
    tracking.json and a finished result.json per trial."""
    from benchxfer.launch.runner import save_plan
    from benchxfer.plan.planning import make_plan
    from benchxfer.report.results import record_store
    from benchxfer.trialdir import TrialDir, write_json

    synthetic.write("chestxray14", tmp / "nih", **SMALL)
    source = tmp / "s.yaml"
    source.write_text(BASE)
    with monkeypatch.context() as m:
        m.setenv("BENCHXFER_HOME", str(home))
        plan = make_plan(source)
        save_plan(plan)
        record_store(NAME, DEAD)
        for i, t in enumerate(plan.trials):
            rec = result_record(NAME, t.key, t.init, t.dataset, t.seed, 0.6 + 0.1 * i, task=t.task, lr=t.lr)
            write_json(TrialDir.of(NAME, t.key).path / "result.json", rec)
    return source, [t.key for t in plan.trials]


def edit(old: str, new: str) -> Callable[[Path, Path], list[str]]:
    """The sweep file with one edit, run again under the same name."""
    def change(tmp: Path, source: Path) -> list[str]:
        assert old in BASE, old
        source.write_text(BASE.replace(old, new))
        return ["sweep", str(source), "--tracking-uri", DEAD]
    return change


def other_data(tmp: Path, source: Path) -> list[str]:
    synthetic.write("chestxray14", tmp / "nih", **{**SMALL, "n_train": 6})  # other images in the same folder
    return ["sweep", str(source), "--tracking-uri", DEAD]


def other_root(tmp: Path, source: Path) -> list[str]:
    synthetic.write("chestxray14", tmp / "copy", **SMALL)
    source.write_text(BASE.replace("root: nih", "root: copy"))
    return ["sweep", str(source), "--tracking-uri", DEAD]


def other_store(tmp: Path, source: Path) -> list[str]:
    return ["resume", NAME, "--tracking-uri", "http://127.0.0.1:10"]


def train_with_set(tmp: Path, source: Path) -> list[str]:
    return ["train", str(source), "--set", "epochs=2"]


def knob_changes(seed: int = 34) -> list[tuple[str, Callable]]:
    """One change of each of a few knobs, to a value drawn (seed fixed) from values their rules accept."""
    rng = random.Random(seed)
    choices = {"epochs": [2, 3, 5], "momentum": [0.5, 0.8], "batch_size": [2, 4, 8], "weight_decay": [1e-4, 1e-3],
               "optimizer": ["sgd", "adam"], "augment": ["plain", "systematic-cls"]}
    out = []
    for knob, values in choices.items():
        value = rng.choice(values)
        new = f"epochs: {value}}}" if knob == "epochs" else f"epochs: 1, {knob}: {value}}}"
        out.append((f"{knob}={value}", edit("epochs: 1}", new)))
    return out


CHANGES: list[tuple[str, Callable]] = [
    ("lr", edit("[0.001, 0.0001]", "[0.001, 0.01]")),
    ("seeds", edit("seeds: 1", "seeds: 2")),
    ("reader-option", edit("root: nih", "root: nih\n    options: {val_fraction: 0.3}")),
    ("recipe", edit("seeds: 1", "seeds: 1\nrecipe: bit-hyperrule")),
    ("data-under-its-root", other_data),
    ("another-root", other_root),
    ("tracking-store", other_store),
    ("train-set", train_with_set),
    *knob_changes(),
]
HARMLESS = [
    ("description", edit("seeds: 1", "seeds: 1\ndescription: the same sweep, described")),
    ("resources", edit("seeds: 1", "seeds: 1\nresources: {max_concurrent: 1}")),
]


def report_keys(home: Path, tmp: Path) -> tuple[set[str], str]:
    code, out, err = warm_run(["report", NAME, "--out", str(tmp / "rep"), "--no-publish"],
                              {"BENCHXFER_HOME": str(home)}, tmp)
    assert code == 0, err
    import pandas as pd

    runs = pd.read_csv(tmp / "rep" / "runs.csv")
    return set(runs.loc[runs["status"] == "finished", "trial_key"]), out


@pytest.mark.parametrize("label, change", [*CHANGES, *HARMLESS], ids=[c[0] for c in [*CHANGES, *HARMLESS]])
def test_no_report_averages_two_things_under_one_name(label, change, tmp_path, monkeypatch):
    home = tmp_path / "home"
    source, keys = ran(tmp_path, home, monkeypatch)
    sweep_folder = home / "runs" / NAME
    before = snapshot(sweep_folder)
    args = change(tmp_path, source)
    code, out, err = warm_run(args, {"BENCHXFER_HOME": str(home)}, tmp_path)
    lines = err.strip().splitlines()
    if label == "train-set":  # entitled to run: in a folder of its own (local/), never one of the sweep's trials
        assert code == 0, err
        after = {k: v for k, v in snapshot(sweep_folder).items() if not k.startswith("local/")}
        assert after == before
    else:
        assert code == 1 and len(lines) == 1 and "Traceback" not in err, (code, out, err)
        reached_the_store = "cannot reach the MLflow tracking server" in lines[0]
        assert reached_the_store == (label in dict(HARMLESS)), lines[0]  # refused exactly when it decides a result
        if not reached_the_store:  # and the line names what stands under the name
            want = {"data-under-its-root": "is not the data of the finished trials: the listing of",
                    "another-root": "datasets[0].root was", "tracking-store": "the sweep records its runs in " + DEAD
                    }.get(label, f"is not the sweep started under this name ({sweep_folder / 'sweep.yaml'})")
            assert want in lines[0], (label, lines[0])
        assert snapshot(sweep_folder) == before, f"{label}: the sweep's records changed"
    finished, out = report_keys(home, tmp_path)
    assert finished == set(keys), (label, finished)  # the first protocol's trials, and only those
    assert "2 finished trials averaged" in out, out
