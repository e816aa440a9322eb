"""How raw per-sample scores become weights: a small named choice, never a loss reduction."""

from __future__ import annotations

from typing import Literal, get_args

import torch

__all__ = ["Normalization", "check_normalization", "normalize_weights"]

Normalization = Literal["sum", "mean", "none"]


def check_normalization(value: object) -> Normalization:
    if value not in get_args(Normalization):
        raise ValueError(
            f"Expected `normalization` to be one of {get_args(Normalization)}, but got {value!r}"
        )
    return value  # type: ignore[return-value]


def normalize_weights(scores: torch.Tensor, normalization: Normalization,
                      total: torch.Tensor | None = None,
                      count: int | torch.Tensor | None = None) -> torch.Tensor:
    r"""Clip scores at zero and normalise them.

    .. math::
        w_i = \frac{\max(u_i, 0)}{\sum_j \max(u_j, 0)} \quad (\text{"sum"}), \qquad
        w_i = B\,\frac{\max(u_i, 0)}{\sum_j \max(u_j, 0)} \quad (\text{"mean"})

    and all weights are zero when no :math:`u_i` is positive (no sample helps the clean loss),
    as in L2RW. ``"none"`` returns :math:`\max(u_i, 0)` unscaled.

    Args:
        scores: (B,) raw scores :math:`u`.
        normalization: ``"sum"`` (L2RW: weights sum to one), ``"mean"`` (mean one, keeps the
            loss scale of an unweighted mean) or ``"none"``.
        total: the denominator :math:`\sum_j \max(u_j, 0)` if it is known globally (e.g. summed
            over distributed ranks); computed from ``scores`` when omitted.
        count: the number of samples :math:`B` for ``"mean"`` (defaults to ``len(scores)``; a
            tensor, e.g. the global :math:`B` summed over distributed ranks, is used as is).
    """
    pos = scores.clamp_min(0)
    if normalization == "none":
        return pos
    if total is None:
        total = pos.sum()
    # Branchless so it never syncs a GPU: a zero total gives all-zero weights, not NaN.
    safe = torch.where(total > 0, total, torch.ones_like(total))
    w = torch.where(total > 0, pos / safe, torch.zeros_like(pos))
    if normalization == "mean":
        w = w * (len(scores) if count is None else count)
    return w
