r"""Filter health without true labels: is the filter still telling wrong labels from right ones?

A sample filter (FBR's, or any rule that keeps or drops pool samples) can stop discriminating
while training goes on: once the network has fitted a wrong label, that sample looks as
consistent as a correct one, and the filter keeps it. Nothing in the pool says so, because the
pool's labels are what is in doubt. A few *held-out* trusted samples (correctly labelled, never
trained on) do:

- ``heldout_kept``, the share of held-out samples the filter would keep, estimates its
  **recall** :math:`r = P(\text{keep} \mid \text{correct})`;
- ``pool_kept``, the share of the pool it keeps, is :math:`k = \pi r_p + (1 - \pi) f` with
  :math:`\pi` the pool's (unknown) share of correct labels, :math:`r_p` the filter's recall on
  the pool's correct samples and :math:`f = P(\text{keep}\mid \text{wrong})`. With
  :math:`r_p \approx r`, a filter that discriminates (:math:`f < r`) keeps a *smaller* share of
  the pool than of clean data, :math:`k < r`, whatever :math:`\pi < 1` is. But the pool's
  correct samples are trained on and the held-out ones are not, so :math:`r_p > r` and
  :math:`k \ge r` alone does not prove a collapse (a weak network with an honest filter shows it
  too);
- ``pool_agreement``, the share of pool samples whose prediction is their given label, against
  ``heldout_accuracy``: a network that has not memorised agrees with a noisy pool *less* often
  than it is right on clean data (:math:`\approx \pi \cdot` accuracy); agreeing more often is
  memorisation. ``memorising`` is a one-sided test: the agreement exceeds the held-out accuracy
  by more than ``z`` standard errors of their difference.

The filter has **collapsed** when both hold: the network memorises the pool's labels and the
filter keeps at least as large a share of the pool as of clean data, i.e. it keeps samples
because they are fitted, not because they are right. :class:`FilterHealth` accumulates the
counts per epoch and warns (:class:`FilterCollapseWarning`) the first time that has held for
``patience`` consecutive epochs. :class:`~robustweights.SurrogateRecipe` feeds it when given
``health_data``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch

from robustweights._state import STATE_VERSION, check_state_dict

__all__ = ["FilterCollapseWarning", "FilterHealth", "HealthReport"]

_COUNTS = ("pool_n", "pool_kept", "pool_scored", "pool_agree", "held_n", "held_kept",
           "held_correct")


class FilterCollapseWarning(UserWarning):
    """The filter keeps the noisy pool at least as readily as held-out clean samples."""


@dataclass(frozen=True)
class HealthReport:
    """One epoch of :class:`FilterHealth`; a field is None when its counts are missing.

    Attributes:
        epoch: the epoch reported.
        pool_kept: share of the pool samples the filter kept.
        heldout_kept: share of the held-out trusted samples it would keep (a recall estimate).
        pool_agreement: share of pool samples predicted as their given label.
        heldout_accuracy: accuracy on the held-out trusted samples.
        discriminating: ``pool_kept < heldout_kept``.
        memorising: ``pool_agreement`` exceeds ``heldout_accuracy`` by more than ``z``
            standard errors.
        collapsed: for the last ``patience`` consecutive epochs, not discriminating and
            memorising.
    """

    epoch: int
    pool_kept: float | None
    heldout_kept: float | None
    pool_agreement: float | None
    heldout_accuracy: float | None
    discriminating: bool | None
    memorising: bool | None
    collapsed: bool


def _share(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


class FilterHealth:
    """Per-epoch filter-health counts, the :class:`HealthReport` and the collapse warning.

    Args:
        patience: consecutive epochs of collapse evidence before the filter is declared
            collapsed (one epoch's shares rest on few held-out samples).
        z: standard errors by which the pool agreement must exceed the held-out accuracy to
            count as memorisation (2: a one-sided test at about 2.3%).

    Example:
        >>> import torch
        >>> h = FilterHealth(patience=1)
        >>> h.update_pool(kept=torch.tensor([True, False, True, False]),
        ...               agree=torch.tensor([True, True, False, True]))
        >>> h.update_heldout(kept=torch.tensor([True, True, False]),
        ...                  correct=torch.tensor([True, True, True]))
        >>> r = h.end_epoch(0)
        >>> r.pool_kept, round(r.heldout_kept, 3), r.discriminating, r.memorising
        (0.5, 0.667, True, False)
    """

    def __init__(self, *, patience: int = 2, z: float = 2.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"Expected `patience` to be a positive int, but got {patience!r}")
        if not (isinstance(z, (int, float)) and math.isfinite(z) and z >= 0):
            raise ValueError(f"Expected `z` to be a non-negative float, but got {z!r}")
        self.patience = patience
        self.z = float(z)
        self.history: list[HealthReport] = []
        #: the first epoch declared collapsed (None so far)
        self.first_collapse: int | None = None
        self._streak = 0
        self._counts = dict.fromkeys(_COUNTS, 0.0)
        self._scores: list[torch.Tensor] = []

    @property
    def collapsed(self) -> bool:
        """Whether the latest report declared the filter collapsed."""
        return bool(self.history) and self.history[-1].collapsed

    def update_pool(self, *, kept: torch.Tensor | None = None,
                    agree: torch.Tensor | None = None,
                    scores: torch.Tensor | None = None) -> None:
        """Add a pool batch: which samples the filter kept (bool, B) and which are predicted as
        their given label (bool, B). Either may be None (e.g. no filter in the warm-up).
        ``scores`` (B,), the filter's per-sample scores, are kept for :meth:`score_quantile`
        until the epoch ends."""
        if scores is not None:
            self._scores.append(scores.detach().float())
        c = self._counts
        if kept is not None:
            c["pool_scored"] += int(kept.numel())
            c["pool_kept"] += int(kept.sum())
        if agree is not None:
            c["pool_n"] += int(agree.numel())
            c["pool_agree"] += int(agree.sum())

    def score_quantile(self, q: float) -> torch.Tensor | None:
        """The ``q``-quantile of this epoch's pool scores (None before any): a rate rule's
        cutoff, for judging held-out samples as the pool was judged."""
        if not self._scores:
            return None
        return torch.quantile(torch.cat(self._scores), q)

    def update_heldout(self, *, kept: torch.Tensor | None, correct: torch.Tensor) -> None:
        """Add held-out trusted samples: which ones the filter would keep (None in the
        warm-up) and which ones the network predicts correctly (bool)."""
        c = self._counts
        c["held_n"] += int(correct.numel())
        c["held_correct"] += int(correct.sum())
        if kept is not None:
            c["held_kept"] += int(kept.sum())

    def end_epoch(self, epoch: int) -> HealthReport:
        """Close the epoch: its report (appended to :attr:`history`), and one
        :class:`FilterCollapseWarning` the first time the filter is declared collapsed."""
        c = self._counts
        pool_kept = _share(c["pool_kept"], c["pool_scored"])
        held_kept = (_share(c["held_kept"], c["held_n"]) if c["pool_scored"] > 0 else None)
        agreement = _share(c["pool_agree"], c["pool_n"])
        accuracy = _share(c["held_correct"], c["held_n"])
        discriminating = (None if pool_kept is None or held_kept is None
                          else pool_kept < held_kept)
        memorising = None
        if agreement is not None and accuracy is not None:
            se = math.sqrt(agreement * (1 - agreement) / c["pool_n"]
                           + accuracy * (1 - accuracy) / c["held_n"])
            memorising = agreement - accuracy > self.z * se
        if discriminating is False and memorising:
            self._streak += 1
        elif discriminating is not None or memorising is not None:
            self._streak = 0
        collapsed = self._streak >= self.patience
        if collapsed and self.first_collapse is None:
            self.first_collapse = epoch
        report = HealthReport(epoch, pool_kept, held_kept, agreement, accuracy, discriminating,
                              memorising, collapsed)
        self.history.append(report)
        self._counts = dict.fromkeys(_COUNTS, 0.0)
        self._scores = []
        if collapsed and epoch == self.first_collapse:
            warnings.warn(
                f"The filter stopped discriminating at epoch {epoch}: the network memorises the "
                f"pool's labels and the filter keeps "
                f"{100 * (pool_kept or 0):.1f}% of the pool but only "
                f"{100 * (held_kept or 0):.1f}% of the held-out clean samples"
                + (f", and the network agrees with {100 * agreement:.1f}% of the pool's labels "
                   f"while it is right on {100 * accuracy:.1f}% of the held-out samples"
                   if agreement is not None and accuracy is not None else "")
                + ". Its weights no longer separate wrong labels from right ones.",
                FilterCollapseWarning, stacklevel=2)
        return report

    def reset(self) -> None:
        """Forget every report and count."""
        self.__init__(patience=self.patience, z=self.z)  # type: ignore[misc]

    def state_dict(self) -> dict[str, Any]:
        """The reports, the current counts and the warning state (plain values)."""
        return {"_version": STATE_VERSION, "patience": self.patience, "z": self.z,
                "history": [asdict(r) for r in self.history], "streak": self._streak,
                "first_collapse": self.first_collapse, "counts": dict(self._counts),
                "scores": torch.cat(self._scores).cpu() if self._scores else None}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict` (configuration ``patience`` checked)."""
        check_state_dict(state_dict, owner="FilterHealth",
                         keys=("patience", "z", "history", "streak", "first_collapse",
                               "counts", "scores"),
                         config={"patience": self.patience, "z": self.z}, strict=strict)
        if "history" in state_dict:
            self.history = [HealthReport(**r) for r in state_dict["history"]]
        self._streak = int(state_dict.get("streak", self._streak))
        if "first_collapse" in state_dict:
            fc = state_dict["first_collapse"]
            self.first_collapse = None if fc is None else int(fc)
        if "counts" in state_dict:
            self._counts = {k: float(state_dict["counts"][k]) for k in _COUNTS}
        if "scores" in state_dict:
            sc = state_dict["scores"]
            self._scores = [] if sc is None else [sc.detach().clone()]

    def __repr__(self) -> str:
        return f"FilterHealth(patience={self.patience}, z={self.z}, epochs={len(self.history)})"
