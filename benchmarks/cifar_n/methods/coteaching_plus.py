"""Co-teaching+ (Yu et al., "How does Disagreement Help Generalization against Label
Corruption?", ICML 2019).

Co-teaching restricted to the samples the two networks *disagree* on: after ``init_epoch``
epochs of plain Co-teaching, each batch keeps only samples whose predicted classes differ
between the networks, and runs the small-loss cross update on that subset with the same
forget-rate ramp. Published defaults (official code, CIFAR-10): ``init_epoch = 20``,
``T_k = 10``, forget rate = noise rate.

Two deliberate differences from the official code, both stated here: the losses are taken on
the logits (the official code passes softmax outputs to ``cross_entropy``, contradicting the
paper's loss), and a batch without disagreement makes no update (the official code makes a
plain-CE update only while a step counter ``epoch * batch_index`` is below 5000, an artefact of
its iteration counting).
"""

from __future__ import annotations

import torch

from benchmarks.cifar_n.methods.base import per_sample_ce
from benchmarks.cifar_n.methods.coteaching import CoTeaching, coteaching_losses

__all__ = ["CoTeachingPlus", "disagreement"]


def disagreement(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Indices of the samples whose arg-max predictions differ between the two networks."""
    return torch.nonzero(logits1.argmax(1) != logits2.argmax(1)).flatten()


def coteaching_plus_losses(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor,
                           forget: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Co-teaching's cross update on the disagreement subset.

    Returns:
        ``(loss1, loss2, idx_for_1)`` as ``coteaching.coteaching_losses`` does,
        indices into the full batch; zero losses (still differentiable) and no indices when the
        networks agree on every sample.
    """
    dis = disagreement(logits1, logits2)
    if dis.numel() == 0:
        zero = (per_sample_ce(logits1, labels).sum() + per_sample_ce(logits2, labels).sum()) * 0
        return zero, zero.clone(), dis
    loss1, loss2, pick = coteaching_losses(logits1[dis], logits2[dis], labels[dis], forget)
    return loss1, loss2, dis[pick]


class CoTeachingPlus(CoTeaching):
    """Co-teaching+ with its published defaults (see the module docstring)."""

    name = "coteaching_plus"
    selects = True

    @classmethod
    def defaults(cls) -> dict[str, object]:
        return {**CoTeaching.defaults(), "init_epoch": 20}

    def batch_losses(self, epoch: int, logits1: torch.Tensor, logits2: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if epoch < int(self.params["init_epoch"]):
            return coteaching_losses(logits1, logits2, labels, self.rate(epoch))
        return coteaching_plus_losses(logits1, logits2, labels, self.rate(epoch))
