r"""The online phase monitor: one :class:`PhaseReport` per step, one warning on entering
post-filtering, optional freezing of the weights from then on, and checkpointing."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from robustweights._backend import from_torch, kind_of, to_torch
from robustweights._sample_store import SampleStore
from robustweights._state import STATE_VERSION, check_state_dict
from robustweights._validation import (
    check_nonneg_float,
    check_sample_ids,
    check_scalar,
    check_weights,
)
from robustweights.phases.detection import PhaseBoundaries, _PhaseRule
from robustweights.phases.statistics import (
    coupling_magnitude,
    effective_sample_size,
    kept_precision_recall,
)

__all__ = ["PhaseMonitor", "PhaseReport", "PostFilteringWarning"]


class PostFilteringWarning(UserWarning):
    """Training entered post-filtering: meta-reweighting weights are perturbation-sensitive."""


@dataclass(frozen=True)
class PhaseReport:
    """What :meth:`PhaseMonitor.update` reports for one step.

    ``precision`` and ``recall`` are None unless ``true_clean`` was given; ``clean_loss`` and
    ``coupling`` are None unless given.
    """

    step: int
    phase: str
    kept_fraction: float
    effective_sample_size: float
    clean_loss: float | None = None
    coupling: float | None = None
    precision: float | None = None
    recall: float | None = None


class PhaseMonitor:
    r"""Watch a reweighted training run go through alignment, filtering and post-filtering.

    Call :meth:`update` once per step or epoch with the weights the reweighter returned and,
    when available, the clean-subset loss and the per-sample coupling: the reweighter's
    ``last_scores`` (:class:`~robustweights.MetaReweighter`'s scores :math:`u_i`,
    :class:`~robustweights.SurrogateReweighter`'s directions :math:`d_i`). The phase is detected
    with the causal rule of :func:`detect_phases`. Each report gives the kept fraction
    :math:`|\{i: w_i > \tau\}|/B`, the effective sample size :math:`(\sum w)^2/\sum w^2` and,
    when the true clean mask is known (benchmarks only), precision and recall of the kept
    samples.

    On entering post-filtering the monitor emits one :class:`PostFilteringWarning`. With
    ``freeze=True`` it also freezes the weights. It keeps the last weight it saw for every sample
    id, from updates made before post-filtering. From then on :attr:`frozen` is True and
    :meth:`weights_to_use` returns those stored weights instead of the fresh ones. This is the
    remedy the analysis suggests: the weights stop following a coupling that has vanished.

    Args:
        filter_onset, loss_fraction, coupling_fraction, patience: the detection thresholds of
            :func:`detect_phases`.
        keep_threshold: a sample is kept when its weight exceeds this (default 0).
        freeze: store weights per sample id and freeze them on entering post-filtering.
        warn: emit the :class:`PostFilteringWarning` (once).

    Attributes:
        history: the list of :class:`PhaseReport`, one per update.
        frozen: True once post-filtering was entered with ``freeze=True``.

    Example:
        >>> import warnings
        >>> mon = PhaseMonitor(freeze=True)
        >>> with warnings.catch_warnings(record=True):
        ...     for loss in [1.0, 0.5, 0.05]:
        ...         report = mon.update([1.0, 0.0, 0.7], clean_loss=loss)
        >>> report.phase, mon.frozen, mon.weights_to_use([0.2, 0.9, 0.1]).tolist()
        ('post_filtering', True, [1.0, 0.0, 0.7])
    """

    def __init__(self, *, filter_onset: float = 0.05, loss_fraction: float = 0.1,
                 coupling_fraction: float = 0.1, patience: int = 1, keep_threshold: float = 0.0,
                 freeze: bool = False, warn: bool = True) -> None:
        self._thresholds = dict(filter_onset=filter_onset, loss_fraction=loss_fraction,
                                coupling_fraction=coupling_fraction, patience=patience)
        _PhaseRule(**self._thresholds)  # type: ignore[arg-type]  # validates the thresholds
        self.keep_threshold = check_nonneg_float(keep_threshold, "keep_threshold")
        self.freeze = bool(freeze)
        self.warn = bool(warn)
        self.reset()

    def reset(self) -> None:
        """Forget the history, the detected phases, the warning and the stored weights."""
        self._rule = _PhaseRule(**self._thresholds)  # type: ignore[arg-type]
        self.history: list[PhaseReport] = []
        self.frozen = False
        self._warned = False
        self._store = SampleStore()  # the last weight per sample id (float64, CPU)

    @property
    def phase(self) -> str:
        """The current phase (``"alignment"`` before the first update)."""
        return self.history[-1].phase if self.history else "alignment"

    @property
    def boundaries(self) -> PhaseBoundaries:
        """The steps at which filtering and post-filtering were detected (None if not yet)."""
        return self._rule.boundaries

    def update(self, weights: Any, *, clean_loss: Any = None, coupling: Any = None,
               true_clean: Any = None, sample_ids: Any = None, step: int | None = None
               ) -> PhaseReport:
        """Record one step and return its :class:`PhaseReport`.

        Args:
            weights: (B,) non-negative weights the reweighter returned for this step.
            clean_loss: the clean-subset loss (a number or 0-d array), if known.
            coupling: per-sample L2RW scores or FBR directions (B,), or their magnitude as a
                number; see :func:`coupling_magnitude`.
            true_clean: (B,) boolean mask of truly clean samples, for precision and recall.
            sample_ids: (B,) integer ids of the samples, for ``freeze`` with mini-batches.
                Default: positions ``0..B-1`` (full-batch training).
            step: the step or epoch number to record (default: the number of earlier updates).
                Boundaries are reported in these numbers.

        Raises:
            ValueError: for malformed inputs; the message names the argument.
        """
        w = check_weights(weights)
        step = len(self.history) if step is None else int(step)
        loss = None if clean_loss is None else check_scalar(clean_loss, "clean_loss")
        coup = None if coupling is None else coupling_magnitude(coupling)
        kept = float((w > self.keep_threshold).double().mean())
        precision = recall = None
        if true_clean is not None:
            precision, recall = kept_precision_recall(w, true_clean,
                                                      threshold=self.keep_threshold)
        ids = self._ids(sample_ids, w.shape[0])
        was_post = self._rule.post_filtering is not None
        self._rule.update(step, kept, loss, coup)
        entered_post = not was_post and self._rule.post_filtering is not None
        if self.freeze and not self.frozen:
            if entered_post:
                self.frozen = True
            else:
                self._remember(ids, w)
        if entered_post and self.warn and not self._warned:
            self._warned = True
            warnings.warn(
                f"PhaseMonitor: training entered the post-filtering phase at step {step}: the "
                f"clean loss and the train-clean coupling are far below their peaks, so "
                f"meta-reweighting weights computed from here on are perturbation-sensitive. "
                f"Consider freezing them (PhaseMonitor(freeze=True)) or SurrogateReweighter.",
                PostFilteringWarning, stacklevel=2)
        report = PhaseReport(step=step, phase=self._rule.boundaries.phase_at(step),
                             kept_fraction=kept, effective_sample_size=effective_sample_size(w),
                             clean_loss=loss, coupling=coup, precision=precision, recall=recall)
        self.history.append(report)
        return report

    def weights_to_use(self, weights: Any, *, sample_ids: Any = None) -> Any:
        """The weights to train with: the given ones until the monitor freezes, the stored frozen
        ones after.

        Once :attr:`frozen`, each sample gets the weight stored for its id at the moment of
        freezing; ids never seen before freezing keep the weight passed in. The result has the
        caller's framework, device and dtype.

        Args:
            weights: (B,) fresh weights from the reweighter.
            sample_ids: (B,) integer sample ids (default: positions ``0..B-1``).
        """
        if not self.frozen:
            return weights
        kind = kind_of(weights)
        t = to_torch(weights, "weights")
        w = check_weights(t).cpu()
        stored, known = self._store.lookup(self._ids(sample_ids, w.shape[0]))
        w = torch.where(known, stored, w)
        dtype = t.dtype if t.dtype.is_floating_point else torch.float32
        return from_torch(w.to(device=t.device, dtype=dtype), kind)

    # ----------------------------------------------------------------- checkpointing
    def _config(self) -> dict[str, Any]:
        return {**self._thresholds, "keep_threshold": self.keep_threshold, "freeze": self.freeze}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as CPU tensors and plain values: the detection
        rule's peaks and runs, the boundaries, the history, whether the weights are frozen (and
        the warning given), and the weights stored per sample id. The thresholds are stored
        too and must match on load."""
        store = self._store.state_dict()
        return {"_version": STATE_VERSION, **self._config(),
                "rule": self._rule.state_dict(),
                "history": [asdict(r) for r in self.history],
                "frozen": self.frozen, "warned": self._warned,
                "stored_weights": store["values"], "stored_seen": store["seen"]}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`; a frozen run stays frozen. All or nothing: a refused
        state leaves the monitor as it was.

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer layout, or
                thresholds that differ from this monitor's; the message names the key.
        """
        config = self._config()
        keys = (*config, "rule", "history", "frozen", "warned", "stored_weights", "stored_seen")
        check_state_dict(state_dict, owner="PhaseMonitor", keys=keys, config=config,
                         strict=strict)
        # Every key is checked into new objects first, then assigned: a refused state changes
        # nothing.
        rule, history = self._rule, self.history
        if "rule" in state_dict:
            rule = _PhaseRule(**self._thresholds)  # type: ignore[arg-type]
            rule.load_state_dict(state_dict["rule"])
        if "history" in state_dict:
            history = _reports(state_dict["history"])
        flags = {"frozen": self.frozen, "warned": self._warned}
        for key in flags:
            if key in state_dict:
                if not isinstance(state_dict[key], bool):
                    raise TypeError(f"Expected `state_dict['{key}']` to be a bool, but got "
                                    f"{state_dict[key]!r:.80}")
                flags[key] = state_dict[key]
        store = self._store
        if "stored_weights" in state_dict:
            values = state_dict["stored_weights"]
            for key in ("stored_weights", "stored_seen"):
                value = state_dict.get(key)
                if value is not None and not isinstance(value, torch.Tensor):
                    raise TypeError(f"Expected `state_dict['{key}']` to be None or a tensor, "
                                    f"but got {type(value).__name__}")
            store = SampleStore()
            store.load_state_dict({"values": None if values is None else values.to(torch.float64),
                                   "seen": state_dict.get("stored_seen")})
        self._rule, self.history, self._store = rule, history, store
        self.frozen, self._warned = flags["frozen"], flags["warned"]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"PhaseMonitor({args}, warn={self.warn!r})"

    def to_dict(self) -> dict[str, Any]:
        """The history as one list per :class:`PhaseReport` field, plus the boundaries; ready
        for ``json.dump``."""
        out: dict[str, Any] = {f.name: [getattr(r, f.name) for r in self.history]
                               for f in fields(PhaseReport)}
        out["boundaries"] = asdict(self.boundaries)
        return out

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _ids(sample_ids: Any, n: int) -> torch.Tensor:
        if sample_ids is None:
            return torch.arange(n)
        return check_sample_ids(sample_ids, n).cpu()

    def _remember(self, ids: torch.Tensor, w: torch.Tensor) -> None:
        self._store.scatter(ids, w.cpu())


def _reports(history: Any) -> list[PhaseReport]:
    """The saved history as reports; a ``ValueError`` names ``state_dict['history']``."""
    names = {f.name for f in fields(PhaseReport)}
    if not isinstance(history, (list, tuple)) or not all(
            isinstance(r, dict) and set(r) == names for r in history):
        raise ValueError("Expected `state_dict['history']` to be a list of PhaseReport fields, "
                         f"but got {history!r:.80}")
    return [PhaseReport(**r) for r in history]
