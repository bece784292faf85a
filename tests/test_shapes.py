"""The shape matrix (issue 22): every trial shape of every file in ``sweeps/`` trains to a result.

For each file in ``sweeps/`` (globbed, so a new file is covered without editing this test) the file is
planned as the real run plans it -- ``spec.load_spec`` + ``planning.make_plan`` for a sweep,
``pretraining.load_pretrain_spec`` + ``plan_pretrain`` for a pre-training file -- with every dataset root
pointing at synthetic data written in that dataset's real on-disk layout (``benchxfer.data.synthetic``) and
every init's file in the zoo: a random backbone written in a published format and imported by
``zoo.import_init`` (pre-trained local inits: ``zoo.save_local_init``). Each distinct shape of its trials,
(recipe, dataset, arch, shot kind, task), runs ONE of its trials through ``train_run(cfg, Runtime(session=
"local"))``, as ``benchxfer train FILE --trial N`` runs it, with the real architecture (BiT R152x4
included) at :data:`SIZE` px and one optimiser step (the reductions in :data:`REDUCED`, checked like
``--set``), and must end with ``result.json`` holding every metric the dataset lists, as finite numbers.

Memory: a BiT R152x4 trial holds 936M fp32 parameters (3.7 GB), their gradients and SGD momentum, and a
recipe that tests the best validation epoch keeps a copy of the weights. Peak resident memory of this process,
measured (2-core shared machine, 2026-12-04): 12.0-12.4 GB for the fine-tuning shapes (``select: last``), 15.2 GB
for ``pretrain_chest.yaml`` (``select: best-val``: the fourth copy). A case runs only when the machine has its
measured peak available (:data:`PEAK_GB`), else it is skipped naming the numbers. On the shared development
machine run this file under ``flock /tmp/benchxfer-ray.lock``.

Tiers: the small archs' shapes are fast-tier tests. A heavy arch (:data:`HEAVY_ARCHS`, R152x4) runs one trial, in
the heavy tier (``make test-heavy``, not part of ``make test``: about 12 GB of memory and 2 minutes on 2 cores -- its
random backbone is built, written in BiT's format and imported into the zoo, 40 s, and the trial writes a 7 GB
checkpoint). Each of its other shapes is covered by a light twin with the same (recipe, dataset, shot kind, task) in
the same file, or runs with a light arch of its family in its place (``test_heavy_shapes_have_a_light_twin``): 13
R152x4 trials would take 15-25 minutes on 2 cores. What needs no memory is checked in the fast tier on the meta
device (``test_a_heavy_arch_is_wired_at_full_size_on_the_meta_device``). Planning a file that names a heavy init
imports that backbone, so such a file's listed shapes are checked without its heavy inits in the fast tier, and
whole in the heavy tier.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import scratch
import yaml
from zoo_support import timm_to_bit_names

# Tiers: every shape of a small arch is in the fast tier. An arch of HEAVY_ARCHS (12-15 GB and 1-2 minutes a trial
# on a CPU) runs once, in the heavy tier; each of its other shapes must have a light twin -- the same (recipe,
# dataset, shot kind, task) in the same file with a small arch, or a STAND_IN -- that runs
# (test_heavy_shapes_have_a_light_twin).
HEAVY_ARCHS = frozenset({"bit-r152x4"})
# a heavy shape with no light twin in its file (a pre-training file has one shape) runs with this arch of its
# family in its place, in the fast tier: its recipe, sources and task are exercised, the heavy arch elsewhere
STAND_IN = {"bit-r152x4": "bit-r50x1"}

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"
FILES = sorted(SWEEPS.glob("*.yaml"))

SIZE = 32  # px: the smallest input every arch takes (a U-Net needs a multiple of 32)
# what a shape's trial changes, checked like `benchxfer train --set`: one epoch of one optimiser step on
# small batches, the images read in the test process
REDUCED = {"size": SIZE, "epochs": 1, "max_train_batches": 1, "batch_size": 4, "loader_workers": 0}
# images per split of the synthetic sets (split lists the generator writes; a reader that draws its own
# split gets their sum), written at DATA_SIZE px so the pipeline resizes like on real data
COUNTS = {"n_train": 20, "n_val": 8, "n_test": 12}
DATA_SIZE = 64
# peak resident memory of a trial, GB, measured per (arch, the recipe's select): only the archs that need more
# than a small machine is sure to have (see the module docstring)
PEAK_GB = {("bit-r152x4", "last"): 12.4, ("bit-r152x4", "best-val"): 15.2}

# shapes that fail for a known open fix: shape id -> the fix (remove the entry once it is merged)
# (DRIVE's KeyError 'scores' was one until the protocol fix of issue 22 was merged)
KNOWN_FAILURES: dict[str, str] = {}


class Shape(NamedTuple):
    recipe: str
    dataset: str
    arch: str
    shot: str  # "full" (the whole training set) or "few" (k examples per class)
    task: str

    def __str__(self) -> str:
        return "/".join(self)


def shot_kind(shot: int | None) -> str:
    return "full" if shot is None else "few"


def _cfg(trial) -> dict[str, Any]:
    """A trial's TrainConfig as a dict (``Trial.config`` is a dict, or a TrainConfig)."""
    cfg = trial.config
    return dict(cfg) if isinstance(cfg, dict) else cfg.to_dict()


def shape_of(trial) -> Shape:
    cfg = trial.config  # a dict, or a TrainConfig (not copied whole: the grid of a file holds thousands of trials)
    arch = cfg["arch"] if isinstance(cfg, dict) else cfg.arch
    return Shape(trial.recipe, trial.dataset, arch, shot_kind(trial.shot), trial.task)


def is_pretrain_file(path: Path) -> bool:
    """A pre-training file names its sources; a sweep file names datasets."""
    return "sources" in (yaml.safe_load(path.read_text()) or {})


# --- the shapes, listed at collection without data or zoo files ------------------------------------------

def listed_shapes(path: Path) -> list[Shape]:
    """The shapes of ``path``'s trials from its spec alone: planning's own grid (``cells``, ``expand``) with each
    init's architecture from the registry instead of its file; the test checks this against the real plan."""
    if is_pretrain_file(path):
        from benchxfer.plan.pretraining import load_pretrain_spec
        from benchxfer.tasks import PRETRAIN_TASK

        spec = load_pretrain_spec(path)
        return [Shape(spec.recipe, "+".join(s.dataset for s in spec.sources), spec.arch, "full",
                      PRETRAIN_TASK.name)]
    from benchxfer import data
    from benchxfer.plan import planning
    from benchxfer.plan.spec import load_spec

    spec = load_spec(path)
    init_arch = {e.name: _init_arch(e) for e in spec.inits}
    tasks = {d.name: (data.get_dataset(d.name).task, data.get_dataset(d.name).metric) for d in spec.datasets}
    grid = planning.expand(spec, planning.cells(spec, init_arch, tasks), {d.name: d.root for d in spec.datasets})
    return list(dict.fromkeys(shape_of(t) for t in grid))


def _init_arch(entry) -> str | None:
    """An init entry's architecture, from the registry (or its pre-training file); None for scratch."""
    from benchxfer import zoo
    from benchxfer.plan.pretraining import load_pretrain_spec

    if entry.name == "scratch":
        return None
    return load_pretrain_spec(entry.pretrain).arch if entry.pretrain else zoo.INITS.get(entry.name).arch


ALL_CASES = [(f, s) for f in FILES for s in listed_shapes(f)]


def _split_heavy(cases):
    """The cases that run (a heavy arch once, the first file's first shape of it) and the heavy shapes covered by
    a light twin instead."""
    run, twinned, seen = [], [], set()
    for path, shape in cases:
        if shape.arch in HEAVY_ARCHS:
            if shape.arch in seen:
                twinned.append((path, shape))
                continue
            seen.add(shape.arch)
        run.append((path, shape))
    return run, twinned


CASES, TWINNED = _split_heavy(ALL_CASES)


def _light(path: Path, s: Shape) -> tuple:
    return path, s.recipe, s.dataset, s.shot, s.task


def _stand_ins() -> list[tuple[Path, Shape]]:
    """The twinned heavy shapes without a light twin in their file, each to run with :data:`STAND_IN`'s arch."""
    light = {_light(f, s) for f, s in CASES if s.arch not in HEAVY_ARCHS}
    return [(f, s) for f, s in TWINNED if _light(f, s) not in light and s.arch in STAND_IN]


STAND_INS = _stand_ins()


def case_id(path: Path, shape: Shape) -> str:
    return f"{path.name}:{shape}"


def case_param(path: Path, shape: Shape, stand_in: str | None = None):
    cid = case_id(path, shape) + (f" as {stand_in}" if stand_in else "")
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[cid])] if cid in KNOWN_FAILURES else []
    marks.append(pytest.mark.fast if shape.arch not in HEAVY_ARCHS or stand_in else pytest.mark.heavy)
    return pytest.param(path, shape, stand_in, id=cid, marks=marks)


# --- the environment: a home, synthetic roots, a zoo -----------------------------------------------------

@pytest.fixture(scope="module")
def env(request):
    """A BENCHXFER_HOME and zoo of this module's own, on tmpfs where there is room (:mod:`scratch`: the light shapes
    write a ResNet-50's or a BiT's checkpoint each, 13 GB in all, removed shape by shape), on the disk when a heavy
    case runs (R152x4: a 3.7 GB backbone in the zoo, a 7 GB checkpoint beside a 12-15 GB process); removed at
    the end."""
    heavy = any(item.get_closest_marker("heavy") for item in request.session.items if item.module is request.module)
    base = scratch.scratch_base("benchxfer-shapes-", tmpfs=not heavy)
    saved = {k: os.environ.get(k) for k in ("BENCHXFER_HOME", "BENCHXFER_ZOO", "MLFLOW_TRACKING_URI")}
    os.environ["BENCHXFER_HOME"] = str(base / "home")
    os.environ["BENCHXFER_ZOO"] = str(base / "zoo")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _SOURCES.clear()
    _data_root.cache_clear()
    plan_sweep.cache_clear()
    yield base
    _SOURCES.clear()
    _data_root.cache_clear()
    plan_sweep.cache_clear()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(base, ignore_errors=True)


# classes the synthetic writers draw where fewer than the real set's (other sets: the catalog's count)
SYNTHETIC_CLASSES = {"flowers102": 5, "pets": 4, "padchest-single": 2}  # synthetic.PADCHEST_SINGLE_CLASSES


def _largest_shot(name: str) -> int:
    """The largest k-shot any file in sweeps/ asks of dataset ``name`` (planning refuses a k above the largest
    class of the data at the root)."""
    from benchxfer.plan.spec import load_spec

    ks = [0]
    for path in FILES:
        if not is_pretrain_file(path):
            spec = load_spec(path)
            for d in spec.datasets:
                if d.name == name:
                    ks += [k for k in (getattr(d, "shots", None) or spec.shots) if k is not None]
    return max(ks)


@lru_cache(maxsize=None)
def _data_root(name: str) -> str:
    """Synthetic ``name`` in its real layout, written once per module (shared by every shape), with enough
    training images that its largest class holds every file's largest k-shot (a reader's own split keeps ~85 %)."""
    from benchxfer import data
    from benchxfer.data import synthetic

    counts = dict(COUNTS)
    if k := _largest_shot(name):
        classes = SYNTHETIC_CLASSES.get(name) or data.get_dataset(name).num_classes()
        counts["n_train"] = max(counts["n_train"], math.ceil(k * classes / 0.8))
    base = Path(os.environ["BENCHXFER_HOME"]).parent / "data"
    return str(synthetic.write(name, base / name, **counts, size=DATA_SIZE, seed=0))


def _random_backbone(arch: str):
    import torch

    from benchxfer.models import build_classifier
    from benchxfer.zoo.backbone import is_head_key

    torch.manual_seed(0)
    return {k: v for k, v in build_classifier(arch, 1).state_dict().items() if not is_head_key(k)}


_SOURCES: dict[str, Path] = {}  # arch -> the canonical file imported for it (this module's zoo)


def _arch_source(arch: str, name: str) -> Path:
    """The zoo's canonical file of a random ``arch`` backbone, imported once per arch from a published
    format (torchvision weights file; BiT model.pth.tar) as init ``name``, the first of that arch asked for."""
    import torch

    from benchxfer import zoo
    from benchxfer.models import ARCHS

    if arch in _SOURCES:
        return _SOURCES[arch]
    state = _random_backbone(arch)
    published = Path(os.environ["BENCHXFER_HOME"]).parent / f"{name}.published"
    if ARCHS.get(arch).family == "bit":
        torch.save({"model": timm_to_bit_names(state), "step": 1}, published)
        fmt = "bit"
    else:
        torch.save(state, published)
        fmt = "torchvision"
    del state
    _, path, _ = zoo.import_init(name, published, fmt=fmt)
    published.unlink()
    return _SOURCES.setdefault(arch, path)


def ensure_init(name: str, pretrain: str | None) -> None:
    """Put init ``name``'s file in the zoo: a built-in init's canonical file (one import per arch, linked
    under every name of that arch), or a pre-trained local init as ``benchxfer pretrain`` registers it."""
    from benchxfer import zoo
    from benchxfer.plan.pretraining import load_pretrain_spec

    zoo_dir = zoo.zoo_dir()
    if name == "scratch" or name in {c.name for c in zoo.list_inits() if c.filename and
                                     (zoo_dir / c.filename).is_file()}:
        return
    if pretrain is not None:
        arch = load_pretrain_spec(pretrain).arch
        zoo.save_local_init(name, _random_backbone(arch), arch, {"source": "tests/test_shapes.py"})
        return
    cfg = zoo.INITS.get(name)
    source = _arch_source(cfg.arch, name)
    target = zoo.zoo_dir() / cfg.filename
    if source != target:
        os.link(source, target)


# --- planning the file as the real run does ---------------------------------------------------------------

@lru_cache(maxsize=None)
def plan_sweep(path: Path, light: bool = False):
    """``make_plan`` on the file's spec with every root pointing at this module's synthetic data (also for
    ``root: synthetic``, which the demo's own tests cover) and every init's file in the zoo, once per module and
    file (each shape of the file picks its trial from the one plan). ``light``: the spec without its inits of a
    heavy arch (no heavy backbone is imported; the light shapes' trials are the same)."""
    from benchxfer.plan.planning import make_plan
    from benchxfer.plan.spec import load_spec

    spec = load_spec(path)
    if light:
        spec = dataclasses.replace(spec, inits=tuple(e for e in spec.inits if _init_arch(e) not in HEAVY_ARCHS))
    for entry in spec.inits:
        ensure_init(entry.name, entry.pretrain)
    datasets = tuple(dataclasses.replace(d, root=_data_root(d.name)) for d in spec.datasets)
    return make_plan(dataclasses.replace(spec, datasets=datasets), write_synthetic=True)


def plan_pretrain_file(path: Path):
    from benchxfer.plan.pretraining import load_pretrain_spec, plan_pretrain

    spec = load_pretrain_spec(path)
    if spec.start != "scratch":
        ensure_init(spec.start, None)
    sources = tuple(dataclasses.replace(s, root=_data_root(s.dataset)) for s in spec.sources)
    spec = dataclasses.replace(spec, sources=sources)
    return spec, plan_pretrain(spec, write_synthetic=True)


def pick(trials, shape: Shape):
    """The shape's first trial, preferring a pre-trained init (its file is loaded) over scratch."""
    mine = [t for t in trials if shape_of(t) == shape]
    assert mine, f"the plan has no trial of shape {shape}; it has {sorted({str(shape_of(t)) for t in trials})}"
    return next((t for t in mine if t.init != "scratch"), mine[0])


def reduced(trial, arch: str | None = None) -> Any:
    """The trial's TrainConfig with :data:`REDUCED` (and ``arch``, a stand-in's) applied the way
    ``benchxfer train --set`` applies it."""
    from benchxfer.plan.schema import check_knob_values
    from benchxfer.recipes import TrainConfig
    from benchxfer.recipes.config import check_knobs

    config = _cfg(trial)
    knobs = dict(REDUCED) | ({"arch": arch} if arch else {})
    if config.get("micro_batch", 0) > 0:  # two micro-batches per step: the accumulation runs too
        knobs["batch_size"] = 2 * config["micro_batch"]
    config.update(check_knob_values(check_knobs(knobs, "--set"), "--set"))
    return TrainConfig.from_dict(config)


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        info = {ln.split(":")[0]: ln.split()[1] for ln in f}
    return int(info["MemAvailable"]) / 2**20


def reset_peak_rss() -> None:
    """Start a new peak of this process's resident memory (VmHWM), where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")) / 2**20


# --- the tests --------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_heavy_shapes_have_a_light_twin():
    """A heavy arch's shape that does not run has its twin with a small arch in the same file, which runs: the
    recipe, dataset, shot kind and task are exercised there, and the heavy arch once."""
    heavy = [s.arch for _, s in CASES if s.arch in HEAVY_ARCHS]
    assert sorted(heavy) == sorted({s.arch for _, s in ALL_CASES if s.arch in HEAVY_ARCHS})
    light = {_light(f, s) for f, s in CASES if s.arch not in HEAVY_ARCHS} | {_light(f, s) for f, s in STAND_INS}
    orphans = [case_id(f, s) for f, s in TWINNED if _light(f, s) not in light]
    assert not orphans, f"heavy shapes without a light twin: {orphans}"
    assert TWINNED  # the heavy shapes of the two few-shot files are this many more trials of 12 GB


def imports_heavy_backbone(path: Path) -> bool:
    """Does planning ``path`` import a heavy arch's backbone into the zoo (an init of that arch)?"""
    if is_pretrain_file(path):
        from benchxfer.plan.pretraining import load_pretrain_spec

        spec = load_pretrain_spec(path)
        return spec.start != "scratch" and spec.arch in HEAVY_ARCHS
    return any(s.arch in HEAVY_ARCHS for f, s in ALL_CASES if f == path)  # the shapes listed at collection


def listed_params():
    """Every file's listed shapes against its plan (fast); a file whose plan imports a heavy backbone: its light
    shapes against the plan without its heavy inits (fast), and all of them (heavy tier, beside the heavy trial)."""
    out = []
    for p in FILES:
        if imports_heavy_backbone(p):
            out += [pytest.param(p, True, id=f"{p.name}:light", marks=[pytest.mark.fast]),
                    pytest.param(p, False, id=p.name, marks=[pytest.mark.heavy])]
        else:
            out.append(pytest.param(p, False, id=p.name, marks=[pytest.mark.fast]))
    return out


@pytest.mark.parametrize("path,light", listed_params())
def test_listed_shapes_are_the_plans_shapes(path, light, env):
    """The shapes listed at collection are exactly those of the real plan's trials (nothing goes untested)."""
    if is_pretrain_file(path):
        _, trial = plan_pretrain_file(path)
        planned = [shape_of(trial)]
    else:
        planned = list(dict.fromkeys(shape_of(t) for t in plan_sweep(path, light=light).trials))
    listed = [s for s in listed_shapes(path) if not (light and s.arch in HEAVY_ARCHS)]
    assert sorted(planned) == sorted(listed)


@pytest.mark.fast
@pytest.mark.parametrize("arch", sorted(HEAVY_ARCHS))
def test_a_heavy_arch_is_wired_at_full_size_on_the_meta_device(arch):
    """What the heavy trial checks that needs no memory (torch's meta device: shapes without storage): the arch
    gives each task its outputs at the studies' 480 px, its backbone written in big_transfer's names maps back onto
    it with no key left over, and the zoo's check accepts the result as that arch."""
    import torch

    from benchxfer.models import build_model
    from benchxfer.tasks import get_task
    from benchxfer.zoo.backbone import check_backbone, is_head_key
    from benchxfer.zoo.bit import HEAD_PREFIX, bit_to_timm

    with torch.device("meta"):
        x = torch.empty(2, 3, 480, 480)
        for task, classes in (("binary", 2), ("multiclass", 37), ("multilabel", 14)):
            assert tuple(build_model(arch, task, classes)(x).shape) == (2, get_task(task).outputs(classes))
        backbone = {k: v for k, v in build_model(arch, "binary", 2).state_dict().items() if not is_head_key(k)}
        published = timm_to_bit_names(backbone)
    renamed, unknown = bit_to_timm({k: v for k, v in published.items() if not k.startswith(HEAD_PREFIX)})
    assert not unknown and set(renamed) == set(backbone)
    assert check_backbone(renamed, arch, "bit", "the published file") == arch


@pytest.mark.parametrize("path,shape,stand_in", [case_param(f, s) for f, s in CASES]
                         + [case_param(f, s, STAND_IN[s.arch]) for f, s in STAND_INS])
def test_shape_trains_to_a_result(path: Path, shape: Shape, stand_in: str | None, env, record_property):
    from benchxfer import data, zoo
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime
    from benchxfer.trialdir import TrialDir

    finish = None
    if is_pretrain_file(path):
        from benchxfer.train.export import ExportBackbone

        spec, trial = plan_pretrain_file(path)
        # as run_pretrain: the backbone goes into the zoo; --force, as the zoo may hold this module's stand-in for
        # the same name (ensure_init, for the sweep shapes that use it), which a pre-training refuses to replace
        finish = ExportBackbone(spec.name, force=True)
    else:
        trial = pick(plan_sweep(path, light=shape.arch not in HEAVY_ARCHS).trials, shape)
    arch = stand_in or shape.arch
    need = PEAK_GB.get((arch, _cfg(trial)["select"]))
    if need is not None and (free := available_gb()) < need:
        pytest.skip(f"{arch} peaks at {need:g} GB of memory (measured); {free:.1f} GB available")
    folder = env / "trial"  # removed after the test: one shape's files at a time
    reset_peak_rss()
    try:
        train_run(reduced(trial, stand_in), Runtime(trial_dir=str(folder), session="local", threads=2, finish=finish))
        record_property("peak_rss_gb", round(peak_rss_gb(), 2))
        result = TrialDir(str(folder)).result()
        assert result is not None, "no result.json"
        assert result.trial_key == trial.key and result.epochs_run == 1
        if finish is not None:  # pre-training: no test set; the backbone is in the zoo, the val scores finite
            cfg, file = zoo.resolve_init(spec.name)
            assert cfg.arch == arch and file is not None and Path(result.zoo_path) == file
            assert result.best_val_loss is not None and math.isfinite(result.best_val_loss)
            return
        listed = data.get_dataset(shape.dataset).metrics
        assert set(listed) <= set(result.test), f"result holds {sorted(result.test)}, the dataset lists {listed}"
        bad = {k: result.test[k] for k in listed if not math.isfinite(result.test[k])}
        assert not bad, f"metrics not finite: {bad}"
        assert result.metric == trial.metric and result.value == result.test[trial.metric]
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # R152x4: 7 GB per epoch file
