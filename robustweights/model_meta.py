r"""Full-network meta-reweighting (L2RW) for a torch model: one clean backward plus one JVP.

Ren, Zeng, Yang, Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018.
:class:`ModelMetaReweighter` holds the model, the loss and the cached clean gradient, on the
common :class:`~robustweights.base.Reweighter` base; the maths (the clean gradient, the JVP of
the per-sample losses) is in :mod:`robustweights.functional.model_meta`, whose
:func:`~robustweights.functional.model_meta_weights` is its stateless twin.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from robustweights import _distributed as distributed
from robustweights._backend import ArrayKind
from robustweights._clean_stats import CleanStatistics
from robustweights._validation import (
    check_keywords_only,
    check_loss_fn,
    check_module,
    check_positive_float,
)
from robustweights.base import Reweighter
from robustweights.functional.model_meta import (
    COUNT,
    check_clean_gradient,
    check_scores,
    clean_gradient_sums,
    mean_clean_gradient,
    model_scores,
    model_scores_and_losses,
    model_weights_from_scores,
    trainable,
)
from robustweights.losses import LossFn
from robustweights.normalization import Normalization, check_normalization

__all__ = ["ModelMetaReweighter"]


class ModelMetaReweighter(Reweighter):
    r"""Exact full-network L2RW weights for a torch model, without the virtual step.

    .. math::
        u_i = \text{lr}\,\langle \nabla_\theta \ell_i(\theta), g\rangle, \quad
        g = \nabla_\theta \tfrac1M \textstyle\sum_j \ell(x^{c}_j, y^{c}_j), \qquad
        w_i = \max(u_i, 0) / \textstyle\sum_j \max(u_j, 0)

    over every trainable parameter :math:`\theta` of ``model`` (one backward on the clean batch
    for :math:`g`, one forward-mode JVP of the training batch's per-sample losses for all
    :math:`u_i`). Tested against autograd through the literal virtual SGD step. The model's
    parameters, buffers, mode, gradients and the RNG are left untouched by :meth:`weights`.

    Its batch inputs are the model's ``inputs`` (a tensor) and ``labels``; the clean set is
    cached as the gradient of the summed clean loss (:meth:`set_clean` / :meth:`update_clean`
    with ``inputs=``, ``labels=``). The cache is stale as soon as the parameters change, so
    L2RW's usual path is a fresh clean batch per step (``clean_inputs``, ``clean_labels``),
    which, as for every reweighter, is used for that call only and leaves the cache alone.

    Args:
        model: a torch module mapping a batch of inputs to outputs (a
            ``DistributedDataParallel`` or ``DataParallel`` wrapper is unwrapped to its module).
        loss_fn: ``loss_fn(outputs, labels)`` returning per-sample losses (B,), e.g.
            ``nn.CrossEntropyLoss(reduction="none")``.
        num_classes: :math:`C`, to check that labels lie in :math:`[0, C)`; default None: labels
            are checked to be non-negative integers (the loss function sees the upper end).
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        normalization: ``"sum"`` (L2RW: weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean one) or ``"none"`` (:math:`\max(u_i, 0)`).
        validate: check the batches (shapes, label range) and that the scores are finite.
        sync: as for :class:`~robustweights.base.Reweighter`. Under ``torch.distributed`` the
            clean gradient and count are summed over ranks. BatchNorm in train mode uses
            per-rank batch statistics, as DDP's own forward does (unless ``SyncBatchNorm``).
        batch_scope: as for :class:`~robustweights.base.Reweighter`. The ``"sum"``/``"mean"``
            denominators are taken over every rank's batch with ``"global"``, or per rank with
            ``"local"``.
        process_group: as for :class:`~robustweights.base.Reweighter`.

    Attributes:
        last_scores: the raw scores :math:`u` (B,) of the last call, e.g. for a phase monitor.

    Example:
        >>> import torch, torch.nn as nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> rw = ModelMetaReweighter(net, nn.CrossEntropyLoss(reduction="none"))
        >>> x, y = torch.randn(5, 3), torch.randint(0, 2, (5,))
        >>> w = rw.weights(inputs=x, labels=y, clean_inputs=torch.randn(4, 3),
        ...                clean_labels=torch.randint(0, 2, (4,)))
        >>> w.shape, bool(w.sum() == 0 or abs(w.sum() - 1) < 1e-6)
        (torch.Size([5]), True)
    """

    requires = ("inputs", "labels")
    _reference = "inputs"
    _cache_name = "clean gradient"
    _state_config = ()  # the model and the loss are configuration, not state

    def __init__(self, model: nn.Module, loss_fn: LossFn, *, num_classes: int | None = None,
                 lr: float = 1.0, normalization: Normalization = "sum", validate: bool = True,
                 sync: bool = True, batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        super().__init__(num_classes, validate=validate, sync=sync, batch_scope=batch_scope,
                         process_group=process_group)
        self.model = check_module(model)
        self.loss_fn = check_loss_fn(loss_fn)
        self.lr = check_positive_float(lr, "lr")
        self.normalization = check_normalization(normalization)
        self.last_scores: torch.Tensor | None = None

    def weights_and_losses(self, *args: Any, inputs: torch.Tensor | None = None,
                           labels: Any = None, clean_inputs: torch.Tensor | None = None,
                           clean_labels: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights *and* per-sample losses of a training batch from one forward pass.

        The faster path for a training step: it replaces the step's own forward, so exact
        full-network L2RW costs one clean backward and one JVP forward on top of the backward
        of the step::

            w, losses = rw.weights_and_losses(inputs=x, labels=y, clean_inputs=xc,
                                              clean_labels=yc)
            weighted_mean(losses, w).backward(); opt.step()

        Unlike :meth:`weights` this *is* the training forward: BatchNorm running statistics are
        updated once and the RNG advances, as for a plain forward. The weights equal
        :meth:`weights`'; the clean batch follows the same rule (a temporary for this call).

        Returns:
            ``(weights, losses)``, both (B,); the losses carry the autograd graph.
        """
        check_keywords_only(self, "weights_and_losses", args, self.requires)
        kind, batch, stats = self._resolve({"inputs": inputs, "labels": labels},
                                           {"inputs": clean_inputs, "labels": clean_labels})
        u, losses = model_scores_and_losses(self.model, self.loss_fn, batch["inputs"],
                                            batch["labels"],
                                            mean_clean_gradient(dict(stats.items())),
                                            lr=self.lr)
        return self._finish(self._weights_from_scores(u), batch["inputs"], kind), losses

    # ------------------------------------------------------------ the base's two steps
    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        sums = clean_gradient_sums(self.model, self.loss_fn, inputs["inputs"], inputs["labels"])
        if self.validate:
            check_clean_gradient(sums)  # before a NaN is cached by set_clean / update_clean
        return sums

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        u = model_scores(self.model, self.loss_fn, batch["inputs"], batch["labels"],
                         mean_clean_gradient(dict(stats.items())), lr=self.lr)
        return self._weights_from_scores(u)

    def _weights_from_scores(self, u: torch.Tensor) -> torch.Tensor:
        if self.validate:
            check_scores(u)  # the one host synchronisation of the scores
        self.last_scores = u
        total = count = None
        if self.normalization != "none" and self._global_batch():
            total, count = distributed.global_sum_and_count(u, self.process_group)
        return model_weights_from_scores(u, self.normalization, total=total, count=count)

    def _finish(self, w: torch.Tensor, ref: torch.Tensor, kind: ArrayKind) -> Any:
        return w  # already in the losses' dtype; inputs are torch tensors

    # ------------------------------------------------------------ checkpointing and repr
    _clean_layout_name = "one tensor per trainable parameter of the model"

    def _clean_layout(self) -> dict[str, tuple[int | None, ...]]:
        # The gradient is keyed by parameter name: it fits only a model of the same layout.
        layout: dict[str, tuple[int | None, ...]] = {
            name: tuple(p.shape) for name, p in trainable(self.model).items()}
        layout[COUNT] = ()
        return layout

    def _repr_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"model": type(self.model), "loss_fn": self.loss_fn,
                                "lr": self.lr, "normalization": self.normalization}
        if self.num_classes is not None:
            args["num_classes"] = self.num_classes
        return args
