"""Recipes: the training protocols of the two source studies, as named sets of defaults.

A recipe is data (:class:`Recipe`): the default value of every knob of :class:`TrainConfig`.
A sweep names a recipe and may override any knob; an unknown knob is an error that lists the known ones.
The parts a recipe names (optimiser, schedule, loss, stopping rule) are registries in
:mod:`benchxfer.recipes.parts`.
"""

from benchxfer.recipes.config import KNOBS, TrainConfig, knob_names
from benchxfer.recipes.registry import RECIPES, Recipe, get_recipe, list_recipes, recipe_for_task

__all__ = [
    "KNOBS",
    "RECIPES",
    "Recipe",
    "TrainConfig",
    "get_recipe",
    "knob_names",
    "list_recipes",
    "recipe_for_task",
]
