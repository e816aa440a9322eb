r"""Last-layer L2RW (meta-reweighting) as stateless functions.

Ren, Zeng, Yang, Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018.
For a linear softmax head :math:`z = W h + b` the L2RW score
:math:`u_i = \text{lr}\,\langle \nabla_\theta \ell_i, \nabla_\theta L_{clean}\rangle` has a
closed form in the logits and penultimate features: with :math:`\nabla_W \ell_i = r_i
h_i^\top`, :math:`\nabla_b \ell_i = r_i`, :math:`A = \frac1M\sum_j s_j g_j^\top` and
:math:`a = \frac1M\sum_j s_j` (:math:`s_j` the clean residuals),

.. math::
    u_i = \text{lr}\,\big(r_i^\top A h_i + r_i^\top a\big)

(the :math:`a` term only with a bias), at cost :math:`O(BCD)`. :func:`meta_weights` is the whole
method on one batch and one clean batch, the public function of this module. The kernels it is
made of (``meta_*``, internal: names and signatures may change) are what
:class:`~robustweights.MetaReweighter` calls, adding only the cached clean statistics and the
distributed reductions. Nothing here communicates across ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from robustweights._batch import prepare_batches
from robustweights._numerics import as_output, compute_dtype, max_abs, pow2_scale
from robustweights._validation import check_positive_float
from robustweights.normalization import Normalization, check_normalization, normalize_weights

__all__ = ["meta_weights"]


def softmax_residuals(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy gradient w.r.t. the logits, :math:`r_i = \mathrm{softmax}(z_i) -
    e_{y_i}` (N, C), in the compute dtype (float32 for half inputs)."""
    r = torch.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    return r - F.one_hot(labels, logits.shape[1]).to(r.dtype)


def meta_clean_sums(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor
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


def meta_scaled_last_layer_scores(logits: torch.Tensor, features: torch.Tensor,
                                  labels: torch.Tensor, resid_feat_sum: torch.Tensor,
                                  resid_sum: torch.Tensor, count: torch.Tensor, *,
                                  bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Exact last-layer L2RW scores without ``lr``, scale-safely, as ``(u / c, c)``: float64
    scores divided by a positive power of two :math:`c`, and :math:`c`.

    :math:`u_i = r_i^\top A h_i + r_i^\top a` (the :math:`a` term only when ``bias``), from
    the clean statistics of :func:`meta_clean_sums`. With :math:`s_A` a power of two of the size
    of :math:`(A, a)` and :math:`s_h` of :math:`h`, both terms are formed in the compute dtype on
    :math:`A/s_A`, :math:`a/s_A`, :math:`h/s_h` (entries of order 1: no overflow or underflow
    for features from 1e-30 to 1e30 in float32) and combined in float64 as
    :math:`u/s_A = s_h\,r^\top (A/s_A)(h/s_h) + r^\top (a/s_A)`. Normalised weights are
    invariant to the positive factor :math:`c = s_A`.
    """
    if features.shape[1] != resid_feat_sum.shape[1]:
        raise ValueError(f"Expected `features` to have the clean set's dimension D = "
                         f"{resid_feat_sum.shape[1]}, but got {features.shape[1]}")
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


def meta_weights_from_scores(scores: torch.Tensor, factor: torch.Tensor | float, *,
                             normalization: Normalization = "sum", lr: float = 1.0,
                             total: torch.Tensor | None = None,
                             count: torch.Tensor | None = None) -> torch.Tensor:
    r"""Weights from scores given as :math:`u / c` (``scores``) and :math:`c` (``factor``).

    ``"sum"`` and ``"mean"`` (:func:`~robustweights.normalization.normalize_weights`) do not
    depend on the positive factor :math:`c\,\text{lr}`, so they normalise ``scores`` in float64
    directly (no overflow); ``"none"`` returns :math:`\max(u, 0)` in float64. ``total`` and
    ``count``: the denominators over a larger batch (e.g. every distributed rank's), in the
    units of ``scores``.
    """
    scores = scores.to(torch.float64)
    if normalization == "none":
        return (scores * factor * lr).clamp_min(0)
    return normalize_weights(scores, normalization, total=total, count=count)


def meta_weights(logits: Any, features: Any, labels: Any, clean_logits: Any,
                 clean_features: Any, clean_labels: Any, *, normalization: Normalization = "sum",
                 lr: float = 1.0, bias: bool = True, validate: bool = True) -> torch.Tensor:
    r"""Last-layer L2RW weights of one training batch against one clean batch, statelessly.

    .. math::
        u_i = \text{lr}\,\big(r_i^\top A h_i + r_i^\top a\big), \qquad
        w_i = \frac{\max(u_i, 0)}{\sum_j \max(u_j, 0)}

    with :math:`r_i = \mathrm{softmax}(z_i) - e_{y_i}`, :math:`A = \frac1M\sum_j s_j g_j^\top`,
    :math:`a = \frac1M\sum_j s_j` over the clean batch (:math:`s_j` its residuals, :math:`g_j`
    its features); all weights 0 when no :math:`u_i > 0`. The functional twin of
    :class:`~robustweights.MetaReweighter`: the same numbers as ``MetaReweighter(C,
    ...).weights(...)`` on one process; no state, no collective.

    Args:
        logits: the training batch's logits, (B, C).
        features: the training batch's penultimate features, (B, D).
        labels: the training batch's labels, (B,).
        clean_logits: the clean batch's logits, (M, C).
        clean_features: the clean batch's features, (M, D).
        clean_labels: the clean batch's labels, (M,).
        normalization: ``"sum"``, ``"mean"`` or ``"none"``, as for
            :class:`~robustweights.MetaReweighter`.
        lr: the virtual step's learning rate (scales ``"none"`` weights only).
        bias: whether the head has a bias (adds the :math:`r_i^\top a` term).
        validate: check the tensors (shapes, finiteness, label range), as torchmetrics'
            ``validate_args``; ``False`` skips these checks (and their host synchronisation) in
            a hot loop whose inputs are known good. Options are always checked.

    Returns:
        (B,) torch tensor of weights, in the features' floating dtype.

    Example:
        >>> import torch
        >>> h, z = torch.eye(2), torch.zeros(2, 2)                # an untrained head
        >>> meta_weights(z, h, torch.tensor([0, 0]), z[:1], h[:1], torch.tensor([0]), bias=False)
        tensor([1., 0.])
    """
    normalization = check_normalization(normalization)
    lr = check_positive_float(lr, "lr")
    batches = prepare_batches(
        {"": {"logits": logits, "features": features, "labels": labels},
         "clean_": {"logits": clean_logits, "features": clean_features, "labels": clean_labels}},
        ("logits", "features", "labels"), num_classes="logits", validate=validate)
    x, xc = batches[""], batches["clean_"]
    sums = meta_clean_sums(xc["logits"], xc["features"], xc["labels"])
    u, c = meta_scaled_last_layer_scores(x["logits"], x["features"], x["labels"],
                                         sums["resid_feat_sum"], sums["resid_sum"],
                                         sums["count"], bias=bias)
    w = meta_weights_from_scores(u, c, normalization=normalization, lr=lr)
    return as_output(w, x["features"])
