r"""Full-network meta-reweighting (L2RW) for a torch model: one clean backward plus one JVP.

Ren, Zeng, Yang, Urtasun, "Learning to Reweight Examples for Robust Deep Learning", ICML 2018.
The L2RW score of a training sample is the inner product of its loss gradient with the clean-loss
gradient, :math:`u_i = \text{lr}\,\langle \nabla_\theta \ell_i(\theta),
\nabla_\theta L_{clean}(\theta)\rangle` (see :mod:`robustweights.meta` for the derivation from
the virtual step). Here it is computed exactly over every trainable parameter of a model: the
clean gradient :math:`g` by one backward pass, and all B inner products at once as one
forward-mode JVP of the per-sample losses in the direction :math:`g`.
:class:`ModelMetaReweighter` holds the model, the loss and the cached clean gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call

from robustweights import distributed
from robustweights.clean_stats import CleanStatistics
from robustweights.normalization import Normalization, check_normalization, normalize_weights
from robustweights.state import STATE_VERSION, check_state_dict
from robustweights.validation import check_batch_scope, check_positive_float

__all__ = [
    "ModelMetaReweighter",
    "l2rw_clean_gradient",
    "l2rw_model_scores",
    "l2rw_model_scores_and_losses",
    "preserved_state",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


class ModelMetaReweighter:
    r"""Exact full-network L2RW weights for a torch model, without the virtual step.

    .. math::
        u_i = \text{lr}\,\langle \nabla_\theta \ell_i(\theta), g\rangle, \quad
        g = \nabla_\theta \tfrac1M \textstyle\sum_j \ell(x^{c}_j, y^{c}_j), \qquad
        w_i = \max(u_i, 0) / \textstyle\sum_j \max(u_j, 0)

    over every trainable parameter :math:`\theta` of ``model`` (one backward on the clean batch
    for :math:`g`, one forward-mode JVP of the training batch's per-sample losses for all
    :math:`u_i`). Tested against autograd through the literal virtual SGD step. The model's
    parameters, buffers, mode, gradients and the RNG are left untouched by :meth:`weights`.

    Args:
        model: a torch module mapping a batch of inputs to outputs (a
            ``DistributedDataParallel`` or ``DataParallel`` wrapper is unwrapped to its module).
        loss_fn: ``loss_fn(outputs, labels)`` returning per-sample losses (B,), e.g.
            ``nn.CrossEntropyLoss(reduction="none")``.
        lr: the virtual step's learning rate; scales :math:`u` (irrelevant after normalisation).
        normalization: ``"sum"`` (L2RW: weights sum to one, all zero when no sample helps),
            ``"mean"`` (mean one) or ``"none"`` (:math:`\max(u_i, 0)`).
        validate: check that the scores are finite (one host synchronisation per call).
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

    def __init__(self, model: nn.Module, loss_fn: LossFn, *, lr: float = 1.0,
                 normalization: Normalization = "sum", validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
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
        self.model = model
        self.loss_fn = loss_fn
        self.lr = check_positive_float(lr, "lr")
        self.normalization = check_normalization(normalization)
        self.validate = bool(validate)
        self.sync = bool(sync)
        self.batch_scope = check_batch_scope(batch_scope)
        self.process_group = process_group
        self.last_scores: torch.Tensor | None = None
        self.clean = CleanStatistics()  # gradient of the summed clean loss, and "__count__"

    # ------------------------------------------------------------ clean gradient
    def set_clean(self, *, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Cache the clean-loss gradient at the model's *current* parameters.

        The cache is stale as soon as the parameters change; L2RW uses a fresh clean batch per
        step, so passing ``clean_inputs`` to :meth:`weights` is the usual path.
        """
        self.reset_clean()
        self.update_clean(inputs=inputs, labels=labels)

    def update_clean(self, *, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one clean batch to the cached clean gradient (streaming: several calls give the
        gradient of their union). Nothing is communicated: under ``torch.distributed`` the
        gradients are reduced once, at the next ``weights`` call or :meth:`sync_clean`. A rank
        with no clean sample passes an empty batch, which adds zeros."""
        self._add_clean(inputs, labels, "inputs")

    def reset_clean(self) -> None:
        """Forget the cached clean gradient."""
        self.clean.reset()

    def sync_clean(self) -> None:
        """Reduce the clean gradient added since the last sync across ranks now (one
        collective per dtype; every rank must call it). ``weights`` does this when needed."""
        if not self.clean.pending:
            return
        self.clean.sync(self._reduce)
        if self.validate and float(self.clean["__count__"]) == 0:
            raise ValueError("Expected the clean set to hold at least one sample over all "
                             "ranks, but got none")

    def _shards_clean(self) -> bool:
        return self.sync and distributed.is_distributed(self.process_group)

    def _add_clean(self, inputs: Any, labels: Any, name: str) -> None:
        inputs = _check_inputs(inputs, name)
        if inputs.shape[0] == 0:
            if not self._shards_clean():
                raise ValueError(f"Expected `{name}` to hold at least one sample, but got none")
            # This rank holds no clean sample: it contributes zeros (no forward of an empty
            # batch, which e.g. BatchNorm refuses).
            sums = {k: torch.zeros_like(v) for k, v in _trainable(self.model).items()}
        else:
            sums = l2rw_clean_gradient(self.model, self.loss_fn, inputs, labels)
        # The count in the gradient's dtype: one buffer, so one collective, per sync.
        dtype = next(iter(sums.values())).dtype if sums else torch.float32
        sums["__count__"] = torch.tensor(float(inputs.shape[0]), device=inputs.device,
                                         dtype=dtype)
        self.clean.add(**sums)

    # ------------------------------------------------------------ weights
    def weights(self, *args: Any, inputs: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, clean_inputs: torch.Tensor | None = None,
                clean_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Exact full-network L2RW weights of a training batch (B,).

        Pass a clean batch (``clean_inputs``, ``clean_labels``) or omit it to use the gradient
        cached by :meth:`set_clean`. Costs one backward on the clean batch and one forward-mode
        JVP of the training batch's per-sample losses. The model's parameters, buffers (e.g.
        BatchNorm running statistics), train/eval mode, gradients and the global RNG state are
        left as they were.
        """
        _keywords_only("weights", args)
        inputs, labels, g = self._prepare(inputs, labels, clean_inputs, clean_labels)
        u = l2rw_model_scores(self.model, self.loss_fn, inputs, labels, g, lr=self.lr)
        return self._finish(u)

    def weights_and_losses(self, *args: Any, inputs: torch.Tensor | None = None,
                           labels: torch.Tensor | None = None,
                           clean_inputs: torch.Tensor | None = None,
                           clean_labels: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights *and* per-sample losses of a training batch from one forward pass.

        The faster path for a training step: it replaces the step's own forward, so exact
        full-network L2RW costs one clean backward and one JVP forward on top of the backward
        of the step::

            w, losses = rw.weights_and_losses(inputs=x, labels=y, clean_inputs=xc,
                                              clean_labels=yc)
            weighted_mean(losses, w).backward(); opt.step()

        Unlike :meth:`weights` this *is* the training forward: BatchNorm running statistics are
        updated once and the RNG advances, as for a plain forward. The weights equal
        :meth:`weights`'.

        Returns:
            ``(weights, losses)``, both (B,); the losses carry the autograd graph.
        """
        _keywords_only("weights_and_losses", args)
        inputs, labels, g = self._prepare(inputs, labels, clean_inputs, clean_labels)
        u, losses = l2rw_model_scores_and_losses(self.model, self.loss_fn, inputs, labels, g,
                                                 lr=self.lr)
        return self._finish(u), losses

    def _prepare(self, inputs: Any, labels: Any, clean_inputs: Any, clean_labels: Any
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        inputs = _check_inputs(inputs, "inputs")
        if labels is None:
            raise ValueError("Expected `labels` to be given, but got None")
        if inputs.shape[0] == 0:
            raise ValueError("Expected `inputs` to hold at least one sample, but got none")
        if clean_inputs is not None and clean_labels is None:
            raise ValueError("Expected `clean_labels` with `clean_inputs`, but got None")
        if clean_labels is not None and clean_inputs is None:
            raise ValueError("Expected `clean_inputs` with `clean_labels`, but got None")
        if clean_inputs is not None:
            self.reset_clean()
            self._add_clean(clean_inputs, clean_labels, "clean_inputs")
        if self.clean.empty:
            raise ValueError("Expected `clean_inputs`/`clean_labels` or a clean gradient cached "
                             "with `set_clean`, but got neither")
        self.sync_clean()  # one collective for every clean batch since the last use
        param = next(iter(_trainable(self.model).values()), None)
        if param is not None:  # a loaded (CPU) state moves to the model's device once
            self.clean.to(param.device)
        count = self.clean["__count__"].clamp_min(1)
        g = {k: v / count for k, v in self.clean.items() if k != "__count__"}
        return inputs, labels, g

    def _finish(self, u: torch.Tensor) -> torch.Tensor:
        if self.validate and not bool(torch.isfinite(u).all()):  # the one host sync
            raise ValueError("Expected finite per-sample losses and gradients, but the "
                             "train-clean inner products are NaN/inf: check `inputs` and the model")
        self.last_scores = u
        total = count = None
        if (self.normalization != "none" and self.sync and self.batch_scope == "global"
                and distributed.is_distributed(self.process_group)):
            total, count = distributed.global_sum_and_count(u, self.process_group)
        # float64: the sum of positive parts cannot overflow
        w = normalize_weights(u.to(torch.float64), self.normalization, total=total, count=count)
        return w.to(u.dtype)

    def _reduce(self, sums: dict[str, torch.Tensor]) -> None:
        if self.sync:
            distributed.all_reduce_sums(sums, self.process_group)

    # ------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The cached clean gradient (CPU tensors keyed by parameter name, and its count). The
        model and the loss function are not state, as an LR scheduler leaves out its
        optimizer: load into a reweighter built on the same architecture.

        Raises:
            RuntimeError: under ``torch.distributed`` with clean batches not yet reduced: call
                :meth:`sync_clean` on every rank first (a rank's unreduced share, loaded on
                every rank, would be summed once per rank).
        """
        _check_synced(self.clean, self._shards_clean())
        return {"_version": STATE_VERSION, "clean": self.clean.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`; the gradient moves to the model's device lazily.

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer layout, or a
                gradient whose parameter names differ from the model's trainable parameters.
        """
        check_state_dict(state_dict, owner="ModelMetaReweighter", keys=("clean",), config={},
                         strict=strict)
        if "clean" not in state_dict:
            return
        clean = state_dict["clean"]
        names = set(_trainable(self.model)) | {"__count__"}
        for part in ("reduced", "pending"):
            grad = clean.get(part, {}) if isinstance(clean, dict) else {}
            if grad and set(grad) != names:
                raise ValueError("Expected `state_dict['clean']` to hold one tensor per "
                                 "trainable parameter of the model, but these keys differ: "
                                 f"{sorted(set(grad) ^ names)[:5]}")
        self.clean.load_state_dict(clean)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["process_group"] = None  # a live communicator handle cannot be pickled
        return state

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, "
                f"loss_fn={self.loss_fn!r}, lr={self.lr!r}, "
                f"normalization={self.normalization!r})")


class _DeprecatedModelMetaReweighter(ModelMetaReweighter):
    """What ``MetaReweighter.from_model`` returns: the new class plus the old method names
    (positional batch inputs accepted), each with a ``DeprecationWarning``."""

    def weights_from_model(self, inputs: torch.Tensor, labels: torch.Tensor, *,
                           clean_inputs: torch.Tensor | None = None,
                           clean_labels: torch.Tensor | None = None) -> torch.Tensor:
        _deprecated("weights_from_model(x, y, ...)", "weights(inputs=x, labels=y, ...)")
        return self.weights(inputs=inputs, labels=labels, clean_inputs=clean_inputs,
                            clean_labels=clean_labels)

    def set_clean_inputs(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        _deprecated("set_clean_inputs(x, y)", "set_clean(inputs=x, labels=y)")
        self.set_clean(inputs=inputs, labels=labels)

    def update_clean_inputs(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        _deprecated("update_clean_inputs(x, y)", "update_clean(inputs=x, labels=y)")
        self.update_clean(inputs=inputs, labels=labels)

    def weights_and_losses(self, *args: Any, **kwargs: Any
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        if args:
            _deprecated("weights_and_losses(x, y, ...)", "weights_and_losses(inputs=x, "
                        "labels=y, ...)")
            kwargs.update(zip(("inputs", "labels"), args, strict=False))
        return super().weights_and_losses(**kwargs)


def _check_synced(stats: CleanStatistics, distributed_clean: bool) -> None:
    if distributed_clean and stats.pending:
        raise RuntimeError("Expected the clean statistics to be reduced across ranks before "
                           "`state_dict()`, but some are pending: call `sync_clean()` on every "
                           "rank first")


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"`MetaReweighter.from_model(...).{old}` is deprecated: use "
                  f"`ModelMetaReweighter(model, loss_fn, ...).{new}`", DeprecationWarning,
                  stacklevel=3)


def _keywords_only(method: str, args: tuple[Any, ...]) -> None:
    if args:
        raise TypeError(f"{method}() takes its batch inputs as keyword arguments only (e.g. "
                        f"`{method}(inputs=x, labels=y)`), but got {len(args)} positional "
                        "argument(s)")


def _check_inputs(x: Any, name: str) -> torch.Tensor:
    if x is None:
        raise ValueError(f"Expected `{name}` to be given, but got None")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor (the model's input), but got "
                        f"{type(x).__name__}")
    return x
