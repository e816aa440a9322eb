"""The FBR training recipe as steps the caller composes.

* :mod:`~robustweights.recipe.surrogate`: :class:`SurrogateRecipe`;
* :mod:`~robustweights.recipe.config`: :class:`RecipeConfig`, its schedule and options, and the
  named configurations;
* :mod:`~robustweights.recipe.weights`: the weights of one pool batch, options applied;
* :mod:`~robustweights.recipe.options`: the options beyond the authors' recipe, as pure
  functions of one batch;
* :mod:`~robustweights.recipe.health`: held-out trusted samples judged as the pool was, for
  the filter's health;
* :mod:`~robustweights.recipe.targets`: targets for what the filter drops, mixup, the
  soft-target loss and the consistency term (public here:
  ``from robustweights.recipe import mixup``);
* :mod:`~robustweights.recipe.calibration`: per-class thresholds calibrated on trusted images;
* :mod:`~robustweights.recipe.elr`: early-learning regularisation, against the wrong labels the
  filter keeps.
"""

from robustweights.recipe.config import RecipeConfig
from robustweights.recipe.elr import PredictionAverage, elr_penalty
from robustweights.recipe.surrogate import SurrogateRecipe
from robustweights.recipe.targets import (
    Targets,
    agreement_pseudo_labels,
    bootstrap_targets,
    consistency_loss,
    doubt_gate,
    mixup,
    prior_penalty,
    soft_cross_entropy,
)

__all__ = ["PredictionAverage", "RecipeConfig", "SurrogateRecipe", "Targets",
           "agreement_pseudo_labels", "bootstrap_targets", "consistency_loss", "doubt_gate",
           "elr_penalty", "mixup", "prior_penalty",
           "soft_cross_entropy"]
