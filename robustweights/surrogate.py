"""Feature-based reweighting (FBR), the surrogate of meta-reweighting: the stateful class.

Zhang, Holtz, Mishne, Cloninger, "Revisiting Meta-Learning with Noisy Labels: Reweighting
Dynamics and Theoretical Guarantees", arXiv 2510.12209. The maths (the paper's five steps,
stated in the class docstring) is in :mod:`robustweights.functional.surrogate`, whose
:func:`~robustweights.functional.surrogate_weights` is the stateless twin;
:class:`SurrogateReweighter` holds configuration and state (cached clean statistics, epoch,
incremental store) and does the distributed reductions, which the pure kernels never do.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch

from robustweights import _distributed as distributed
from robustweights._clean_stats import CleanStatistics
from robustweights._sample_store import SampleStore
from robustweights._validation import (
    check_clean_classes,
    check_fraction,
    check_keywords_only,
    check_missing_class,
    check_missing_classes,
    check_nonneg_float,
    check_nonneg_int,
    check_num_classes,
    check_positive_float,
    check_weight_bounds,
    missing_classes,
)
from robustweights.base import Reweighter
from robustweights.functional.surrogate import (
    surrogate_candidate_steps,
    surrogate_class_sums,
    surrogate_incremental_weights,
    surrogate_prototypes,
    surrogate_recompute_weights,
    surrogate_scaled_directions,
    surrogate_step,
)

__all__ = ["AlphaSchedule", "SurrogateReweighter"]


Alpha = float | Callable[[int], float]


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
        self.switch_epoch = check_nonneg_int(switch_epoch, "switch_epoch")

    def __call__(self, epoch: int) -> float:
        return 1.0 / (self.num_classes - 1) if epoch < self.switch_epoch else 0.0

    def __repr__(self) -> str:
        return f"AlphaSchedule(num_classes={self.num_classes}, switch_epoch={self.switch_epoch})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AlphaSchedule) and other.num_classes == self.num_classes
                and other.switch_epoch == self.switch_epoch)

    def __hash__(self) -> int:
        return hash((self.num_classes, self.switch_epoch))


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
    (see :mod:`robustweights.functional.surrogate`). The cost per batch is :math:`O(BCD)`,
    independent of the clean set size :math:`M`; clean statistics are :math:`O(MD)` per
    refresh.

    Args:
        num_classes: number of classes :math:`C`.
        alpha: modulation :math:`\alpha \ge 0`: a float, or a callable of the epoch counter set
            with :meth:`set_epoch`. Default: the reference schedule :class:`AlphaSchedule`
            (:math:`1/(C-1)` before epoch 40, then 0). With two classes and :math:`\alpha = 0`
            no direction is negative (the runner-up is the only other class), so nothing is
            filtered: a warning says so.
        ratio: ``None`` (the step drives every negative-direction sample to 0) or a fraction in
            (0, 1]: a smaller step, which drives only the ``floor(ratio * B)`` most negative
            samples to 0 (the reference's variant). The threshold is applied after the step, so
            with the default threshold (``w_init``) every sample with :math:`d_i \le 0` is still
            dropped: the dropped set is the same as without ``ratio``, and only the kept weights
            :math:`w_0 + \eta d_i` are smaller. ``ratio`` changes which samples are dropped only
            with a lower ``threshold`` (e.g. 0: exactly those the step drives to 0).
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
        missing_class: what a batch using a class without a clean sample does (its class
            prototype is undefined, so its samples have no direction): ``"error"`` (default) a
            ``ValueError`` naming the classes; ``"warn"`` a ``UserWarning`` naming them, and the
            samples get ``missing_class_weight``; ``"ignore"`` the same without a word.
        missing_class_weight: the weight of such a sample under ``missing_class="warn"`` or
            ``"ignore"``. Default 0: such samples are dropped, as samples not pushed up are. Set
            it to ``w_init`` or ``w_max`` to keep them.
        validate: see :class:`~robustweights.base.Reweighter`.
        sync: see :class:`~robustweights.base.Reweighter`. Under ``torch.distributed`` the clean
            class sums and counts are summed over ranks.
        batch_scope: see :class:`~robustweights.base.Reweighter`. The step :math:`\eta` and
            whether any direction is negative (and, with ``ratio``, :math:`B` and the k-th
            smallest step) are taken over every rank's batch with ``"global"`` (see
            :meth:`_global_step`), or per rank with ``"local"``.
        process_group: see :class:`~robustweights.base.Reweighter`.

    Example:
        >>> import numpy as np
        >>> rw = SurrogateReweighter(num_classes=3, alpha=0.5)
        >>> rw.set_clean(features=np.eye(3) * 2.0, labels=np.arange(3))  # class c along axis c
        >>> feats = np.array([[3.0, 0, 0], [0, 2.5, 0], [0, 0, 3.0]])
        >>> rw.weights(features=feats, labels=np.array([0, 1, 0]))   # the third is mislabelled
        array([1., 1., 0.])
    """

    requires = ("features", "labels")
    num_classes: int

    def __init__(self, num_classes: int, *, alpha: Alpha | None = None,
                 ratio: float | None = None, w_init: float = 0.5, w_max: float = 1.0,
                 threshold: float | None = None,
                 mode: Literal["recompute", "incremental"] = "recompute", eta: float = 0.01,
                 missing_class: Literal["error", "warn", "ignore"] = "error",
                 missing_class_weight: float = 0.0, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        super().__init__(check_num_classes(num_classes), validate=validate, sync=sync,
                         batch_scope=batch_scope, process_group=process_group)
        if alpha is None:
            alpha = AlphaSchedule(num_classes)
        elif not callable(alpha):
            alpha = check_nonneg_float(alpha, "alpha")
            if alpha == 0 and num_classes == 2:
                warnings.warn("With num_classes=2 and alpha=0 no direction is ever negative, so "
                              "FBR keeps every sample at w_max; use alpha > 0 (reference: 1).",
                              UserWarning, stacklevel=2)
        self.alpha = alpha
        self.ratio = None if ratio is None else check_fraction(ratio, "ratio")
        self.w_init, self.w_max, self.threshold, self.missing_class_weight = check_weight_bounds(
            w_init=w_init, w_max=w_max, threshold=threshold,
            missing_class_weight=missing_class_weight)
        self.missing_class = check_missing_class(missing_class)
        if mode not in ("recompute", "incremental"):
            raise ValueError(
                f"Expected `mode` to be 'recompute' or 'incremental', but got {mode!r}"
            )
        self.mode = mode
        self.eta = check_positive_float(eta, "eta")
        self.epoch = 0
        self._store = SampleStore(fill=self.w_init)  # incremental mode: weight per sample id
        self.last_scores: torch.Tensor | None = None
        self._proto_cache: tuple[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._coverage: tuple[Any, bool] | None = None  # (clean version, every class present)

    def set_epoch(self, epoch: int) -> None:
        """Set the counter a callable ``alpha`` is evaluated at."""
        self.epoch = int(epoch)

    def current_alpha(self) -> float:
        """The modulation :math:`\\alpha` in effect for the next call."""
        if callable(self.alpha):
            return check_nonneg_float(self.alpha(self.epoch), "alpha(epoch)")
        return self.alpha

    # ----------------------------------------------------------------- checkpointing
    _state_config = ("num_classes", "mode")

    def _extra_state(self) -> dict[str, Any]:
        # The epoch sets a scheduled alpha; the store is the incremental mode's memory.
        return {"epoch": self.epoch, "sample_weights": self._store.state_dict()["values"]}

    def _stage_extra_state(self, state: dict[str, Any]) -> Callable[[], None]:
        epoch = self.epoch
        if "epoch" in state:
            epoch = check_nonneg_int(state["epoch"], "state_dict['epoch']")
        store = self._store
        if "sample_weights" in state:
            w = state["sample_weights"]
            if w is not None and (not isinstance(w, torch.Tensor) or w.ndim != 1):
                raise ValueError("Expected `state_dict['sample_weights']` to be None or a 1-D "
                                 f"tensor, but got {w!r:.80}")
            store = SampleStore(fill=self.w_init)
            store.load_state_dict({"values": w})

        def commit() -> None:
            self.epoch, self._store = epoch, store
        return commit

    def _clean_layout(self) -> dict[str, tuple[int | None, ...]]:
        return {"class_sums": (self.num_classes, None), "class_counts": (self.num_classes,)}

    def _repr_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "alpha": self.alpha, "ratio": self.ratio,
                "mode": self.mode, "w_init": self.w_init, "w_max": self.w_max,
                "threshold": self.threshold, "eta": self.eta,
                "missing_class": self.missing_class,
                "missing_class_weight": self.missing_class_weight}

    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return surrogate_class_sums(inputs["features"], inputs["labels"], self.num_classes)

    def directions(self, *args: Any, features: Any = None, labels: Any = None,
                   clean_features: Any = None, clean_labels: Any = None,
                   alpha: float | None = None) -> Any:
        r"""FBR's directions :math:`d_i` (steps 1-4) of a batch, without weights and without
        changing any state: a diagnostic. With :math:`\alpha = 0`, :math:`d_i > 0` exactly when
        :math:`y_i` is the class of the nearest centred clean prototype. The clean set is the
        cache or a per-call one, as for :meth:`weights`; ``alpha`` defaults to the current one.
        A sample whose class has no clean sample gets 0.

        Returns:
            A 1-D array of ``B`` directions of the same kind as ``features``.
        """
        check_keywords_only(self, "directions", args, self.requires)
        kind, batch, stats = self._resolve(
            {"logits": None, "features": features, "labels": labels, "inputs": None},
            {"logits": None, "features": clean_features, "labels": clean_labels, "inputs": None})
        a = self.current_alpha() if alpha is None else check_nonneg_float(alpha, "alpha")
        d = self._directions(stats, batch, a)[0]
        return self._finish(d, batch["features"], kind)

    def _directions(self, stats: CleanStatistics, batch: dict[str, torch.Tensor], alpha: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(d, d / scale**2, valid, scale)``: the true directions (saturated to the dtype's
        range) and the scale-safe ones the weights are computed from."""
        mu, protos, present = self._prototypes(stats)
        # d / scale**2: the similarity never overflows (robustweights._numerics)
        d, valid, scale = surrogate_scaled_directions(batch["features"], batch["labels"], mu,
                                                      protos, present, alpha)
        big = torch.finfo(d.dtype).max
        return ((d * scale.to(d.dtype)) * scale.to(d.dtype)).clamp(-big, big), d, valid, scale

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        self.last_scores, d, valid, scale = self._directions(stats, batch,
                                                                 self.current_alpha())
        if self.missing_class != "ignore" and not self._covers_every_class(stats):
            check_missing_classes(missing_classes(batch["labels"], valid),
                                  missing_class=self.missing_class,
                                  weight=self.missing_class_weight,
                                  stacklevel=4)
        if self.mode == "recompute":
            step = (self._global_step(d, valid, scale) if self._global_batch()
                    else surrogate_step(d, valid, w_init=self.w_init, ratio=self.ratio))
            return surrogate_recompute_weights(
                d, valid, ratio=self.ratio, step=step, w_init=self.w_init, w_max=self.w_max,
                threshold=self.threshold, missing_class_weight=self.missing_class_weight)
        if sample_ids is None:
            raise ValueError("Expected `sample_ids` to be given in incremental mode, but got None")
        prev = self._store.gather(sample_ids, like=d)  # unseen ids start at w_init
        state, w = surrogate_incremental_weights(
            prev, d, valid, eta=self.eta, w_init=self.w_init, w_max=self.w_max,
            threshold=self.threshold, missing_class_weight=self.missing_class_weight,
            scale=scale)
        if self._global_batch():  # every rank stores every rank's update
            sample_ids, state = distributed.all_gather_cat(sample_ids, state,
                                                           group=self.process_group)
        self._store.scatter(sample_ids, state)
        return w

    def _global_step(self, d: torch.Tensor, valid: torch.Tensor, scale: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":func:`surrogate_step` over the union of every rank's batch (:math:`N` and :math:`B`
        global), as one process would on the concatenated batch: one all-reduce of
        :math:`\eta` and whether any direction is negative, or with ``ratio`` an all-reduce of
        the sizes and an all-gather of each rank's k smallest steps."""
        neg, steps = surrogate_candidate_steps(d, valid, w_init=self.w_init)
        # Steps in true units (float64: no overflow for any scale the kernels produce), so
        # ranks whose features have different scales compare like with like; exact powers of
        # two, so equal scales give the single-process bits.
        s2 = scale.to(device=d.device, dtype=torch.float64) ** 2
        steps = steps.to(torch.float64) / s2
        group = self.process_group
        if self.ratio is None:  # one all-reduce(MAX) of (eta, any negative)
            local = torch.stack([torch.where(neg, steps, torch.zeros_like(steps)).max(),
                                 neg.any().to(steps.dtype)])
            eta, any_neg = distributed.all_reduce(local, "max", group).unbind()
            return (eta * s2).to(d.dtype), any_neg > 0
        sizes = torch.stack([torch.tensor(steps.shape[0], device=steps.device), neg.sum()])
        batch, n_neg = distributed.all_reduce(sizes, "sum", group).tolist()
        k = min(max(int(self.ratio * batch), 1), max(n_neg, 1))
        eta = distributed.k_smallest(steps, k, group)[k - 1]
        eta = torch.where(torch.isfinite(eta), eta, torch.zeros_like(eta))
        return (eta * s2).to(d.dtype), torch.tensor(n_neg > 0, device=steps.device)

    def _covers_every_class(self, stats: CleanStatistics) -> bool:
        """Whether every class has a clean sample: one host synchronisation per clean refresh
        for the cached clean set (then no batch needs a check), per call for a clean batch."""
        key = (stats.version, id(stats))
        if stats is self.clean and self._coverage is not None and self._coverage[0] == key:
            return self._coverage[1]
        covered = bool((stats["class_counts"] > 0).all())
        if stats is self.clean:
            self._coverage = (key, covered)
        return covered

    def _prototypes(self, stats: CleanStatistics
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prototypes of the clean statistics, computed (and checked) once per clean refresh
        for the cached clean set, and per call for a clean batch passed to ``weights``."""
        key = (stats.version, stats["class_sums"].device)
        if stats is self.clean and self._proto_cache is not None and self._proto_cache[0] == key:
            return self._proto_cache[1]
        counts = stats["class_counts"]
        if self.validate:
            check_clean_classes(counts)
        protos = surrogate_prototypes(stats["class_sums"], counts)
        if stats is self.clean:
            self._proto_cache = (key, protos)
        return protos
