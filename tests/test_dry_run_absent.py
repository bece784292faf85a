"""A dry run plans without the data: each missing root or zoo file on a line of its own, the trials listed, exit 0;
the real run (and `train`) still refuses the first in one line, before MLflow or Ray."""

from __future__ import annotations

import pytest
from test_errors import GOOD, PRETRAIN, warm_run

pytestmark = pytest.mark.fast

SWEEP = GOOD.replace("inits: [scratch]", "inits: [scratch, moco-v2, {name: mine, pretrain: p.yaml}]") \
    .replace("    root: synthetic\n    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}\n",
             "    root: /nonexistent/NIH\n  - name: chexpert\n    root: nowhere/CheXpert\n") \
    .replace("arch: resnet18, ", "")


def test_dry_run_lists_the_trials_and_each_absent_thing(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    (tmp_path / "p.yaml").write_text(PRETRAIN.replace("root: synthetic", "root: /nonexistent/CheXpert-src")
                                     .replace("arch: resnet18", "arch: resnet50"))
    env = {"BENCHXFER_HOME": str(tmp_path / "home")}
    code, out, err = warm_run(["sweep", str(tmp_path / "s.yaml"), "--dry-run"], env, tmp_path)
    assert code == 0 and err.strip() == "", err
    assert "Total: 12 trials = 3 inits x 2 datasets" in out, out
    absent = [line.strip() for line in out.splitlines() if line.strip().startswith("absent: ")]
    assert len(absent) == 4, out
    assert "datasets[0].root: folder /nonexistent/NIH does not exist (dataset 'chestxray14')" in absent[0]
    assert f"datasets[1].root: folder {tmp_path}/nowhere/CheXpert does not exist (dataset 'chexpert')" in absent[1]
    assert "inits[1]: init 'moco-v2': file " in absent[2] and "benchxfer zoo import moco-v2" in absent[2]
    assert "p.yaml: sources[0].root: folder /nonexistent/CheXpert-src does not exist" in absent[3]
    assert "the real run refuses until they are there" in out
    assert not (tmp_path / "home" / "runs").exists()  # a dry run leaves the disk alone

    for args in (["sweep", str(tmp_path / "s.yaml")], ["train", str(tmp_path / "s.yaml")]):
        code, out, err = warm_run(args, env, tmp_path)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert "datasets[0].root: folder /nonexistent/NIH does not exist" in lines[0]
    assert not (tmp_path / "home" / "runs").exists()
