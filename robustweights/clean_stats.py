"""Clean-set statistics as sum-reduced state.

Every statistic a reweighter keeps about the trusted clean set is a *sum* over clean samples
(class feature sums and counts for FBR; residual-feature sums for last-layer L2RW; the gradient
of the summed clean loss for full-network L2RW). Sums make three operations one mechanism:

* streaming: ``update`` over several clean batches equals one ``update`` over their union;
* caching: the sums are kept between calls (``set_clean`` at epoch start, reuse per batch);
* distributed: ``all_reduce`` sums the state across ranks (see :mod:`robustweights.distributed`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["CleanStatistics"]


class CleanStatistics:
    """A named collection of additive tensors describing a clean set.

    Example:
        >>> import torch
        >>> s = CleanStatistics()
        >>> s.add(count=torch.tensor([1.0, 2.0]))
        >>> s.add(count=torch.tensor([3.0, 0.0]))
        >>> s["count"].tolist()
        [4.0, 2.0]
    """

    def __init__(self) -> None:
        self._state: dict[str, torch.Tensor] = {}
        #: Bumped on every change, so derived quantities (e.g. FBR prototypes) can be cached.
        self.version = 0

    def add(self, **sums: torch.Tensor) -> None:
        """Add per-batch sums to the state (the first call defines the state's names)."""
        if self._state and set(sums) != set(self._state):
            raise ValueError(
                f"Expected statistics named {sorted(self._state)}, but got {sorted(sums)}"
            )
        for name, value in sums.items():
            value = value.detach()
            if name in self._state:
                if self._state[name].shape != value.shape:
                    raise ValueError(
                        f"Expected clean statistic `{name}` of shape "
                        f"{tuple(self._state[name].shape)}, but got {tuple(value.shape)}: "
                        "did the feature dimension change between clean batches?"
                    )
                self._state[name] = self._state[name] + value.to(self._state[name])
            else:
                self._state[name] = value.clone()
        self.version += 1

    def reset(self) -> None:
        """Forget every statistic."""
        self._state = {}
        self.version += 1

    @property
    def empty(self) -> bool:
        return not self._state

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._state[name]

    def __contains__(self, name: object) -> bool:
        return name in self._state

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return list(self._state.items())

    def replace(self, name: str, value: torch.Tensor) -> None:
        """Overwrite one statistic (used after a cross-rank reduction)."""
        self._state[name] = value
        self.version += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics as CPU copies (device-independent; see :mod:`robustweights.state`)."""
        return {name: value.detach().to("cpu", copy=True) for name, value in self._state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Replace the statistics; they move to the next batch's device lazily."""
        for name, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"Expected clean statistic `{name}` to be a tensor, but got "
                                f"{type(value).__name__}")
        self._state = {name: value.detach().clone() for name, value in state.items()}
        self.version += 1

    def to(self, device: torch.device) -> CleanStatistics:
        """Move the state to ``device`` in place (a no-op when it is there) and return self."""
        for name, value in self._state.items():
            if value.device != device:
                self._state[name] = value.to(device)
                self.version += 1
        return self
