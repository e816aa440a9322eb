r"""The weights of one pool batch, as :meth:`SurrogateRecipe.weights
<robustweights.SurrogateRecipe.weights>` computes them: its inputs checked, its features (the
training forward's, or an eval-mode forward's), FBR's weights from the reweighter, then the
options of the recipe's :class:`~robustweights.RecipeConfig` in order: the rule (calibrated
thresholds or the rate rule, :mod:`~robustweights.recipe.options`), smoothing per sample id and
the floor ``dropped_weight``. Each call also feeds the pool's counts of the filter's health.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from robustweights._batch import check_finite
from robustweights._data import check_batch_logits, check_class_labels, eval_mode
from robustweights._validation import check_sample_ids
from robustweights.recipe.options import (
    calibrated_rule_weights,
    rate_rule_weights,
    smoothed_weights,
)
from robustweights.selection import drop_rate_at

if TYPE_CHECKING:
    from robustweights.recipe.surrogate import SurrogateRecipe

__all__ = ["check_trusted", "filter_weights", "pool_weights", "training_features"]


def pool_weights(recipe: SurrogateRecipe, *, labels: torch.Tensor | None,
                 inputs: torch.Tensor | None, sample_ids: torch.Tensor | None,
                 features: torch.Tensor | None, logits: torch.Tensor | None,
                 trusted: torch.Tensor | None = None) -> torch.Tensor:
    """The body of :meth:`SurrogateRecipe.weights` (its docstring says what each input is)."""
    labels = check_class_labels(labels, recipe.num_classes)
    n = labels.shape[0]
    if sample_ids is not None:
        sample_ids = check_sample_ids(sample_ids, n)
    if trusted is not None:
        trusted = check_trusted(trusted, n)
    if inputs is not None and (not isinstance(inputs, torch.Tensor) or
                               inputs.ndim == 0 or inputs.shape[0] != n):
        raise ValueError(f"Expected `inputs` to be a tensor of {n} samples, but got "
                         f"{getattr(inputs, 'shape', type(inputs).__name__)}")
    if logits is not None:
        check_batch_logits(logits, n, recipe.num_classes)
    recipe._eval_logits = None
    if recipe.config.eval_features:
        if inputs is None:
            raise ValueError("Expected `inputs` to be given with `eval_features=True`, but "
                             "got None")
    else:  # read before anything else runs a forward
        feats = training_features(recipe, features, n)
    recipe._batch = None
    w_max = recipe.reweighter.w_max
    if recipe.in_warmup:  # every weight the warm-up's: no prototypes needed
        if not recipe.config.eval_features and recipe.reweighter.validate:
            check_finite(feats, "features")  # checked as after the warm-up
        floating = inputs is not None and inputs.is_floating_point()
        fill = recipe.config.warmup_weight
        w = torch.full((n,), recipe.reweighter.w_init if fill is None else float(fill),
                       device=labels.device,
                       dtype=inputs.dtype if floating else None)  # type: ignore[union-attr]
        if trusted is not None:
            w[trusted.to(w.device)] = w_max
        recipe.last_fbr_weights = recipe.last_weights = w
        recipe._used = recipe._capture.count
        if logits is not None:
            agree = logits.detach().argmax(1) == labels.to(logits.device)
            recipe.health.update_pool(agree=_rows(agree, trusted))
        return w
    if recipe._stale:
        raise ValueError("Expected this epoch's prototypes before `weights()`: iterate "
                         "`clean_batches()` to its end (it refreshes them) or call "
                         "`refresh_prototypes()`")
    if recipe.config.eval_features:
        with torch.no_grad(), eval_mode(recipe.model):
            recipe._eval_logits = recipe.model(inputs).detach()
            feats = recipe._capture.features
    labels = labels.to(feats.device)
    recipe._used = recipe._capture.count  # these features are now used
    if trusted is None:
        w = filter_weights(recipe, feats, labels, sample_ids)
    else:  # only the pool rows are scored; the trusted rows are kept at w_max
        w = _trusted_rows_kept(recipe, feats, labels, sample_ids, trusted.to(feats.device))
    recipe._batch = (feats, labels)  # only once its weights exist, for targets()
    source = recipe._eval_logits if recipe._eval_logits is not None else logits
    pool_scored = trusted is None or not bool(trusted.all())
    recipe.health.update_pool(
        kept=_rows(cast(torch.Tensor, recipe.last_fbr_weights) > 0, trusted),
        agree=None if source is None else _rows(source.detach().argmax(1)
                                                == labels.to(source.device), trusted),
        scores=recipe.reweighter.last_scores if pool_scored else None)
    return w


def check_trusted(trusted: object, n: int) -> torch.Tensor:
    """``trusted``: a bool tensor of shape (n,); a named error otherwise."""
    if not isinstance(trusted, torch.Tensor):
        raise TypeError(f"Expected `trusted` to be a bool torch.Tensor, but got "
                        f"{type(trusted).__name__}")
    if trusted.dtype != torch.bool:
        raise TypeError(f"Expected `trusted` to be a bool tensor, but got dtype {trusted.dtype}")
    if trusted.shape != (n,):
        raise ValueError(f"Expected `trusted` to have shape ({n},), but got "
                         f"{tuple(trusted.shape)}")
    return trusted


def _rows(x: torch.Tensor, trusted: torch.Tensor | None) -> torch.Tensor:
    """The pool rows of a per-sample tensor (all of them without trusted rows)."""
    return x if trusted is None else x[~trusted.to(x.device)]


def _trusted_rows_kept(recipe: SurrogateRecipe, feats: torch.Tensor, labels: torch.Tensor,
                       sample_ids: torch.Tensor | None, trusted: torch.Tensor) -> torch.Tensor:
    """:func:`filter_weights` of the pool rows; the trusted rows at :math:`w_{\\max}` in the
    weights and in ``recipe.last_fbr_weights`` (kept, so never relabelled)."""
    pool = ~trusted
    w_max = recipe.reweighter.w_max
    w = torch.full((labels.shape[0],), w_max, device=feats.device, dtype=feats.dtype)
    fbr = w.clone()
    if bool(pool.any()):
        ids = None if sample_ids is None else sample_ids[pool.to(sample_ids.device)]
        w_pool = filter_weights(recipe, feats[pool], labels[pool], ids)
        w, fbr = w.to(w_pool.dtype), fbr.to(w_pool.dtype)
        w[pool] = w_pool
        fbr[pool] = cast(torch.Tensor, recipe.last_fbr_weights)
    recipe.last_fbr_weights, recipe.last_weights = fbr, w
    return w


def training_features(recipe: SurrogateRecipe, features: torch.Tensor | None, n: int
                      ) -> torch.Tensor:
    """The training forward's features of a batch of ``n``: ``features`` if given, else what
    the hook on ``head`` recorded at a forward no call has used yet."""
    if features is not None and not isinstance(features, torch.Tensor):
        raise TypeError(f"Expected `features` to be a torch.Tensor, but got "
                        f"{type(features).__name__}")
    captured = recipe._capture.features if recipe._capture.count else None
    feats = captured if features is None else features.detach()
    used = features is None and recipe._capture.count == recipe._used
    if used or feats is None or feats.ndim != 2 or feats.shape[0] != n:
        got = ("features already used" if used else
               tuple(feats.shape) if feats is not None else "no forward")
        raise ValueError(f"Expected the training forward's features of this batch "
                         f"({n} rows), but got {got}: run the forward before "
                         "`weights()` or pass `features=`")
    return feats


def filter_weights(recipe: SurrogateRecipe, feats: torch.Tensor, labels: torch.Tensor,
                   sample_ids: torch.Tensor | None) -> torch.Tensor:
    """The weights of a batch from its features, after the warm-up: FBR's, the rule, smoothing
    and the floor; sets ``recipe.last_fbr_weights`` (before smoothing and the floor) and
    ``recipe.last_weights``."""
    cfg = recipe.config
    if cfg.smoothing and sample_ids is None:
        raise ValueError("Expected `sample_ids` to be given when `smoothing` > 0, but got "
                         "None")
    rw = recipe.reweighter
    ids = sample_ids if rw.mode == "incremental" else None
    w = rw.weights(features=feats, labels=labels, sample_ids=ids)
    if cfg.thresholds == "calibrated":  # d > t_y with alpha = 0
        rw.last_scores, w_cal = calibrated_rule_weights(
            rw.directions(features=feats, labels=labels, alpha=0.0), labels,
            cast(torch.Tensor, recipe._thresholds), rw.clean["class_counts"].to(labels.device)
            > 0, w_max=rw.w_max, missing_class_weight=rw.missing_class_weight)
        w = w_cal.to(w.dtype)
    elif cfg.drop_rate is not None:
        w = rate_rule_weights(
            cast(torch.Tensor, rw.last_scores), labels,  # set by every weights() call
            rw.clean["class_counts"].to(labels.device) > 0,
            rate=drop_rate_at(recipe.epoch, cfg.drop_rate, cfg.drop_ramp_epochs),
            class_balanced=cfg.class_balanced, w_max=rw.w_max,
            missing_class_weight=rw.missing_class_weight).to(w.dtype)
    recipe.last_fbr_weights = w
    if cfg.smoothing:  # the running average per sample id
        ids, m = cast(torch.Tensor, sample_ids).to(w.device), cfg.smoothing
        w = smoothed_weights(recipe._smoothed.gather(ids, like=w), w, m)
        recipe._smoothed.scatter(ids, w)
    if cfg.dropped_weight:
        w = w.clamp_min(cfg.dropped_weight)
    recipe.last_weights = w
    return w
