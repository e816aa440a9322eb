r"""Full-network L2RW (meta-reweighting) as stateless functions: one clean backward, one JVP.

Ren, Zeng, Yang, Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018.
The L2RW score of a training sample is the inner product of its loss gradient with the clean-loss
gradient, :math:`u_i = \text{lr}\,\langle \nabla_\theta \ell_i(\theta),
\nabla_\theta L_{clean}(\theta)\rangle` (the derivative of the clean loss after one virtual SGD
step, see :mod:`robustweights.meta`), here over every trainable parameter of a model: the clean
gradient :math:`g` by one backward pass, and all B inner products at once as one forward-mode
JVP of the per-sample losses in the direction :math:`g`.

:func:`model_meta_weights` is the whole method on one batch and one clean batch, the public
function of this module. The kernels it is made of (internal: names and signatures may change)
are what :class:`~robustweights.ModelMetaReweighter` calls, adding only the cached clean
gradient and the distributed reductions. Nothing here communicates across ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call

from robustweights._batch import prepare_batches
from robustweights._numerics import saturate
from robustweights._validation import (
    check_loss_fn,
    check_module,
    check_num_classes,
    check_positive_float,
)
from robustweights.losses import LossFn, per_sample_losses
from robustweights.normalization import Normalization, check_normalization, normalize_weights

__all__ = ["model_meta_weights"]

#: The key of the clean-sample count among the clean gradient's sums.
COUNT = "__count__"


def full_precision(inputs: torch.Tensor) -> torch.autocast:
    """Autocast off on the inputs' device: the clean gradient and the JVP are taken in the
    parameters' dtype, as outside autocast. Forward-mode AD under autocast fails inside torch
    (e.g. an eval-mode BatchNorm mixing float32 and bfloat16 tangents), and the scores are an
    inner product of two gradients that low precision would distort."""
    return torch.autocast(device_type=inputs.device.type, enabled=False)


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


def labelled_losses(loss_fn: LossFn, outputs: torch.Tensor, labels: torch.Tensor,
                    name: str = "labels") -> torch.Tensor:
    """Per-sample losses; a label the loss cannot index (e.g. ``>= C`` for cross entropy, which
    raises ``IndexError`` on the CPU) is a ``ValueError`` naming ``name``. Without
    ``num_classes`` this is the only check of the labels' upper end (on a GPU torch's own
    device-side assert fires instead: pass ``num_classes``)."""
    try:
        return per_sample_losses(loss_fn, outputs, labels)
    except IndexError as exc:
        raise ValueError(f"Expected `{name}` to be class indices `loss_fn` accepts for outputs of "
                         f"shape {tuple(outputs.shape)}, but it raised IndexError ({exc}): pass "
                         "`num_classes` to have labels checked up front") from exc


def trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the scores are taken over: those that require a gradient, by name."""
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


def clean_gradient_sums(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                        labels: torch.Tensor, *, name: str = "clean_labels"
                        ) -> dict[str, torch.Tensor]:
    r"""Additive clean statistics: the gradient of the *summed* clean loss
    :math:`\nabla_\theta\sum_j \ell_j(\theta)` keyed by parameter name, and the count
    :math:`M` under :data:`COUNT` (in the gradient's dtype: one buffer, one collective). Sums
    make streaming and distributed accumulation exact. An empty batch (a distributed rank with
    no clean sample) gives zeros without a forward (which e.g. BatchNorm refuses)."""
    params = trainable(model)
    if inputs.shape[0] == 0:
        sums = {k: torch.zeros_like(v).detach() for k, v in params.items()}
    else:
        with preserved_state(model) as buffers, full_precision(inputs):
            leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
            out = functional_call(model, (leaves, buffers), (inputs,))
            total = labelled_losses(loss_fn, out, labels, name).sum()
            grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
        sums = {k: (g if g is not None else torch.zeros_like(v)).detach()
                for (k, v), g in zip(leaves.items(), grads, strict=True)}
    dtype = next(iter(sums.values())).dtype if sums else torch.float32
    sums[COUNT] = torch.tensor(float(inputs.shape[0]), device=inputs.device, dtype=dtype)
    return sums


def mean_clean_gradient(sums: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    r""":math:`g = \nabla_\theta \frac1M \sum_j \ell_j` from :func:`clean_gradient_sums`."""
    count = sums[COUNT].clamp_min(1)
    return {k: v / count for k, v in sums.items() if k != COUNT}


def model_scores(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, labels: torch.Tensor,
                 clean_grad: dict[str, torch.Tensor], *, lr: float = 1.0) -> torch.Tensor:
    r"""Exact full-network L2RW scores :math:`u_i = \text{lr}\,\langle\nabla\ell_i, g\rangle`.

    All B inner products come from one forward-mode JVP (dual numbers) of the vector of
    per-sample losses :math:`\theta \mapsto (\ell_1, \dots, \ell_B)` in the direction
    :math:`g` (the clean-loss gradient, keyed like ``model.named_parameters()``, trainable ones
    only). BatchNorm in train mode couples the samples of a batch; the JVP is still the exact
    derivative of each loss, as in the original's lookahead. The model's buffers and the RNG
    are left as they were (:func:`preserved_state`).
    """
    params = {k: v.detach() for k, v in trainable(model).items()}
    with preserved_state(model) as buffers:
        _, tangent = losses_and_jvp(model, loss_fn, inputs, labels, clean_grad, params, buffers)
    return lr * tangent.detach()


def model_scores_and_losses(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
                            labels: torch.Tensor, clean_grad: dict[str, torch.Tensor], *,
                            lr: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The scores of :func:`model_scores` *and* the per-sample losses from one forward.

    The forward runs on the real parameters and buffers, as the training step's forward would:
    the returned losses (B,) carry their autograd graph, so ``weighted_mean(losses,
    w).backward()`` finishes the step without a second forward. BatchNorm running statistics
    are updated once and dropout masks are shared by scoring and the step.

    Returns:
        ``(scores, losses)``: scores detached, losses attached to the graph.
    """
    params = trainable(model)
    buffers = dict(model.named_buffers())
    losses, tangent = losses_and_jvp(model, loss_fn, inputs, labels, clean_grad, params, buffers)
    return lr * tangent.detach(), losses


def losses_and_jvp(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor,
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
    with fwAD.dual_level(), full_precision(inputs):
        duals = {k: fwAD.make_dual(p, clean_grad[k].to(p)) for k, p in params.items()}
        out = functional_call(model, (duals, buffers), (inputs,))
        primal, tangent = fwAD.unpack_dual(labelled_losses(loss_fn, out, labels))
    if tangent is None:  # the losses do not depend on any trainable parameter
        tangent = torch.zeros(inputs.shape[0], device=inputs.device, dtype=primal.dtype)
    return primal, tangent


def check_clean_gradient(sums: Mapping[str, torch.Tensor]) -> None:
    """A finite clean gradient (one host synchronisation): NaN/inf means a bad clean batch or a
    broken model."""
    if sums and not bool(torch.stack([torch.isfinite(g).all() for g in sums.values()]).all()):
        raise ValueError("Expected the clean gradient to be finite, but got NaN/inf: check the "
                         "clean batch (`clean_inputs`, `clean_labels`, or the `inputs`, `labels` "
                         "of `set_clean`/`update_clean`) and the model")


def check_scores(u: torch.Tensor) -> None:
    """Finite scores (one host synchronisation): NaN/inf means bad inputs or a broken model."""
    if not bool(torch.isfinite(u).all()):
        raise ValueError("Expected the train-clean gradient inner products to be finite, but got "
                         "NaN/inf: check `inputs`, `labels` and the model")


def model_weights_from_scores(u: torch.Tensor, normalization: Normalization, *,
                              total: torch.Tensor | None = None,
                              count: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised weights in the scores' dtype (normalised in float64: the sum of positive parts
    cannot overflow; saturated on the way back). ``total``/``count``: the denominators over a
    larger batch (e.g. every distributed rank's)."""
    w = normalize_weights(u.to(torch.float64), normalization, total=total, count=count)
    return saturate(w, u.dtype)


def model_meta_weights(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor, labels: Any,
                       clean_inputs: torch.Tensor, clean_labels: Any, *, lr: float = 1.0,
                       normalization: Normalization = "sum", num_classes: int | None = None,
                       validate: bool = True) -> torch.Tensor:
    r"""Exact full-network L2RW weights of one training batch against one clean batch,
    statelessly.

    .. math::
        u_i = \text{lr}\,\langle \nabla_\theta \ell_i(\theta), g\rangle, \quad
        g = \nabla_\theta \tfrac1M \textstyle\sum_j \ell(x^{c}_j, y^{c}_j), \qquad
        w_i = \max(u_i, 0) / \textstyle\sum_j \max(u_j, 0)

    over every trainable parameter :math:`\theta` of ``model``: one backward on the clean batch
    for :math:`g`, one forward-mode JVP of the training batch's per-sample losses for all
    :math:`u_i`. The functional twin of :class:`~robustweights.ModelMetaReweighter`: the same
    numbers as ``ModelMetaReweighter(model, loss_fn, ...).weights(...)`` on one process; no
    state, no cache, no collective. The model's parameters, buffers, mode, gradients and the RNG
    are left untouched.

    Args:
        model: a torch module mapping a batch of inputs to outputs (a DDP/DataParallel wrapper
            is unwrapped to its module).
        loss_fn: ``loss_fn(outputs, labels)`` returning per-sample losses (B,), e.g.
            ``nn.CrossEntropyLoss(reduction="none")``.
        inputs, labels: the training batch: the model's input (a tensor with B rows) and (B,)
            integer class labels.
        clean_inputs, clean_labels: the clean batch, M rows.
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        normalization: ``"sum"`` (weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean one) or ``"none"`` (:math:`\max(u_i, 0)`).
        num_classes: :math:`C`, to check that labels lie in :math:`[0, C)`; default: labels are
            checked to be non-negative (the loss function sees the upper end).
        validate: check the batches (shapes, label range) and that the scores are finite, as
            torchmetrics' ``validate_args``; ``False`` skips these checks (and their host
            synchronisations) in a hot loop whose inputs are known good. Options are always
            checked.

    Returns:
        (B,) torch tensor of weights, in the dtype of the per-sample losses.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.zero_()                            # an untrained head
        >>> x, y = torch.eye(2), torch.tensor([0, 0])
        >>> w = model_meta_weights(net, nn.CrossEntropyLoss(reduction="none"), x, y, x[:1], y[:1])
        >>> w.tolist() == [1.0, 0.0]           # the sample like the clean one gets all the weight
        True
    """
    model = check_module(model)
    loss_fn = check_loss_fn(loss_fn)
    lr = check_positive_float(lr, "lr")
    normalization = check_normalization(normalization)
    num_classes = None if num_classes is None else check_num_classes(num_classes)
    batches = prepare_batches({"": {"inputs": inputs, "labels": labels},
                               "clean_": {"inputs": clean_inputs, "labels": clean_labels}},
                              ("inputs", "labels"), num_classes=num_classes, validate=validate)
    x, xc = batches[""], batches["clean_"]
    sums = clean_gradient_sums(model, loss_fn, xc["inputs"], xc["labels"])
    if validate:
        check_clean_gradient(sums)
    g = mean_clean_gradient(sums)
    u = model_scores(model, loss_fn, x["inputs"], x["labels"], g, lr=lr)
    if validate:
        check_scores(u)
    return model_weights_from_scores(u, normalization)
