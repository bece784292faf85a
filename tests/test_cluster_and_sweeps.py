"""The cluster file, the Docker image and the shipped sweep files.

cluster.yaml is validated offline against Ray's own schema (and Ray's own config checks); it and the
Dockerfile must hold no credentials. Every published-table sweep file must pass `benchxfer sweep FILE
--dry-run` once its data roots and zoo files exist (made here in tmp folders), with the expected trial
count; the pre-training files must load and plan. No Ray session is started.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from benchxfer import data
from benchxfer.cli import main

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"

# file -> (inits, datasets, seeds, shots per dataset): the grid each published-table sweep must expand to (the
# second study's published results have 500-shot cells for COVIDx, CIFAR-10 and CIFAR-100 only, and no 100-shot
# Flowers or Pets cell; tests/test_published_cells.py compares the cells themselves)
PUBLISHED = {
    "systematic_cls.yaml": (22, 4, 10, (1,) * 4),
    "systematic_seg.yaml": (22, 3, 10, (1,) * 3),
    "domain_adapt.yaml": (6, 4, 10, (1,) * 4),
    "fewshot_bit.yaml": (15, 2, 5, (5, 6)),
    "fewshot_bit_natural.yaml": (6, 4, 5, (4, 4, 6, 6)),
    "fewshot_bit_padchest.yaml": (10, 1, 5, (5,)),
}
PRETRAIN = ("pretrain_chest.yaml", "domain_adapt_pretrain.yaml", "pretrain_mimic.yaml", "pretrain_nih.yaml",
            "pretrain_padchest.yaml")


# --- helpers -------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _restore_zoo_env(monkeypatch):
    """`--zoo` sets BENCHXFER_ZOO for the process; put it back after each test."""
    monkeypatch.delenv("BENCHXFER_ZOO", raising=False)

def _tb_sets(root: Path) -> None:
    """Both sets the tuberculosis reader must find (told apart by their files' prefixes), one image each."""
    import numpy as np
    from PIL import Image

    for folder, name in (("ChinaSet", "CHNCXR_0001_0.png"), ("MontgomerySet", "MCUCXR_0001_0.png")):
        (root / folder / "CXR_png").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / folder / "CXR_png" / name)


def _empty_cifar100(root: Path) -> None:
    import pickle

    (root / "cifar-100-python").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with (root / "cifar-100-python" / split).open("wb") as f:
            pickle.dump({"data": [], "fine_labels": []}, f)


def _padchest_header(root: Path) -> None:
    from benchxfer.data.readers.chest import PADCHEST_CSV

    (root / PADCHEST_CSV).write_text("ImageID,ImageDir,PatientID,Labels,Projection\n")


# layouts whose reader needs more than the registry's required paths to open a split (no training images, so
# the dry run's check of shots against the data has nothing to count)
MINIMAL = {"tuberculosis": _tb_sets, "cifar100": _empty_cifar100, "padchest-single": _padchest_header}


def required_layout(name: str, root: Path) -> Path:
    """Only the paths the registry requires of dataset ``name`` (first alternative of each; a name with a suffix is
    an empty file, anything else an empty folder)."""
    root.mkdir(parents=True, exist_ok=True)
    for need in data.get_dataset(name).required:
        rel = Path(need.split("|")[0].replace("*", "SomeSet"))
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel.suffix:
            target.write_text("")
        else:
            target.mkdir(exist_ok=True)
    return root


def make_root(name: str, root: Path) -> Path:
    """The minimal layout `data.check_root` needs for dataset ``name`` (:func:`required_layout`, or ``MINIMAL``'s
    where a reader needs more to open a split)."""
    if name in MINIMAL:
        root.mkdir(parents=True, exist_ok=True)
        MINIMAL[name](root)
    else:
        required_layout(name, root)
    data.check_root(name, root)  # the helper itself must satisfy the real check
    return root


def make_zoo(zoo: Path, inits: list[str]) -> Path:
    """Zoo files for ``inits``. `zoo.resolve_init` (what planning calls) checks that the canonical file is
    present; a dry run loads no weights, so empty files are enough."""
    from benchxfer.zoo import resolve_init
    from benchxfer.zoo.inits import INITS

    zoo.mkdir(parents=True, exist_ok=True)
    for name in inits:
        if name not in INITS:  # a local init a pre-training file makes (local_copy points its sources at data)
            continue
        cfg = INITS.get(name)
        if cfg.filename:
            (zoo / cfg.filename).write_bytes(b"")
        resolve_init(name, zoo)  # present now
    return zoo


def local_copy(src: Path, tmp: Path, edit=None) -> tuple[Path, dict]:
    """A copy of sweep file ``src`` whose dataset roots point at tmp folders in the real layouts, and so do the
    source roots of the pre-training files its inits name (copied beside it)."""
    doc = yaml.safe_load(src.read_text())
    if edit:
        edit(doc)
    for ds in doc["datasets"]:
        if ds["root"] != "synthetic":
            ds["root"] = str(make_root(ds["name"], tmp / "data" / ds["name"]))
    tmp.mkdir(parents=True, exist_ok=True)
    for init in doc["inits"]:
        if isinstance(init, dict) and init.get("pretrain"):
            pre = yaml.safe_load((src.parent / init["pretrain"]).read_text())
            for s in pre["sources"]:
                s["root"] = str(tmp / "data" / f"{s['dataset']}-source")
                Path(s["root"]).mkdir(parents=True, exist_ok=True)
            (tmp / init["pretrain"]).write_text(yaml.safe_dump(pre, sort_keys=False))
    out = tmp / src.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out, doc


def init_names(doc: dict) -> list[str]:
    return [i if isinstance(i, str) else i["name"] for i in doc["inits"]]


def dry_run(path: Path, zoo: Path, *extra: str):
    return CliRunner().invoke(main, ["sweep", str(path), "--dry-run", "--zoo", str(zoo), *extra])


def total_of(output: str) -> int:
    m = re.search(r"^Total: (\d+) trials", output, re.M)
    assert m, output[-2000:]
    return int(m.group(1))


# --- cluster.yaml and the Dockerfile --------------------------------------------------------------

def cluster_config() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_schema_and_checks():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    config = cluster_config()
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(config)  # the schema again, plus head_node_type and min/max worker checks

    # a wrong key is caught, so the validation above can fail
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "docker": {**config["docker"], "imagee": "x"}}, schema)


def test_cluster_yaml_layout():
    config = cluster_config()
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["max_workers"] == 0
    gpu_types = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu_types and all(re.match(r"(g5|g6|p4d|p5)\.", t["node_config"]["InstanceType"]) for t in gpu_types)
    assert not re.match(r"(g|p)\d", head["node_config"]["InstanceType"])  # a CPU head
    # every node runs the benchxfer image, with the shared mount at the same path and benchxfer's state on it
    assert config["docker"]["image"].endswith("benchxfer:0.1.0")
    opts = " ".join(config["docker"]["run_options"])
    assert "--volume /mnt/shared:/mnt/shared" in opts
    assert "BENCHXFER_HOME=/mnt/shared/" in opts and "BENCHXFER_ZOO=/mnt/shared/" in opts
    init = " ".join(config["initialization_commands"])
    assert "mount -t nfs4" in init and "/mnt/shared" in init
    # dashboards bound to loopback only
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert "ray start --head" in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in " ".join(config["worker_start_ray_commands"])


CREDENTIAL_KEY = re.compile(r"(access_?key|secret|passw(or)?d|token|api_?key|credential)", re.I)
# values that look like a credential itself rather than a place it comes from
CREDENTIAL_VALUE = [
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),  # AWS access key id
    re.compile(r"aws_(secret_)?access_key", re.I),
    re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY)\w*=(?![\"']?\$)\S", re.I),  # NAME=literal (NAME=$(...) is fine)
    re.compile(r"--password(?!-stdin)[ =]\S", re.I),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # user:password@host in a URI
]


def credential_findings(config: object, where: str = "") -> list[str]:
    """Keys named like credentials, and string values that carry one, anywhere in a parsed YAML."""
    found = []
    if isinstance(config, dict):
        for k, v in config.items():
            if CREDENTIAL_KEY.search(str(k)):
                found.append(f"{where}.{k}")
            found += credential_findings(v, f"{where}.{k}")
    elif isinstance(config, list):
        for i, v in enumerate(config):
            found += credential_findings(v, f"{where}[{i}]")
    elif isinstance(config, str):
        found += [f"{where}: {p.pattern}" for p in CREDENTIAL_VALUE if p.search(config)]
    return found


def dockerfile_findings(text: str) -> list[str]:
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if re.match(r"\s*(ENV|ARG)\b", code, re.I) and CREDENTIAL_KEY.search(code):
            found.append(f"line {n}: {line.strip()}")
        if re.match(r"\s*USER\s+(root|0)\b", code, re.I):
            found.append(f"line {n}: runs as root")
        found += [f"line {n}: {p.pattern}" for p in CREDENTIAL_VALUE if p.search(code)]
    return found


def test_no_credentials_in_cluster_yaml_or_dockerfile():
    assert credential_findings(cluster_config()) == []
    assert dockerfile_findings((REPO / "docker" / "Dockerfile").read_text()) == []
    # the checks do find what they look for
    bad = {"provider": {"type": "aws", "aws_secret_access_key": "x"},
           "head_start_ray_commands": ["export MLFLOW_TRACKING_PASSWORD=hunter2; ray start --head",
                                       "aws configure set region us-west-2 AKIAABCDEFGHIJKLMNOP"]}
    assert len(credential_findings(bad)) == 3
    assert credential_findings({"c": ['export MLFLOW_TRACKING_PASSWORD="$(aws ssm get-parameter)"']}) == []
    assert len(dockerfile_findings("FROM x\nENV MLFLOW_TRACKING_PASSWORD=abc\nUSER root\n")) == 3


def test_dockerfile_builds_on_the_official_ray_gpu_image():
    text = (REPO / "docker" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms == ["rayproject/ray:2.60.0-py311-gpu"]
    assert re.search(r"^COPY .*pyproject\.toml", text, re.M) and re.search(r"^COPY .*\bbenchxfer\b", text, re.M)
    assert re.search(r"^RUN pip install --no-cache-dir \.\s", text, re.M)
    # every file the image copies exists in the repository (README.md is the package's readme)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        srcs = [s for s in line.split()[:-1] if not s.startswith("--")]
        for s in srcs:
            if s != "README.md":  # written by the lead; see the report
                assert (REPO / s).exists(), s


# --- the sweep files ------------------------------------------------------------------------------

@pytest.mark.parametrize("fname", sorted(PUBLISHED))
def test_published_sweep_dry_runs_with_its_roots_and_zoo(fname, tmp_path, bx_home):
    n_inits, n_datasets, n_seeds, n_shots = PUBLISHED[fname]
    path, doc = local_copy(SWEEPS / fname, tmp_path)
    zoo = make_zoo(tmp_path / "zoo", init_names(doc))
    result = dry_run(path, zoo, "--limit", "0")
    assert result.exit_code == 0, result.output
    expected = n_inits * n_seeds * sum(n_shots)
    assert len(n_shots) == n_datasets
    assert total_of(result.output) == expected
    assert len(init_names(doc)) == n_inits and len(doc["datasets"]) == n_datasets
    rows = [line for line in result.output.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == expected and len({r.split()[1] for r in rows}) == expected  # unique trial keys


def test_published_sweeps_as_shipped_fail_on_the_placeholder_root(bx_home, tmp_path):
    """Without the data, the dry run still plans and names each absent root on its own line; the real run
    refuses at the first one, in one line, before any work."""
    for fname in PUBLISHED:
        result = dry_run(SWEEPS / fname, tmp_path / "zoo")
        assert result.exit_code == 0, result.output
        absent = [line for line in result.output.splitlines() if line.strip().startswith("absent:")]
        assert any("datasets[0].root: folder /mnt/shared/datasets/" in line for line in absent), result.output
        assert total_of(result.output) > 0 and "Traceback" not in result.output
        real = CliRunner().invoke(main, ["sweep", str(SWEEPS / fname), "--zoo", str(tmp_path / "zoo")])
        assert real.exit_code != 0
        assert "datasets[0].root: folder /mnt/shared/datasets/" in real.output, real.output
        assert "Traceback" not in real.output and len(real.output.strip().splitlines()) == 1


def test_published_sweep_needs_its_zoo_files(tmp_path, bx_home):
    path, doc = local_copy(SWEEPS / "systematic_cls.yaml", tmp_path)
    zoo = make_zoo(tmp_path / "zoo", [n for n in init_names(doc) if n != "moco-v2"])
    result = dry_run(path, zoo)
    absent = [line for line in result.output.splitlines() if line.strip().startswith("absent:")]
    assert result.exit_code == 0 and len(absent) == 1, result.output
    assert "init 'moco-v2'" in absent[0] and "benchxfer zoo import moco-v2" in absent[0]
    real = CliRunner().invoke(main, ["sweep", str(path), "--zoo", str(zoo)])
    assert real.exit_code != 0 and "init 'moco-v2'" in real.output and "benchxfer zoo import moco-v2" in real.output
    assert "Traceback" not in real.output and len(real.output.strip().splitlines()) == 1


def test_published_sweeps_follow_the_studies(tmp_path, bx_home):
    """The protocol values each file must carry (RECIPES.md), read back through the planner."""
    from benchxfer.plan.planning import make_plan
    from benchxfer.zoo.inits import INITS

    def plan(fname):
        path, doc = local_copy(SWEEPS / fname, tmp_path / fname)
        return make_plan(path, str(make_zoo(tmp_path / fname / "zoo", init_names(doc))))

    cls = plan("systematic_cls.yaml")
    assert {t.recipe for t in cls.trials} == {"systematic-cls"} and {t.lr for t in cls.trials} == {2e-4}
    assert {t.config.arch for t in cls.trials} == {"resnet50"} and all(t.config.tencrop for t in cls.trials)
    assert {i.name for i in cls.spec.inits} == {"scratch"} | {n for n, c in INITS.items() if c.arch == "resnet50"
                                                              and c.filename}
    seg = plan("systematic_seg.yaml")
    drive = [t for t in seg.trials if t.dataset == "drive"]
    assert {(t.config.loss, t.config.size, t.config.batch_size) for t in drive} == {("bce", 512, 16)}
    assert {t.config.loss for t in seg.trials if t.dataset != "drive"} == {"dice"}
    assert {t.lr for t in seg.trials} == {1e-3}
    da = plan("domain_adapt.yaml")
    assert {(t.dataset, t.recipe, t.lr) for t in da.trials} == {
        ("chestxray14", "systematic-cls", 2e-4), ("chexpert", "systematic-cls", 2e-4),
        ("montgomery-lungs", "systematic-seg", 1e-3), ("siim-pneumothorax", "systematic-seg", 1e-3)}
    bit = plan("fewshot_bit.yaml")
    assert {t.lr for t in bit.trials} == {1e-3} and {t.config.agc for t in bit.trials} == {0.01}
    assert {t.shot for t in bit.trials} == {1, 5, 10, 100, 500, None} and {t.seed for t in bit.trials} == set(range(5))
    assert {t.config.arch for t in bit.trials} == {"bit-r50x1", "bit-r152x4"}  # each init picks its arch
    nat = plan("fewshot_bit_natural.yaml")  # the study: base lr 0.001 with AGC in every fine-tuning config
    assert {t.lr for t in nat.trials} == {1e-3} and {t.config.agc for t in nat.trials} == {0.01}
    # the study's results: 500-shot cells for COVIDx, CIFAR-10 and CIFAR-100 (results/finetuning_results_*.csv)
    assert {t.dataset for t in bit.trials + nat.trials if t.shot == 500} == {"covidx", "cifar10", "cifar100"}
    # micro-batches: images per micro-batch = the study's batch 128 / batch_split (32 at 480 px: 4; CIFAR's 2: 64,
    # more than a worker's 128 / 4 = 32, so none); configs/finetune/*.yaml
    split = {"covidx": 32, "tuberculosis": 32, "flowers102": 32, "pets": 32, "cifar10": 2, "cifar100": 2,
             "padchest-single": 32}
    workers = bit.spec.resources.workers
    assert nat.spec.resources.workers == workers
    pad = plan("fewshot_bit_padchest.yaml")  # configs/finetune/padchest.yaml: lr 0.001, SGD_AGC, batch_split 32
    assert {t.lr for t in pad.trials} == {1e-3} and {t.config.agc for t in pad.trials} == {0.01}
    for t in bit.trials + nat.trials + pad.trials:
        study = 128 // split[t.dataset]
        assert t.config.micro_batch == (study if study < 128 // workers else 0), t.key
    # several trials per GPU where a batch-32 ResNet-50 classifier gains (issue 25: 2 at once = 1.4x)
    assert cls.spec.resources.gpus_per_worker == da.spec.resources.gpus_per_worker == 0.5
    for trials in (cls.trials, da.trials):  # CheXpert: LSR-Ones (RECIPES.md), stated in the files
        chex = [t for t in trials if t.dataset == "chexpert"]
        assert chex and {t.config.dataset_options.get("uncertain") for t in chex} == {"lsr-ones"}


def test_dry_run_of_1470_trials_lists_all_in_seconds(tmp_path, bx_home):
    """The first study's whole benchmark in one file: 21 pre-trained models x 7 targets x 10 seeds."""
    seg = yaml.safe_load((SWEEPS / "systematic_seg.yaml").read_text())

    def merge(doc):
        doc["name"] = "all_21x7"
        doc["inits"] = [i for i in doc["inits"] if i != "scratch"]
        doc["datasets"] += seg["datasets"]
        doc["recipe"] = "auto"
        doc.pop("lr")  # each recipe's published lr

    path, doc = local_copy(SWEEPS / "systematic_cls.yaml", tmp_path, merge)
    zoo = make_zoo(tmp_path / "zoo", init_names(doc))
    assert (len(init_names(doc)), len(doc["datasets"])) == (21, 7)
    started = time.perf_counter()
    result = dry_run(path, zoo, "--limit", "0")
    seconds = time.perf_counter() - started
    print(f"dry run of 1,470 trials: {seconds:.2f} s")
    assert result.exit_code == 0, result.output
    assert total_of(result.output) == 1470
    rows = [line.split()[1] for line in result.output.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == 1470 and len(set(rows)) == 1470
    assert "more (use --limit 0" not in result.output
    assert seconds < 20


def test_demo_search_is_a_tune_then_repeat_sweep(bx_home, tmp_path, monkeypatch):
    from benchxfer.plan.schema import LrSearch
    from benchxfer.plan.spec import load_spec

    bx_home = tmp_path / "home"  # a home of its own: other tests write synthetic data into the shared one
    monkeypatch.setenv("BENCHXFER_HOME", str(bx_home))

    spec = load_spec(SWEEPS / "demo_search.yaml")
    assert spec.mode == "tune-then-repeat" and spec.lr == LrSearch(1e-4, 1e-2, 3)
    assert (len(spec.inits), len(spec.datasets), spec.seeds) == (1, 1, (0, 1))
    assert spec.overrides["epochs"] == 2 and spec.datasets[0].root == "synthetic"
    result = dry_run(SWEEPS / "demo_search.yaml", tmp_path / "zoo")
    assert result.exit_code == 0, result.output
    assert total_of(result.output) == 2 and "search loguniform [0.0001, 0.01] x 3" in result.output
    assert not (bx_home / "data" / "synthetic" / "chestxray14").exists()  # a dry run writes nothing


@pytest.mark.parametrize("fname", PRETRAIN)
def test_pretrain_files_load_and_plan(fname, tmp_path, monkeypatch):
    from benchxfer.plan.pretraining import load_pretrain_spec, plan_pretrain

    spec = load_pretrain_spec(SWEEPS / fname)
    assert spec.recipe == "supervised-pretrain" and spec.resources.gpus_per_worker == 1
    doc = yaml.safe_load((SWEEPS / fname).read_text())
    for src in doc["sources"]:
        src["root"] = str(make_root(src["dataset"], tmp_path / "data" / src["dataset"]))
    local = tmp_path / fname
    local.write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("BENCHXFER_ZOO", str(make_zoo(tmp_path / "zoo", [spec.start])))
    trial = plan_pretrain(load_pretrain_spec(local), write_synthetic=False)
    assert trial.config.arch == spec.arch and trial.overrides["output"] == spec.name
    assert [s["dataset"] for s in trial.config.sources] == [s["dataset"] for s in doc["sources"]]


def test_pretrain_files_are_the_studies_setups():
    from benchxfer.plan.pretraining import load_pretrain_spec

    chest = load_pretrain_spec(SWEEPS / "pretrain_chest.yaml")
    assert [s.dataset for s in chest.sources] == ["chexpert", "mimic-cxr", "chestxray14", "padchest"]
    # chexpert_mimic_nih_padchest_bit152x4.yaml: views: ["PA", "AP", "AP Supine", "L", "COSTAL"]
    assert all(s.options["views"] == ["PA", "AP", "AP Supine", "L", "COSTAL"] for s in chest.sources)
    assert chest.arch == "bit-r152x4" and chest.start == "scratch" and chest.resources.workers >= 8
    # the study's chest pre-training recipe, reached without overrides of the protocol's settings
    from benchxfer.recipes import get_recipe

    knobs = {**get_recipe(chest.recipe).defaults, **chest.overrides}
    assert (chest.lr or get_recipe(chest.recipe).default_lr) == 0.01 and knobs["base_batch"] == 256
    assert (knobs["optimizer"], knobs["momentum"], knobs["weight_decay"], knobs["agc"]) == ("sgd-nesterov", 0.9, 1e-4, 0.01)
    assert (knobs["schedule"], knobs["warmup_epochs"], knobs["epochs"], knobs["normalization"]) == \
        ("warmup-step", 15, 90, "half")
    adapt = load_pretrain_spec(SWEEPS / "domain_adapt_pretrain.yaml")
    assert [s.dataset for s in adapt.sources] == ["chestxray14"]
    assert (adapt.arch, adapt.start) == ("resnet50", "imagenet")


# --- docs/sweep-file.md stays true -----------------------------------------------------------------

def test_sweep_file_doc_covers_every_key_and_every_recipe_default():
    from benchxfer.plan import schema
    from benchxfer.recipes.config import KNOBS
    from benchxfer.recipes.registry import get_recipe

    doc = (REPO / "docs" / "sweep-file.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", doc, re.M))
    for keys in (schema.TOP_KEYS, schema.DATASET_KEYS, schema.INIT_KEYS, schema.RESOURCE_KEYS, schema.FAILURE_KEYS,
                 schema.PRETRAIN_KEYS, set(KNOBS)):
        assert set(keys) <= documented, sorted(set(keys) - documented)

    header = next(line for line in doc.splitlines() if line.startswith("| knob |"))
    recipes = re.findall(r"`([a-z-]+)`", header)
    assert len(recipes) == 4
    rows = {}
    for line in doc.splitlines():
        m = re.match(r"^\| `([a-z_]+)` \| [^|]+ \|((?: `[^`]*` \|)+)\s*$", line)
        if m and m.group(1) in KNOBS:
            rows[m.group(1)] = [yaml.safe_load(v) for v in re.findall(r"`([^`]*)`", m.group(2))]
    assert set(rows) == set(KNOBS)
    for knob, values in rows.items():
        for rname, value in zip(recipes, values, strict=True):
            want = get_recipe(rname).defaults.get(knob, KNOBS[knob])
            assert value == want and type(value) is type(want) or (
                isinstance(want, float) and float(value) == want), (knob, rname, value, want)


def test_a_machine_with_a_ray_token_joins_with_token_authentication(tmp_path):
    """`benchxfer` sets RAY_AUTH_MODE=token at start-up, before Ray is imported, when a Ray token exists on the machine
    (as `ray start --head` there expects of a process that joins), and keeps a mode the user chose. Each case is a
    process of its own, as the command line is."""
    import os
    import subprocess
    import sys

    code = ("import os; from benchxfer.cli import main; main(['sweep', '--help'], standalone_mode=False); "
            "print('MODE', os.environ.get('RAY_AUTH_MODE'))")

    def mode(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        out = subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path), **extra},
                             capture_output=True, text=True, check=True).stdout
        return out.rsplit("MODE ", 1)[1].strip()

    assert mode() == "None"  # no token: Ray's default
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 32)
    assert mode() == "token"
    assert mode(RAY_AUTH_MODE="disabled") == "disabled"  # the user's choice
