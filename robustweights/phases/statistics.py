r"""Per-step statistics of a weight vector: kept fraction, effective sample size, precision and
recall of the kept samples, and the train-clean coupling magnitude (the signals the phase rule
of :mod:`robustweights.phases.detection` watches)."""

from __future__ import annotations

from typing import Any

from robustweights._backend import to_torch
from robustweights._validation import (
    check_mask,
    check_nonneg_float,
    check_scalar,
    check_vector,
    check_weights,
)

__all__ = ["coupling_magnitude", "effective_sample_size", "kept_fraction",
           "kept_precision_recall"]


def effective_sample_size(weights: Any) -> float:
    r"""Kish's effective sample size of non-negative weights.

    .. math::
        \mathrm{ESS}(w) = \frac{\left(\sum_i w_i\right)^2}{\sum_i w_i^2}

    It is :math:`B` for equal weights, :math:`k` for :math:`k` equal non-zero weights, and 0 when
    every weight is 0.

    Args:
        weights: (B,) non-negative weights (NumPy, torch or DLPack).

    Returns:
        The ESS as a Python float in :math:`[0, B]`.

    Raises:
        ValueError: if ``weights`` is not a non-empty finite 1-D array of non-negative numbers.

    Example:
        >>> effective_sample_size([1.0, 1.0, 0.0, 0.0])
        2.0
    """
    w = check_weights(weights)
    top = float(w.max())
    if top == 0.0:
        return 0.0
    w = w / top  # ESS is scale-free; without this, squares of tiny weights underflow
    return float(w.sum()) ** 2 / float((w * w).sum())


def kept_fraction(weights: Any, *, threshold: float = 0.0) -> float:
    r"""Fraction of samples kept, :math:`\frac{1}{B}\,|\{i : w_i > \tau\}|`.

    Args:
        weights: (B,) non-negative weights.
        threshold: :math:`\tau \ge 0`; a sample is kept when its weight exceeds it.

    Example:
        >>> kept_fraction([0.0, 0.3, 1.0, 0.0])
        0.5
    """
    tau = check_nonneg_float(threshold, "threshold")
    return float((check_weights(weights) > tau).double().mean())


def kept_precision_recall(weights: Any, true_clean: Any, *, threshold: float = 0.0
                          ) -> tuple[float, float]:
    r"""Precision and recall of the kept samples against the truly clean ones.

    With :math:`K = \{i : w_i > \tau\}` the kept samples and :math:`T` the truly clean ones:

    .. math::
        \text{precision} = \frac{|K \cap T|}{|K|}, \qquad \text{recall} = \frac{|K \cap T|}{|T|}

    An empty denominator gives 0 (as scikit-learn's ``zero_division=0``), never NaN.

    Args:
        weights: (B,) non-negative weights.
        true_clean: (B,) boolean mask, True where the given label is the true label.
        threshold: :math:`\tau \ge 0`.

    Returns:
        ``(precision, recall)`` as Python floats.

    Example:
        >>> kept_precision_recall([1.0, 1.0, 0.0, 0.0], [True, False, True, False])
        (0.5, 0.5)
    """
    tau = check_nonneg_float(threshold, "threshold")
    w = check_weights(weights)
    clean = check_mask(true_clean, "true_clean", w.shape[0])
    kept = (w > tau).cpu()
    hits = int((kept & clean).sum())
    n_kept, n_clean = int(kept.sum()), int(clean.sum())
    return (hits / n_kept if n_kept else 0.0, hits / n_clean if n_clean else 0.0)


def coupling_magnitude(coupling: Any) -> float:
    r"""Mean absolute train-clean coupling, :math:`\frac1B\sum_i |u_i|`.

    For L2RW, :math:`u_i = \langle\nabla\ell_i, \nabla L_{clean}\rangle` is
    ``MetaReweighter.last_scores``. For FBR, the directions :math:`d_i` are
    ``SurrogateReweighter.last_scores``. A scalar (0-d) is taken as an already computed
    magnitude and returned as it is.

    Example:
        >>> coupling_magnitude([0.25, -0.75])
        0.5
    """
    t = to_torch(coupling, "coupling")
    if t.ndim == 0:
        return check_scalar(t, "coupling")
    return float(check_vector(t, "coupling").abs().mean())
