r"""The recipe's options beyond the authors' recipe, as pure functions of one batch."""

from __future__ import annotations

import torch

from robustweights.selection import keep_highest

__all__ = ["rate_rule_weights"]


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
