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

* :func:`l2rw_last_layer_scores`: the closed form for a linear softmax head (no model access);
* :func:`l2rw_model_scores`: the whole network, one clean backward plus one forward-mode JVP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from robustweights import distributed
from robustweights.base import Reweighter
from robustweights.clean_stats import CleanStatistics
from robustweights.normalization import Normalization, check_normalization, normalize_weights
from robustweights.surrogate import compute_dtype
from robustweights.validation import check_positive_float

__all__ = [
    "MetaReweighter",
    "l2rw_clean_sums",
    "l2rw_last_layer_scores",
    "l2rw_model_scores",
    "l2rw_model_scores_and_losses",
    "preserved_state",
    "softmax_residuals",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def softmax_residuals(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy gradient w.r.t. the logits, :math:`r_i = \mathrm{softmax}(z_i) -
    e_{y_i}` (N, C), in the compute dtype (float32 for half inputs)."""
    r = torch.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    return r - F.one_hot(labels, logits.shape[1]).to(r.dtype)


def l2rw_clean_sums(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor
                    ) -> dict[str, torch.Tensor]:
    r"""Additive clean statistics of the last-layer form: :math:`\sum_j s_j g_j^\top` (C, D),
    :math:`\sum_j s_j` (C,) and the count :math:`M`, with :math:`s_j` the clean residuals."""
    s = softmax_residuals(logits, labels)
    return {"resid_feat_sum": s.T @ features.to(s.dtype), "resid_sum": s.sum(0),
            "count": torch.tensor(float(s.shape[0]), dtype=s.dtype, device=s.device)}


def l2rw_last_layer_scores(logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor,
                           resid_feat_sum: torch.Tensor, resid_sum: torch.Tensor,
                           count: torch.Tensor, *, lr: float = 1.0, bias: bool = True
                           ) -> torch.Tensor:
    r"""Exact L2RW scores for a linear head :math:`z = W h + b` under softmax cross-entropy.

    With :math:`\nabla_W \ell_i = r_i h_i^\top`, :math:`\nabla_b \ell_i = r_i`,
    :math:`A = \frac1M\sum_j s_j g_j^\top` and :math:`a = \frac1M\sum_j s_j`:

    .. math::
        u_i = \text{lr}\,\big(r_i^\top A h_i + r_i^\top a\big)

    (the :math:`a` term only when ``bias``). Cost :math:`O(BCD)`.

    Args:
        logits, features, labels: the training batch, (B, C), (B, D), (B,).
        resid_feat_sum, resid_sum, count: clean statistics from :func:`l2rw_clean_sums`.

    Returns:
        (B,) scores :math:`u`.
    """
    r = softmax_residuals(logits, labels)
    A = resid_feat_sum.to(r.dtype) / count
    u = ((r @ A) * features.to(r.dtype)).sum(1)
    if bias:
        u = u + r @ (resid_sum.to(r.dtype) / count)
    return lr * u


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Run extra passes without side effects on ``model``.

    Yields clones of the model's buffers (pass them to ``functional_call``, so BatchNorm updates
    hit the clones) and forks the CPU and CUDA RNG so dropout in the extra passes does not shift
    the caller's random stream. Parameters are only read; train/eval mode is left as it is.
    """
    devices = sorted({b.device.index or 0 for b in model.parameters() if b.is_cuda})
    with torch.random.fork_rng(devices=devices):
        yield {name: b.clone() for name, b in model.named_buffers()}


def _per_sample(loss_fn: LossFn, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    losses = loss_fn(outputs, labels)
    if losses.ndim != 1 or losses.shape[0] != outputs.shape[0]:
        raise ValueError(
            f"Expected `loss_fn` to return per-sample losses of shape ({outputs.shape[0]},), but "
            f"got shape {tuple(losses.shape)}: use reduction='none'"
        )
    return losses


def l2rw_clean_gradient(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                        labels: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
                        ) -> dict[str, torch.Tensor]:
    r"""Gradient of the *summed* clean loss :math:`\nabla_\theta\sum_j \ell_j(\theta)` (divide by
    the count for the mean). Sums make streaming and distributed accumulation exact."""
    params = params if params is not None else _trainable(model)
    with preserved_state(model) as buffers:
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        out = functional_call(model, (leaves, buffers), (inputs,))
        total = _per_sample(loss_fn, out, labels).sum()
        grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(v)).detach()
            for (k, v), g in zip(leaves.items(), grads, strict=True)}


def l2rw_model_scores(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                      labels: torch.Tensor, clean_grad: dict[str, torch.Tensor], *,
                      lr: float = 1.0) -> torch.Tensor:
    r"""Exact full-network L2RW scores :math:`u_i = \text{lr}\,\langle\nabla\ell_i, g\rangle`.

    All B inner products come from one forward-mode JVP (dual numbers) of the vector of
    per-sample losses :math:`\theta \mapsto (\ell_1, \dots, \ell_B)` in the direction
    :math:`g` (the clean-loss gradient). BatchNorm in train mode couples the samples of a
    batch; the JVP is still the exact derivative of each loss, as in the original's lookahead.

    Args:
        clean_grad: :math:`g = \nabla_\theta L_{clean}` keyed like ``model.named_parameters()``
            (trainable ones only).
    """
    params = {k: v.detach() for k, v in _trainable(model).items()}
    with preserved_state(model) as buffers:
        _, tangent = _losses_and_jvp(model, loss_fn, inputs, labels, clean_grad, params, buffers)
    return lr * tangent.detach()


def l2rw_model_scores_and_losses(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                                 labels: torch.Tensor, clean_grad: dict[str, torch.Tensor], *,
                                 lr: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The scores of :func:`l2rw_model_scores` *and* the per-sample losses from one forward.

    The forward runs on the real parameters and buffers, as the training step's forward would:
    the returned losses (B,) carry their autograd graph, so ``weighted_mean(losses,
    w).backward()`` finishes the step without a second forward. BatchNorm running statistics
    are updated once and dropout masks are shared by scoring and the step.

    Returns:
        ``(scores, losses)``: scores detached, losses attached to the graph.
    """
    params = _trainable(model)
    buffers = dict(model.named_buffers())
    losses, tangent = _losses_and_jvp(model, loss_fn, inputs, labels, clean_grad, params, buffers)
    return lr * tangent.detach(), losses


def _losses_and_jvp(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                    labels: torch.Tensor, clean_grad: dict[str, torch.Tensor],
                    params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses and their derivative along ``clean_grad``, by forward-mode AD."""
    if set(clean_grad) != set(params):
        raise ValueError("Expected `clean_grad` to hold one tensor per trainable parameter, but "
                         f"got keys {sorted(clean_grad)[:3]}... for {sorted(params)[:3]}...")
    # Dual tensors (torch.autograd.forward_ad) rather than torch.func.jvp: BatchNorm's in-place
    # running-statistic updates are allowed this way. Parameters that require grad keep their
    # reverse-mode graph through make_dual, which the fused path relies on.
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(p, clean_grad[k].to(p)) for k, p in params.items()}
        out = functional_call(model, (duals, buffers), (inputs,))
        primal, tangent = fwAD.unpack_dual(_per_sample(loss_fn, out, labels))
    if tangent is None:  # the losses do not depend on any trainable parameter
        tangent = torch.zeros(inputs.shape[0], device=inputs.device, dtype=primal.dtype)
    return primal, tangent


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


class MetaReweighter(Reweighter):
    r"""Meta-reweighting (L2RW), exact, without the virtual step.

    Last-layer form (no model access; the form the paper's analysis uses): ``weights(logits=...,
    features=..., labels=..., clean_logits=..., clean_features=..., clean_labels=...)`` computes

    .. math::
        u_i = \text{lr}\,(r_i^\top A h_i + r_i^\top a), \qquad
        w_i = \max(u_i,0) / \textstyle\sum_j \max(u_j,0)

    (see :func:`l2rw_last_layer_scores`). Full-network form: build with :meth:`from_model` and
    call :meth:`weights_from_model`.

    Args:
        num_classes: number of classes :math:`C`.
        normalization: ``"sum"`` (L2RW: weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean-one scaling, keeps the scale of an unweighted mean loss) or
            ``"none"`` (:math:`\max(u_i, 0)`).
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        bias: whether the head has a bias (adds the :math:`r_i^\top a` term).
        validate, sync, batch_scope, process_group: see
            :class:`~robustweights.base.Reweighter`. Under ``torch.distributed`` the clean
            statistics (last layer: residual-feature sums, residual sums and count; full network:
            the gradient of the summed clean loss and its count) are summed over ranks
            (``sync``); the ``"sum"``/``"mean"`` denominators :math:`\sum_j \max(u_j, 0)` and
            :math:`B` are taken over every rank's batch with ``batch_scope="global"``, or per rank
            with ``"local"``. The scores :math:`u_i` themselves are per sample, except through
            BatchNorm in train mode, whose batch statistics are per rank under DDP (as in DDP's
            own forward) unless the model uses ``SyncBatchNorm``.

    Attributes:
        last_scores: the raw scores :math:`u` (B,) of the last call, e.g. for a phase monitor.
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
        self.model: nn.Module | None = None
        self.loss_fn: LossFn | None = None
        self.last_scores: torch.Tensor | None = None
        self._clean_grad = CleanStatistics()

    # ------------------------------------------------------------ last-layer closed form
    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return l2rw_clean_sums(inputs["logits"], inputs["features"], inputs["labels"])

    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        dim = stats["resid_feat_sum"].shape[1]
        if batch["features"].shape[1] != dim:
            raise ValueError(f"Expected `features` to have the clean set's dimension D = {dim}, "
                             f"but got {batch['features'].shape[1]}")
        u = l2rw_last_layer_scores(batch["logits"], batch["features"], batch["labels"],
                                   stats["resid_feat_sum"], stats["resid_sum"], stats["count"],
                                   lr=self.lr, bias=self.bias)
        self.last_scores = u.detach()
        return self._normalize(u)

    def _normalize(self, u: torch.Tensor) -> torch.Tensor:
        if self.normalization == "none" or not self._global_batch():
            return normalize_weights(u, self.normalization)
        # One all-reduce of (sum of positive parts, B): the concatenated batch's denominators.
        local = torch.stack([u.clamp_min(0).sum(), u.new_tensor(float(u.shape[0]))])
        total, count = distributed.all_reduce(local, "sum", self.process_group).unbind()
        return normalize_weights(u, self.normalization, total=total, count=count)

    # ------------------------------------------------------------ checkpointing and repr
    def _extra_state(self) -> dict[str, Any]:
        # Full-network form: the cached clean gradient (the model itself is not state).
        return {"clean_gradient": self._clean_grad.state_dict()}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if "clean_gradient" in state:
            grad = dict(state["clean_gradient"])
            if grad and self.model is not None:
                names = set(_trainable(self.model)) | {"__count__"}
                if set(grad) != names:
                    raise ValueError("Expected `state_dict['clean_gradient']` to hold one tensor "
                                     "per trainable parameter of the model, but got keys "
                                     f"{sorted(set(grad) ^ names)[:5]} that differ")
            self._clean_grad.load_state_dict(grad)

    def _repr_args(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "normalization": self.normalization,
                "lr": self.lr, "bias": self.bias}

    # ------------------------------------------------------------ full network
    @classmethod
    def from_model(cls, model: nn.Module, loss_fn: LossFn, *, num_classes: int = 2,
                   **kwargs: Any) -> MetaReweighter:
        """A reweighter computing exact full-network L2RW weights for ``model``.

        Args:
            model: a torch module mapping a batch of inputs to outputs (a
                ``DistributedDataParallel`` wrapper is unwrapped to its ``module``).
            loss_fn: ``loss_fn(outputs, labels)`` returning per-sample losses (B,), e.g.
                ``nn.CrossEntropyLoss(reduction="none")``.
            num_classes: only used by the last-layer form; irrelevant here.
            **kwargs: ``normalization``, ``lr``, ``sync``, ``batch_scope``, ``process_group``.
        """
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module  # the replica's own module; the wrapper's forward would sync
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got "
                            f"{type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"Expected `loss_fn` to be callable, but got {type(loss_fn).__name__}")
        if getattr(loss_fn, "reduction", "none") != "none":
            raise ValueError("Expected `loss_fn` to return per-sample losses (reduction='none'), "
                             f"but got reduction={loss_fn.reduction!r}")  # type: ignore[attr-defined]
        rw = cls(max(num_classes, 2), **kwargs)
        rw.model, rw.loss_fn = model, loss_fn
        return rw

    def _require_model(self) -> tuple[nn.Module, LossFn]:
        if self.model is None or self.loss_fn is None:
            raise ValueError("Expected a reweighter built with `MetaReweighter.from_model`, but "
                             "this one has no model")
        return self.model, self.loss_fn

    def set_clean_inputs(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Cache the clean-loss gradient at the model's *current* parameters.

        The cache is stale as soon as the parameters change; L2RW uses a fresh clean batch per
        step, so passing ``clean_inputs`` to :meth:`weights_from_model` is the usual path.
        """
        self._clean_grad.reset()
        self.update_clean_inputs(inputs, labels)

    def update_clean_inputs(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one clean batch to the cached clean gradient (streaming; a collective under DDP)."""
        model, loss_fn = self._require_model()
        if inputs.shape[0] == 0:
            raise ValueError("Expected `clean_inputs` to hold at least one sample, but got none")
        sums = l2rw_clean_gradient(model, loss_fn, inputs, labels)
        sums["__count__"] = torch.tensor(float(inputs.shape[0]), device=inputs.device)
        self._reduce(sums)
        self._clean_grad.add(**sums)

    def weights_from_model(self, inputs: torch.Tensor, labels: torch.Tensor, *,
                           clean_inputs: torch.Tensor | None = None,
                           clean_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact full-network L2RW weights of a training batch (B,).

        Costs one backward on the clean batch and one forward-mode JVP of the training batch's
        per-sample losses. The model's parameters, buffers (e.g. BatchNorm running statistics),
        train/eval mode, gradients and the global RNG state are left as they were.
        """
        g = self._mean_clean_grad(inputs, clean_inputs, clean_labels)
        model, loss_fn = self._require_model()
        u = l2rw_model_scores(model, loss_fn, inputs, labels, g, lr=self.lr)
        return self._finish_model_scores(u)

    def weights_and_losses(self, inputs: torch.Tensor, labels: torch.Tensor, *,
                           clean_inputs: torch.Tensor | None = None,
                           clean_labels: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights *and* per-sample losses of a training batch from one forward pass.

        The faster path for a training step: it replaces the step's own forward, so exact
        full-network L2RW costs one clean backward and one JVP forward on top of the backward
        of the step (see ``benchmarks/micro.py``)::

            w, losses = meta.weights_and_losses(x, y, clean_inputs=xc, clean_labels=yc)
            weighted_mean(losses, w).backward(); opt.step()

        Unlike :meth:`weights_from_model` this *is* the training forward: BatchNorm running
        statistics are updated once and the RNG advances, as for a plain forward. The weights
        equal :meth:`weights_from_model`'s.

        Returns:
            ``(weights, losses)``, both (B,); the losses carry the autograd graph.
        """
        g = self._mean_clean_grad(inputs, clean_inputs, clean_labels)
        model, loss_fn = self._require_model()
        u, losses = l2rw_model_scores_and_losses(model, loss_fn, inputs, labels, g, lr=self.lr)
        return self._finish_model_scores(u), losses

    def _mean_clean_grad(self, inputs: torch.Tensor, clean_inputs: torch.Tensor | None,
                         clean_labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self._require_model()
        if inputs.shape[0] == 0:
            raise ValueError("Expected `inputs` to hold at least one sample, but got none")
        if clean_inputs is not None:
            if clean_labels is None:
                raise ValueError("Expected `clean_labels` with `clean_inputs`, but got None")
            self.set_clean_inputs(clean_inputs, clean_labels)
        if self._clean_grad.empty:
            raise ValueError("Expected `clean_inputs`/`clean_labels` or a clean gradient cached "
                             "with `set_clean_inputs`, but got neither")
        count = self._clean_grad["__count__"]
        return {k: v / count for k, v in self._clean_grad.items() if k != "__count__"}

    def _finish_model_scores(self, u: torch.Tensor) -> torch.Tensor:
        if self.validate and not bool(torch.isfinite(u).all()):  # the one host sync
            raise ValueError("Expected finite per-sample losses and gradients, but the "
                             "train-clean inner products are NaN/inf: check `inputs` and the model")
        self.last_scores = u
        return self._normalize(u)
