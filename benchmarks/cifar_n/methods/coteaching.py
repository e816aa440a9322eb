"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with Extremely
Noisy Labels", NeurIPS 2018).

Two networks; in each mini-batch each network picks its ``R(T)`` fraction of smallest-loss
samples and its *peer* is updated on them. The kept fraction ramps down linearly,

.. math::
    R(T) = 1 - \\tau \\min(T / T_k, 1),

to ``1 - tau`` over the first ``T_k`` epochs. Published defaults: ``tau`` = the noise rate
(assumed known), ``T_k = 10``, exponent ``c = 1`` (linear). The official code ramps with
``np.linspace(0, tau, T_k)`` over epochs ``0..T_k-1``, which :func:`forget_rate` reproduces.
Here both networks train on pool + clean subset (the clean samples are ordinary labelled data
for a method that has no use for a trusted set), with the benchmark's shared optimiser.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method, per_sample_ce

__all__ = ["CoTeaching", "forget_rate", "small_loss_indices"]


def forget_rate(epoch: int, tau: float, num_gradual: int = 10, exponent: float = 1.0) -> float:
    """The fraction of each batch to drop at ``epoch`` (0-based): ``tau * min((epoch /
    (num_gradual - 1)) ** exponent, 1)``, i.e. ``linspace(0, tau, num_gradual)`` then ``tau``."""
    if num_gradual <= 1:
        return tau
    return tau * min((epoch / (num_gradual - 1)) ** exponent, 1.0)


def small_loss_indices(losses: torch.Tensor, forget: float) -> torch.Tensor:
    """Indices of the ``int((1 - forget) * B)`` smallest losses, ascending (all if that is 0)."""
    keep = int((1.0 - forget) * losses.shape[0])
    order = torch.argsort(losses.detach())
    return order if keep == 0 else order[:keep]


def coteaching_losses(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor,
                      forget: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-update losses: network 1 on network 2's small-loss samples and vice versa.

    Returns:
        ``(loss1, loss2, idx_for_1)``: the two mean losses and the batch indices network 1 was
        updated on (selected by network 2).
    """
    l1, l2 = per_sample_ce(logits1, labels), per_sample_ce(logits2, labels)
    pick1, pick2 = small_loss_indices(l1, forget), small_loss_indices(l2, forget)
    return l1[pick2].mean(), l2[pick1].mean(), pick2


class CoTeaching(Method):
    """Co-teaching with its published defaults (see the module docstring).

    Args (``params``):
        forget_rate: ``tau``; None = the nominal noise rate of the noise type (CIFAR-N's
            published rate or the synthetic rate), passed by the runner as ``noise_rate``.
        num_gradual: ``T_k`` (10).
        exponent: ``c`` (1).
    """

    name = "coteaching"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"forget_rate": None, "num_gradual": 10, "exponent": 1.0, "noise_rate": 0.2}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.nets = [ctx.new_model(), ctx.new_model()]
        self.opts = [ctx.new_optimizer(m) for m in self.nets]
        self.scheds = [ctx.new_scheduler(o) for o in self.opts]
        self.x, self.y = ctx.union()

    @property
    def tau(self) -> float:
        fr = self.params["forget_rate"]
        return float(self.params["noise_rate"] if fr is None else fr)

    def rate(self, epoch: int) -> float:
        return forget_rate(epoch, self.tau, int(self.params["num_gradual"]),
                           float(self.params["exponent"]))

    def batch_losses(self, epoch: int, logits1: torch.Tensor, logits2: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return coteaching_losses(logits1, logits2, labels, self.rate(epoch))

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        for m in self.nets:
            m.train()
        kept = np.full(c.n_pool, np.nan)
        total, n = 0.0, 0
        for idx in c.batches(len(self.y)):
            x = c.train_view(self.x[idx])
            y = self.y[idx]
            loss1, loss2, pick = self.batch_losses(epoch, self.nets[0](x), self.nets[1](x), y)
            self.sgd_step(self.opts[0], loss1)
            self.sgd_step(self.opts[1], loss2)
            total, n = total + loss1.item() * len(idx), n + len(idx)
            ids = idx.cpu().numpy()
            in_pool = ids < c.n_pool
            kept[ids[in_pool]] = 0.0
            chosen = ids[pick.cpu().numpy()]
            kept[chosen[chosen < c.n_pool]] = 1.0
        for s in self.scheds:
            s.step()
        return EpochLog(total / max(n, 1), kept, {"forget_rate": self.rate(epoch)})

    def eval_model(self) -> nn.Module:
        return self.nets[0]
