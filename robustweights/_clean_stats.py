"""Clean-set statistics as sum-reduced state, synchronised lazily.

Every statistic a reweighter keeps about the trusted clean set is a *sum* over clean samples
(class feature sums and counts for FBR; residual-feature sums for last-layer L2RW; the gradient
of the summed clean loss for full-network L2RW). Sums make three operations one mechanism:

* streaming: ``update`` over several clean batches equals one ``update`` over their union;
* caching: the sums are kept between calls (``set_clean`` at epoch start, reuse per batch);
* distributed: ``all_reduce`` sums the state across ranks (see :mod:`robustweights._distributed`).

As torchmetrics' ``sync_on_compute``, the reduction is lazy: :meth:`CleanStatistics.add` only
accumulates this rank's sums (*pending*), and :meth:`CleanStatistics.sync` reduces everything
pending in one collective when the statistics are next needed. K clean batches cost one
all-reduce, not K. A rank with no clean sample adds zeros.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["CleanStatistics"]


class CleanStatistics:
    """A named collection of additive tensors describing a clean set.

    Example:
        >>> import torch
        >>> s = CleanStatistics()
        >>> s.add(count=torch.tensor([1.0, 2.0]))
        >>> s.add(count=torch.tensor([3.0, 0.0]))
        >>> s.pending, s.sync(), s.pending           # one process: sync only merges
        (True, None, False)
        >>> s["count"].tolist()
        [4.0, 2.0]
    """

    def __init__(self) -> None:
        self._state: dict[str, torch.Tensor] = {}  # reduced over ranks
        self._pending: dict[str, torch.Tensor] = {}  # this rank's sums since the last sync
        #: Bumped on every change, so derived quantities (e.g. FBR prototypes) can be cached.
        self.version = 0
        #: Set by a reweighter whose synced statistics count no sample on any rank; cleared by
        #: every change of the statistics.
        self.empty_everywhere = False

    def add(self, **sums: torch.Tensor) -> None:
        """Add this rank's per-batch sums (the first call defines the state's names). Nothing is
        communicated: the sums stay pending until :meth:`sync`."""
        known = self._state or self._pending
        if known and set(sums) != set(known):
            raise ValueError(
                f"Expected statistics named {sorted(known)}, but got {sorted(sums)}"
            )
        for name, value in sums.items():
            value = value.detach()
            ref = self._pending.get(name, self._state.get(name))
            if ref is not None and ref.shape != value.shape:
                raise ValueError(
                    f"Expected clean statistic `{name}` of shape {tuple(ref.shape)}, but got "
                    f"{tuple(value.shape)}: did the feature dimension change between clean "
                    "batches?"
                )
            if name in self._pending:
                self._pending[name] = self._pending[name] + value.to(self._pending[name])
            else:
                self._pending[name] = value.clone()
        self.version += 1
        self.empty_everywhere = False

    @property
    def pending(self) -> bool:
        """Whether sums were added since the last :meth:`sync`."""
        return bool(self._pending)

    def sync(self, reduce: Callable[[dict[str, torch.Tensor]], None] | None = None) -> None:
        """Reduce the pending sums across ranks with ``reduce`` (in place on a dict; e.g.
        :func:`robustweights._distributed.all_reduce_sums`) and add them to the state. A no-op
        when nothing is pending; without ``reduce`` the pending sums are merged as they are."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        if reduce is not None:
            reduce(pending)  # one collective per dtype for everything pending
        for name, value in pending.items():
            if name in self._state:
                self._state[name] = self._state[name] + value.to(self._state[name])
            else:
                self._state[name] = value
        self.version += 1

    def reset(self) -> None:
        """Forget every statistic, reduced or pending."""
        self._state = {}
        self._pending = {}
        self.version += 1
        self.empty_everywhere = False

    @property
    def empty(self) -> bool:
        return not self._state and not self._pending

    def _synced(self) -> dict[str, torch.Tensor]:
        if self._pending:
            raise RuntimeError("clean statistics read before `sync`: call the reweighter's "
                               "`sync_clean()` (an internal error if it happens in `weights`)")
        return self._state

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._synced()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._state or name in self._pending

    def __iter__(self) -> Iterator[str]:
        return iter(self._synced())

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return list(self._synced().items())

    def state_dict(self) -> dict[str, Any]:
        """Reduced and pending statistics as CPU copies (device-independent; see
        :mod:`robustweights._state`)."""
        def cpu(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {name: value.detach().to("cpu", copy=True) for name, value in d.items()}

        return {"reduced": cpu(self._state), "pending": cpu(self._pending)}

    def load_state_dict(self, state: Any) -> None:
        """Replace the statistics; they move to the next batch's device lazily. All or nothing:
        a state that is refused leaves the statistics as they were.

        Raises:
            ValueError: for a state without exactly the parts ``reduced`` and ``pending``, or
                whose two parts disagree on the names or shapes of the statistics.
            TypeError: for a statistic that is not a tensor.
        """
        self.replace(CleanStatistics.from_state_dict(state))

    @classmethod
    def from_state_dict(cls, state: Any) -> CleanStatistics:
        """New statistics from a :meth:`state_dict`, checked (see :meth:`load_state_dict`)."""
        if not isinstance(state, Mapping) or set(state) != {"reduced", "pending"}:
            raise ValueError("Expected `state_dict['clean']` to have the keys ['pending', "
                             f"'reduced'], but got {state!r:.80}")
        parts = []
        for part in ("reduced", "pending"):
            if not isinstance(state[part], Mapping):
                raise ValueError(f"Expected `state_dict['clean']['{part}']` to be a mapping of "
                                 f"tensors, but got {type(state[part]).__name__}")
            for name, value in state[part].items():
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"Expected clean statistic `{name}` to be a tensor, but got "
                                    f"{type(value).__name__}")
            parts.append({name: value.detach().clone() for name, value in state[part].items()})
        reduced, pending = parts
        if reduced and pending and (set(reduced) != set(pending) or any(
                reduced[k].shape != pending[k].shape for k in reduced)):
            raise ValueError("Expected the reduced and pending clean statistics to have the same "
                             f"names and shapes, but got {_shapes(reduced)} and "
                             f"{_shapes(pending)}")
        out = cls()
        out._state, out._pending = reduced, pending
        return out

    def replace(self, other: CleanStatistics) -> None:
        """Take ``other``'s statistics (reduced and pending) as this object's own."""
        self._state, self._pending = dict(other._state), dict(other._pending)
        self.version += 1
        self.empty_everywhere = False

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The name and shape of every statistic, reduced or pending (no sync needed)."""
        return {**_shapes(self._pending), **_shapes(self._state)}

    def to(self, device: torch.device) -> CleanStatistics:
        """Move the state to ``device`` in place (a no-op when it is there) and return self."""
        for store in (self._state, self._pending):
            for name, value in store.items():
                if value.device != device:
                    store[name] = value.to(device)
                    self.version += 1
        return self


def _shapes(stats: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in stats.items()}
