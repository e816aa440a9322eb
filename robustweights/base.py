"""The template every reweighter follows: convert, validate, compute, convert back.

A subclass states which inputs it needs (``requires``: penultimate ``features``, ``logits``,
``labels``, or a model's own ``inputs``) and implements two pure steps: ``_clean_sums``
(per-batch additive statistics of a clean batch) and ``_compute`` (weights of a training batch
given the clean statistics). The base class owns the public call, the one input path
(:func:`~robustweights._batch.prepare_batches`), the clean-set cache,
framework conversion and the distributed reduction of clean statistics.

One clean-set rule for every reweighter: :meth:`Reweighter.set_clean` /
:meth:`Reweighter.update_clean` fill the cache; a clean batch passed to
:meth:`Reweighter.weights` is a temporary, used for that call only, and never touches the cache.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Literal

import torch

from robustweights import _distributed as distributed
from robustweights._backend import ArrayKind, from_torch, kind_of
from robustweights._batch import prepare_batches
from robustweights._clean_stats import CleanStatistics
from robustweights._numerics import as_output
from robustweights._state import STATE_VERSION, check_state_dict
from robustweights._validation import (
    check_batch_scope,
    check_keywords_only,
    check_num_classes,
    check_sample_ids,
)

__all__ = ["Reweighter"]


class Reweighter(abc.ABC):
    """Base class of every reweighter: per-sample weights from a training batch and a trusted
    clean set (:class:`~robustweights.SurrogateReweighter`, :class:`~robustweights.MetaReweighter`
    and :class:`~robustweights.ModelMetaReweighter`).

    Args:
        num_classes: number of classes :math:`C` (>= 2), or None where the method does not need
            it (labels are then checked to be non-negative only).
        validate: check every tensor (shapes, ranges, finiteness) on each call. Turn off only in a
            hot loop whose inputs are known good.
        sync: when a ``torch.distributed`` process group is initialised, sum clean statistics
            across ranks so each rank weighs its batch against the global clean set. The sum is
            taken lazily, once, when the statistics are next needed (or on :meth:`sync_clean`),
            however many ``update_clean`` calls came before. A no-op without a process group.
            ``False`` turns off every collective (clean set and batch quantities are then per
            rank, and ``batch_scope`` has no effect).
        batch_scope: what quantities coupling the samples of a batch are computed over when
            ``sync`` and a process group are on: ``"global"`` (default) the union of every
            rank's batch, so the weights equal one process's on the concatenated batch;
            ``"local"`` each rank's own batch. See :mod:`robustweights._distributed`.
        process_group: the group to reduce over (default: the world).
    """

    #: Which of features/logits/labels/inputs the method needs for the training and clean
    #: batch (all are moved to the first one's device).
    requires: tuple[str, ...] = ("features", "labels")
    #: The input whose framework and floating dtype the weights are returned in.
    _reference = "features"
    #: What the cache holds, for messages.
    _cache_name = "clean set"

    def __init__(self, num_classes: int | None, *, validate: bool = True, sync: bool = True,
                 batch_scope: Literal["global", "local"] = "global",
                 process_group: Any = None) -> None:
        self.num_classes = None if num_classes is None else check_num_classes(num_classes)
        self.validate = bool(validate)
        self.sync = bool(sync)
        self.batch_scope = check_batch_scope(batch_scope)
        self.process_group = process_group
        self.clean = CleanStatistics()

    # ----------------------------------------------------------------- clean-set cache
    def set_clean(self, *, features: Any = None, labels: Any = None, logits: Any = None,
                  inputs: Any = None) -> None:
        """Replace the cached clean statistics with those of this clean batch.

        Call it e.g. at epoch start with the clean subset's features (computed in eval mode);
        later ``weights`` calls without a clean batch reuse the cache. Pass the inputs the
        method needs (``requires``); the others may be omitted. A batch it refuses leaves the
        cache as it was.
        """
        batch = self._prepare({"logits": logits, "features": features, "labels": labels,
                               "inputs": inputs}, prefix="", allow_empty=self._shards_clean())
        sums = self._clean_sums(**batch)
        self.reset_clean()
        self.clean.add(**sums)

    def update_clean(self, *, features: Any = None, labels: Any = None, logits: Any = None,
                     inputs: Any = None) -> None:
        """Add one clean batch to the cached statistics (streaming).

        Several ``update_clean`` calls give the same statistics as one call on their union.
        Nothing is communicated here: under ``torch.distributed`` (``sync=True``) this rank's
        sums are reduced across ranks once, at the next ``weights`` call or :meth:`sync_clean`.
        Ranks may make different numbers of calls, but every rank makes at least one between
        two uses; a rank with no clean sample passes an empty batch (0 rows), which adds zeros.
        """
        batch = self._prepare({"logits": logits, "features": features, "labels": labels,
                               "inputs": inputs}, prefix="", allow_empty=self._shards_clean())
        self.clean.add(**self._clean_sums(**batch))

    def reset_clean(self) -> None:
        """Forget the cached clean statistics."""
        self.clean.reset()

    def sync_clean(self) -> None:
        """Reduce the clean statistics added since the last sync across ranks now (one
        collective; every rank must call it). ``weights`` does this by itself when needed; call
        it explicitly e.g. before :meth:`state_dict` under ``torch.distributed``."""
        self._sync(self.clean)

    def _sync(self, stats: CleanStatistics) -> None:
        if stats.pending:
            stats.sync(self._reduce)
            if self.validate and self._shards_clean():  # once per refresh: every shard empty?
                total = float(sum(float(stats[k].sum()) for k in stats if "count" in k))
                stats.empty_everywhere = total == 0
        if stats.empty_everywhere:  # on every use of that clean set, not only the first
            raise ValueError("Expected the clean set to hold at least one sample over all "
                             "ranks, but got none")

    def _shards_clean(self) -> bool:
        """Whether a clean batch may be empty: only when ranks share a clean set (Python only)."""
        return self.sync and distributed.is_distributed(self.process_group)

    # ----------------------------------------------------------------- public call
    def weights(self, *args: Any, logits: Any = None, features: Any = None, labels: Any = None,
                inputs: Any = None, clean_logits: Any = None, clean_features: Any = None,
                clean_labels: Any = None, clean_inputs: Any = None,
                sample_ids: Any = None) -> Any:
        """Per-sample weights of a training batch, in the caller's framework, device and dtype.

        Every input is keyword-only (``weights(features=F, labels=y)``): with several arrays
        of the same shape family a positional call would bind them silently to the wrong
        names, so it raises a ``TypeError`` instead.

        Pass a clean batch with the ``clean_*`` arguments, or omit it to use the statistics
        cached by :meth:`set_clean` / :meth:`update_clean`. A clean batch given here is used for
        this call only: the cache is left as it was. Inputs the method does not need
        (``requires``) may be omitted. Under ``torch.distributed`` (``sync=True``) the call is a
        collective, as DDP's forward is: every rank calls it once per step, all with a clean
        batch or all without.

        Returns:
            A 1-D array of ``B`` weights of the same kind as the training inputs.
        """
        check_keywords_only(self, "weights", args, self.requires)
        kind, batch, stats = self._resolve(
            {"logits": logits, "features": features, "labels": labels, "inputs": inputs},
            {"logits": clean_logits, "features": clean_features, "labels": clean_labels,
             "inputs": clean_inputs})
        ref = batch[self._reference]
        ids = None
        if sample_ids is not None:
            ids = check_sample_ids(sample_ids, ref.shape[0]).to(ref.device)
        return self._finish(self._compute(stats, sample_ids=ids, **batch), ref, kind)

    def _resolve(self, raw: dict[str, Any], clean_raw: dict[str, Any]
                 ) -> tuple[ArrayKind, dict[str, torch.Tensor], CleanStatistics]:
        """The training batch, converted and checked, its kind, and the clean statistics to use:
        a temporary for a clean batch given with the call, else the synced cache."""
        batch = self._prepare(raw, prefix="")
        kind = kind_of(raw[self._reference], self._reference)
        if any(v is not None for v in clean_raw.values()):
            stats = CleanStatistics()
            stats.add(**self._clean_sums(**self._prepare(clean_raw, prefix="clean_",
                                                         allow_empty=self._shards_clean())))
            self._sync(stats)
        elif self.clean.empty:
            names = ", ".join(f"`clean_{n}`" for n in self.requires)
            raise ValueError(f"Expected a clean batch ({names}) or a {self._cache_name} cached "
                             "with `set_clean`, but got neither")
        else:
            self._sync(self.clean)  # the one collective for every update_clean since the last
            stats = self.clean
        return kind, batch, stats.to(batch[self._reference].device)

    def _finish(self, w: torch.Tensor, ref: torch.Tensor, kind: ArrayKind) -> Any:
        """The weights in the reference input's floating dtype, saturated, in its framework."""
        return from_torch(as_output(w, ref), kind)

    # ----------------------------------------------------------------- checkpointing
    #: Configuration a state dict must agree with (stored in it, checked on load).
    _state_config: tuple[str, ...] = ("num_classes",)

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint: the cached clean statistics and what a subclass adds
        (:meth:`_extra_state`), as CPU tensors and plain values, plus the configuration keys
        it must be loaded with. Configuration itself (``alpha``, ``ratio``, ...) is not saved:
        build the object with the same arguments, as for an ``nn.Module``.

        Raises:
            RuntimeError: under ``torch.distributed`` with clean batches not yet reduced: call
                :meth:`sync_clean` on every rank first (a rank's unreduced share, loaded on
                every rank, would be summed once per rank).
        """
        if self.clean.pending and self._shards_clean():
            raise RuntimeError("Expected the clean statistics to be reduced across ranks before "
                               "`state_dict()`, but some are pending: call `sync_clean()` on "
                               "every rank first")
        out: dict[str, Any] = {"_version": STATE_VERSION}
        out.update({key: getattr(self, key) for key in self._state_config})
        out["clean"] = self.clean.state_dict()
        out.update(self._extra_state())
        return out

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`, e.g. after ``torch.load`` on any device.

        All or nothing: every key is checked before any is assigned, so a refused state leaves
        the reweighter (and its :meth:`state_dict`) as it was.

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer state layout, a
                configuration mismatch (e.g. ``num_classes``) or clean statistics of other
                names or shapes than this reweighter's; the message names the key.
            TypeError: for a state that is not a mapping or a value of the wrong type.
        """
        keys = (*self._state_config, "clean", *self._extra_state())
        check_state_dict(state_dict, owner=type(self).__name__, keys=keys, strict=strict,
                         config={key: getattr(self, key) for key in self._state_config})
        clean = None
        if "clean" in state_dict:
            clean = CleanStatistics.from_state_dict(state_dict["clean"])
            self._check_clean_state(clean)
        commit = self._stage_extra_state(state_dict)
        # every check passed: assign
        if clean is not None:
            self.clean.replace(clean)
        commit()

    #: What the clean statistics must hold, for messages.
    _clean_layout_name = "the clean statistics of this reweighter"

    def _clean_layout(self) -> dict[str, tuple[int | None, ...]]:
        """The name and shape of every clean statistic (None: any size), checked on load."""
        return {}

    def _check_clean_state(self, clean: CleanStatistics) -> None:
        """Refuse saved clean statistics of other names or shapes than :meth:`_clean_layout`."""
        shapes, layout = clean.shapes(), self._clean_layout()
        if not shapes:  # nothing cached
            return
        if set(shapes) != set(layout):
            raise ValueError(f"Expected `state_dict['clean']` to hold {self._clean_layout_name}, "
                             f"but these keys differ: {sorted(set(shapes) ^ set(layout))[:5]}")
        for name, want in layout.items():
            got = shapes[name]
            if len(got) != len(want) or any(w is not None and w != g
                                            for w, g in zip(want, got, strict=True)):
                shown = ", ".join("D" if w is None else str(w) for w in want)
                raise ValueError(f"Expected `state_dict['clean']` statistic `{name}` to have "
                                 f"shape ({shown}{',' if len(want) == 1 else ''}), but got {got}")

    def _extra_state(self) -> dict[str, Any]:
        """Subclass state beyond the clean statistics (CPU tensors and plain values)."""
        return {}

    def _stage_extra_state(self, state: dict[str, Any]) -> Callable[[], None]:
        """Check what :meth:`_extra_state` wrote (keys may be absent when not strict) and return
        the assignment to run once every key has passed; raise before assigning anything."""
        return lambda: None

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
        # A class (e.g. the model's) shows as its name, as nn.Module reprs do.
        args = ", ".join(f"{k}={v.__name__ if isinstance(v, type) else repr(v)}"
                         for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    # ----------------------------------------------------------------- helpers
    def _prepare(self, raw: dict[str, Any], prefix: str, allow_empty: bool = False
                 ) -> dict[str, torch.Tensor]:
        """Convert and validate the inputs this method needs; drop the others."""
        return prepare_batches({prefix: raw}, self.requires, num_classes=self.num_classes,
                               validate=self.validate, allow_empty=allow_empty)[prefix]

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
