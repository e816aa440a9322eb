"""robustweights: per-sample weights that resist label noise, for any training loop.

Public API::

    SurrogateRecipe       the FBR training recipe as steps your loop composes
    RecipeConfig          its schedule and options; RecipeConfig.authors() is the paper's
    SurrogateReweighter   feature-based reweighting (FBR), arXiv 2510.12209
    MetaReweighter        meta-reweighting (L2RW), last-layer closed form
    ModelMetaReweighter   meta-reweighting (L2RW) over every parameter of a torch model
    Reweighter            the base class of the three reweighters above
    WeightedLoss          wrap a per-sample loss so it takes weights
    weighted_mean         the weighted batch mean of per-sample losses
    FeatureCapture        record the penultimate features during the normal forward pass
    AlphaSchedule         FBR's reference alpha schedule, a picklable callable
    PhaseMonitor          watch the phases of reweighting (alignment, filtering, post-filtering)
    detect_phases         the same phase rule, applied to a recorded trajectory
    PhaseReport           what PhaseMonitor.update returns for one step
    PhaseBoundaries       where filtering and post-filtering start (detect_phases' result)
    PostFilteringWarning  issued once when training enters post-filtering
    FilterCollapseWarning issued when a filter keeps the pool as readily as clean data (see
                          robustweights.phases.FilterHealth, which SurrogateRecipe reports)

Stateless twins of the reweighters live in :mod:`robustweights.functional`
(``surrogate_weights``, ``meta_weights``, ``model_meta_weights``); framework integrations in
:mod:`robustweights.integrations`. Modules whose names start with an underscore are internal:
their names may change without notice.
"""

from robustweights.base import Reweighter
from robustweights.features import FeatureCapture
from robustweights.losses import WeightedLoss, weighted_mean
from robustweights.meta import MetaReweighter
from robustweights.model_meta import ModelMetaReweighter
from robustweights.phases import (
    FilterCollapseWarning,
    PhaseBoundaries,
    PhaseMonitor,
    PhaseReport,
    PostFilteringWarning,
    detect_phases,
)
from robustweights.recipe import RecipeConfig, SurrogateRecipe
from robustweights.surrogate import AlphaSchedule, SurrogateReweighter

__all__ = [
    "AlphaSchedule",
    "FeatureCapture",
    "FilterCollapseWarning",
    "MetaReweighter",
    "ModelMetaReweighter",
    "PhaseBoundaries",
    "PhaseMonitor",
    "PhaseReport",
    "PostFilteringWarning",
    "RecipeConfig",
    "Reweighter",
    "SurrogateRecipe",
    "SurrogateReweighter",
    "WeightedLoss",
    "detect_phases",
    "weighted_mean",
]
__version__ = "0.1.0"
