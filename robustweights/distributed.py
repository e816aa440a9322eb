"""torch.distributed support: clean statistics are summed across ranks.

Clean statistics are sums (:mod:`robustweights.clean_stats`), so the global clean set is one
``all_reduce(SUM)`` away. Without an initialised process group every function here is a no-op,
so single-process code pays nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sums", "is_distributed"]


def is_distributed(group: Any = None) -> bool:
    """True when a process group is initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_sums(sums: dict[str, torch.Tensor], group: Any = None) -> None:
    """Sum each tensor of ``sums`` across ranks, in place (a no-op on one process)."""
    if not is_distributed(group):
        return
    for name, value in sums.items():
        value = value.contiguous()
        dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
        sums[name] = value
