"""Capture penultimate features during the normal forward pass, without changing the model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FeatureCapture"]


class FeatureCapture:
    """Record the input of a module (e.g. the classifier head) on every forward pass.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> cap = FeatureCapture(model[2])          # the head: its input is the feature
        >>> logits = model(torch.randn(4, 5))
        >>> cap.features.shape
        torch.Size([4, 8])
        >>> cap.remove()

    Args:
        module: the module whose (first) input to record.
        detach: store a detached tensor (default), as reweighters treat features as constants.
            Use ``detach=False`` to keep the graph.

    ``count`` is the number of forward passes recorded so far. It is also a context manager
    that removes its hook on exit.
    """

    def __init__(self, module: nn.Module, *, detach: bool = True) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"Expected `module` to be a torch.nn.Module, but got "
                            f"{type(module).__name__}")
        self.detach = detach
        self._module_name = type(module).__name__
        self._features: torch.Tensor | None = None
        self.count = 0  # forwards recorded: tells a new forward from features already used
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        # Flatten (N, ...) to (N, D): heads after global pooling often see (N, D, 1, 1).
        x = x.flatten(1) if x.ndim > 2 else x
        self._features = x.detach() if self.detach else x
        self.count += 1

    @property
    def features(self) -> torch.Tensor:
        """The features of the latest forward pass, (N, D)."""
        if self._features is None:
            raise RuntimeError("No features captured yet: run a forward pass of the model first")
        return self._features

    def __repr__(self) -> str:
        return f"FeatureCapture({self._module_name}, detach={self.detach!r})"

    def remove(self) -> None:
        """Detach the hook from the module."""
        self._handle.remove()

    def __enter__(self) -> FeatureCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
