r"""Phase detection: the causal rule that places the filtering and post-filtering boundaries,
shared by :func:`detect_phases` (a recorded trajectory) and the online
:class:`~robustweights.PhaseMonitor`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from robustweights._backend import to_torch
from robustweights._validation import check_fraction, check_positive_int, check_vector

__all__ = ["PHASES", "PhaseBoundaries", "detect_phases"]

#: The phases in the order training goes through them.
PHASES = ("alignment", "filtering", "post_filtering")


@dataclass(frozen=True)
class PhaseBoundaries:
    """Where each phase starts: the index (or step) of its first update, or None if not reached.

    Alignment always starts at 0. Phases never go back: ``alignment`` before ``filtering``,
    ``filtering`` before ``post_filtering``.
    """

    filtering: int | None = None
    post_filtering: int | None = None

    def phase_at(self, step: int) -> str:
        """The phase at ``step``: ``"alignment"``, ``"filtering"`` or ``"post_filtering"``."""
        if self.post_filtering is not None and step >= self.post_filtering:
            return "post_filtering"
        if self.filtering is not None and step >= self.filtering:
            return "filtering"
        return "alignment"


class _PhaseRule:
    """The detection rule's running state, shared by :func:`detect_phases` and the monitor."""

    def __init__(self, filter_onset: float, loss_fraction: float, coupling_fraction: float,
                 patience: int) -> None:
        self.filter_onset = check_fraction(filter_onset, "filter_onset")
        self.loss_fraction = check_fraction(loss_fraction, "loss_fraction")
        self.coupling_fraction = check_fraction(coupling_fraction, "coupling_fraction")
        self.patience = check_positive_int(patience, "patience")
        self.loss_peak = -math.inf
        self.coupling_peak = -math.inf
        self.filter_run = 0
        self.post_run = 0
        self.filtering: int | None = None
        self.post_filtering: int | None = None

    def update(self, step: int, kept: float, loss: float | None, coupling: float | None) -> None:
        if loss is not None:
            self.loss_peak = max(self.loss_peak, loss)
        if coupling is not None:
            self.coupling_peak = max(self.coupling_peak, coupling)
        self.filter_run = self.filter_run + 1 if 1.0 - kept >= self.filter_onset else 0
        post = loss is not None and loss <= self.loss_fraction * self.loss_peak and (
            coupling is None or coupling <= self.coupling_fraction * self.coupling_peak)
        self.post_run = self.post_run + 1 if post else 0
        if self.filtering is None and self.filter_run >= self.patience:
            self.filtering = step
        if self.post_filtering is None and self.post_run >= self.patience:
            self.post_filtering = step
            if self.filtering is None:  # the coupling vanished before any sample was dropped
                self.filtering = step

    @property
    def boundaries(self) -> PhaseBoundaries:
        return PhaseBoundaries(self.filtering, self.post_filtering)

    #: The running values a checkpoint keeps (plain Python numbers or None).
    STATE = ("loss_peak", "coupling_peak", "filter_run", "post_run", "filtering",
             "post_filtering")

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state: Any) -> None:
        if not isinstance(state, dict) or not set(state) <= set(self.STATE):
            raise ValueError(f"Expected `state_dict['rule']` to hold some of {list(self.STATE)}, "
                             f"but got {state!r:.80}")
        for name in ("loss_peak", "coupling_peak"):
            if name in state and (isinstance(state[name], bool)
                                  or not isinstance(state[name], (int, float))):
                raise ValueError(f"Expected `state_dict['rule']['{name}']` to be a number, but "
                                 f"got {state[name]!r:.80}")
        for name in ("filter_run", "post_run", "filtering", "post_filtering"):
            optional = name in ("filtering", "post_filtering")
            value = state.get(name, 0)
            if not ((optional and value is None) or (isinstance(value, int)
                                                     and not isinstance(value, bool))):
                raise ValueError(f"Expected `state_dict['rule']['{name}']` to be an integer"
                                 f"{' or None' if optional else ''}, but got {value!r:.80}")
        for name in self.STATE:
            if name in state:
                setattr(self, name, state[name])


def _optional_series(values: Any, name: str, n: int) -> list[float | None]:
    if values is None:
        return [None] * n
    t = to_torch(values, name).detach().to(torch.float64)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have shape ({n},) like `kept_fraction`, but got "
                         f"{tuple(t.shape)}")
    finite = t[~torch.isnan(t)]
    if bool((finite < 0).any()) or bool(torch.isinf(finite).any()):
        raise ValueError(f"Expected `{name}` to be non-negative and finite (NaN marks a missing "
                         f"step), but got values in [{float(finite.min())}, "
                         f"{float(finite.max())}]")
    return [None if math.isnan(v) else v for v in t.tolist()]


def detect_phases(kept_fraction: Any, clean_loss: Any = None, coupling: Any = None, *,
                  filter_onset: float = 0.05, loss_fraction: float = 0.1,
                  coupling_fraction: float = 0.1, patience: int = 1) -> PhaseBoundaries:
    r"""Detect the three phases of meta-reweighting from observable per-step signals.

    The rule is causal: the phase at step :math:`t` depends only on steps :math:`\le t`, so
    :class:`PhaseMonitor` reaches the same boundaries online. With :math:`k_t` the kept fraction,
    :math:`L_t` the clean-subset loss and :math:`c_t` the coupling magnitude
    (:func:`coupling_magnitude`), define the two conditions

    .. math::
        \text{filter}_t:\ 1 - k_t \ge \text{filter\_onset}, \qquad
        \text{post}_t:\ L_t \le \text{loss\_fraction}\cdot\max_{s\le t} L_s
        \ \wedge\ c_t \le \text{coupling\_fraction}\cdot\max_{s\le t} c_s .

    Filtering starts at the first step where :math:`\text{filter}_t` has held for ``patience``
    consecutive steps: enough samples have been dropped. Post-filtering starts at the first step
    where :math:`\text{post}_t` has held for ``patience`` consecutive steps: the clean loss and the
    coupling have both fallen far below their peaks. Before filtering, training is in alignment.
    The boundary is the step at which the condition completes its run, i.e. the step where an
    online monitor can first tell. If post-filtering is detected before any sample was dropped,
    filtering starts at the same step and has length zero.

    A step without a clean loss (NaN) cannot satisfy :math:`\text{post}_t`. Without a coupling
    (``coupling`` None, or NaN at a step) only the loss condition is used there. FBR's
    directions do not vanish when the clean loss does. Pass them as ``coupling`` and FBR training
    is, correctly, never declared post-filtering. Stateless weights (L2RW normalised per step,
    FBR in "recompute" mode) drop samples from the first step, so their alignment phase has
    length zero; the boundary that matters for them is post-filtering.

    Args:
        kept_fraction: (T,) fraction of samples kept per step (see :func:`kept_fraction`).
        clean_loss: (T,) clean-subset loss per step, or None.
        coupling: (T,) coupling magnitude per step, or None.
        filter_onset: dropped fraction in (0, 1] that marks the start of filtering.
        loss_fraction: clean loss, as a fraction in (0, 1] of its running peak, below which
            post-filtering may start.
        coupling_fraction: coupling, as a fraction in (0, 1] of its running peak, below which
            post-filtering may start.
        patience: number of consecutive steps (>= 1) a condition must hold.

    Returns:
        The :class:`PhaseBoundaries` as step indices into the sequences.

    Raises:
        ValueError: for thresholds out of range, sequences of different lengths, kept fractions
            outside [0, 1], or negative losses or couplings.

    Example:
        >>> b = detect_phases([1.0, 1.0, 0.7, 0.6, 0.6], [1.0, 0.8, 0.3, 0.05, 0.04],
        ...                   [1.0, 0.9, 0.5, 0.05, 0.02])
        >>> b.filtering, b.post_filtering, b.phase_at(1)
        (2, 3, 'alignment')
    """
    rule = _PhaseRule(filter_onset, loss_fraction, coupling_fraction, patience)
    kept = check_vector(kept_fraction, "kept_fraction")
    if bool(((kept < 0) | (kept > 1)).any()):
        raise ValueError("Expected `kept_fraction` to lie in [0, 1], but got values in "
                         f"[{float(kept.min())}, {float(kept.max())}]")
    n = kept.shape[0]
    losses = _optional_series(clean_loss, "clean_loss", n)
    couplings = _optional_series(coupling, "coupling", n)
    for step, (k, loss, c) in enumerate(zip(kept.tolist(), losses, couplings, strict=True)):
        rule.update(step, k, loss, c)
    return rule.boundaries
