"""Wrap an existing per-sample loss so it takes sample weights, in one line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from robustweights._backend import to_torch

__all__ = ["LossFn", "WeightedLoss", "per_sample_losses", "weighted_mean"]

#: A per-sample loss: ``loss_fn(outputs, labels) -> (B,)`` (``reduction="none"``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample_losses(loss_fn: LossFn, outputs: torch.Tensor, labels: torch.Tensor
                      ) -> torch.Tensor:
    """``loss_fn(outputs, labels)``, checked to be one loss per sample (B,)."""
    losses = loss_fn(outputs, labels)
    if losses.ndim != 1 or losses.shape[0] != outputs.shape[0]:
        raise ValueError(
            f"Expected `loss_fn` to return per-sample losses of shape ({outputs.shape[0]},), but "
            f"got shape {tuple(losses.shape)}: use reduction='none'"
        )
    return losses


def weighted_mean(losses: torch.Tensor, weights: Any) -> torch.Tensor:
    r"""Batch mean of weighted per-sample losses, :math:`\frac1B\sum_i w_i \ell_i`, weights
    treated as constants (detached). ``weights`` may be any array the reweighters return."""
    return (_weights_for(losses, weights) * losses).mean()


def _weights_for(losses: torch.Tensor, weights: Any) -> torch.Tensor:
    """``weights`` (any array the reweighters accept or return) as a constant tensor shaped,
    placed and typed like ``losses``."""
    w = to_torch(weights, "weights").detach().to(device=losses.device, dtype=losses.dtype)
    if w.shape != losses.shape:
        raise ValueError(f"Expected `weights` of shape {tuple(losses.shape)}, but got "
                         f"{tuple(w.shape)}")
    return w


class WeightedLoss(nn.Module):
    r"""A per-sample loss that takes weights: :math:`L = \mathrm{reduce}_i(w_i\,\ell_i)`.

    Example:
        >>> import torch, torch.nn as nn
        >>> crit = WeightedLoss(nn.CrossEntropyLoss())      # reduction is switched to "none"
        >>> z, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
        >>> float(crit(z, y, weights=torch.tensor([1.0, 1.0, 0.0, 0.0])))  # ln 3 * 2 / 4
        0.5493...

    Args:
        loss_fn: an ``nn`` loss module (its ``reduction`` is set to ``"none"`` on a copy) or a
            callable ``loss_fn(input, target)`` that returns per-sample losses.
        reduction: ``"mean"`` (over the batch, as L2RW/FBR use), ``"sum"`` or ``"none"``.
    """

    def __init__(self, loss_fn: Callable[..., torch.Tensor],
                 reduction: Literal["mean", "sum", "none"] = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"Expected `reduction` to be 'mean', 'sum' or 'none', but got "
                             f"{reduction!r}")
        if hasattr(loss_fn, "reduction"):
            loss_fn = copy.copy(loss_fn)
            loss_fn.reduction = "none"  # type: ignore[union-attr]
        self.loss_fn = loss_fn
        self.reduction = reduction

    def __repr__(self) -> str:
        # One line with the wrapped loss and the reduction (nn.Module's default would print the
        # loss as a child module and hide the reduction).
        return f"WeightedLoss({self.loss_fn!r}, reduction={self.reduction!r})"

    def forward(self, input: torch.Tensor, target: torch.Tensor, weights: Any = None
                ) -> torch.Tensor:
        losses = self.loss_fn(input, target)
        if losses.ndim != 1:
            raise ValueError(f"Expected `loss_fn` to return per-sample losses (B,), but got "
                             f"shape {tuple(losses.shape)}")
        if weights is not None:
            losses = losses * _weights_for(losses, weights)
        if self.reduction == "mean":
            return losses.mean()
        return losses.sum() if self.reduction == "sum" else losses
