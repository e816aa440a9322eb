r"""The three phases of meta-reweighting, observed from what a reweighter already computes.

Zhang, Holtz, Mishne, Cloninger, "Revisiting Meta-Learning with Noisy Labels: Reweighting
Dynamics and Theoretical Guarantees", arXiv 2510.12209, show that meta-reweighting moves
through three phases:

1. **alignment**: samples consistent with the clean set gain weight and conflicting ones lose it;
2. **filtering**: noisy weights are driven to zero while the clean loss falls;
3. **post-filtering**: the clean loss is small, so the train-clean coupling
   :math:`\langle\nabla\ell_i, \nabla L_{clean}\rangle` vanishes and the weights become
   perturbation-sensitive. Weights computed from here on are unreliable.

One concept per module, all re-exported here:

* :mod:`~robustweights.phases.statistics`: the per-step signals (kept fraction, effective sample
  size, precision/recall of the kept samples, coupling magnitude);
* :mod:`~robustweights.phases.detection`: the causal rule, :func:`detect_phases` on a recorded
  trajectory and its :class:`PhaseBoundaries`;
* :mod:`~robustweights.phases.monitor`: :class:`PhaseMonitor`, the same rule online, step by
  step. It warns once on entering post-filtering and can freeze the weights from then on;
* :mod:`~robustweights.phases.health`: :class:`FilterHealth`, whether a sample filter still
  tells wrong labels from right ones, measured without true labels on held-out trusted samples
  (:class:`~robustweights.SurrogateRecipe` reports it every epoch).

Input validation lives in :mod:`robustweights._validation`, as for the reweighters.
"""

from robustweights.phases.detection import PHASES, PhaseBoundaries, detect_phases
from robustweights.phases.health import FilterCollapseWarning, FilterHealth, HealthReport
from robustweights.phases.monitor import PhaseMonitor, PhaseReport, PostFilteringWarning
from robustweights.phases.statistics import (
    coupling_magnitude,
    effective_sample_size,
    kept_fraction,
    kept_precision_recall,
)

__all__ = [
    "PHASES",
    "FilterCollapseWarning",
    "FilterHealth",
    "HealthReport",
    "PhaseBoundaries",
    "PhaseMonitor",
    "PhaseReport",
    "PostFilteringWarning",
    "coupling_magnitude",
    "detect_phases",
    "effective_sample_size",
    "kept_fraction",
    "kept_precision_recall",
]
