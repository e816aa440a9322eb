r"""FBR (feature-based reweighting, the surrogate of meta-reweighting) as stateless functions.

Zhang, Holtz, Mishne, Cloninger, "Revisiting Meta-Learning with Noisy Labels: Reweighting
Dynamics and Theoretical Guarantees", arXiv 2510.12209 (steps 1-5 of ``docs/method.md``).
:func:`surrogate_weights` is the whole method on one batch and one clean set, the public
function of this module. The kernels it is made of (``surrogate_*``, internal: names and signatures
may change) are what :class:`~robustweights.SurrogateReweighter` calls, adding only the cached
clean statistics, the incremental store and the distributed reductions. Nothing here
communicates across ranks.

All kernels are vectorised torch ops on the inputs' device, with no Python loop over samples or
classes and no host synchronisation; half-precision inputs are accumulated in float32, and
inputs are rescaled by exact powers of two so that no magnitude overflows
(:mod:`robustweights._numerics`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustweights._batch import prepare_batches
from robustweights._numerics import as_output, compute_dtype, max_abs, pow2_scale
from robustweights._validation import (
    check_clean_classes,
    check_fraction,
    check_missing_class,
    check_missing_classes,
    check_nonneg_float,
    check_num_classes,
    check_weight_bounds,
    missing_classes,
)

__all__ = ["surrogate_weights"]


def surrogate_class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int
                   ) -> dict[str, torch.Tensor]:
    """Per-class feature sums (C, D) and counts (C,) of a clean batch: FBR's additive state.

    Kept in float64 whatever the input dtype: sums of float32 features near their largest value
    would overflow float32. The batch is summed in its compute dtype after an exact power-of-two
    rescaling (:func:`~robustweights._numerics.pow2_scale`), then scaled back in float64.
    """
    dt = compute_dtype(features.dtype)
    scale = pow2_scale(max_abs(features), dt)
    sums = torch.zeros(num_classes, features.shape[1], dtype=dt, device=features.device)
    sums.index_add_(0, labels, features.to(dt) / scale.to(dt))
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return {"class_sums": sums.to(torch.float64) * scale, "class_counts": counts}


def surrogate_prototypes(class_sums: torch.Tensor, class_counts: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Balanced centre and centred class prototypes (steps 1-2).

    .. math::
        \bar g_c = \frac{1}{n_c}\sum_{j:\tilde y_j = c} g_j, \qquad
        \mu = \frac{1}{|\mathcal P|}\sum_{c \in \mathcal P} \bar g_c, \qquad
        P_c = \bar g_c - \mu

    over the set :math:`\mathcal P` of classes present in the clean set. Since
    :math:`\langle f - \mu, \frac{1}{n_c}\sum_j (g_j - \mu)\rangle = \langle f-\mu, P_c\rangle`,
    the class similarity needs only the prototypes, not the B x M Gram matrix.

    Returns:
        ``(mu, prototypes, present)`` of shapes (D,), (C, D), (C,); rows of absent classes are 0.
    """
    present = class_counts > 0
    means = class_sums / class_counts.clamp_min(1).unsqueeze(1)  # absent classes: 0 / 1 = 0
    # Sums over all classes rather than boolean indexing: no host sync on a GPU.
    mu = means.sum(0) / present.sum()
    protos = torch.where(present.unsqueeze(1), means - mu, 0.0)
    return mu, protos, present


def surrogate_scaled_similarity(features: torch.Tensor, mu: torch.Tensor, prototypes: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The class similarity divided by :math:`s^2`, and :math:`s`: ``(S / s**2, s)``.

    :math:`s` is a power of two of the size of the largest of :math:`|F|`, :math:`|\mu|`,
    :math:`|P|`, so :math:`(F/s - \mu/s)(P/s)^\top` has entries of order :math:`D` whatever
    the scale of the features (1e-30 or 1e30): no overflow and no underflow in the compute dtype
    (float32 for half inputs), and the same bits as the unscaled :math:`(F - \mu) P^\top`
    where that one does not overflow. FBR's recompute weights are invariant to this scale.
    """
    dt = compute_dtype(features.dtype)
    size = torch.maximum(max_abs(features), torch.maximum(max_abs(mu), max_abs(prototypes)))
    scale = pow2_scale(size, dt)
    centred = features.to(dt) / scale.to(dt) - (mu / scale).to(dt)
    return centred @ (prototypes / scale).to(dt).T, scale


def surrogate_directions(similarity: torch.Tensor, labels: torch.Tensor, present: torch.Tensor,
                   alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Row shift and label-signed modulation (steps 3-4).

    .. math::
        S'_{ic} = S_{ic} - \operatorname{second\,max}_{c' \in \mathcal P} S_{ic'}, \qquad
        d_i = S'_{i y_i} - \alpha \sum_{c \in \mathcal P,\, c \ne y_i} S'_{ic}

    Classes absent from the clean set (:math:`c \notin \mathcal P`) take no part in the max or the
    sum. A sample whose label is absent has no defined direction: its ``d`` is 0 and its entry of
    the returned ``valid`` mask is False. Ties in the top two leave the row with no positive entry.

    Returns:
        ``(d, valid)``, both of shape (B,).
    """
    masked = similarity.masked_fill(~present, float("-inf"))
    second = masked.topk(2, dim=1).values[:, 1:2]
    shifted = torch.where(present, similarity - second, 0.0)  # absent classes contribute 0
    own = shifted.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = shifted.sum(1) - own
    valid = present[labels]
    d = torch.where(valid, own - alpha * others, torch.zeros_like(own))
    return d, valid


def surrogate_scaled_directions(features: torch.Tensor, labels: torch.Tensor, mu: torch.Tensor,
                          prototypes: torch.Tensor, present: torch.Tensor, alpha: float
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Steps 2-4 on a training batch, scale-safely: ``(d / s**2, valid, s)``.

    :func:`surrogate_scaled_similarity` then :func:`surrogate_directions`; the true directions are
    :math:`d = (d/s^2)\,s^2` (the recompute weights do not depend on :math:`s`).
    """
    if features.shape[1] != prototypes.shape[1]:
        raise ValueError(f"Expected `features` to have the clean set's dimension D = "
                         f"{prototypes.shape[1]}, but got {features.shape[1]}")
    sim, scale = surrogate_scaled_similarity(features, mu, prototypes)
    d, valid = surrogate_directions(sim, labels, present, alpha)
    return d, valid, scale


def surrogate_candidate_steps(d: torch.Tensor, valid: torch.Tensor, *, w_init: float = 0.5
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The negative set :math:`N = \{i : d_i < 0\}` (valid directions only) and the step that
    drives each of its samples to 0, :math:`w_0/|d_i|` (:math:`+\infty` outside :math:`N`)."""
    neg = (d < 0) & valid
    # Never divides by zero; w0/tiny may overflow to inf, which surrogate_recompute_weights handles.
    steps = torch.where(neg, w_init / d.abs().clamp_min(torch.finfo(d.dtype).tiny),
                        torch.full_like(d, float("inf")))
    return neg, steps


def surrogate_step(d: torch.Tensor, valid: torch.Tensor, *, w_init: float = 0.5,
             ratio: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The step :math:`\eta` of the recompute mode, and whether any direction is negative.

    With :math:`N = \{i : d_i < 0\}` (samples with a valid direction only),
    :math:`\eta = \max_{i \in N} w_0/|d_i|`, or with ``ratio`` the k-th smallest
    :math:`w_0/|d_i|`, :math:`k = \min(\max(1, \lfloor \text{ratio}\cdot B\rfloor), |N|)`;
    0 when :math:`N` is empty. Over this batch only; :class:`~robustweights.SurrogateReweighter`
    takes it over every distributed rank's batch.

    Returns:
        ``(eta, any_negative)``, 0-d tensors on ``d``'s device.
    """
    neg, steps = surrogate_candidate_steps(d, valid, w_init=w_init)
    n_neg = neg.sum()
    if ratio is None:
        eta = torch.where(neg, steps, torch.zeros_like(steps)).max()
    else:
        k = torch.clamp(torch.tensor(int(ratio * d.shape[0]), device=d.device), min=1)
        k = torch.minimum(k, n_neg.clamp_min(1))
        eta = steps.sort().values[k - 1]
        eta = torch.where(torch.isfinite(eta), eta, torch.zeros_like(eta))
    return eta, n_neg > 0


def surrogate_recompute_weights(d: torch.Tensor, valid: torch.Tensor, *, w_init: float = 0.5,
                          w_max: float = 1.0, threshold: float | None = None,
                          ratio: float | None = None, missing_class_weight: float = 0.0,
                          step: tuple[torch.Tensor, torch.Tensor] | None = None
                          ) -> torch.Tensor:
    r"""Stateless weights of one batch (step 5, "recompute" mode).

    Every sample starts at :math:`w_0`. With :math:`N = \{i : d_i < 0\}` the step is

    .. math::
        \eta = \max_{i \in N} \frac{w_0}{|d_i|}, \qquad
        w_i = \operatorname{clip}(w_0 + \eta d_i, 0, w_{\max}),

    the smallest step that drives every negative-direction sample to 0; then every
    :math:`w_i \le \tau` (threshold, default :math:`w_0`) is set to 0. If :math:`N` is empty all
    weights are :math:`w_{\max}`. With ``ratio`` the step is instead the k-th smallest
    :math:`w_0/|d_i|`, :math:`k = \min(\max(1, \lfloor \text{ratio}\cdot B\rfloor), |N|)`: a
    smaller step, so only the k most negative samples reach 0 *before* the threshold. The
    threshold comes after the step (as in the reference), so with the default
    :math:`\tau = w_0` every sample with :math:`d_i \le 0` still ends at or below :math:`w_0`
    and is dropped: ``ratio`` then leaves the dropped set unchanged and only shrinks the kept
    weights :math:`w_0 + \eta d_i`. It changes which samples are dropped only with a threshold
    below :math:`w_0` (e.g. ``threshold=0``: exactly those that reach 0). Samples whose label
    has no clean sample (``valid`` False) get ``missing_class_weight`` and do not set the step.
    ``step``: ``(eta, any_negative)`` from :func:`surrogate_step` (e.g. over every distributed
    rank's batch); computed from this batch when omitted.
    """
    tau = w_init if threshold is None else threshold
    if step is None:
        step = surrogate_step(d, valid, w_init=w_init, ratio=ratio)
    eta, any_negative = step
    # eta may be inf (a tiny negative direction); a zero direction then stays at w_init, not NaN.
    w = (w_init + torch.where(d == 0, 0.0, eta * d)).clamp(0, w_max)
    w = torch.where(w <= tau, torch.zeros_like(w), w)
    w = torch.where(any_negative, w, torch.full_like(w, w_max))
    return torch.where(valid, w, torch.full_like(w, missing_class_weight))


def surrogate_incremental_weights(previous: torch.Tensor, d: torch.Tensor, valid: torch.Tensor, *,
                            eta: float = 0.01, w_init: float = 0.5, w_max: float = 1.0,
                            threshold: float | None = None, missing_class_weight: float = 0.0,
                            scale: torch.Tensor | float = 1.0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the "incremental" mode: :math:`w \leftarrow \operatorname{clip}(w + \eta d,
    0, w_{\max})`, then the threshold of the recompute mode on the returned weights.

    The fixed step makes this mode scale-dependent: ``d`` may be given divided by
    :math:`s^2` (``scale`` :math:`= s`, see :func:`surrogate_scaled_similarity`); the step
    :math:`\eta d` is then formed as :math:`((\eta d/s^2)\,s)\,s`, which saturates to
    :math:`\pm\infty` (so the weight to 0 or :math:`w_{\max}`) rather than giving NaN.

    Returns:
        ``(state, weights)``: the new stored weights (unthresholded; unchanged for samples
        without a valid direction) and the weights to use for this batch.
    """
    tau = w_init if threshold is None else threshold
    s = torch.as_tensor(scale, device=d.device).to(d.dtype)
    delta = torch.where(d == 0, 0.0, (eta * d) * s * s)
    state = torch.where(valid, (previous + delta).clamp(0, w_max), previous)
    w = torch.where(state <= tau, torch.zeros_like(state), state)
    return state, torch.where(valid, w, torch.full_like(w, missing_class_weight))


def surrogate_weights(features: Any, labels: Any, clean_features: Any, clean_labels: Any, *,
                      alpha: float, num_classes: int | None = None, ratio: float | None = None,
                      w_init: float = 0.5, w_max: float = 1.0, threshold: float | None = None,
                      missing_class: Literal["error", "warn", "ignore"] = "error",
                      missing_class_weight: float = 0.0, validate: bool = True) -> torch.Tensor:
    r"""FBR weights of one training batch against one clean set, statelessly (recompute mode).

    .. math::
        S = (F-\mu)P^\top,\quad S'_{ic} = S_{ic} - \operatorname{second\,max}_{c} S_{ic},\quad
        d_i = S'_{iy_i} - \alpha\sum_{c\ne y_i} S'_{ic},\quad
        w_i = \mathbb 1[\tilde w_i > \tau]\,\tilde w_i,\
        \tilde w_i = \operatorname{clip}(w_0 + \eta d_i, 0, w_{\max})

    with :math:`\mu` the class-balanced clean mean, :math:`P_c` the centred clean class means
    and :math:`\eta = \max_{d_i<0} w_0/|d_i|` (see :func:`surrogate_recompute_weights`). The
    functional twin of :class:`~robustweights.SurrogateReweighter`: the same numbers as
    ``SurrogateReweighter(num_classes, alpha=alpha, ...).weights(...)`` on one process; no
    state, no cache, no collective.

    Args:
        features: the training batch's features, (B, D) floating (torch tensors, NumPy arrays
            or DLPack producers, as for every array argument).
        labels: the training batch's labels, (B,) integer.
        clean_features: the clean set's features, (M, D).
        clean_labels: the clean set's labels, (M,); at least 2 classes.
        alpha: the modulation :math:`\alpha \ge 0` (the reference: :math:`1/(C-1)` early in
            training, then 0).
        num_classes: :math:`C`; default: one more than the largest label given.
        ratio, w_init, w_max, threshold, missing_class, missing_class_weight: as for
            :class:`~robustweights.SurrogateReweighter` (by default a class of ``labels``
            without a clean sample is a ``ValueError`` naming it).
        validate: check the tensors (shapes, finiteness, label range, at least two clean
            classes), as torchmetrics' ``validate_args``; ``False`` skips these checks (and
            their host synchronisations) in a hot loop whose inputs are known good. Options are
            always checked.

    Returns:
        (B,) torch tensor of weights in :math:`[0, w_{\max}]`, in the features' floating dtype.

    Raises:
        ValueError, TypeError: for malformed inputs or options; the message names the argument.

    Example:
        >>> import torch
        >>> G, yc = torch.eye(3) * 2.0, torch.arange(3)       # class c along axis c
        >>> F = torch.tensor([[3.0, 0, 0], [0, 2.5, 0], [0, 0, 3.0]])
        >>> surrogate_weights(F, torch.tensor([0, 1, 0]), G, yc, alpha=0.5)  # the third is wrong
        tensor([1., 1., 0.])
    """
    alpha = check_nonneg_float(alpha, "alpha")
    ratio = None if ratio is None else check_fraction(ratio, "ratio")
    w_init, w_max, threshold, missing_class_weight = check_weight_bounds(
        w_init=w_init, w_max=w_max, threshold=threshold,
        missing_class_weight=missing_class_weight)
    check_missing_class(missing_class)
    if num_classes is not None:
        num_classes = check_num_classes(num_classes)
    batches = prepare_batches({"": {"features": features, "labels": labels},
                               "clean_": {"features": clean_features, "labels": clean_labels}},
                              ("features", "labels"), num_classes=num_classes, validate=validate)
    x, xc = batches[""], batches["clean_"]
    if num_classes is None:  # labels checked non-negative: one more than the largest
        num_classes = max(2, int(max(x["labels"].max(), xc["labels"].max())) + 1)
    sums = surrogate_class_sums(xc["features"], xc["labels"], num_classes)
    if validate:
        check_clean_classes(sums["class_counts"])
    mu, protos, present = surrogate_prototypes(sums["class_sums"], sums["class_counts"])
    d, valid, _ = surrogate_scaled_directions(x["features"], x["labels"], mu, protos, present,
                                              alpha)
    if missing_class != "ignore":
        check_missing_classes(missing_classes(x["labels"], valid), missing_class=missing_class,
                              weight=missing_class_weight)
    w = surrogate_recompute_weights(d, valid, w_init=w_init, w_max=w_max, threshold=threshold,
                              ratio=ratio, missing_class_weight=missing_class_weight)
    return as_output(w, x["features"])
