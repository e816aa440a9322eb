"""FBR: feature-based reweighting (Zhang, Holtz, Mishne, Cloninger, arXiv 2510.12209) through
``robustweights.SurrogateReweighter``, with the reference training recipe of ``method.md``:

1. warm-up: ``warmup`` epochs on the noisy pool with every weight ``w_init`` (0.5);
2. then every epoch: ``clean_passes`` passes of plain CE over the clean subset; the clean
   subset's penultimate features recomputed in eval mode on un-augmented images and cached with
   ``set_clean``; one pass over the noisy pool in which every batch's weights are recomputed
   from its own features (captured by ``FeatureCapture`` during the training forward pass) and
   the loss is the batch mean of :math:`w_i\\,\\mathrm{CE}(z_i, y_i)`;
3. ``alpha`` = 1/(C-1) before ``alpha_switch``, then 0 (``robustweights.alpha_schedule``).

Reference values (CIFAR, ResNet-34, 150 epochs): warm-up 20, 30 clean passes per epoch,
alpha switch at epoch 40, "recompute" mode, hard threshold at ``w_init`` (``threshold=None``;
``threshold=0`` keeps the soft weights ``clip(w0 + eta d, 0, w_max)``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from benchmarks.methods.base import Context, EpochLog, Method, per_sample_ce
from benchmarks.models import head
from robustweights import FeatureCapture, SurrogateReweighter, alpha_schedule, weighted_mean

__all__ = ["FBR"]


class FBR(Method):
    """FBR on the noisy pool with clean-subset passes (see the module docstring)."""

    name = "fbr"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {"warmup": 20, "clean_passes": 30, "alpha_switch": 40, "w_init": 0.5,
                "mode": "recompute", "ratio": None, "threshold": None}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        p = self.params
        self.model = ctx.new_model()
        self.cap = FeatureCapture(head(self.model))
        self.opt = ctx.new_optimizer(self.model)
        self.sched = ctx.new_scheduler(self.opt)
        self.rw = SurrogateReweighter(
            ctx.num_classes, alpha=alpha_schedule(ctx.num_classes, int(p["alpha_switch"])),
            w_init=float(p["w_init"]), mode=p["mode"], ratio=p["ratio"],
            threshold=p["threshold"])

    def clean_passes(self) -> float:
        """Plain CE passes over the clean subset; returns the mean loss."""
        c = self.c
        passes = (idx for _ in range(int(self.params["clean_passes"]))
                  for idx in c.batches(c.n_clean))
        return self.ce_steps(self.model, self.opt, c.clean_x, c.clean_y, passes)

    def refresh_clean(self) -> None:
        """Clean features in eval mode, cached as the reweighter's clean statistics."""
        c = self.c
        _, feats = c.predict(self.model, c.clean_x, self.cap)
        self.rw.set_clean(features=feats, labels=c.clean_y)

    def train_epoch(self, epoch: int) -> EpochLog:
        c = self.c
        self.rw.set_epoch(epoch)
        warm = epoch < int(self.params["warmup"])
        self.model.train()
        clean_loss = float("nan")
        if not warm:
            clean_loss = self.clean_passes()
            self.refresh_clean()
        weights = np.full(c.n_pool, np.nan)
        total, n = 0.0, 0
        couplings: list[float] = []
        for idx in c.batches(c.n_pool):
            y = c.pool_y[idx]
            losses = per_sample_ce(self.model(c.train_view(c.pool_x[idx])), y)
            if warm:
                w = torch.full_like(losses, float(self.params["w_init"]))
            else:
                w = self.rw.weights(features=self.cap.features, labels=y,
                                    sample_ids=idx if self.params["mode"] == "incremental"
                                    else None)
                if self.rw.last_directions is not None:
                    # mean |d_i|: the coupling magnitude the phase rule watches
                    couplings.append(float(self.rw.last_directions.abs().mean()))
            self.sgd_step(self.opt, weighted_mean(losses, w))
            total, n = total + float(losses.detach().mean()) * len(idx), n + len(idx)
            weights[idx.cpu().numpy()] = w.detach().cpu().numpy()
        self.sched.step()
        return EpochLog(total / n, weights,
                        {"alpha": self.rw.current_alpha(), "clean_pass_loss": clean_loss,
                         "warmup": float(warm),
                         "coupling": float(np.mean(couplings)) if couplings else float("nan")})

    def eval_model(self) -> nn.Module:
        return self.model
