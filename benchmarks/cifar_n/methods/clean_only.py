"""Clean-only: the trusted clean subset alone, the floor every method should beat."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method

__all__ = ["CleanOnly"]


class CleanOnly(Method):
    """Cross-entropy on the clean subset only; the pool is ignored (every pool weight is 0).

    An "epoch" runs as many SGD steps as a CE epoch over pool + clean would (cycling through
    reshuffled passes of the small clean subset), so the learning-rate schedule and step budget
    match the other methods instead of giving the floor a handful of steps.
    """

    name = "clean_only"
    selects = False

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)

    def epoch_batches(self) -> list[torch.Tensor]:
        """Index batches into the clean subset for one epoch (the rule under test)."""
        c = self.c
        steps = c.steps_per_epoch(c.n_pool + c.n_clean)
        out: list[torch.Tensor] = []
        while len(out) < steps:
            out.extend(c.batches(c.n_clean))
        return out[:steps]

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        loss = self.ce_steps(self.model, self.opt, c.clean_x, c.clean_y, self.epoch_batches())
        self.sched.step()
        return EpochLog(loss, np.zeros(c.n_pool))

    def eval_model(self) -> nn.Module:
        return self.model
