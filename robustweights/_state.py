"""Checkpointing helpers shared by every stateful object (reweighters, the phase monitor).

The convention is torch's (``nn.Module.state_dict``, ``lr_scheduler.state_dict``): a state dict
holds tensors and plain Python values only; what the object was built with (a model, a loss
function, a process group) is left out, so a state dict is loaded into an object built with the
same configuration. Three rules on top of torch's:

* **Device independent.** Tensors are saved as CPU copies, so a state saved on a GPU loads on a
  CPU-only machine without ``map_location``; on load they stay on the CPU and move to the
  device of the next batch lazily (the first call that needs them), as the clean statistics
  already do.
* **Versioned.** ``"_version"`` records the layout; a state from a newer layout is refused.
* **Checked.** ``strict=True`` (the default, as in torch) refuses unexpected and missing keys,
  and a configuration value that differs from the object's (e.g. ``num_classes``) is a
  ``ValueError`` naming the key, whatever ``strict`` says: loading it would silently give
  weights of another configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["STATE_VERSION", "check_state_dict", "cpu_copy"]

#: Layout version written by ``state_dict`` and accepted by ``load_state_dict``.
STATE_VERSION = 1


def cpu_copy(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached CPU copy (device-independent checkpoints), or None."""
    return None if t is None else t.detach().to("cpu", copy=True)


def check_state_dict(state: Any, *, owner: str, keys: Iterable[str],
                     config: Mapping[str, Any], strict: bool) -> None:
    """Check a state dict before loading it into ``owner``.

    Args:
        state: what was passed to ``load_state_dict``.
        owner: the class name, for messages.
        keys: every key the object writes (``"_version"`` excluded).
        config: configuration values the state must agree with, by key.
        strict: refuse unexpected and missing keys.

    Raises:
        TypeError: if ``state`` is not a mapping.
        ValueError: for a newer or malformed version, unexpected or missing keys (``strict``),
            or a configuration mismatch; the message names the key.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"Expected `state_dict` to be a mapping, but got {type(state).__name__}")
    version = state.get("_version")
    if version is None and strict:
        raise ValueError(f"Expected `state_dict` of {owner} to have the key `_version`, but it "
                         "has none: is it a state dict of this object?")
    if version is not None and (not isinstance(version, int) or version > STATE_VERSION):
        raise ValueError(f"Expected `state_dict['_version']` to be at most {STATE_VERSION}, but "
                         f"got {version!r}: the state was saved by a newer robustweights")
    expected = set(keys)
    given = set(state) - {"_version"}
    unexpected, missing = sorted(given - expected), sorted(expected - given)
    if strict and (unexpected or missing):
        raise ValueError(f"Expected the keys of `state_dict` to be those of {owner}, but got "
                         f"unexpected keys {unexpected}, "
                         f"missing keys {missing} (pass strict=False to ignore them)")
    for key, value in config.items():
        if key in state and state[key] != value:
            raise ValueError(f"Expected `state_dict['{key}']` to be {value!r} as in this "
                             f"{owner}, but got {state[key]!r}: build the {owner} with the "
                             "configuration the state was saved with")
