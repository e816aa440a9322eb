"""Feature-based reweighting (FBR), the surrogate of meta-reweighting.

Zhang, Holtz, Mishne, Cloninger, "Revisiting Meta-Learning with Noisy Labels: Reweighting
Dynamics and Theoretical Guarantees", arXiv 2510.12209. The pure functions below are the maths
(steps 1-5 of ``docs/method.md``); :class:`SurrogateReweighter` holds configuration and state.

All kernels are vectorised torch ops on the inputs' device, with no Python loop over samples or
classes and no host synchronisation; half-precision inputs are accumulated in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch

from robustweights import distributed
from robustweights.base import Reweighter
from robustweights.clean_stats import CleanStatistics
from robustweights.state import cpu_copy
from robustweights.validation import (
    check_fraction,
    check_nonneg_float,
    check_num_classes,
    check_positive_float,
)

__all__ = [
    "AlphaSchedule",
    "SurrogateReweighter",
    "alpha_schedule",
    "compute_dtype",
    "fbr_class_sums",
    "fbr_directions",
    "fbr_incremental_weights",
    "fbr_prototypes",
    "fbr_recompute_weights",
    "fbr_similarity",
    "fbr_step",
]

Alpha = float | Callable[[int], float]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class AlphaSchedule:
    r"""The reference schedule: :math:`\alpha = 1/(C-1)` before ``switch_epoch``, then 0.

    A small callable object rather than a closure, so a reweighter using it can be pickled
    (``torch.save``) and shows it in its repr.

    Example:
        >>> a = AlphaSchedule(num_classes=5, switch_epoch=40)
        >>> a(0), a(39), a(40)
        (0.25, 0.25, 0.0)
        >>> a
        AlphaSchedule(num_classes=5, switch_epoch=40)
    """

    def __init__(self, num_classes: int, switch_epoch: int = 40) -> None:
        self.num_classes = check_num_classes(num_classes)
        if isinstance(switch_epoch, bool) or not isinstance(switch_epoch, int):
            raise ValueError(f"Expected `switch_epoch` to be an integer, but got {switch_epoch!r}")
        self.switch_epoch = switch_epoch

    def __call__(self, epoch: int) -> float:
        return 1.0 / (self.num_classes - 1) if epoch < self.switch_epoch else 0.0

    def __repr__(self) -> str:
        return f"AlphaSchedule(num_classes={self.num_classes}, switch_epoch={self.switch_epoch})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AlphaSchedule) and other.num_classes == self.num_classes
                and other.switch_epoch == self.switch_epoch)

    def __hash__(self) -> int:
        return hash((self.num_classes, self.switch_epoch))


def alpha_schedule(num_classes: int, switch_epoch: int = 40) -> AlphaSchedule:
    r"""The reference schedule :class:`AlphaSchedule`: :math:`1/(C-1)` before ``switch_epoch``,
    then 0."""
    return AlphaSchedule(num_classes, switch_epoch)


def fbr_class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int
                   ) -> dict[str, torch.Tensor]:
    """Per-class feature sums (C, D) and counts (C,) of a clean batch: FBR's additive state."""
    dt = compute_dtype(features.dtype)
    sums = torch.zeros(num_classes, features.shape[1], dtype=dt, device=features.device)
    sums.index_add_(0, labels, features.to(dt))
    counts = torch.bincount(labels, minlength=num_classes).to(dt)
    return {"class_sums": sums, "class_counts": counts}


def fbr_prototypes(class_sums: torch.Tensor, class_counts: torch.Tensor
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


def fbr_similarity(features: torch.Tensor, mu: torch.Tensor, prototypes: torch.Tensor
                   ) -> torch.Tensor:
    r"""Class similarity :math:`S = (F - \mu) P^\top` (B, C), i.e. step 2 in prototype form:
    :math:`S_{ic}` is the mean over clean samples of class :math:`c` of
    :math:`\langle f_i - \mu, g_j - \mu\rangle`."""
    return (features.to(mu.dtype) - mu) @ prototypes.T


def fbr_directions(similarity: torch.Tensor, labels: torch.Tensor, present: torch.Tensor,
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


def fbr_step(d: torch.Tensor, valid: torch.Tensor, *, w_init: float = 0.5,
             ratio: float | None = None, global_batch: bool = False, process_group: Any = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The step :math:`\eta` of the recompute mode, and whether any direction is negative.

    With :math:`N = \{i : d_i < 0\}` (samples with a valid direction only),
    :math:`\eta = \max_{i \in N} w_0/|d_i|`, or with ``ratio`` the k-th smallest
    :math:`w_0/|d_i|`, :math:`k = \min(\max(1, \lfloor \text{ratio}\cdot B\rfloor), |N|)`;
    0 when :math:`N` is empty.

    Args:
        global_batch: under an initialised ``torch.distributed`` process group, take :math:`N`
            and :math:`B` over the union of every rank's batch, as one process would on the
            concatenated batch (a collective: an all-reduce of :math:`\eta` and the sizes, and
            with ``ratio`` an all-gather of each rank's k smallest steps). Nothing changes, and
            nothing is communicated, without a process group.
        process_group: the group to reduce over (default: the world).

    Returns:
        ``(eta, any_negative)``, 0-d tensors on ``d``'s device.
    """
    neg = (d < 0) & valid
    # w0/|d_i| for negative samples, +inf elsewhere; never divides by zero.
    steps = torch.where(neg, w_init / d.abs().clamp_min(torch.finfo(d.dtype).tiny),
                        torch.full_like(d, float("inf")))
    if global_batch and distributed.is_distributed(process_group):
        return _fbr_global_step(neg, steps, ratio, process_group)
    n_neg = neg.sum()
    if ratio is None:
        eta = torch.where(neg, steps, torch.zeros_like(steps)).max()
    else:
        k = torch.clamp(torch.tensor(int(ratio * d.shape[0]), device=d.device), min=1)
        k = torch.minimum(k, n_neg.clamp_min(1))
        eta = steps.sort().values[k - 1]
        eta = torch.where(torch.isfinite(eta), eta, torch.zeros_like(eta))
    return eta, n_neg > 0


def _fbr_global_step(neg: torch.Tensor, steps: torch.Tensor, ratio: float | None,
                     group: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if ratio is None:  # one all-reduce(MAX) of (eta, any negative)
        local = torch.stack([torch.where(neg, steps, torch.zeros_like(steps)).max(),
                             neg.any().to(steps.dtype)])
        eta, any_neg = distributed.all_reduce(local, "max", group).unbind()
        return eta, any_neg > 0
    sizes = torch.stack([torch.tensor(steps.shape[0], device=steps.device), neg.sum()])
    batch, n_neg = distributed.all_reduce(sizes, "sum", group).tolist()
    k = min(max(int(ratio * batch), 1), max(n_neg, 1))
    eta = distributed.k_smallest(steps, k, group)[k - 1]
    eta = torch.where(torch.isfinite(eta), eta, torch.zeros_like(eta))
    return eta, torch.tensor(n_neg > 0, device=steps.device)


def fbr_recompute_weights(d: torch.Tensor, valid: torch.Tensor, *, w_init: float = 0.5,
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
    :math:`w_0/|d_i|`, :math:`k = \min(\max(1, \lfloor \text{ratio}\cdot B\rfloor), |N|)`, so that
    only the k most negative samples reach 0 before the threshold. Samples whose label has no
    clean sample (``valid`` False) get ``missing_class_weight`` and do not set the step.
    ``step``: ``(eta, any_negative)`` from :func:`fbr_step` (e.g. over every distributed rank's
    batch); computed from this batch when omitted.
    """
    tau = w_init if threshold is None else threshold
    if step is None:
        step = fbr_step(d, valid, w_init=w_init, ratio=ratio)
    eta, any_negative = step
    w = (w_init + eta * d).clamp(0, w_max)
    w = torch.where(w <= tau, torch.zeros_like(w), w)
    w = torch.where(any_negative, w, torch.full_like(w, w_max))
    return torch.where(valid, w, torch.full_like(w, missing_class_weight))


def fbr_incremental_weights(previous: torch.Tensor, d: torch.Tensor, valid: torch.Tensor, *,
                            eta: float = 0.01, w_init: float = 0.5, w_max: float = 1.0,
                            threshold: float | None = None, missing_class_weight: float = 0.0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One step of the "incremental" mode: :math:`w \leftarrow \operatorname{clip}(w + \eta d,
    0, w_{\max})`, then the threshold of the recompute mode on the returned weights.

    Returns:
        ``(state, weights)``: the new stored weights (unthresholded; unchanged for samples
        without a valid direction) and the weights to use for this batch.
    """
    tau = w_init if threshold is None else threshold
    state = torch.where(valid, (previous + eta * d).clamp(0, w_max), previous)
    w = torch.where(state <= tau, torch.zeros_like(state), state)
    return state, torch.where(valid, w, torch.full_like(w, missing_class_weight))


class SurrogateReweighter(Reweighter):
    r"""Feature-based reweighting (FBR): label-signed similarity of training features to clean
    class prototypes, turned into sample weights.

    For a training batch with features :math:`F` (B x D) and labels :math:`y`, and a clean set
    with features :math:`G` (M x D) and labels :math:`\tilde y`:

    .. math::
        S = (F-\mu)P^\top,\quad S'_{ic} = S_{ic} - \operatorname{second\,max}_{c} S_{ic},\quad
        d_i = S'_{iy_i} - \alpha\sum_{c\ne y_i} S'_{ic},\quad
        w_i = \mathbb 1[\tilde w_i > w_0]\,\tilde w_i,\ \tilde w_i = \operatorname{clip}(w_0 +
        \eta d_i, 0, w_{\max})

    with :math:`\mu` the class-balanced clean mean and :math:`P_c` the centred clean class means
    (see :func:`fbr_prototypes`). The cost per batch is :math:`O(BCD)`, independent of the clean
    set size :math:`M`; clean statistics are :math:`O(MD)` per refresh.

    Args:
        num_classes: number of classes :math:`C`.
        alpha: modulation :math:`\alpha \ge 0`: a float, or a callable of the epoch counter set
            with :meth:`set_epoch`. Default: the reference schedule :func:`alpha_schedule`
            (:math:`1/(C-1)` before epoch 40, then 0). With two classes and :math:`\alpha = 0`
            no direction is negative (the runner-up is the only other class), so nothing is
            filtered: a warning says so.
        ratio: ``None`` (drive every negative-direction sample to 0) or a fraction in (0, 1]: the
            step drives only the ``floor(ratio * B)`` most negative samples to 0.
        w_init: the starting weight :math:`w_0` (0.5), also the default threshold.
        w_max: the largest weight (1.0).
        threshold: weights :math:`\le` this are set to 0 (default ``w_init``).
        mode: ``"recompute"`` (stateless per batch, the reference) or ``"incremental"`` (weights
            kept per sample id across calls and stepped by ``eta``; pass ``sample_ids``). The
            incremental step couples no samples; under ``torch.distributed`` with
            ``batch_scope="global"`` every rank's batch ids and new weights are all-gathered per
            call so each rank's store equals one process's (a sample may move to another rank
            when a ``DistributedSampler`` reshuffles); with ``"local"`` each rank keeps only the
            ids it has seen.
        eta: the fixed step of the incremental mode (0.01).
        missing_class_weight: the weight of a sample whose label has no clean sample (its class
            prototype is undefined, so it has no direction). Default 0: such samples are dropped,
            as samples not pushed up are. Set it to ``w_init`` or ``w_max`` to keep them.
        validate, sync, batch_scope, process_group: see :class:`~robustweights.base.Reweighter`.
            Under ``torch.distributed`` the clean class sums and counts are summed over ranks
            (``sync``); the step :math:`\eta` and whether any direction is negative (and, with
            ``ratio``, :math:`B` and the k-th smallest step) are taken over every rank's batch
            with ``batch_scope="global"`` (see :func:`fbr_step`), or per rank with ``"local"``.

    Example:
        >>> import numpy as np
        >>> rw = SurrogateReweighter(num_classes=3, alpha=0.5)
        >>> rw.set_clean(features=np.eye(3) * 2.0, labels=np.arange(3))  # class c along axis c
        >>> feats = np.array([[3.0, 0, 0], [0, 2.5, 0], [0, 0, 3.0]])
        >>> rw.weights(features=feats, labels=np.array([0, 1, 0]))   # the third is mislabelled
        array([1., 1., 0.])
    """

    requires = ("features", "labels")

    def __init__(self, num_classes: int, *, alpha: Alpha | None = None,
                 ratio: float | None = None, w_init: float = 0.5, w_max: float = 1.0,
                 threshold: float | None = None,
                 mode: Literal["recompute", "incremental"] = "recompute", eta: float = 0.01,
                 missing_class_weight: float = 0.0, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        super().__init__(num_classes, validate=validate, sync=sync, batch_scope=batch_scope,
                         process_group=process_group)
        if alpha is None:
            alpha = alpha_schedule(num_classes)
        elif not callable(alpha):
            alpha = check_nonneg_float(alpha, "alpha")
            if alpha == 0 and num_classes == 2:
                warnings.warn("With num_classes=2 and alpha=0 no direction is ever negative, so "
                              "FBR keeps every sample at w_max; use alpha > 0 (reference: 1).",
                              UserWarning, stacklevel=2)
        self.alpha = alpha
        self.ratio = None if ratio is None else check_fraction(ratio, "ratio")
        self.w_max = check_positive_float(w_max, "w_max")
        self.w_init = check_nonneg_float(w_init, "w_init")
        if not self.w_init < self.w_max:
            raise ValueError(
                f"Expected `w_init` to be below `w_max` = {w_max}, but got {w_init!r}"
            )
        self.threshold = None if threshold is None else check_nonneg_float(threshold, "threshold")
        if mode not in ("recompute", "incremental"):
            raise ValueError(
                f"Expected `mode` to be 'recompute' or 'incremental', but got {mode!r}"
            )
        self.mode = mode
        self.eta = check_positive_float(eta, "eta")
        self.missing_class_weight = check_nonneg_float(missing_class_weight,
                                                       "missing_class_weight")
        if self.missing_class_weight > self.w_max:
            raise ValueError(f"Expected `missing_class_weight` to be at most `w_max` = "
                             f"{self.w_max}, but got {missing_class_weight!r}")
        self.epoch = 0
        self._state: torch.Tensor | None = None  # incremental mode: weight per sample id
        self.last_directions: torch.Tensor | None = None
        self._proto_cache: tuple[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the counter a callable ``alpha`` is evaluated at."""
        self.epoch = int(epoch)

    def current_alpha(self) -> float:
        """The modulation :math:`\\alpha` in effect for the next call."""
        if callable(self.alpha):
            return check_nonneg_float(self.alpha(self.epoch), "alpha(epoch)")
        return self.alpha

    def reset_state(self) -> None:
        """Forget the per-sample weights of the incremental mode."""
        self._state = None

    # ----------------------------------------------------------------- checkpointing
    _state_config = ("num_classes", "mode")

    def _extra_state(self) -> dict[str, Any]:
        # The epoch sets a scheduled alpha; the store is the incremental mode's memory.
        return {"epoch": self.epoch, "sample_weights": cpu_copy(self._state)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if "epoch" in state:
            self.epoch = int(state["epoch"])
        if "sample_weights" in state:
            w = state["sample_weights"]
            if w is not None and (not isinstance(w, torch.Tensor) or w.ndim != 1):
                raise ValueError("Expected `state_dict['sample_weights']` to be None or a 1-D "
                                 f"tensor, but got {w!r}")
            self._state = None if w is None else w.detach().clone()

    def _repr_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "alpha": self.alpha, "ratio": self.ratio,
                "mode": self.mode, "w_init": self.w_init, "w_max": self.w_max,
                "threshold": self.threshold, "eta": self.eta,
                "missing_class_weight": self.missing_class_weight}

    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return fbr_class_sums(inputs["features"], inputs["labels"], self.num_classes)

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        features, labels = batch["features"], batch["labels"]
        mu, protos, present = self._prototypes(stats)
        if features.shape[1] != protos.shape[1]:
            raise ValueError(
                f"Expected `features` to have the clean set's dimension D = "
                f"{protos.shape[1]}, but got {features.shape[1]}"
            )
        sim = fbr_similarity(features, mu, protos)
        d, valid = fbr_directions(sim, labels, present, self.current_alpha())
        self.last_directions = d.detach()
        if self.mode == "recompute":
            step = fbr_step(d, valid, w_init=self.w_init, ratio=self.ratio,
                            global_batch=self._global_batch(), process_group=self.process_group)
            return fbr_recompute_weights(
                d, valid, ratio=self.ratio, step=step, w_init=self.w_init, w_max=self.w_max,
                threshold=self.threshold, missing_class_weight=self.missing_class_weight)
        if sample_ids is None:
            raise ValueError("Expected `sample_ids` to be given in incremental mode, but got None")
        prev = self._gather_state(sample_ids, d)
        state, w = fbr_incremental_weights(
            prev, d, valid, eta=self.eta, w_init=self.w_init, w_max=self.w_max,
            threshold=self.threshold, missing_class_weight=self.missing_class_weight)
        if self._global_batch():  # every rank stores every rank's update
            sample_ids, state = distributed.all_gather_cat(sample_ids, state,
                                                           group=self.process_group)
            self._gather_state(sample_ids, state)  # grow the store to cover them
        self._state[sample_ids] = state  # type: ignore[index]
        return w

    def _prototypes(self, stats: CleanStatistics
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prototypes of the clean statistics, computed (and checked) once per clean refresh
        for the cached clean set, and per call for a clean batch passed to ``weights``."""
        key = (stats.version, stats["class_sums"].device)
        if stats is self.clean and self._proto_cache is not None and self._proto_cache[0] == key:
            return self._proto_cache[1]
        counts = stats["class_counts"]
        if self.validate and int((counts > 0).sum()) < 2:
            raise ValueError(
                "Expected `clean_labels` to cover at least 2 classes, but got "
                f"{int((counts > 0).sum())}: FBR's row shift needs a runner-up class"
            )
        protos = fbr_prototypes(stats["class_sums"], counts)
        if stats is self.clean:
            self._proto_cache = (key, protos)
        return protos

    def _gather_state(self, ids: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        # The store grows to the largest id seen; unseen ids start at w_init.
        need = int(ids.max()) + 1
        if self._state is None:
            self._state = torch.full((need,), self.w_init, dtype=d.dtype, device=d.device)
        self._state = self._state.to(device=d.device, dtype=d.dtype)
        if self._state.shape[0] < need:
            grow = torch.full((need - self._state.shape[0],), self.w_init, dtype=d.dtype,
                              device=d.device)
            self._state = torch.cat([self._state, grow])
        return self._state[ids]
