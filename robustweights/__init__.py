"""robustweights: per-sample weights that resist label noise, for any training loop.

Public API::

    SurrogateReweighter   feature-based reweighting (FBR), arXiv 2510.12209
    MetaReweighter        meta-reweighting (L2RW), last-layer closed form or full network
    WeightedLoss          wrap a per-sample loss so it takes weights
    weighted_mean         the weighted batch mean of per-sample losses
    FeatureCapture        record the penultimate features during the normal forward pass
    AlphaSchedule         FBR's reference alpha schedule, a picklable callable
    alpha_schedule        the same, as a function (returns an AlphaSchedule)
    PhaseMonitor          watch the phases of reweighting (alignment, filtering, post-filtering)
    detect_phases         the same phase rule, applied to a recorded trajectory
    PostFilteringWarning  issued once when training enters post-filtering
"""

from robustweights.features import FeatureCapture
from robustweights.losses import WeightedLoss, weighted_mean
from robustweights.meta import MetaReweighter
from robustweights.phases import PhaseMonitor, PostFilteringWarning, detect_phases
from robustweights.surrogate import AlphaSchedule, SurrogateReweighter, alpha_schedule

__all__ = [
    "AlphaSchedule",
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
