r"""Rate-based selection: keep the best-scored part of each batch, optionally per class.

FBR's reference rule keeps a sample when its direction :math:`d_i` pushes its weight above
:math:`w_0`, i.e. when its label is the class its features are most similar to. Once a network
has fitted a wrong label, that sample's features sit near its wrong class and the rule keeps it:
the filter collapses while the network memorises (``docs/results``). A *rate* rule instead keeps
a fixed share of each batch, the samples with the highest :math:`d_i`, and drops the rest from
the first epochs on, so the dropped samples are never fitted. The share follows Co-teaching's
ramp (Han et al., NeurIPS 2018): the dropped fraction grows linearly from 0 to :math:`\tau` over
the first :math:`T_k` epochs,

.. math::
    r(t) = \tau \min\!\Big(\frac{t}{T_k - 1}, 1\Big),

and each batch keeps its :math:`\lfloor (1 - r(t)) B \rfloor` highest-scored samples, or, class
balanced, :math:`\lfloor (1 - r(t)) B_c \rfloor` of the :math:`B_c` samples labelled :math:`c`.
"""

from __future__ import annotations

import torch

from robustweights._validation import check_fraction

__all__ = ["drop_rate_at", "keep_highest", "small_loss_weights"]


def drop_rate_at(epoch: int, rate: float, ramp_epochs: int) -> float:
    r"""The dropped fraction :math:`r(t) = \tau\min(t / (T_k - 1), 1)` at ``epoch`` (from 0):
    ``linspace(0, rate, ramp_epochs)`` over the first ``ramp_epochs`` epochs, then ``rate``.

    Example:
        >>> [round(drop_rate_at(t, 0.4, 5), 2) for t in range(7)]
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4]
    """
    rate = check_fraction(rate, "rate") if rate else 0.0
    if ramp_epochs <= 1:
        return rate
    return rate * min(epoch / (ramp_epochs - 1), 1.0)


def keep_highest(scores: torch.Tensor, drop: float, *, labels: torch.Tensor | None = None
                 ) -> torch.Tensor:
    r"""Boolean mask (B,) of the samples kept when dropping the fraction ``drop`` with the
    lowest ``scores``: the :math:`\lfloor (1 - \text{drop}) B\rfloor` highest, or with
    ``labels`` the :math:`\lfloor (1 - \text{drop}) B_c\rfloor` highest within each label class
    (class-balanced keeping). Ties are broken by position (stable sort); a NaN score ranks
    lowest.

    Example:
        >>> s = torch.tensor([3.0, 2.0, 1.0, -1.0, -2.0, -3.0])
        >>> keep_highest(s, 0.5)
        tensor([ True,  True,  True, False, False, False])
        >>> keep_highest(s, 0.5, labels=torch.tensor([0, 0, 0, 1, 1, 1]))  # 1 of 3 per class
        tensor([ True, False, False,  True, False, False])
    """
    n = scores.shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if n == 0:
        return keep
    frac = 1.0 - float(drop)
    s = torch.nan_to_num(scores.detach().double(), nan=-torch.inf)
    if labels is None:
        k = int(frac * n)
        order = torch.argsort(s, descending=True, stable=True)
        keep[order[:k]] = True
        return keep
    labels = labels.to(scores.device).long()
    # Sort by (label, descending score): each class's samples form one run, best first; a
    # sample's rank inside its run is its position minus the run's start.
    by_score = torch.argsort(s, descending=True, stable=True)
    order = by_score[torch.argsort(labels[by_score], stable=True)]
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=scores.device) - starts[sorted_labels]
    quota = (frac * counts.double()).floor().long()
    keep[order] = rank < quota[sorted_labels]
    return keep


def small_loss_weights(peer_losses: torch.Tensor, *, drop_rate: float,
                       labels: torch.Tensor | None = None) -> torch.Tensor:
    r"""Co-teaching's selection (Han et al., NeurIPS 2018) as weights: 1 for the
    :math:`\lfloor (1 - r) B\rfloor` samples with the smallest loss under a *peer* network,
    0 for the others (with ``labels``, that share within each label class). Train each network
    on the weights its peer's losses give, with the ramp :func:`drop_rate_at`:

    .. code-block:: python

        r = drop_rate_at(epoch, tau, 10)
        w1 = small_loss_weights(loss2.detach(), drop_rate=r)   # net 1 learns what net 2 keeps
        w2 = small_loss_weights(loss1.detach(), drop_rate=r)
        step1((w1 * loss1).sum() / w1.sum()); step2((w2 * loss2).sum() / w2.sum())

    Example:
        >>> small_loss_weights(torch.tensor([0.3, 2.0, 0.1, 1.0]), drop_rate=0.5)
        tensor([1., 0., 1., 0.])
    """
    if not isinstance(peer_losses, torch.Tensor) or peer_losses.ndim != 1:
        raise ValueError(f"Expected `peer_losses` to be a 1-D tensor, but got "
                         f"{getattr(peer_losses, 'shape', type(peer_losses).__name__)}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"Expected `drop_rate` to be in [0, 1), but got {drop_rate!r}")
    keep = keep_highest(-peer_losses.detach().double(), drop_rate, labels=labels)
    return keep.to(peer_losses.dtype if peer_losses.is_floating_point() else torch.float32)
