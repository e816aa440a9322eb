"""Meta-reweighting (L2RW): weights from the train-clean gradient inner product.

Ren, Zeng, Yang, Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018.
One virtual SGD step :math:`\\theta'(\\epsilon) = \\theta - \\text{lr}\\,\\nabla_\\theta
\\sum_i \\epsilon_i \\ell_i(\\theta)` followed by the clean loss gives

.. math::
    u_i = -\\frac{\\partial L_{clean}(\\theta'(\\epsilon))}{\\partial \\epsilon_i}
          \\Big|_{\\epsilon=0}
        = \\text{lr}\\,\\langle \\nabla_\\theta \\ell_i(\\theta), \\nabla_\\theta L_{clean}(\\theta)
          \\rangle,
    \\qquad w_i = \\frac{\\max(u_i, 0)}{\\sum_j \\max(u_j, 0)}.

Two exact ways to get :math:`u` without the virtual step and its second-order graph:

* :class:`MetaReweighter` (:func:`l2rw_last_layer_scores`): the closed form for a linear softmax
  head, from logits and penultimate features (no model access);
* :class:`~robustweights.ModelMetaReweighter` (:mod:`robustweights.model_meta`): the whole
  network, one clean backward plus one forward-mode JVP.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustweights._numerics import max_abs, pow2_scale, saturate
from robustweights.base import Reweighter
from robustweights.clean_stats import CleanStatistics
from robustweights.model_meta import (  # noqa: F401  (re-exported: their old home)
    LossFn,
    ModelMetaReweighter,
    _DeprecatedModelMetaReweighter,
    l2rw_model_scores,
    l2rw_model_scores_and_losses,
    preserved_state,
)
from robustweights.normalization import Normalization, check_normalization, normalize_scores
from robustweights.surrogate import compute_dtype
from robustweights.validation import check_positive_float

__all__ = [
    "MetaReweighter",
    "l2rw_clean_sums",
    "l2rw_last_layer_scores",
    "l2rw_scaled_last_layer_scores",
    "softmax_residuals",
]


def softmax_residuals(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy gradient w.r.t. the logits, :math:`r_i = \mathrm{softmax}(z_i) -
    e_{y_i}` (N, C), in the compute dtype (float32 for half inputs)."""
    r = torch.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    return r - F.one_hot(labels, logits.shape[1]).to(r.dtype)


def l2rw_clean_sums(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    r"""Additive clean statistics of the last-layer form: :math:`\sum_j s_j g_j^\top` (C, D),
    :math:`\sum_j s_j` (C,) and the count :math:`M`, with :math:`s_j` the clean residuals.

    Kept in float64 (sums of float32 features near their largest value overflow float32); the
    product is formed in the compute dtype on exactly rescaled features, then scaled back."""
    s = softmax_residuals(logits, labels)
    scale = pow2_scale(max_abs(features), s.dtype)
    resid_feat = (s.T @ (features.to(s.dtype) / scale.to(s.dtype))).to(torch.float64) * scale
    return {"resid_feat_sum": resid_feat, "resid_sum": s.sum(0).to(torch.float64),
            "count": torch.tensor(float(s.shape[0]), dtype=torch.float64, device=s.device)}


def l2rw_scaled_last_layer_scores(logits: torch.Tensor, features: torch.Tensor,
                                  labels: torch.Tensor, resid_feat_sum: torch.Tensor,
                                  resid_sum: torch.Tensor, count: torch.Tensor, *,
                                  bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The scores of :func:`l2rw_last_layer_scores` without ``lr``, as ``(u / c, c)``: float64
    scores divided by a positive power of two :math:`c`, and :math:`c`.

    :math:`u_i = r_i^\top A h_i + r_i^\top a`; with :math:`s_A` a power of two of the size of
    :math:`(A, a)` and :math:`s_h` of :math:`h`, both terms are formed in the compute dtype on
    :math:`A/s_A`, :math:`a/s_A`, :math:`h/s_h` (entries of order 1: no overflow or underflow
    for features from 1e-30 to 1e30 in float32) and combined in float64 as
    :math:`u/s_A = s_h\,r^\top (A/s_A)(h/s_h) + r^\top (a/s_A)`. Normalised weights are
    invariant to the positive factor :math:`c = s_A`.
    """
    r = softmax_residuals(logits, labels)
    dt = r.dtype
    count = count.to(torch.float64).clamp_min(1)  # an empty clean set: zero scores, not NaN
    A = resid_feat_sum.to(torch.float64) / count
    a = resid_sum.to(torch.float64) / count
    s_a = pow2_scale(torch.maximum(max_abs(A), max_abs(a) if bias else max_abs(A)), dt)
    s_h = pow2_scale(max_abs(features), dt)
    h = features.to(dt) / s_h.to(dt)
    u = ((r @ (A / s_a).to(dt)) * h).sum(1).to(torch.float64) * s_h
    if bias:
        u = u + (r @ (a / s_a).to(dt)).to(torch.float64)
    return u, s_a


def l2rw_last_layer_scores(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                           resid_feat_sum: torch.Tensor, resid_sum: torch.Tensor,
                           count: torch.Tensor, *, lr: float = 1.0, bias: bool = True
                           ) -> torch.Tensor:
    r"""Exact L2RW scores for a linear head :math:`z = W h + b` under softmax cross-entropy.

    With :math:`\nabla_W \ell_i = r_i h_i^\top`, :math:`\nabla_b \ell_i = r_i`,
    :math:`A = \frac1M\sum_j s_j g_j^\top` and :math:`a = \frac1M\sum_j s_j`:

    .. math::
        u_i = \text{lr}\,\big(r_i^\top A h_i + r_i^\top a\big)

    (the :math:`a` term only when ``bias``). Cost :math:`O(BCD)`. Computed scale-safely by
    :func:`l2rw_scaled_last_layer_scores`; scores beyond the compute dtype's range saturate.

    Args:
        logits, features, labels: the training batch, (B, C), (B, D), (B,).
        resid_feat_sum, resid_sum, count: clean statistics from :func:`l2rw_clean_sums`.

    Returns:
        (B,) scores :math:`u` in the compute dtype (float32 for half inputs).
    """
    u, c = l2rw_scaled_last_layer_scores(logits, features, labels, resid_feat_sum, resid_sum,
                                         count, bias=bias)
    return saturate((u * c) * lr, compute_dtype(logits.dtype))


class MetaReweighter(Reweighter):
    r"""Meta-reweighting (L2RW), exact, without the virtual step.

    Last-layer form (no model access; the form the paper's analysis uses): ``weights(logits=...,
    features=..., labels=..., clean_logits=..., clean_features=..., clean_labels=...)`` computes

    .. math::
        u_i = \text{lr}\,(r_i^\top A h_i + r_i^\top a), \qquad
        w_i = \max(u_i,0) / \textstyle\sum_j \max(u_j,0)

    (see :func:`l2rw_last_layer_scores`), computed scale-safely. For the whole network use
    :class:`~robustweights.ModelMetaReweighter`.

    Args:
        num_classes: number of classes :math:`C`.
        normalization: ``"sum"`` (L2RW: weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean-one scaling, keeps the scale of an unweighted mean loss) or
            ``"none"`` (:math:`\max(u_i, 0)`).
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        bias: whether the head has a bias (adds the :math:`r_i^\top a` term).
        validate, sync, batch_scope, process_group: see
            :class:`~robustweights.base.Reweighter`. Under ``torch.distributed`` the clean
            statistics (residual-feature sums, residual sums and count) are summed over ranks
            (``sync``); the ``"sum"``/``"mean"`` denominators :math:`\sum_j \max(u_j, 0)` and
            :math:`B` are taken over every rank's batch with ``batch_scope="global"``, or per rank
            with ``"local"``.

    Attributes:
        last_scores: the raw scores :math:`u` (B,) of the last call, e.g. for a phase monitor.

    Example:
        >>> import numpy as np
        >>> rw = MetaReweighter(num_classes=2, bias=False)
        >>> h = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> z = np.array([[0.0, 0.0], [0.0, 0.0]])            # an untrained head
        >>> w = rw.weights(logits=z, features=h, labels=np.array([0, 0]), clean_logits=z[:1],
        ...                clean_features=h[:1], clean_labels=np.array([0]))
        >>> w.round(3)                       # the sample like the clean one gets all the weight
        array([1., 0.])
    """

    requires = ("logits", "features", "labels")

    def __init__(self, num_classes: int, *, normalization: Normalization = "sum",
                 lr: float = 1.0, bias: bool = True, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        super().__init__(num_classes, validate=validate, sync=sync, batch_scope=batch_scope,
                         process_group=process_group)
        self.normalization = check_normalization(normalization)
        self.lr = check_positive_float(lr, "lr")
        self.bias = bool(bias)
        self.last_scores: torch.Tensor | None = None

    # ------------------------------------------------------------ last-layer closed form
    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return l2rw_clean_sums(inputs["logits"], inputs["features"], inputs["labels"])

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        dim = stats["resid_feat_sum"].shape[1]
        if batch["features"].shape[1] != dim:
            raise ValueError(f"Expected `features` to have the clean set's dimension D = {dim}, "
                             f"but got {batch['features'].shape[1]}")
        u, c = l2rw_scaled_last_layer_scores(
            batch["logits"], batch["features"], batch["labels"], stats["resid_feat_sum"],
            stats["resid_sum"], stats["count"], bias=self.bias)
        self.last_scores = saturate((u * c) * self.lr, compute_dtype(batch["logits"].dtype))
        if self.normalization == "none":
            return (u * c * self.lr).clamp_min(0)  # float64; saturated on the way out
        return self._normalize(u)  # invariant to the positive factor c * lr

    def _normalize(self, u: torch.Tensor) -> torch.Tensor:
        return normalize_scores(u, self.normalization, global_batch=self._global_batch(),
                                process_group=self.process_group)

    # ------------------------------------------------------------ repr
    def _repr_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "normalization": self.normalization,
                "lr": self.lr, "bias": self.bias}

    # ------------------------------------------------------------ deprecated
    @classmethod
    def from_model(cls, model: nn.Module, loss_fn: LossFn, *, num_classes: int | None = None,
                   **kwargs: Any) -> ModelMetaReweighter:
        """Deprecated: use :class:`~robustweights.ModelMetaReweighter` ``(model, loss_fn,
        ...)``. Returns one (which also answers the old ``weights_from_model``,
        ``set_clean_inputs`` and ``update_clean_inputs``, with a ``DeprecationWarning``)."""
        warnings.warn("`MetaReweighter.from_model(model, loss_fn, ...)` is deprecated: use "
                      "`ModelMetaReweighter(model, loss_fn, ...)`", DeprecationWarning,
                      stacklevel=2)
        del num_classes  # was ignored by the full-network form
        return _DeprecatedModelMetaReweighter(model, loss_fn, **kwargs)
