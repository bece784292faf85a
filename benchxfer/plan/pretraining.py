"""Pre-training and domain adaptation: the pre-training file, the run it plans, and the zoo name it may take
(the run itself, on Ray: :func:`benchxfer.launch.pretrain.run_pretrain`; the hook that puts the new init in the
zoo: :class:`benchxfer.train.export.ExportBackbone`).

A pre-training file names the sources (merged on their common labels, missing and uncertain labels
masked out of the loss), the architecture, the starting init, the recipe and the resources. The run is a
trial like any other (same loop, same checkpoints, same MLflow layer, experiment ``pretrain``); when it
ends, rank 0 writes the backbone into the zoo under the file's ``name``. Running the same command again
after a kill continues from the last epoch checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from benchxfer import zoo
from benchxfer.frozen import FrozenDict
from benchxfer.plan.schema import PRETRAIN_EXPERIMENT, PretrainSpec, fail, pretrain_spec
from benchxfer.plan.spec import read_yaml
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import check_micro_batch
from benchxfer.tasks import PRETRAIN_TASK
from benchxfer.trial import Trial, trial_key

EXPERIMENT = PRETRAIN_EXPERIMENT  # runs/pretrain and the MLflow experiment: a name no sweep may take


def load_pretrain_spec(path: str | Path) -> PretrainSpec:
    """Read a pre-training file and hand it to the schema (:func:`benchxfer.plan.schema.pretrain_spec`)."""
    return pretrain_spec(read_yaml(path), str(path))


def plan_pretrain(spec: PretrainSpec, write_synthetic: bool = True) -> Trial:
    """Validate sources and the start init, and build the run as a Trial."""
    from benchxfer.data.roots import resolve_root

    sources = [{"dataset": src.dataset,
                "root": resolve_root(src.dataset, src.root, src.synthetic, f"{spec.path}: sources[{i}].root",
                                     write_synthetic, folder=f"{src.dataset}-source"),
                "options": dict(src.options)}  # TrainConfig holds plain data (it is sent to DDP workers as such)
               for i, src in enumerate(spec.sources)]
    if spec.start != "scratch":
        cfg, _ = zoo.resolve_init(spec.start)
        if cfg.arch != spec.arch:
            raise fail(spec.path, "start", f"{spec.start!r} is a {cfg.arch} backbone, not {spec.arch}")
    recipe = get_recipe(spec.recipe)
    knobs = recipe.resolve({**spec.overrides, "arch": spec.arch}, spec.path)
    check_micro_batch(knobs, PRETRAIN_TASK.name, spec.path)
    lr = spec.lr or recipe.default_lr
    key = trial_key(f"pretrain-{spec.name}", "+".join(s["dataset"] for s in sources), lr, spec.seed, None,
                    spec.recipe, {**knobs, "start": spec.start},
                    {"sources": [[s["dataset"], s["options"]] for s in sources]})  # a source's views change the run
    config = TrainConfig.from_dict({**knobs, "sweep": EXPERIMENT, "trial_key": key, "init": spec.start,
                                    "sources": sources, "recipe": spec.recipe, "lr": lr, "seed": spec.seed})
    overrides = FrozenDict({**spec.overrides, "arch": spec.arch, "start": spec.start, "output": spec.name})
    task = PRETRAIN_TASK
    return Trial(key, spec.start, config.dataset or "+".join(s["dataset"] for s in sources), spec.recipe, lr,
                 spec.seed, None, task.name, task.metric, overrides, config)


def check_zoo_name(spec: PretrainSpec, trial: Trial, zoo_override: str | None, force: bool) -> None:
    """A pre-training that is to write its backbone into the zoo refuses a name the zoo holds for something else
    (an import, another pre-training), unless ``force``: checked before any work, and again under the zoo's lock
    when the backbone is written."""
    from benchxfer.trialdir import TrialDir
    from benchxfer.zoo.store import claimed

    if force or TrialDir.of(EXPERIMENT, trial.key).result() is not None:
        return
    if (there := claimed(spec.name, trial.key, zoo_override)) is not None:
        raise fail(spec.path, "name", f"init {spec.name!r} is already in the zoo ({there}); give the "
                   "pre-trained backbone another name, or pass --force to replace it")
