"""robustweights: per-sample weights that resist label noise, for any training loop.

Public API::

    FBRRecipe             the whole FBR training recipe (clean passes, eval features, schedule)
    SurrogateReweighter   feature-based reweighting (FBR), arXiv 2510.12209
    MetaReweighter        meta-reweighting (L2RW), last-layer closed form or full network
    WeightedLoss          wrap a per-sample loss so it takes weights
    weighted_mean         the weighted batch mean of per-sample losses
    FeatureCapture        record the penultimate features during the normal forward pass
    alpha_schedule        FBR's reference alpha schedule
    PhaseMonitor          watch the phases of reweighting (alignment, filtering, post-filtering)
    detect_phases         the same phase rule, applied to a recorded trajectory
    PostFilteringWarning  issued once when training enters post-filtering
"""

from robustweights.features import FeatureCapture
from robustweights.losses import WeightedLoss, weighted_mean
from robustweights.meta import MetaReweighter
from robustweights.phases import PhaseMonitor, PostFilteringWarning, detect_phases
from robustweights.recipe import FBRRecipe
from robustweights.surrogate import SurrogateReweighter, alpha_schedule

__all__ = [
    "FBRRecipe",
    "FeatureCapture",
    "MetaReweighter",
    "PhaseMonitor",
    "PostFilteringWarning",
    "SurrogateReweighter",
    "WeightedLoss",
    "alpha_schedule",
    "detect_phases",
    "weighted_mean",
]
__version__ = "0.1.0"
