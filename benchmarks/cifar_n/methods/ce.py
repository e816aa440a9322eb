"""CE: plain cross-entropy on the noisy pool plus the clean subset (every sample, weight 1);
CE + mixup, the fairness row of every recipe that uses mixup; CE + ELR and CE + mixup + ELR,
the fairness rows of a recipe that uses early-learning regularisation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.cifar_n.methods.base import (
    Context,
    EpochLog,
    Method,
    check_gce,
    mixed_batch_loss,
    per_sample_ce,
)
from robustweights._data import eval_mode
from robustweights._validation import check_positive_int
from robustweights.recipe import PredictionAverage, elr_penalty, mixup

__all__ = ["CE", "CEELR", "CEMixup", "CEMixupELR"]


class CE(Method):
    """Standard training on everything labelled: the pool's noisy labels and the clean subset.

    Its best epoch (early stopping against the test set, the cheap honest baseline) and its last
    epoch are both reported; the gap between them is the cost of memorising the noise. With
    ``mixup`` = :math:`\\alpha > 0` every batch is mixed (Zhang et al., ICLR 2018) and trained
    with cross-entropy against the mixed one-hot targets. With ``elr`` = :math:`\\lambda > 0`
    the loss adds early-learning regularisation (``robustweights.recipe.elr``, momentum
    ``elr_momentum``, counted from epoch ``elr_start``), its running targets updated from the
    training forward's predictions, or under mixup from a no-grad eval-mode forward of the
    un-mixed batch (as the FBR recipe's eval forward gives them) and mixed with the same draw as
    the labels. With ``gce`` = :math:`\\rho > 0` (mixup only) the mixed batch is trained with
    generalised cross-entropy instead (``methods.base.soft_gce``). With ``trusted_repeat`` = k
    every trusted image is drawn k times per epoch (``Context.union_batches``).
    """

    name = "ce"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"mixup": 0.0, "elr": 0.0, "elr_momentum": 0.7, "elr_start": 0, "gce": 0.0,
                "trusted_repeat": 1}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.x, self.y = ctx.union()
        self.gce = check_gce(self.params)
        self.repeat = check_positive_int(self.params["trusted_repeat"], "trusted_repeat")
        self.elr = (PredictionAverage(ctx.num_classes, momentum=float(self.params["elr_momentum"]))
                    if float(self.params["elr"]) > 0 else None)

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        alpha = float(self.params["mixup"])
        if alpha > 0 or self.elr is not None:
            loss_value = self._regularised_epoch(epoch, alpha)
        else:
            loss_value = self.ce_steps(self.model, self.opt, self.x, self.y,
                                       c.union_batches(c.n_pool, c.n_clean, self.repeat))
        self.sched.step()
        return EpochLog(loss_value, np.ones(c.n_pool))

    def _regularised_epoch(self, epoch: int, alpha: float) -> float:
        """One epoch with mixup (``alpha`` > 0) and/or ELR; returns the mean loss."""
        c, avg, n_cls = self.c, self.elr, self.c.num_classes
        lam = float(self.params["elr"]) if epoch >= int(self.params["elr_start"]) else 0.0
        total, n = 0.0, 0
        for idx in c.union_batches(c.n_pool, c.n_clean, self.repeat):
            x, y = c.train_view(self.x[idx]), self.y[idx]
            if alpha > 0:
                q = F.one_hot(y, n_cls).float()
                if avg is not None:  # the un-mixed batch's prediction, mixed beside the labels
                    with torch.no_grad(), eval_mode(self.model):
                        q = torch.cat([q, avg.update(idx, self.model(x)).to(q.device)], 1)
                x, q, w = mixup(x, q, torch.ones(len(y)), num_classes=q.shape[1], alpha=alpha,
                                generator=c.generator)
                logits = self.model(x)
                loss = mixed_batch_loss(logits, q[:, :n_cls], w.to(x.device), self.gce)
                t = q[:, n_cls:]
            else:  # ELR alone: the training forward's own prediction
                assert avg is not None
                logits = self.model(x)
                loss = per_sample_ce(logits, y).mean()
                t = avg.update(idx, logits.detach())
            if avg is not None:
                loss = loss + lam * elr_penalty(logits, t)
            self.sgd_step(self.opt, loss)
            total, n = total + loss.item() * len(idx), n + len(idx)
        return total / max(n, 1)

    def eval_model(self) -> nn.Module:
        return self.model


class CEMixup(CE):
    """CE with mixup (alpha 1): what mixup alone gives, beside a recipe that uses it."""

    name = "ce_mixup"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**super().defaults(), "mixup": 1.0}


class CEELR(CE):
    """CE with early-learning regularisation (lambda 3, momentum 0.7: the ELR paper's CIFAR-10
    values)."""

    name = "ce_elr"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**super().defaults(), "elr": 3.0}


class CEMixupELR(CE):
    """CE with mixup (alpha 1) and early-learning regularisation (lambda 3, momentum 0.7)."""

    name = "ce_mixup_elr"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {**super().defaults(), "mixup": 1.0, "elr": 3.0}
