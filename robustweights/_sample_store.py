"""Per-sample values kept across batches and epochs, indexed by sample id.

What FBR's incremental mode keeps (a weight per sample), what a recipe's smoothing keeps (a
running average per sample) and what the phase monitor keeps to freeze the weights (the last
weight per sample) is one structure: a 1-D tensor indexed by the sample ids of the batches,
grown to the largest id seen, with a mask of the ids written so far. It follows the device and
dtype of the values it is given, as the reweighters' state does, and saves as CPU tensors
(:mod:`robustweights._state`).
"""

from __future__ import annotations

from typing import Any

import torch

from robustweights._state import cpu_copy

__all__ = ["SampleStore"]


class SampleStore:
    """A value per sample id; ids never written read as ``fill``.

    Args:
        fill: the value of an id not written yet (e.g. FBR's :math:`w_0`).

    Example:
        >>> import torch
        >>> store = SampleStore(fill=0.5)
        >>> store.gather(torch.tensor([3, 1]), like=torch.zeros(2)).tolist()
        [0.5, 0.5]
        >>> store.scatter(torch.tensor([3]), torch.tensor([0.75]))
        >>> store.gather(torch.tensor([1, 3]), like=torch.zeros(2)).tolist()
        [0.5, 0.75]
        >>> len(store), store.seen.tolist()
        (4, [False, False, False, True])
    """

    def __init__(self, fill: float = 0.0) -> None:
        self.fill = float(fill)
        self.reset()

    def reset(self) -> None:
        """Forget every value."""
        self.values: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None  # bool, True where an id was written

    def __len__(self) -> int:
        return 0 if self.values is None else int(self.values.shape[0])

    def _cover(self, ids: torch.Tensor, like: torch.Tensor) -> None:
        """Grow to the largest id in ``ids`` (new entries ``fill``, unseen) and move to the
        device and dtype of ``like``."""
        need = int(ids.max()) + 1 if ids.numel() else 0
        if self.values is None or self.seen is None:
            self.values = torch.full((need,), self.fill, dtype=like.dtype, device=like.device)
            self.seen = torch.zeros(need, dtype=torch.bool, device=like.device)
            return
        self.values = self.values.to(device=like.device, dtype=like.dtype)
        self.seen = self.seen.to(like.device)
        if need > self.values.shape[0]:
            grow = need - self.values.shape[0]
            self.values = torch.cat([self.values, self.values.new_full((grow,), self.fill)])
            self.seen = torch.cat([self.seen, self.seen.new_zeros(grow)])

    def gather(self, ids: torch.Tensor, *, like: torch.Tensor) -> torch.Tensor:
        """The values of ``ids`` (``fill`` for ids not written), growing the store to cover them;
        the store moves to the device and dtype of ``like`` (e.g. the batch's directions)."""
        self._cover(ids, like)
        assert self.values is not None
        return self.values[ids]

    def scatter(self, ids: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` at ``ids`` (growing the store; it takes their device and dtype)."""
        self._cover(ids, values)
        assert self.values is not None and self.seen is not None
        self.values[ids] = values
        self.seen[ids] = True

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, known)`` at ``ids`` without growing the store, on its device: ``known`` is
        False for ids never written (their value reads as ``fill``)."""
        if self.values is None or self.seen is None or len(self) == 0:
            return (torch.full(ids.shape, self.fill, dtype=torch.float64, device=ids.device),
                    torch.zeros(ids.shape, dtype=torch.bool, device=ids.device))
        ids = ids.to(self.values.device)
        idx = ids.clamp(max=len(self) - 1)
        known = (ids < len(self)) & self.seen[idx]
        return torch.where(known, self.values[idx], self.fill), known

    # ----------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The values and the written mask as CPU copies (None before the first write)."""
        return {"values": cpu_copy(self.values), "seen": cpu_copy(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the tensors move to the next batch's device lazily)."""
        values, seen = state.get("values"), state.get("seen")
        for name, t in (("values", values), ("seen", seen)):
            if t is not None and (not isinstance(t, torch.Tensor) or t.ndim != 1):
                raise ValueError(f"Expected the sample store's `{name}` to be None or a 1-D "
                                 f"tensor, but got {t!r:.80}")
        if values is not None and seen is None:  # values alone: every id was written
            seen = torch.ones(values.shape[0], dtype=torch.bool)
        if values is not None and seen is not None and seen.shape != values.shape:
            raise ValueError(f"Expected the sample store's `seen` to have shape "
                             f"{tuple(values.shape)}, but got {tuple(seen.shape)}")
        self.values = None if values is None else values.detach().clone()
        self.seen = None if seen is None else seen.detach().to(torch.bool, copy=True)
