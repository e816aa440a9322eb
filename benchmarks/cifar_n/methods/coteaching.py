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

With ``mixup`` = :math:`\alpha > 0` (``coteaching_mixup``, the fairness row of a recipe that
uses mixup) the selection is unchanged (each network's per-sample losses on the un-mixed batch)
and each network is then trained on mixup among the samples its peer selected.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method, per_sample_ce
from robustweights.recipe import mixup, soft_cross_entropy

__all__ = ["CoTeaching", "CoTeachingMixup", "forget_rate", "small_loss_indices"]


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
        mixup: mixup's :math:`\alpha` among the selected samples (0: none).
    """

    name = "coteaching"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"forget_rate": None, "num_gradual": 10, "exponent": 1.0, "noise_rate": 0.2,
                "mixup": 0.0}

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
            alpha = float(self.params["mixup"])
            if alpha > 0:
                loss1, loss2, pick = self._mixup_losses(epoch, x, y, alpha)
            else:
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

    def _mixup_losses(self, epoch: int, x: torch.Tensor, y: torch.Tensor, alpha: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Select on the un-mixed batch (no gradient), then train each network on mixup among
        the samples its peer selected."""
        c = self.c
        with torch.no_grad():  # the training-mode forward, as without mixup
            z0, z1 = self.nets[0](x), self.nets[1](x)
            _, _, pick = self.batch_losses(epoch, z0, z1, y)  # net 0 trains on net 1's choice
            _, _, pick1 = self.batch_losses(epoch, z1, z0, y)  # and net 1 on net 0's
        losses = []
        for net, chosen in ((self.nets[0], pick), (self.nets[1], pick1)):
            xm, q, w = mixup(x[chosen], y[chosen], torch.ones(len(chosen), device=x.device),
                             num_classes=c.num_classes, alpha=alpha, generator=c.generator)
            losses.append(soft_cross_entropy(net(xm), q, w))
        return losses[0], losses[1], pick

    def eval_model(self) -> nn.Module:
        return self.nets[0]


class CoTeachingMixup(CoTeaching):
    """Co-teaching with mixup (alpha 1) among the selected samples: the fairness row of a recipe
    that uses mixup."""

    name = "coteaching_mixup"

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {**super().defaults(), "mixup": 1.0}
