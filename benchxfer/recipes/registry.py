"""The four recipes of the two studies (``shared/reference/RECIPES.md``), registered by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchxfer.errors import BenchxferError
from benchxfer.recipes.config import BALANCE, KNOBS, SELECT, check_knobs
from benchxfer.registry import Registry
from benchxfer.tasks import CLASSIFICATION, PRETRAIN_TASK, TASKS, get_task


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    tasks: tuple[str, ...]  # the tasks it trains: multilabel, binary, multiclass, segmentation
    defaults: dict[str, Any] = field(default_factory=dict)
    default_lr: float = 1e-3

    def resolve(self, overrides: dict[str, Any], where: str) -> dict[str, Any]:
        return {**self.defaults, **check_knobs(overrides, where)}


RECIPES: Registry[Recipe] = Registry("recipe")


def register_recipe(recipe: Recipe) -> Recipe:
    check_knobs(recipe.defaults, f"recipe {recipe.name}")
    return RECIPES.add(recipe.name, recipe)


def get_recipe(name: str) -> Recipe:
    return RECIPES.get(name)


def list_recipes() -> list[Recipe]:
    return [r for _, r in RECIPES.items()]


def recipe_for_task(task: str) -> str:
    """The default recipe for a task, used when a sweep says ``recipe: auto``."""
    return "systematic-seg" if get_task(task).dense else "systematic-cls"

register_recipe(Recipe(
    name="systematic-cls",
    description="First study, classification: Adam, ReduceLROnPlateau on val loss, early stopping 10, "
                "RandomResizedCrop 224 + flip + rotation 7, optional TenCrop test; a binary task (Shenzhen) "
                "has one sigmoid output with BCE.",
    tasks=CLASSIFICATION,
    default_lr=2e-4,
    defaults=dict(arch="resnet50", size=224, batch_size=32, epochs=1000, optimizer="adam", schedule="plateau",
                  plateau_factor=0.5, plateau_patience=5, plateau_threshold=1e-4, stopping="early", patience=10,
                  loss="auto", augment="systematic-cls", normalization="init", tencrop=False, binary_outputs=1),
))

register_recipe(Recipe(
    name="systematic-seg",
    description="First study, segmentation: U-Net with the init in its encoder, Adam, cosine lr per epoch, "
                "early stopping 20, loss 1 - soft Dice (override loss: bce for vessels).",
    tasks=tuple(n for n, t in TASKS.items() if t.dense),
    default_lr=1e-3,
    defaults=dict(arch="resnet50", size=224, batch_size=32, epochs=200, optimizer="adam", schedule="cosine-epoch",
                  stopping="early", patience=20, loss="dice", augment="systematic-seg", normalization="init"),
))

register_recipe(Recipe(
    name="bit-hyperrule",
    description="Second study, fine-tuning BiT: SGD momentum 0.9 with Nesterov, base lr 0.001 with adaptive "
                "gradient clipping 0.01 on all but the new head (every config of the study), step schedule by "
                "training-set size with linear warm-up, MixUp 0.1 from 20k examples, batch 128 (drawn with "
                "replacement from smaller sets), no weight decay, head with PyTorch's default init, the last "
                "step tested (no validation split), class-balanced sampling for COVIDx and Flowers full data.",
    tasks=CLASSIFICATION,
    default_lr=0.001,
    defaults=dict(arch="bit-r50x1", size=480, batch_size=128, epochs=100000, optimizer="sgd-nesterov",
                  momentum=0.9, weight_decay=0.0, schedule="bit-hyperrule", stopping="steps", loss="auto",
                  augment="bit-hyperrule", normalization="init", mixup=-1.0, agc=0.01, select="last",
                  head_init="default", full_batches=True, balance="auto"),
))

register_recipe(Recipe(
    name="supervised-pretrain",
    description="Supervised multi-label pre-training on merged chest X-ray sources (the second study's chest "
                "recipe): SGD Nesterov + AGC, lr 0.01 x batch/256, wd 1e-4, 15 warm-up epochs from lr / workers, "
                "lr / 10 at epochs 30, 60, 80; 90 epochs; 0.5/0.5 inputs; BCE over the known labels (missing and "
                "uncertain ones masked); a head with PyTorch's default init.",
    tasks=(PRETRAIN_TASK.name,),
    default_lr=0.01,
    defaults=dict(arch="resnet50", size=224, batch_size=256, epochs=90, optimizer="sgd-nesterov", momentum=0.9,
                  weight_decay=1e-4, schedule="warmup-step", warmup_epochs=15, base_batch=256, agc=0.01,
                  stopping="none", loss="masked-bce", augment="supervised-pretrain", normalization="half",
                  head_init="default"),
))


def check_names(knobs: dict[str, Any], where: str) -> None:
    """Every knob that names a registered part must name a known one."""
    from benchxfer.data.transforms import NORMALISATIONS
    from benchxfer.models import ARCHS, HEAD_INITS
    from benchxfer.recipes.parts import LOSSES, OPTIMIZERS, STOPPING
    from benchxfer.recipes.schedules import SCHEDULES
    from benchxfer.zoo.inits import INIT_NORMALISATIONS

    for key, reg, extra in (("arch", ARCHS, ()), ("optimizer", OPTIMIZERS, ()), ("schedule", SCHEDULES, ()),
                            ("loss", LOSSES, ("auto",)), ("stopping", STOPPING, ()), ("head_init", HEAD_INITS, ()),
                            ("select", None, SELECT), ("balance", None, BALANCE),
                            ("normalization", None, (*INIT_NORMALISATIONS, *NORMALISATIONS.names()))):
        value = knobs.get(key, KNOBS[key])
        known = [*extra, *(reg.names() if reg is not None else [])]
        if value not in known:
            raise BenchxferError(f"{where}: unknown {key} {value!r}; known: {', '.join(known)}")


def check_task(recipe: Recipe, task: str, where: str) -> None:
    if task not in recipe.tasks:
        raise BenchxferError(
            f"{where}: recipe {recipe.name!r} trains {'/'.join(recipe.tasks)} tasks, not {task}"
        )
