r"""The recipe's filter-health signal: held-out trusted samples judged as the pool was.

:meth:`SurrogateRecipe.end_epoch <robustweights.SurrogateRecipe.end_epoch>` scores
``health_data`` with the epoch's prototypes and the network as it is now (eval mode) and feeds
the counts to the recipe's :class:`~robustweights.phases.FilterHealth`. A held-out sample
counts as kept when its direction passes the epoch's rule: :math:`d > t_y` (:math:`\alpha = 0`)
for calibrated thresholds, :math:`d > 0` for the authors' threshold rule, and at least the
epoch's pool quantile at the dropped fraction for the rate rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from robustweights._data import eval_mode
from robustweights.selection import drop_rate_at

if TYPE_CHECKING:
    from robustweights.recipe.surrogate import SurrogateRecipe

__all__ = ["heldout_kept", "score_heldout"]


@torch.no_grad()
def score_heldout(recipe: SurrogateRecipe) -> None:
    """Add every batch of ``recipe.health_data`` to ``recipe.health``: which samples the
    filter would keep (None in the warm-up or without prototypes) and which ones the network
    predicts correctly. Nothing without ``health_data``."""
    if recipe.health_data is None:
        return
    with eval_mode(recipe.model):
        for x, y in recipe._iterate(recipe.health_data, shuffle=False, chunk=512):
            logits = recipe.model(x)
            kept = None
            if not recipe.in_warmup and not recipe.reweighter.clean.empty:
                kept = heldout_kept(recipe, recipe._capture.features, y)
            recipe.health.update_heldout(kept=kept, correct=logits.argmax(1) == y)
    recipe._used = recipe._capture.count  # not a pool batch's features


def heldout_kept(recipe: SurrogateRecipe, feats: torch.Tensor, labels: torch.Tensor
                 ) -> torch.Tensor:
    """Whether the recipe's rule this epoch keeps each held-out sample (bool, B)."""
    cfg = recipe.config
    if cfg.thresholds == "calibrated":
        d = recipe.directions(labels=labels, features=feats, alpha=0.0).float()
        return d > cast(torch.Tensor, recipe._thresholds).to(d)[labels.to(d.device)]
    d = recipe.directions(labels=labels, features=feats).float()
    if cfg.drop_rate is None:
        return d > 0
    cutoff = recipe.health.score_quantile(  # judged as the epoch's pool was
        drop_rate_at(recipe.epoch, cfg.drop_rate, cfg.drop_ramp_epochs))
    return d >= (0.0 if cutoff is None else cutoff.to(d.device))
