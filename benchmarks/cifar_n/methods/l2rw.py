"""L2RW (Ren et al., "Learning to Reweight Examples for Robust Deep Learning", ICML 2018), full
network, through ``robustweights.ModelMetaReweighter``.

Every step: one clean mini-batch, the exact full-network weights

.. math::
    u_i = \\langle \\nabla_\\theta \\ell_i, \\nabla_\\theta L_{clean} \\rangle, \\qquad
    w_i = \\frac{\\max(u_i, 0)}{\\sum_j \\max(u_j, 0)} \\quad (\\text{all } 0 \\text{ if no }
    u_i > 0),

then an SGD step on :math:`\\sum_i w_i \\ell_i`. Published defaults: clean batch as large as the
training batch, weights normalised to sum to one, no warm-up. The library computes ``u`` with
one clean backward and one forward-mode JVP instead of the original's virtual step, which gives
the same weights (the sign and normalisation make the virtual step's learning rate irrelevant).
The step uses the fused path (``ModelMetaReweighter.weights_and_losses``): the JVP forward is
also the training forward, so a step costs one clean backward, one JVP forward and the step's
backward, with no separate plain forward.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method
from robustweights import ModelMetaReweighter

__all__ = ["L2RW", "l2rw_weights_and_losses"]


def l2rw_weights_and_losses(reweighter: ModelMetaReweighter, x: torch.Tensor, y: torch.Tensor,
                            clean_x: torch.Tensor, clean_y: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The L2RW weights (B,) of one training batch against one clean batch, and its per-sample
    losses (B,), with their graph, from the same forward: the training forward of the step."""
    return reweighter.weights_and_losses(inputs=x, labels=y, clean_inputs=clean_x,
                                         clean_labels=clean_y)


class L2RW(Method):
    """L2RW on the noisy pool, the clean subset serving as the meta set."""

    name = "l2rw"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"clean_batch_size": None}  # None: the training batch size

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.rw = ModelMetaReweighter(self.model, nn.CrossEntropyLoss(reduction="none"),
                                      normalization="sum")

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        weights = np.full(c.n_pool, np.nan)
        total, n, zero_batches = 0.0, 0, 0
        couplings: list[float] = []
        for idx in c.batches(c.n_pool):
            x, y = c.train_view(c.pool_x[idx]), c.pool_y[idx]
            cidx = c.clean_batch(self.params["clean_batch_size"])
            w, losses = l2rw_weights_and_losses(self.rw, x, y, c.train_view(c.clean_x[cidx]),
                                                c.clean_y[cidx])
            loss = (w.detach() * losses).sum()
            self.sgd_step(self.opt, loss)
            total, n = total + losses.detach().mean().item() * len(idx), n + len(idx)
            zero_batches += int(bool((w == 0).all()))
            if self.rw.last_scores is not None:
                # mean |u_i|: the coupling magnitude the phase rule watches
                couplings.append(float(self.rw.last_scores.abs().mean()))
            weights[idx.cpu().numpy()] = (w * len(idx)).cpu().numpy()  # mean-one scale
        self.sched.step()
        return EpochLog(total / n, weights, {"all_zero_batches": float(zero_batches),
                                             "coupling": float(np.mean(couplings))})

    def eval_model(self) -> nn.Module:
        return self.model
