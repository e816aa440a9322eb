r"""The three phases of meta-reweighting, observed from what a reweighter already computes.

Zhang, Holtz, Mishne, Cloninger, "Revisiting Meta-Learning with Noisy Labels: Reweighting
Dynamics and Theoretical Guarantees", arXiv 2510.12209, show that meta-reweighting moves
through three phases:

1. **alignment**: samples consistent with the clean set gain weight and conflicting ones lose it;
2. **filtering**: noisy weights are driven to zero while the clean loss falls;
3. **post-filtering**: the clean loss is small, so the train-clean coupling
   :math:`\langle\nabla\ell_i, \nabla L_{clean}\rangle` vanishes and the weights become
   perturbation-sensitive. Weights computed from here on are unreliable.

The pure functions below compute the statistics and detect the phases from a trajectory.
:class:`PhaseMonitor` applies the same rule online, step by step. It warns once on entering
post-filtering and can freeze the weights from then on.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from robustweights._backend import from_torch, kind_of, to_torch
from robustweights.state import STATE_VERSION, check_state_dict, cpu_copy
from robustweights.validation import check_fraction, check_nonneg_float

__all__ = [
    "PHASES",
    "PhaseBoundaries",
    "PhaseMonitor",
    "PhaseReport",
    "PostFilteringWarning",
    "coupling_magnitude",
    "detect_phases",
    "effective_sample_size",
    "kept_fraction",
    "kept_precision_recall",
]

#: The phases in the order training goes through them.
PHASES = ("alignment", "filtering", "post_filtering")


class PostFilteringWarning(UserWarning):
    """Training entered post-filtering: meta-reweighting weights are perturbation-sensitive."""


# --------------------------------------------------------------------------- validation
def _vector(x: Any, name: str) -> torch.Tensor:
    """A non-empty, finite, 1-D float64 tensor."""
    t = to_torch(x, name)
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"Expected `{name}` to be real numbers, but got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to be a non-empty 1-D array, but got shape "
                         f"{tuple(t.shape)}")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"Expected `{name}` to be finite, but got "
                         f"{int((~torch.isfinite(t)).sum())} NaN/inf entries")
    return t


def _weights(x: Any) -> torch.Tensor:
    w = _vector(x, "weights")
    if bool((w < 0).any()):
        raise ValueError(f"Expected `weights` to be non-negative, but got minimum {float(w.min())}")
    return w


def _mask(x: Any, name: str, n: int) -> torch.Tensor:
    t = to_torch(x, name).detach().cpu()
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have shape ({n},), but got {tuple(t.shape)}")
    if t.dtype != torch.bool:
        if t.dtype.is_floating_point or t.dtype.is_complex or not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"Expected `{name}` to be a boolean mask, but got dtype {t.dtype}")
        t = t.bool()
    return t


def _scalar(x: Any, name: str) -> float:
    if isinstance(x, bool):
        raise TypeError(f"Expected `{name}` to be a number, but got {x!r}")
    t = to_torch(x, name)
    if t.numel() != 1 or t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"Expected `{name}` to be a real scalar, but got shape "
                         f"{tuple(t.shape)} and dtype {t.dtype}")
    v = float(t.reshape(()))
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"Expected `{name}` to be a non-negative finite number, but got {v!r}")
    return v


def _patience(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `patience` to be an integer >= 1, but got {value!r}")
    return value


# --------------------------------------------------------------------------- statistics
def effective_sample_size(weights: Any) -> float:
    r"""Kish's effective sample size of non-negative weights.

    .. math::
        \mathrm{ESS}(w) = \frac{\left(\sum_i w_i\right)^2}{\sum_i w_i^2}

    It is :math:`B` for equal weights, :math:`k` for :math:`k` equal non-zero weights, and 0 when
    every weight is 0.

    Args:
        weights: (B,) non-negative weights (NumPy, torch or DLPack).

    Returns:
        The ESS as a Python float in :math:`[0, B]`.

    Raises:
        ValueError: if ``weights`` is not a non-empty finite 1-D array of non-negative numbers.

    Example:
        >>> effective_sample_size([1.0, 1.0, 0.0, 0.0])
        2.0
    """
    w = _weights(weights)
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


def kept_fraction(weights: Any, *, threshold: float = 0.0) -> float:
    r"""Fraction of samples kept, :math:`\frac{1}{B}\,|\{i : w_i > \tau\}|`.

    Args:
        weights: (B,) non-negative weights.
        threshold: :math:`\tau \ge 0`; a sample is kept when its weight exceeds it.

    Example:
        >>> kept_fraction([0.0, 0.3, 1.0, 0.0])
        0.5
    """
    tau = check_nonneg_float(threshold, "threshold")
    return float((_weights(weights) > tau).double().mean())


def kept_precision_recall(weights: Any, true_clean: Any, *, threshold: float = 0.0
                          ) -> tuple[float, float]:
    r"""Precision and recall of the kept samples against the truly clean ones.

    With :math:`K = \{i : w_i > \tau\}` the kept samples and :math:`T` the truly clean ones:

    .. math::
        \text{precision} = \frac{|K \cap T|}{|K|}, \qquad \text{recall} = \frac{|K \cap T|}{|T|}

    An empty denominator gives 0 (as scikit-learn's ``zero_division=0``), never NaN.

    Args:
        weights: (B,) non-negative weights.
        true_clean: (B,) boolean mask, True where the given label is the true label.
        threshold: :math:`\tau \ge 0`.

    Returns:
        ``(precision, recall)`` as Python floats.

    Example:
        >>> kept_precision_recall([1.0, 1.0, 0.0, 0.0], [True, False, True, False])
        (0.5, 0.5)
    """
    tau = check_nonneg_float(threshold, "threshold")
    w = _weights(weights)
    clean = _mask(true_clean, "true_clean", w.shape[0])
    kept = (w > tau).cpu()
    hits = int((kept & clean).sum())
    n_kept, n_clean = int(kept.sum()), int(clean.sum())
    return (hits / n_kept if n_kept else 0.0, hits / n_clean if n_clean else 0.0)


def coupling_magnitude(coupling: Any) -> float:
    r"""Mean absolute train-clean coupling, :math:`\frac1B\sum_i |u_i|`.

    For L2RW, :math:`u_i = \langle\nabla\ell_i, \nabla L_{clean}\rangle` is
    ``MetaReweighter.last_scores``. For FBR, the directions :math:`d_i` are
    ``SurrogateReweighter.last_directions``. A scalar (0-d) is taken as an already computed
    magnitude and returned as it is.

    Example:
        >>> coupling_magnitude([0.25, -0.75])
        0.5
    """
    t = to_torch(coupling, "coupling")
    if t.ndim == 0:
        return _scalar(t, "coupling")
    return float(_vector(t, "coupling").abs().mean())


# --------------------------------------------------------------------------- detection
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
        self.patience = _patience(patience)
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
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
    kept = _vector(kept_fraction, "kept_fraction")
    if bool(((kept < 0) | (kept > 1)).any()):
        raise ValueError("Expected `kept_fraction` to lie in [0, 1], but got values in "
                         f"[{float(kept.min())}, {float(kept.max())}]")
    n = kept.shape[0]
    losses = _optional_series(clean_loss, "clean_loss", n)
    couplings = _optional_series(coupling, "coupling", n)
    for step, (k, loss, c) in enumerate(zip(kept.tolist(), losses, couplings, strict=True)):
        rule.update(step, k, loss, c)
    return rule.boundaries


# --------------------------------------------------------------------------- monitor
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
    when available, the clean-subset loss and the per-sample coupling. For
    :class:`~robustweights.MetaReweighter` the coupling is ``last_scores``; for
    :class:`~robustweights.SurrogateReweighter` it is ``last_directions``. The phase is detected
    with the causal rule of :func:`detect_phases`. Each report gives the kept fraction
    :math:`|\{i: w_i > \tau\}|/B`, the effective sample size :math:`(\sum w)^2/\sum w^2` and,
    when the true clean mask is known (benchmarks only), precision and recall of the kept
    samples.

    On entering post-filtering the monitor emits one :class:`PostFilteringWarning`. With
    ``freeze=True`` it also freezes the weights. It keeps the last weight it saw for every sample
    id, from updates made before post-filtering. From then on :attr:`frozen` is True and
    :meth:`freeze_weights` returns those stored weights instead of the fresh ones. This is the
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
        >>> report.phase, mon.frozen, mon.freeze_weights([0.2, 0.9, 0.1]).tolist()
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
        self._store = torch.zeros(0, dtype=torch.float64)  # last weight per sample id
        self._seen = torch.zeros(0, dtype=torch.bool)

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
        w = _weights(weights)
        step = len(self.history) if step is None else int(step)
        loss = None if clean_loss is None else _scalar(clean_loss, "clean_loss")
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

    def freeze_weights(self, weights: Any, *, sample_ids: Any = None) -> Any:
        """The weights to train with: ``weights`` unchanged until frozen, then the stored ones.

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
        w = _weights(t).cpu()
        ids = self._ids(sample_ids, w.shape[0])
        n = self._store.shape[0]
        if n:
            idx = ids.clamp(max=n - 1)
            w = torch.where((ids < n) & self._seen[idx], self._store[idx], w)
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
        return {"_version": STATE_VERSION, **self._config(),
                "rule": self._rule.state_dict(),
                "history": [asdict(r) for r in self.history],
                "frozen": self.frozen, "warned": self._warned,
                "stored_weights": cpu_copy(self._store), "stored_seen": cpu_copy(self._seen)}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`; a frozen run stays frozen.

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer layout, or
                thresholds that differ from this monitor's; the message names the key.
        """
        config = self._config()
        keys = (*config, "rule", "history", "frozen", "warned", "stored_weights", "stored_seen")
        check_state_dict(state_dict, owner="PhaseMonitor", keys=keys, config=config,
                         strict=strict)
        if "rule" in state_dict:
            self._rule.load_state_dict(state_dict["rule"])
        if "history" in state_dict:
            self.history = [PhaseReport(**r) for r in state_dict["history"]]
        if "frozen" in state_dict:
            self.frozen = bool(state_dict["frozen"])
        if "warned" in state_dict:
            self._warned = bool(state_dict["warned"])
        if "stored_weights" in state_dict:
            self._store = state_dict["stored_weights"].detach().to(torch.float64, copy=True)
        if "stored_seen" in state_dict:
            self._seen = state_dict["stored_seen"].detach().to(torch.bool, copy=True)

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
        ids = to_torch(sample_ids, "sample_ids").detach().cpu()
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
            raise TypeError(f"Expected `sample_ids` to be integers, but got dtype {ids.dtype}")
        if ids.ndim != 1 or ids.shape[0] != n:
            raise ValueError(f"Expected `sample_ids` to have shape ({n},), but got "
                             f"{tuple(ids.shape)}")
        if bool((ids < 0).any()):
            raise ValueError(f"Expected `sample_ids` to be non-negative, but got minimum "
                             f"{int(ids.min())}")
        return ids.long()

    def _remember(self, ids: torch.Tensor, w: torch.Tensor) -> None:
        need = int(ids.max()) + 1
        if self._store.shape[0] < need:
            grow = need - self._store.shape[0]
            self._store = torch.cat([self._store, torch.zeros(grow, dtype=torch.float64)])
            self._seen = torch.cat([self._seen, torch.zeros(grow, dtype=torch.bool)])
        self._store[ids] = w.cpu()
        self._seen[ids] = True
