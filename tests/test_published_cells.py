"""Every cell the second study published is planned by a shipped sweep file (issue 33, items 1, 7 and 9).

The cells, not the numbers: the distinct (dataset, pretrained_model, shot) of each
``results/finetuning_results_<dataset>_test_acc.csv`` of SLAMPAI/large-scale-pretraining-transfer (289 cells in
7 files), copied into :data:`PUBLISHED` below; where the study's repository is on this machine
(``STUDY_REPO``), the copy is compared with the files themselves. The shipped files are planned as the real run
plans them (``planning.cells`` and ``planning.expand``; each init's architecture from the zoo's registry or its
pre-training file, so no data or zoo files are needed), and every published cell must be among their cells. A
planned cell the study did not run must be named in its file by a line
``# not run by the study: INIT on DATASET[, DATASET ...]``.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from benchxfer import data, zoo
from benchxfer.data.transforms import bit_crop_for
from benchxfer.plan import planning
from benchxfer.plan.pretraining import load_pretrain_spec
from benchxfer.plan.spec import load_spec

pytestmark = pytest.mark.fast

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
STUDY_REPO = Path("/work/.mirror/SLAMPAI+large-scale-pretraining-transfer/repo")

_MEDICAL_INITS = ["chexpert_bit152x4", "chexpert_bit50x1", "chexpert_mimic_bit152x4", "chexpert_mimic_bit50x1",
                  "chexpert_mimic_nih_bit152x4", "chexpert_mimic_nih_bit50x1"]
_IMAGENET_INITS = ["imagenet1k_bit152x4", "imagenet1k_bit50x1", "imagenet21k_bit152x4", "imagenet21k_bit50x1"]
_CXR_INITS = ["chexpert_mimic_nih_padchest_bit152x4", "chexpert_mimic_nih_padchest_bit50x1"]
# results/finetuning_results_<dataset>_test_acc.csv: dataset -> (shots, the pretrained_model values with them)
PUBLISHED: dict[str, tuple[str, list[str]]] = {
    "cifar10": ("1 5 10 100 500 full", _IMAGENET_INITS),
    "cifar100": ("1 5 10 100 500 full", _IMAGENET_INITS),
    "covidx_cxr2": ("1 5 10 100 500 full",
                    _MEDICAL_INITS + _CXR_INITS + _IMAGENET_INITS + ["mimic_bit152x4", "padchest_bit152x4"]),
    "flowers_oversampling": ("1 5 10 full", _IMAGENET_INITS),
    "padchest": ("1 5 10 100 full", _MEDICAL_INITS + _IMAGENET_INITS),
    "pets": ("1 5 10 full", _IMAGENET_INITS),
    "tuberculosis_full": ("1 5 10 100 full", _MEDICAL_INITS + _CXR_INITS + _IMAGENET_INITS
                          + ["mimic_bit152x4", "nih_bit152x4", "padchest_bit152x4"]),
}
# the study's names -> benchxfer's
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "covidx_cxr2": "covidx", "flowers_oversampling": "flowers102",
            "padchest": "padchest-single", "pets": "pets", "tuberculosis_full": "tuberculosis"}
SOURCES = {"imagenet1k": "s", "imagenet21k": "m", "chexpert": "chexpert", "chexpert_mimic": "chexpert-mimic",
           "chexpert_mimic_nih": "chexpert-mimic-nih", "chexpert_mimic_nih_padchest": "cxr"}
SINGLE_SOURCE = {"mimic_bit152x4": "mimic-bit-r152x4", "nih_bit152x4": "nih-bit-r152x4",
                 "padchest_bit152x4": "padchest-bit-r152x4"}  # not published: made by `benchxfer pretrain`


def init_name(model: str) -> str:
    if model in SINGLE_SOURCE:
        return SINGLE_SOURCE[model]
    source, size = model.rsplit("_", 1)
    return f"bit-{SOURCES[source]}-{size.replace('bit', 'r')}"  # imagenet1k_bit50x1 -> bit-s-r50x1


Cell = tuple[str, str, "int | None"]  # (dataset, init, shot: None = full)


def published_cells() -> set[Cell]:
    return {(DATASETS[ds], init_name(m), None if k == "full" else int(k))
            for ds, (shots, models) in PUBLISHED.items() for m in models for k in shots.split()}


def sweep_files() -> list[Path]:
    """The shipped sweep files (a pre-training file names ``sources``, a sweep file ``datasets``)."""
    return [p for p in sorted(SWEEPS.glob("*.yaml")) if "sources" not in (yaml.safe_load(p.read_text()) or {})]


def planned_cells(path: Path) -> set[Cell]:
    spec = load_spec(path)
    arch = {e.name: (load_pretrain_spec(e.pretrain).arch if e.pretrain else
                     None if e.name == "scratch" else zoo.INITS.get(e.name).arch) for e in spec.inits}
    tasks = {d.name: (data.get_dataset(d.name).task, data.get_dataset(d.name).metric) for d in spec.datasets}
    trials = planning.expand(spec, planning.cells(spec, arch, tasks), {d.name: d.root for d in spec.datasets})
    return {(t.dataset, t.init, t.shot) for t in trials if t.recipe == "bit-hyperrule"}


def not_run_by_the_study(path: Path) -> set[tuple[str, str]]:
    """(init, dataset) pairs the file names as cells the study did not run."""
    named = set()
    for m in re.finditer(r"^# not run by the study: (\S+) on (.+)$", path.read_text(), re.M):
        named |= {(m.group(1), d.strip()) for d in m.group(2).split(",")}
    return named


def test_the_copied_cells_are_the_studys_published_ones():
    assert len(published_cells()) == sum(len(s.split()) * len(m) for s, m in PUBLISHED.values()) == 289
    if not (STUDY_REPO / "HEAD").exists():
        pytest.skip(f"the study's repository is not at {STUDY_REPO}: the copy above stands")
    for ds, (shots, models) in PUBLISHED.items():
        text = subprocess.run(["git", "-C", str(STUDY_REPO), "show",
                               f"HEAD:results/finetuning_results_{ds}_test_acc.csv"],
                              capture_output=True, text=True, check=True).stdout
        cells = {(r["pretrained_model"], r["shot"]) for r in csv.DictReader(io.StringIO(text))}
        assert cells == {(m, f"{k}_shot") for m in models for k in shots.split()}, ds


def test_every_published_cell_is_planned_by_a_shipped_file():
    planned: dict[Cell, list[str]] = {}
    for path in sweep_files():
        for cell in planned_cells(path):
            planned.setdefault(cell, []).append(path.name)
    missing = sorted(published_cells() - set(planned), key=str)
    assert not missing, f"{len(missing)} published cells not planned, e.g. {missing[:5]}"
    twice = {c: f for c, f in planned.items() if len(f) > 1}
    assert not twice, f"cells planned by two files: {list(twice.items())[:3]}"


def test_every_extra_cell_is_named_in_its_file():
    published = published_cells()
    for path in sweep_files():
        extra = {(init, ds) for ds, init, _ in planned_cells(path) - published
                 if ds in DATASETS.values()}
        named = not_run_by_the_study(path)
        assert extra == named, (path.name, sorted(extra - named), sorted(named - extra))


def test_the_three_single_source_inits_come_from_the_studys_configs():
    """Not published (scripts/download_model.sh lists the 12 other models only): each made by `benchxfer pretrain`
    from its file, the study's configs/<source>_bit152x4.yaml: one source, BiT-R152x4 from scratch."""
    entries = {e.name: e for e in load_spec(SWEEPS / "fewshot_bit.yaml").inits}
    want = {"mimic-bit-r152x4": "mimic-cxr", "nih-bit-r152x4": "chestxray14", "padchest-bit-r152x4": "padchest"}
    for name, source in want.items():
        assert name not in zoo.INITS.names()
        spec = load_pretrain_spec(entries[name].pretrain)
        assert (spec.name, spec.arch, spec.start, spec.recipe) == (name, "bit-r152x4", "scratch", "supervised-pretrain")
        assert [s.dataset for s in spec.sources] == [source]
    padchest = load_pretrain_spec(entries["padchest-bit-r152x4"].pretrain).sources[0].options
    assert padchest["views"] == ["PA", "AP", "AP Supine", "L", "COSTAL"]  # padchest_bit152x4.yaml's views


# the images' sizes (h, w) of each target, for BiT-HyperRule's resolution rule: CIFAR 32 x 32, the others
# several hundred pixels a side (Flowers, Pets, the chest X-rays)
NATIVE = {"cifar10": (32, 32), "cifar100": (32, 32), "flowers102": (500, 500), "pets": (500, 375),
          "covidx": (1024, 1024), "tuberculosis": (3000, 3000)}


def test_shipped_bit_sizes_follow_the_hyperrule():
    """bit_hyperrule.get_resolution: under 96 x 96 px 128, else 480 -- each shipped trial's size; PadChest uses
    its config's chest pre-training inputs (image_size 224) instead."""
    for path in sweep_files():
        spec = load_spec(path)
        arch = {e.name: (load_pretrain_spec(e.pretrain).arch if e.pretrain else zoo.INITS.get(e.name).arch)
                for e in spec.inits if e.name != "scratch"}
        tasks = {d.name: (data.get_dataset(d.name).task, data.get_dataset(d.name).metric) for d in spec.datasets}
        for cell in planning.cells(spec, arch, tasks):
            if cell.recipe != "bit-hyperrule":
                continue
            if cell.knobs["augment"] == "bit-hyperrule":
                assert cell.knobs["size"] == bit_crop_for(*NATIVE[cell.dataset.name]), (path.name, cell.dataset.name)
            else:
                assert (cell.dataset.name, cell.knobs["augment"], cell.knobs["size"], cell.knobs["normalization"]) \
                    == ("padchest-single", "supervised-pretrain", 224, "half")


# --- item 7: plan what the data allows --------------------------------------------------------------------

def test_shots_the_data_cannot_draw_are_left_out_and_named(tmp_path):
    """A Flowers train folder with a few images per class: 100-shot would draw every class whole (the full-data run),
    so those cells are left out and named; the 1-, 5-shot and full cells are planned."""
    root = data.synthetic.write("flowers102", tmp_path / "flowers", n_train=30, n_val=5, n_test=5, size=16)
    largest = max(len(list(c.iterdir())) for c in (root / "train").iterdir())
    assert 5 <= largest < 100
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nrecipe: bit-hyperrule\ninits: [scratch]\nseeds: 2\n"
                     f"datasets: [{{name: flowers102, root: {root}}}]\nshots: [1, 5, 100, full]\n"
                     "overrides: {arch: bit-r50x1}\n")
    plan = planning.make_plan(sweep)
    assert sorted({t.shot or 0 for t in plan.trials}) == [0, 1, 5] and len(plan.trials) == 6
    assert len(plan.left_out) == 1 and "flowers102 100-shot left out" in plan.left_out[0]
    assert f"its largest holds {largest} of" in plan.left_out[0]
