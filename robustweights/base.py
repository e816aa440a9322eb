"""The template every reweighter follows: convert, validate, compute, convert back.

A subclass states which inputs it needs and implements two pure steps:
``_clean_sums`` (per-batch additive statistics of a clean batch) and ``_compute`` (weights of a
training batch given the clean statistics). The base class owns the public call, the clean-set
cache, framework conversion and the distributed reduction of clean statistics.
"""

from __future__ import annotations

import abc
from typing import Any, Literal

import torch

from robustweights import distributed
from robustweights._backend import from_torch, kind_of, to_torch
from robustweights.clean_stats import CleanStatistics
from robustweights.state import STATE_VERSION, check_state_dict
from robustweights.validation import (
    check_label_shape,
    check_labels,
    check_matrix,
    check_num_classes,
    check_values,
)

__all__ = ["Reweighter"]

#: Inputs a reweighter's ``weights`` call understands, in call order.
_BATCH_INPUTS = ("logits", "features", "labels")


class Reweighter(abc.ABC):
    """Base class: per-sample weights from a training batch and a trusted clean set.

    Args:
        num_classes: number of classes :math:`C` (>= 2).
        validate: check every tensor (shapes, ranges, finiteness) on each call. Turn off only in a
            hot loop whose inputs are known good.
        sync: when a ``torch.distributed`` process group is initialised, sum clean statistics
            across ranks so each rank weighs its batch against the global clean set. A no-op
            without a process group. ``False`` turns off every collective (clean set and batch
            quantities are then per rank, and ``batch_scope`` has no effect).
        batch_scope: what quantities coupling the samples of a batch are computed over when
            ``sync`` and a process group are on: ``"global"`` (default) the union of every
            rank's batch, so the weights equal one process's on the concatenated batch;
            ``"local"`` each rank's own batch. See :mod:`robustweights.distributed`.
        process_group: the group to reduce over (default: the world).
    """

    #: Which of logits/features/labels the method needs for the training and clean batch.
    requires: tuple[str, ...] = ("features", "labels")

    def __init__(self, num_classes: int, *, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        self.num_classes = check_num_classes(num_classes)
        self.validate = bool(validate)
        self.sync = bool(sync)
        if batch_scope not in ("global", "local"):
            raise ValueError(f"Expected `batch_scope` to be 'global' or 'local', but got "
                             f"{batch_scope!r}")
        self.batch_scope = batch_scope
        self.process_group = process_group
        self.clean = CleanStatistics()

    # ----------------------------------------------------------------- clean-set cache
    def set_clean(self, *, features: Any = None, labels: Any = None, logits: Any = None) -> None:
        """Replace the cached clean statistics with those of this clean batch.

        Call it e.g. at epoch start with the clean subset's features (computed in eval mode);
        later ``weights`` calls without a clean batch reuse the cache.
        """
        self.reset_clean()
        self.update_clean(features=features, labels=labels, logits=logits)

    def update_clean(self, *, features: Any = None, labels: Any = None, logits: Any = None) -> None:
        """Add one clean batch to the cached statistics (streaming).

        Several ``update_clean`` calls give the same statistics as one call on their union.
        Under ``torch.distributed`` with ``sync=True`` this is a collective: every rank must call
        it the same number of times.
        """
        inputs = self._prepare({"logits": logits, "features": features, "labels": labels},
                               prefix="")
        sums = self._clean_sums(**inputs)
        self._reduce(sums)
        self.clean.add(**sums)

    def reset_clean(self) -> None:
        """Forget the cached clean statistics."""
        self.clean.reset()

    # ----------------------------------------------------------------- public call
    def weights(self, logits: Any = None, features: Any = None, labels: Any = None, *,
                clean_logits: Any = None, clean_features: Any = None, clean_labels: Any = None,
                sample_ids: Any = None) -> Any:
        """Per-sample weights of a training batch, in the caller's framework, device and dtype.

        Pass a clean batch with the ``clean_*`` arguments, or omit it to use the statistics
        cached by :meth:`set_clean` / :meth:`update_clean`. Inputs the method does not need may
        be omitted. Under ``torch.distributed`` (``sync=True``) the call is a collective, as DDP's
        forward is: every rank calls it once per step, all with a clean batch or all without.

        Returns:
            A 1-D array of ``B`` weights of the same kind as the training inputs.
        """
        raw = {"logits": logits, "features": features, "labels": labels}
        ref_name = next((n for n in ("features", "logits") if raw[n] is not None), None)
        if ref_name is None:
            raise ValueError(f"Expected `{self.requires[0]}` to be given, but got None")
        kind = kind_of(raw[ref_name], ref_name)
        batch = self._prepare(raw, prefix="")
        ref = batch[ref_name]
        clean_raw = {"logits": clean_logits, "features": clean_features, "labels": clean_labels}
        if any(v is not None for v in clean_raw.values()):
            stats = CleanStatistics()
            sums = self._clean_sums(**self._prepare(clean_raw, prefix="clean_"))
            self._reduce(sums)
            stats.add(**sums)
        elif self.clean.empty:
            raise ValueError(
                "Expected a clean batch (`clean_features`, `clean_labels`, ...) or a clean set "
                "cached with `set_clean`, but got neither"
            )
        else:
            stats = self.clean.to(ref.device)
        ids = None
        if sample_ids is not None:
            ids = check_labels(to_torch(sample_ids, "sample_ids").to(ref.device), "sample_ids",
                               num_classes=2**62, n=ref.shape[0])
        w = self._compute(stats, sample_ids=ids, **batch)
        out_dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
        return from_torch(w.to(out_dtype), kind)

    # ----------------------------------------------------------------- checkpointing
    #: Configuration a state dict must agree with (stored in it, checked on load).
    _state_config: tuple[str, ...] = ("num_classes",)

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint: the cached clean statistics and what a subclass adds
        (:meth:`_extra_state`), as CPU tensors and plain values, plus the configuration keys
        it must be loaded with. Configuration itself (``alpha``, ``ratio``, ...) is not saved:
        build the object with the same arguments, as for an ``nn.Module``."""
        out: dict[str, Any] = {"_version": STATE_VERSION}
        out.update({key: getattr(self, key) for key in self._state_config})
        out["clean"] = self.clean.state_dict()
        out.update(self._extra_state())
        return out

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`, e.g. after ``torch.load`` on any device.

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer state layout, or a
                configuration mismatch (e.g. ``num_classes``); the message names the key.
        """
        keys = (*self._state_config, "clean", *self._extra_state())
        check_state_dict(state_dict, owner=type(self).__name__, keys=keys, strict=strict,
                         config={key: getattr(self, key) for key in self._state_config})
        if "clean" in state_dict:
            self.clean.load_state_dict(state_dict["clean"])
        self._load_extra_state(state_dict)

    def _extra_state(self) -> dict[str, Any]:
        """Subclass state beyond the clean statistics (CPU tensors and plain values)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` wrote (keys may be absent when not strict)."""
        return None

    def __getstate__(self) -> dict[str, Any]:
        # A process group is a handle to live communicators: it cannot be pickled. An unpickled
        # reweighter reduces over the default group (the world), like one built without one.
        state = self.__dict__.copy()
        state["process_group"] = None
        return state

    # ----------------------------------------------------------------- repr
    def _repr_args(self) -> dict[str, Any]:
        """The configuration shown by ``repr``."""
        return {"num_classes": self.num_classes}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- helpers
    def _prepare(self, raw: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
        """Convert and validate the inputs this method needs; drop the others."""
        out: dict[str, torch.Tensor] = {}
        for name in self.requires:
            if raw[name] is None:
                raise ValueError(f"Expected `{prefix}{name}` to be given, but got None")
            out[name] = to_torch(raw[name], prefix + name)
        device = out[self.requires[0]].device
        out = {k: v.to(device) for k, v in out.items()}
        if not self.validate:
            if "labels" in out:
                out["labels"] = out["labels"].long()
            return out
        n, first = None, ""
        floats: dict[str, torch.Tensor] = {}
        for name in ("features", "logits"):
            if name in out:
                cols = self.num_classes if name == "logits" else None
                check_matrix(out[name], prefix + name, cols=cols)
                if n is not None and out[name].shape[0] != n:
                    raise ValueError(
                        f"Expected `{prefix}{name}` to have as many rows as `{first}` ({n}), but "
                        f"got {out[name].shape[0]}"
                    )
                n, first = out[name].shape[0], prefix + name
                floats[prefix + name] = out[name]
        labels: dict[str, torch.Tensor] = {}
        if "labels" in out:
            out["labels"] = check_label_shape(out["labels"], prefix + "labels", n)
            labels[prefix + "labels"] = out["labels"]
        check_values(floats, labels, self.num_classes)
        return out

    def _reduce(self, sums: dict[str, torch.Tensor]) -> None:
        if self.sync:
            distributed.all_reduce_sums(sums, self.process_group)

    def _global_batch(self) -> bool:
        """Whether batch-coupled quantities are reduced across ranks (Python only, no sync)."""
        return (self.sync and self.batch_scope == "global"
                and distributed.is_distributed(self.process_group))

    @abc.abstractmethod
    def _clean_sums(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive statistics of one clean batch."""

    @abc.abstractmethod
    def _compute(self, stats: CleanStatistics, *, sample_ids: torch.Tensor | None,
                 **batch: torch.Tensor) -> torch.Tensor:
        """Weights (B,) of a validated training batch, on its device."""
