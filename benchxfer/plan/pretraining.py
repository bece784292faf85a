"""Pre-training and domain adaptation: the pre-training file, the run it plans, and the hook that puts the new
init in the zoo (the run itself, on Ray: :func:`benchxfer.runner.run_pretrain`).

A pre-training file names the sources (merged on their common labels, missing and uncertain labels
masked out of the loss), the architecture, the starting init, the recipe and the resources. The run is a
trial like any other (same loop, same checkpoints, same MLflow layer, experiment ``pretrain``); when it
ends, rank 0 writes the backbone into the zoo under the file's ``name``. Running the same command again
after a kill continues from the last epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchxfer import data, zoo
from benchxfer.data.indexing import check_options
from benchxfer.errors import BenchxferError
from benchxfer.plan.schema import PRETRAIN_EXPERIMENT, SEED, check_name, check_option_values, check_synthetic
from benchxfer.plan.spec import (
    _check_keys,
    _fail,
    _mapping,
    _recipe,
    check_overrides,
    parse_failure,
    parse_resources,
    read_yaml,
)
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import check_micro_batch
from benchxfer.tasks import PRETRAIN_TASK
from benchxfer.trial import Trial, trial_key
from benchxfer.trialdir import TrialResult

KEYS = {"name", "description", "sources", "arch", "start", "recipe", "lr", "seed", "overrides", "resources",
        "failure"}
SOURCE_KEYS = {"dataset", "root", "options", "synthetic"}
EXPERIMENT = PRETRAIN_EXPERIMENT  # runs/pretrain and the MLflow experiment: a name no sweep may take


@dataclass(frozen=True)
class PretrainSpec:
    path: str
    name: str
    sources: tuple[dict[str, Any], ...]
    arch: str
    start: str
    recipe: str
    lr: float | None
    seed: int
    overrides: dict[str, Any]
    resources: dict[str, Any]
    max_retries: int


def load_pretrain_spec(path: str | Path) -> PretrainSpec:
    path = str(path)
    doc = read_yaml(path)
    _check_keys(path, "", doc, KEYS)
    if "name" not in doc:
        raise _fail(path, "name", "the new init's name is required (lower-case letters, digits, '.', '_', '-')")
    name = check_name(f"{path}: name", doc["name"])  # the zoo's file and index entry: refused before any work
    if name in zoo.INITS:  # refused now, not after the whole pre-training has run
        raise _fail(path, "name", f"{name!r} is a built-in init; give the pre-trained backbone a new name")
    raw = doc.get("sources")
    if not isinstance(raw, list) or not raw:
        raise _fail(path, "sources", "must be a non-empty list of {dataset, root} entries")
    sources = []
    for i, src in enumerate(raw):
        if not isinstance(src, dict) or not isinstance(src.get("dataset"), str) or not src.get("root"):
            raise _fail(path, f"sources[{i}]", "needs dataset and root")
        _check_keys(path, f"sources[{i}].", src, SOURCE_KEYS)
        if src["dataset"] not in data.DATASETS:
            raise _fail(path, f"sources[{i}].dataset",
                        f"unknown dataset {src['dataset']!r}; known: {', '.join(data.DATASETS.names())}")
        root = src["root"] if src["root"] == "synthetic" else str((Path(path).parent / src["root"]).resolve())
        options = check_option_values(_mapping(path, f"sources[{i}].options", src.get("options")),
                                      f"{path}: sources[{i}].options")
        try:  # a reader option the dataset does not take is refused now, not on a worker
            check_options(data.get_dataset(src["dataset"]), options)
        except BenchxferError as err:
            raise _fail(path, f"sources[{i}].options", str(err)) from None
        synthetic = check_synthetic(_mapping(path, f"sources[{i}].synthetic", src.get("synthetic")),
                                    f"{path}: sources[{i}].synthetic")
        sources.append({"dataset": src["dataset"], "root": root, "options": options, "synthetic": synthetic})
    recipe = _recipe(path, "recipe", doc.get("recipe", "supervised-pretrain"), auto=False)
    from benchxfer.models import ARCHS

    arch = doc.get("arch", "resnet50")
    ARCHS.get(arch)
    lr = doc.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise _fail(path, "lr", f"must be a positive number, got {lr!r}")
    resources = parse_resources(path, doc.get("resources"))
    seed = doc.get("seed", 0)
    if not SEED.ok(seed):
        raise _fail(path, "seed", f"must be {SEED.describe()}, got {seed!r}")
    start = doc.get("start", "scratch")
    if not isinstance(start, str):
        raise _fail(path, "start", f"must be an init name (see `benchxfer zoo list`), got {start!r}")
    return PretrainSpec(
        path=path, name=name, sources=tuple(sources), arch=arch, start=start,
        recipe=recipe, lr=float(lr) if lr is not None else None, seed=int(seed),
        overrides=check_overrides(path, "overrides", doc.get("overrides")),
        resources=resources, max_retries=parse_failure(path, doc.get("failure"))["max_retries"],
    )


def plan_pretrain(spec: PretrainSpec, write_synthetic: bool = True) -> Trial:
    """Validate sources and the start init, and build the run as a Trial."""
    from benchxfer.data.roots import resolve_root

    sources = [{"dataset": src["dataset"],
                "root": resolve_root(src["dataset"], src["root"], src["synthetic"], f"{spec.path}: sources[{i}].root",
                                     write_synthetic, folder=f"{src['dataset']}-source"),
                "options": src["options"]}
               for i, src in enumerate(spec.sources)]
    if spec.start != "scratch":
        cfg, _ = zoo.resolve_init(spec.start)
        if cfg.arch != spec.arch:
            raise _fail(spec.path, "start", f"{spec.start!r} is a {cfg.arch} backbone, not {spec.arch}")
    recipe = get_recipe(spec.recipe)
    knobs = recipe.resolve({**spec.overrides, "arch": spec.arch}, spec.path)
    check_micro_batch(knobs, PRETRAIN_TASK.name, spec.path)
    lr = spec.lr or recipe.default_lr
    key = trial_key(f"pretrain-{spec.name}", "+".join(s["dataset"] for s in sources), lr, spec.seed, None,
                    spec.recipe, {**knobs, "start": spec.start},
                    {"sources": [[s["dataset"], s["options"]] for s in sources]})  # a source's views change the run
    config = TrainConfig.from_dict({**knobs, "sweep": EXPERIMENT, "trial_key": key, "init": spec.start,
                                    "sources": sources, "recipe": spec.recipe, "lr": lr, "seed": spec.seed})
    overrides = {**spec.overrides, "arch": spec.arch, "start": spec.start, "output": spec.name}
    task = PRETRAIN_TASK
    return Trial(key, spec.start, config.dataset or "+".join(s["dataset"] for s in sources), spec.recipe, lr,
                 spec.seed, None, task.name, task.metric, overrides, config)


@dataclass(frozen=True)
class ExportBackbone:
    """The finish hook of a pre-training run (rank 0, after the test): the backbone, without its head, saved
    into the zoo under the new init's name; the result records where it went. A name the zoo holds for something
    else (an import, another pre-training) is replaced only with ``force``."""

    name: str
    zoo: str | None = None
    force: bool = False

    def __call__(self, model, cfg: TrainConfig, result: TrialResult) -> TrialResult:
        from benchxfer.train.data_setup import normalisation
        from benchxfer.zoo.backbone import HEAD_PREFIXES

        backbone = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
        provenance = {"sources": cfg.sources, "epochs": result.epochs_run, "start": cfg.init, "recipe": cfg.recipe,
                      "mlflow_run_id": result.mlflow_run_id, "trial_key": cfg.trial_key}
        mean, std = normalisation(cfg)
        path = zoo.save_local_init(self.name, backbone, cfg.arch, provenance, zoo=self.zoo,
                                   mean=tuple(mean), std=tuple(std), force=self.force)
        return dataclasses.replace(result, zoo_path=str(path))
