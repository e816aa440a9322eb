"""CE: plain cross-entropy on the noisy pool plus the clean subset (every sample, weight 1)."""

from __future__ import annotations

import numpy as np
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method

__all__ = ["CE"]


class CE(Method):
    """Standard training on everything labelled: the pool's noisy labels and the clean subset.

    Its best epoch (early stopping against the test set, the cheap honest baseline) and its last
    epoch are both reported; the gap between them is the cost of memorising the noise.
    """

    name = "ce"

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.x, self.y = ctx.union()

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        loss = self.ce_steps(self.model, self.opt, self.x, self.y, c.batches(len(self.y)))
        self.sched.step()
        return EpochLog(loss, np.ones(c.n_pool))

    def eval_model(self) -> nn.Module:
        return self.model
