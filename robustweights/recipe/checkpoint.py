"""The recipe's checkpoint: what :meth:`SurrogateRecipe.state_dict` saves and how a load is
checked in full before anything is assigned."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from robustweights._state import STATE_VERSION, check_state_dict
from robustweights._validation import check_nonneg_int

if TYPE_CHECKING:
    from robustweights.recipe.surrogate import SurrogateRecipe

__all__ = ["load_recipe_state_dict", "recipe_state_dict"]

_STATE = ("epoch", "generator", "smoothed", "stale", "reweighter", "health", "thresholds")


def recipe_state_dict(recipe: SurrogateRecipe) -> dict[str, Any]:
    """The recipe's state: CPU tensors and plain values, with its configuration."""
    t = recipe._thresholds
    return {"_version": STATE_VERSION, "num_classes": recipe.num_classes,
            "config": recipe.config.to_dict(), "epoch": recipe.epoch,
            "generator": recipe.generator.get_state(),
            "smoothed": recipe._smoothed.state_dict(), "stale": recipe._stale,
            "reweighter": recipe.reweighter.state_dict(), "health": recipe.health.state_dict(),
            "thresholds": None if t is None else t.cpu()}


def load_recipe_state_dict(recipe: SurrogateRecipe, state_dict: dict[str, Any],
                           strict: bool) -> None:
    """Check every entry (on copies of the recipe's parts), then assign them all: a rejected
    load leaves the recipe as it was."""
    check_state_dict(state_dict, owner="SurrogateRecipe",
                     keys=("num_classes", "config", *_STATE), strict=strict,
                     config={"num_classes": recipe.num_classes,
                             "config": recipe.config.to_dict()})
    epoch = (check_nonneg_int(state_dict["epoch"], "state_dict['epoch']")
             if "epoch" in state_dict else recipe.epoch)
    generator = torch.Generator()
    generator.set_state(state_dict.get("generator", recipe.generator.get_state()))
    smoothed, reweighter = copy.deepcopy(recipe._smoothed), copy.deepcopy(recipe.reweighter)
    health = copy.deepcopy(recipe.health)
    if "smoothed" in state_dict:
        smoothed.load_state_dict(state_dict["smoothed"])
    if "reweighter" in state_dict:
        reweighter.load_state_dict(state_dict["reweighter"], strict=strict)
    if "health" in state_dict:
        health.load_state_dict(state_dict["health"], strict=strict)
    thresholds = state_dict.get("thresholds", recipe._thresholds)
    if thresholds is not None and (not isinstance(thresholds, torch.Tensor)
                                   or thresholds.shape != (recipe.num_classes,)):
        raise ValueError(f"Expected `state_dict['thresholds']` to be None or a tensor of shape "
                         f"({recipe.num_classes},), but got "
                         f"{getattr(thresholds, 'shape', type(thresholds).__name__)}")
    recipe.epoch = epoch
    recipe.generator.set_state(generator.get_state())
    recipe._smoothed, recipe.health = smoothed, health
    recipe.reweighter.load_state_dict(reweighter.state_dict(), strict=strict)
    recipe.reweighter.set_epoch(epoch)
    recipe._stale = bool(state_dict.get("stale", recipe._stale))
    recipe._thresholds = None if thresholds is None else thresholds.to(recipe.device)
