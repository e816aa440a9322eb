"""torch.distributed support: the few collectives the reweighters need, each a no-op on one process.

Under PyTorch DDP every rank holds an identical model, its own slice of the training batch and
(usually) its own slice of the clean set. The reweighters give the weights one process would give
on the concatenated data by reducing two kinds of quantities across ranks:

* **Clean-set statistics** are sums (:mod:`robustweights._clean_stats`), so the global clean set
  is one ``all_reduce(SUM)`` away (:func:`all_reduce_sums`): FBR's class feature sums and counts,
  last-layer L2RW's residual-feature sums, residual sums and count, full-network L2RW's gradient
  of the summed clean loss and its count. Controlled by the reweighters' ``sync`` flag.
* **Batch-coupled quantities** (FBR's step :math:`\\eta`, whether any direction is negative, the
  ratio variant's k-th smallest step; L2RW's ``"sum"``/``"mean"`` denominators; the incremental
  store) use :func:`all_reduce`, :func:`k_smallest` and :func:`all_gather_cat`. Controlled by the
  reweighters' ``batch_scope`` (``"global"``, the default, or ``"local"``: per rank).

Every function first checks :func:`is_distributed` (plain Python, no tensor work) and returns its
input untouched without an initialised process group of two or more ranks, so single-process code
pays no collective and no host synchronisation. Under a process group each call is a collective:
every rank must make the same calls in the same order, as with DDP's own forward and backward.
With the NCCL backend, tensors are moved to the current CUDA device for the collective and back.

Example:
    >>> import torch
    >>> from robustweights._distributed import all_reduce, is_distributed
    >>> t = torch.tensor([1.0, 2.0])
    >>> is_distributed(), all_reduce(t, "max") is t     # no process group: returned untouched
    (False, True)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist

__all__ = ["all_gather_cat", "all_reduce", "all_reduce_sums", "global_sum_and_count",
           "is_distributed", "k_smallest"]

_OPS = {"sum": "SUM", "max": "MAX"}


def is_distributed(group: Any = None) -> bool:
    """True when a process group is initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _comm_device(group: Any, device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors; gloo (and MPI) take tensors where they are.
    if dist.get_backend(group) == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def all_reduce_sums(sums: dict[str, torch.Tensor], group: Any = None) -> None:
    """Sum each tensor of ``sums`` across ranks, in place in the dict (a no-op on one process).

    Tensors are flattened into one buffer per dtype, so a full network's clean gradient costs one
    collective, not one per parameter.
    """
    if not is_distributed(group) or not sums:
        return
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, value in sums.items():  # insertion order: identical on every rank
        by_dtype.setdefault(value.dtype, []).append(name)
    for names in by_dtype.values():
        device = sums[names[0]].device
        comm = _comm_device(group, device)
        flat = torch.cat([sums[n].reshape(-1).to(comm) for n in names])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        for name, part in zip(names, flat.split([sums[n].numel() for n in names]),
                              strict=True):
            sums[name] = part.view(sums[name].shape).to(sums[name].device)


def all_reduce(tensor: torch.Tensor, op: Literal["sum", "max"] = "sum", group: Any = None
               ) -> torch.Tensor:
    """The elementwise sum or max of ``tensor`` over ranks, as a new tensor (``tensor`` itself,
    untouched, on one process)."""
    if not is_distributed(group):
        return tensor
    out = tensor.detach().clone().to(_comm_device(group, tensor.device))
    dist.all_reduce(out, op=getattr(dist.ReduceOp, _OPS[op]), group=group)
    return out.to(tensor.device)


def k_smallest(values: torch.Tensor, k: int, group: Any = None) -> torch.Tensor:
    """The ``k`` smallest entries (ascending) of the union over ranks of the 1-D ``values``,
    padded with ``+inf`` when the union has fewer than ``k`` entries.

    Each rank contributes only its own ``k`` smallest (the global ``k`` smallest are among
    them), so ranks may hold different numbers of values. ``k`` must be equal on every rank.
    """
    mine = values.sort().values[:k]
    if mine.shape[0] < k:
        pad = torch.full((k - mine.shape[0],), float("inf"), dtype=mine.dtype, device=mine.device)
        mine = torch.cat([mine, pad])
    if not is_distributed(group):
        return mine
    comm = _comm_device(group, values.device)
    mine = mine.to(comm)
    parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, mine, group=group)
    return torch.cat(parts).sort().values[:k].to(values.device)


def all_gather_cat(*tensors: torch.Tensor, group: Any = None) -> tuple[torch.Tensor, ...]:
    """Concatenate each of ``tensors`` (same length along dim 0 on a rank; lengths may differ
    between ranks) over ranks in rank order. Returns the inputs unchanged on one process."""
    if not is_distributed(group):
        return tensors
    world = dist.get_world_size(group)
    device = tensors[0].device
    comm = _comm_device(group, device)
    n = torch.tensor([tensors[0].shape[0]], device=comm)
    sizes = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    counts = [int(s) for s in sizes]
    longest = max(counts)
    out = []
    for t in tensors:
        padded = t.new_zeros((longest, *t.shape[1:]), device=comm)
        padded[: t.shape[0]] = t.to(comm)
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded, group=group)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]).to(t.device))
    return tuple(out)


def global_sum_and_count(scores: torch.Tensor, group: Any = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The ``"sum"``/``"mean"`` normalisation denominators over every rank's batch:
    :math:`\sum_j \max(u_j, 0)` and :math:`B`, by one all-reduce, in float64 (local values
    without a process group)."""
    u = scores.to(torch.float64)
    local = torch.stack([u.clamp_min(0).sum(), u.new_tensor(float(u.shape[0]))])
    total, count = all_reduce(local, "sum", group).unbind()
    return total, count
