"""CE: plain cross-entropy on the noisy pool plus the clean subset (every sample, weight 1), and
CE + mixup, the fairness row of every recipe that uses mixup."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method
from robustweights.recipe import mixup, soft_cross_entropy

__all__ = ["CE", "CEMixup"]


class CE(Method):
    """Standard training on everything labelled: the pool's noisy labels and the clean subset.

    Its best epoch (early stopping against the test set, the cheap honest baseline) and its last
    epoch are both reported; the gap between them is the cost of memorising the noise. With
    ``mixup`` = :math:`\\alpha > 0` every batch is mixed (Zhang et al., ICLR 2018) and trained
    with cross-entropy against the mixed one-hot targets.
    """

    name = "ce"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"mixup": 0.0}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.x, self.y = ctx.union()

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        alpha = float(self.params["mixup"])
        if alpha > 0:
            total, n = 0.0, 0
            for idx in c.batches(len(self.y)):
                y = self.y[idx]
                x, q, w = mixup(c.train_view(self.x[idx]), y, torch.ones(len(y)),
                                num_classes=c.num_classes, alpha=alpha, generator=c.generator)
                loss = soft_cross_entropy(self.model(x), q, w.to(x.device))
                self.sgd_step(self.opt, loss)
                total, n = total + loss.item() * len(idx), n + len(idx)
            loss_value = total / max(n, 1)
        else:
            loss_value = self.ce_steps(self.model, self.opt, self.x, self.y,
                                       c.batches(len(self.y)))
        self.sched.step()
        return EpochLog(loss_value, np.ones(c.n_pool))

    def eval_model(self) -> nn.Module:
        return self.model


class CEMixup(CE):
    """CE with mixup (alpha 1): what mixup alone gives, beside a recipe that uses it."""

    name = "ce_mixup"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {"mixup": 1.0}
