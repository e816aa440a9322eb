"""MW-Net (Shu et al., "Meta-Weight-Net: Learning an Explicit Mapping For Sample Weighting",
NeurIPS 2019).

A small MLP ``V`` maps a sample's loss to its weight. Each step (official ``MW-Net.py``):

1. virtual step: :math:`\\hat\\theta = \\theta - \\text{lr}\\,\\nabla_\\theta \\frac1B\\sum_i
   V(\\ell_i)\\,\\ell_i(\\theta)` (plain SGD at the classifier's current learning rate, graph kept);
2. meta step: update ``V`` by Adam on the clean mini-batch loss :math:`L_{clean}(\\hat\\theta)`;
3. actual step: :math:`\\theta \\leftarrow` SGD on :math:`\\frac1B\\sum_i V(\\ell_i)\\,\\ell_i`
   with the updated ``V`` (weights not normalised, as in the official code).

Published defaults: ``V`` = Linear(1, 100)-ReLU-Linear(100, 1)-Sigmoid, Adam lr 1e-3, weight
decay 1e-4; the meta batch as large as the training batch. The virtual step uses
``torch.func.functional_call`` on cloned buffers, so BatchNorm statistics move once per step as
in ordinary training, and the actual step reuses the virtual step's forward pass (same
parameters, same inputs: the same logits) instead of running it twice.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmarks.cifar_n.methods.base import Context, EpochLog, Method, per_sample_ce

__all__ = ["MWNet", "VNet", "mwnet_step"]


class VNet(nn.Module):
    """The weighting network: loss (B, 1) -> weight in (0, 1), (B, 1)."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return self.net(loss)


def mwnet_step(model: nn.Module, vnet: nn.Module, opt_model: torch.optim.Optimizer,
               opt_vnet: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               clean_x: torch.Tensor, clean_y: torch.Tensor, lr: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MW-Net step (virtual step, meta update of ``vnet``, actual update of ``model``).

    Returns:
        ``(weights, losses, meta_loss)``: the weights used in the actual step (B,), the per-sample
        losses (B,) and the clean loss after the virtual step, all detached.
    """
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    logits = model(x)  # the real forward: BatchNorm statistics update once, as in plain training
    losses = per_sample_ce(logits, y)
    v = vnet(losses.detach().unsqueeze(1)).squeeze(1)
    virtual = (v * losses).mean()
    grads = torch.autograd.grad(virtual, list(params.values()), create_graph=True)
    fast = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    meta_loss = F.cross_entropy(functional_call(model, (fast, buffers), (clean_x,)), clean_y)
    vgrads = torch.autograd.grad(meta_loss, list(vnet.parameters()), retain_graph=True)
    opt_vnet.zero_grad(set_to_none=True)
    for p, g in zip(vnet.parameters(), vgrads, strict=True):
        p.grad = g
    opt_vnet.step()
    with torch.no_grad():
        w = vnet(losses.detach().unsqueeze(1)).squeeze(1)
    loss = (w * losses).mean()
    opt_model.zero_grad(set_to_none=True)
    loss.backward()
    opt_model.step()
    return w.detach(), losses.detach(), meta_loss.detach()


class MWNet(Method):
    """MW-Net on the noisy pool, the clean subset serving as the meta set."""

    name = "mwnet"
    selects = False  # weights are sigmoid outputs, never exactly 0: reported as weighted precision

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"hidden": 100, "meta_lr": 1e-3, "meta_weight_decay": 1e-4,
                "clean_batch_size": None}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self.model = ctx.new_model()
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.vnet = VNet(int(self.params["hidden"])).to(ctx.device)
        self.opt_v = torch.optim.Adam(self.vnet.parameters(), lr=float(self.params["meta_lr"]),
                                      weight_decay=float(self.params["meta_weight_decay"]))

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.model.train()
        weights = np.full(c.n_pool, np.nan)
        total, n = 0.0, 0
        lr = float(self.opt.param_groups[0]["lr"])
        for idx in c.batches(c.n_pool):
            cidx = c.clean_batch(self.params["clean_batch_size"])
            w, losses, _ = mwnet_step(self.model, self.vnet, self.opt, self.opt_v,
                                      c.train_view(c.pool_x[idx]), c.pool_y[idx],
                                      c.train_view(c.clean_x[cidx]), c.clean_y[cidx], lr)
            total, n = total + float(losses.mean()) * len(idx), n + len(idx)
            weights[idx.cpu().numpy()] = w.cpu().numpy()
        self.sched.step()
        return EpochLog(total / n, weights)

    def eval_model(self) -> nn.Module:
        return self.model
