r"""Early-learning regularisation (ELR; Liu, Niles-Weed, Razavian and Fernandez-Granda, NeurIPS
2020): tame the wrong labels a filter keeps by holding each sample's prediction near the running
average of its own earlier predictions.

A network fits the correct labels first and memorises the wrong ones later. While it is still
in that early phase, its predictions of a wrongly labelled image point at the true class; ELR
keeps them there with a penalty added to the supervised loss:

.. math::
    \mathcal L = \frac1B \sum_i w_i\,\ell(z_i, y_i)
        + \lambda\,\frac1B \sum_i \log\bigl(1 - \langle p_i, t_i\rangle\bigr),
    \qquad p_i = \mathrm{clip}(\mathrm{softmax}(z_i), \epsilon, 1 - \epsilon),

    t_i \leftarrow \beta\, t_i + (1 - \beta)\, \frac{\bar p_i}{\lVert \bar p_i \rVert_1}
    \quad \text{at each visit of sample } i \;(t_i = 0 \text{ before the first}),

with :math:`\bar p_i` the clipped prediction of the sample (detached). Its gradient (where no
probability is clipped),

.. math::
    \frac{\partial}{\partial z_i} \log(1 - \langle p_i, t_i\rangle)
        = \frac{p_i \odot (\langle p_i, t_i\rangle\,\mathbf 1 - t_i)}{1 - \langle p_i, t_i\rangle},

adds to CE's :math:`p_i - e_{y_i}` a pull of :math:`p_i` towards :math:`t_i`: where the label is
wrong and :math:`t_i` points elsewhere, it cancels the push towards the label.

* :func:`elr_penalty`: the penalty of one batch, pure;
* :class:`PredictionAverage`: the running targets :math:`t` (state: one row per sample,
  checkpointed exactly; synchronised over a process group so every rank holds the same table).

The paper's values for CIFAR-10: :math:`\lambda = 3`, :math:`\beta = 0.7`. The term trusts
the network's early predictions: where they are poor (a small network, weak augmentation), it
holds the network to its own mistakes. In both presets of the CIFAR-N benchmark (a width-16
CNN) it lowered accuracy at every strength tried, with and without the filter
(``docs/recipes.md``): measure it against CE with the same term before relying on it.

Example:
    >>> import torch
    >>> avg = PredictionAverage(num_classes=3, momentum=0.7)
    >>> z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]], requires_grad=True)
    >>> t = avg.update(torch.tensor([4, 1]), z.detach())   # the samples' running targets
    >>> loss = torch.nn.functional.cross_entropy(z, torch.tensor([0, 1])) + 3.0 * elr_penalty(z, t)
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from robustweights._data import check_batch_logits
from robustweights._distributed import all_gather_cat
from robustweights._state import STATE_VERSION, check_state_dict, cpu_copy
from robustweights._validation import check_num_classes, check_sample_ids

__all__ = ["PredictionAverage", "elr_penalty"]

_EPS = 1e-4  # the clip of the paper's code: keeps log(1 - <p, t>) finite


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 0.5:
        raise ValueError(f"Expected `eps` to be a float in (0, 0.5), but got {eps!r}")
    return float(eps)


def _clipped_probs(logits: torch.Tensor, eps: float) -> torch.Tensor:
    # half-precision logits (AMP) are promoted: the clip at 1e-4 is below float16's resolution
    # near 1
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    return torch.softmax(z, dim=1).clamp(eps, 1.0 - eps)


def elr_penalty(logits: torch.Tensor, targets: torch.Tensor, *, eps: float = _EPS,
                reduction: Literal["mean", "sum", "none"] = "mean") -> torch.Tensor:
    r"""The ELR penalty :math:`\log(1 - \langle p_i, t_i\rangle)` of one batch (module
    docstring), averaged over the batch (``"mean"``), summed, or per sample (``"none"``).
    Gradients flow into ``logits`` only; ``targets`` are detached. Pure. An empty batch gives 0.

    Multiply by :math:`\lambda` and add to the supervised loss. With mixup, pass the mixed
    batch's logits and the targets mixed with the same :math:`\lambda` and permutation.

    Args:
        logits: (B, C) the training forward's logits.
        targets: (B, C) the samples' running targets, e.g. :meth:`PredictionAverage.update`
            (rows of non-negative numbers summing to at most 1).
        eps: the clip :math:`\epsilon` of the probabilities, in (0, 0.5).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> z = torch.zeros(1, 2)
        >>> elr_penalty(z, torch.tensor([[1.0, 0.0]]))      # log(1 - 0.5)
        tensor(-0.6931)
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"Expected `logits` to be a torch.Tensor, but got "
                        f"{type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"Expected `logits` to have shape (B, C), but got "
                         f"{tuple(logits.shape)}")
    check_batch_logits(targets, logits.shape[0], logits.shape[1], "targets")
    _check_eps(eps)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"Expected `reduction` to be 'mean', 'sum' or 'none', but got "
                         f"{reduction!r}")
    if logits.shape[0] == 0:
        return logits.sum() * 0.0 if reduction != "none" else logits.new_zeros(0)
    p = _clipped_probs(logits, eps)
    t = targets.detach().to(device=p.device, dtype=p.dtype)
    # <p, t> <= (1 - eps) * sum(t) <= 1 - eps for rows summing to at most 1: log stays finite.
    dot = (p * t).sum(1).clamp(max=1.0 - eps)
    per_sample = torch.log1p(-dot)
    if reduction == "none":
        return per_sample
    return per_sample.mean() if reduction == "mean" else per_sample.sum()


class PredictionAverage:
    r"""The running targets :math:`t_i` of ELR: an exponential moving average, per sample, of
    the network's clipped and normalised predictions (module docstring).

    Rows are indexed by the caller's sample ids (e.g. dataset indices); the table grows to the
    largest id seen and starts at 0. It lives on the device of the first logits it is given.

    Under ``torch.distributed`` with ``sync=True`` (the default), :meth:`update` gathers every
    rank's ids and predictions first, so that every rank holds the table one process would hold
    on the concatenated batch (a DistributedSampler sends a sample to a different rank each
    epoch); each rank gets back the rows of its own ids. Every rank must call :meth:`update` the
    same number of times. Ids should be unique within one update (over all ranks): a repeated
    id keeps one of its rows.

    Args:
        num_classes: :math:`C`.
        momentum: :math:`\beta \in [0, 1)`, the weight of the previous target.
        eps: the clip :math:`\epsilon` of the probabilities, in (0, 0.5).
        sync: gather across the process group before updating.
        group: the process group (default: the world).
    """

    def __init__(self, num_classes: int, *, momentum: float = 0.7, eps: float = _EPS,
                 sync: bool = True, group: Any = None) -> None:
        self.num_classes = check_num_classes(num_classes)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0 <= momentum < 1:
            raise ValueError(f"Expected `momentum` to be a float in [0, 1), but got {momentum!r}")
        self.momentum, self.eps = float(momentum), _check_eps(eps)
        self.sync, self.group = bool(sync), group
        self.targets: torch.Tensor | None = None  # (N, C) float32, rows of unseen ids 0

    def __repr__(self) -> str:
        n = 0 if self.targets is None else self.targets.shape[0]
        return (f"PredictionAverage(num_classes={self.num_classes}, momentum={self.momentum}, "
                f"eps={self.eps}, samples={n})")

    def _cover(self, n: int, device: torch.device) -> torch.Tensor:
        if self.targets is None:
            self.targets = torch.zeros(n, self.num_classes, device=device)
        self.targets = self.targets.to(device)
        if n > self.targets.shape[0]:
            grow = self.targets.new_zeros(n - self.targets.shape[0], self.num_classes)
            self.targets = torch.cat([self.targets, grow])
        return self.targets

    @torch.no_grad()
    def update(self, sample_ids: Any, logits: torch.Tensor) -> torch.Tensor:
        r"""Move the targets of ``sample_ids`` towards the predictions ``softmax(logits)``
        (clipped, normalised) and return the updated rows (B, C), detached.

        Args:
            sample_ids: (B,) non-negative integer ids of the batch's samples.
            logits: (B, C) the network's logits of those samples (any forward: ELR's own code
                takes the training forward's; with mixup, an un-mixed forward's).
        """
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"Expected `logits` to be a torch.Tensor, but got "
                            f"{type(logits).__name__}")
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"Expected `logits` to have shape (B, {self.num_classes}), but got "
                             f"{tuple(logits.shape)}")
        if not bool(torch.isfinite(logits).all()):  # a NaN row would stay in the table for good
            raise ValueError("Expected `logits` to be finite, but got NaN or inf entries")
        ids = check_sample_ids(sample_ids, logits.shape[0]).to(logits.device)
        p = _clipped_probs(logits.detach(), self.eps)
        p = p / p.sum(1, keepdim=True)
        all_ids, all_p = (all_gather_cat(ids, p, group=self.group) if self.sync else (ids, p))
        table = self._cover(int(all_ids.max()) + 1 if all_ids.numel() else 0, logits.device)
        table[all_ids] = self.momentum * table[all_ids] + (1 - self.momentum) * all_p.to(table)
        return table[ids].clone()

    def reset(self) -> None:
        """Forget every target (all rows 0)."""
        self.targets = None

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The table as a CPU copy (None before the first update) and the configuration."""
        return {"_version": STATE_VERSION, "num_classes": self.num_classes,
                "momentum": self.momentum, "eps": self.eps, "targets": cpu_copy(self.targets)}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore :meth:`state_dict`; a different ``num_classes``, ``momentum`` or ``eps`` is
        refused (``ValueError`` naming the key)."""
        check_state_dict(state_dict, owner="PredictionAverage",
                         keys=("num_classes", "momentum", "eps", "targets"),
                         config={"num_classes": self.num_classes, "momentum": self.momentum,
                                 "eps": self.eps}, strict=strict)
        t = state_dict.get("targets")
        if t is not None and (not isinstance(t, torch.Tensor) or t.ndim != 2
                              or t.shape[1] != self.num_classes):
            raise ValueError(f"Expected `state_dict['targets']` to be None or a (N, "
                             f"{self.num_classes}) tensor, but got {t!r:.80}")
        self.targets = None if t is None else t.detach().to(torch.float32, copy=True)
