r"""The recipe's options beyond the authors' recipe, as pure functions of one batch."""

from __future__ import annotations

import torch

from robustweights.selection import keep_highest

__all__ = ["calibrated_rule_weights", "rate_rule_weights", "smoothed_weights"]


def rate_rule_weights(directions: torch.Tensor, labels: torch.Tensor, present: torch.Tensor, *,
                      rate: float, class_balanced: bool, w_max: float,
                      missing_class_weight: float) -> torch.Tensor:
    r"""The rate rule's weights: :math:`w_{\max}` for the :math:`\lfloor(1-r)B\rfloor`
    highest directions (per label class with ``class_balanced``), 0 for the others, and
    ``missing_class_weight`` for a sample whose class has no clean prototype
    (``present[c]`` False).

    Example:
        >>> d = torch.tensor([2.0, -1.0, 0.5, -3.0])
        >>> rate_rule_weights(d, torch.tensor([0, 0, 1, 1]), torch.tensor([True, True]),
        ...                   rate=0.5, class_balanced=False, w_max=1.0,
        ...                   missing_class_weight=0.0)
        tensor([1., 0., 1., 0.])
    """
    keep = keep_highest(directions, rate, labels=labels if class_balanced else None)
    return torch.where(present[labels], torch.where(keep, w_max, 0.0), missing_class_weight)


def calibrated_rule_weights(directions: torch.Tensor, labels: torch.Tensor,
                            thresholds: torch.Tensor, present: torch.Tensor, *, w_max: float,
                            missing_class_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Calibrated thresholds' weights: from the directions :math:`d_i` (:math:`\alpha = 0`),
    the shifted directions :math:`d_i - t_{y_i}` and the weights, :math:`w_{\max}` where they
    are positive, 0 elsewhere, and ``missing_class_weight`` for a sample whose class has no
    clean prototype (``present[c]`` False).

    Example:
        >>> d = torch.tensor([0.5, 0.1, -0.2, 0.3])
        >>> calibrated_rule_weights(d, torch.tensor([0, 0, 1, 1]), torch.tensor([0.2, -0.5]),
        ...                         torch.tensor([True, True]), w_max=1.0,
        ...                         missing_class_weight=0.0)[1]
        tensor([1., 0., 1., 1.])
    """
    shifted = directions - thresholds.to(directions)[labels]
    w = torch.where(present[labels], torch.where(shifted > 0, w_max, 0.0), missing_class_weight)
    return shifted, w


def smoothed_weights(previous: torch.Tensor, weights: torch.Tensor, momentum: float
                     ) -> torch.Tensor:
    r"""Each sample's running average over its visits,
    :math:`\bar w_i \leftarrow m\,\bar w_i + (1-m)\,w_i`.

    Example:
        >>> smoothed_weights(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.75)
        tensor([0.7500, 0.2500])
    """
    return momentum * previous + (1 - momentum) * weights
