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

* :class:`MetaReweighter`: the closed form for a linear softmax head, from logits and
  penultimate features (no model access; kernels in :mod:`robustweights.functional.meta`,
  stateless twin :func:`~robustweights.functional.meta_weights`);
* :class:`~robustweights.ModelMetaReweighter` (:mod:`robustweights.model_meta`): the whole
  network, one clean backward plus one forward-mode JVP.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustweights import _distributed as distributed
from robustweights._clean_stats import CleanStatistics
from robustweights._numerics import compute_dtype, saturate
from robustweights._validation import check_num_classes, check_positive_float
from robustweights.base import Reweighter
from robustweights.functional.meta import (
    meta_clean_sums,
    meta_scaled_last_layer_scores,
    meta_weights_from_scores,
)
from robustweights.normalization import Normalization, check_normalization

__all__ = ["MetaReweighter"]


class MetaReweighter(Reweighter):
    r"""Meta-reweighting (L2RW), exact, without the virtual step.

    Last-layer form (no model access; the form the paper's analysis uses): ``weights(logits=...,
    features=..., labels=..., clean_logits=..., clean_features=..., clean_labels=...)`` computes

    .. math::
        u_i = \text{lr}\,(r_i^\top A h_i + r_i^\top a), \qquad
        w_i = \max(u_i,0) / \textstyle\sum_j \max(u_j,0)

    with :math:`r_i = \mathrm{softmax}(z_i) - e_{y_i}` the residuals, :math:`A =
    \frac1M\sum_j s_j g_j^\top` and :math:`a = \frac1M\sum_j s_j` over the clean set, computed
    scale-safely (:mod:`robustweights.functional.meta`). For the whole network use
    :class:`~robustweights.ModelMetaReweighter`.

    Args:
        num_classes: number of classes :math:`C`.
        normalization: ``"sum"`` (L2RW: weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean-one scaling, keeps the scale of an unweighted mean loss) or
            ``"none"`` (:math:`\max(u_i, 0)`).
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        bias: whether the head has a bias (adds the :math:`r_i^\top a` term).
        validate: see :class:`~robustweights.base.Reweighter`.
        sync: see :class:`~robustweights.base.Reweighter`. Under ``torch.distributed`` the
            clean statistics (residual-feature sums, residual sums and count) are summed over
            ranks.
        batch_scope: see :class:`~robustweights.base.Reweighter`. The ``"sum"``/``"mean"``
            denominators :math:`\sum_j \max(u_j, 0)` and :math:`B` are taken over every rank's
            batch with ``"global"``, or per rank with ``"local"``.
        process_group: see :class:`~robustweights.base.Reweighter`.

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

    requires = ("logits", "features", "labels")  # the weights follow the features' kind
    num_classes: int

    def __init__(self, num_classes: int, *, normalization: Normalization = "sum",
                 lr: float = 1.0, bias: bool = True, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        super().__init__(check_num_classes(num_classes), validate=validate, sync=sync,
                         batch_scope=batch_scope, process_group=process_group)
        self.normalization = check_normalization(normalization)
        self.lr = check_positive_float(lr, "lr")
        self.bias = bool(bias)
        self.last_scores: torch.Tensor | None = None

    # ------------------------------------------------------------ last-layer closed form
    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return meta_clean_sums(inputs["logits"], inputs["features"], inputs["labels"])

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        u, c = meta_scaled_last_layer_scores(
            batch["logits"], batch["features"], batch["labels"], stats["resid_feat_sum"],
            stats["resid_sum"], stats["count"], bias=self.bias)
        self.last_scores = saturate((u * c) * self.lr, compute_dtype(batch["logits"].dtype))
        total = count = None
        if self.normalization != "none" and self._global_batch():
            # the concatenated batch's denominators, in the units of u (one all-reduce)
            total, count = distributed.global_sum_and_count(u, self.process_group)
        return meta_weights_from_scores(u, c, normalization=self.normalization, lr=self.lr,
                                        total=total, count=count)

    def _clean_layout(self) -> dict[str, tuple[int | None, ...]]:
        return {"resid_feat_sum": (self.num_classes, None), "resid_sum": (self.num_classes,),
                "count": ()}

    # ------------------------------------------------------------ repr
    def _repr_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "normalization": self.normalization,
                "lr": self.lr, "bias": self.bias}
