r"""The recipe's configuration, and its named configurations.

One frozen object holds every choice of :class:`~robustweights.SurrogateRecipe` (the schedule
and the options beyond the authors' recipe), so that a named configuration is a value
(:meth:`RecipeConfig.authors`), a checkpoint can say which configuration it was made with, and
a change of one field is ``dataclasses.replace(config, field=value)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from robustweights._validation import (
    check_fraction,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_int,
)

__all__ = ["RecipeConfig"]


@dataclass(frozen=True)
class RecipeConfig:
    r"""Every choice of the FBR training recipe.

    The defaults are the recommended recipe, chosen on held-out seeds of the CIFAR-N benchmark
    by a rule written before the runs (docs, *Choosing a configuration*): the authors' threshold
    rule from the first epoch (no warm-up, :math:`\alpha = 0`), the trusted images trained in
    the pool's batches rather than in clean passes, each batch's features from an eval-mode
    forward (so that the training forward may see mixed images), and the dropped samples kept in
    the loss: towards a pseudo-label where the nearest clean prototype and the network agree
    confidently, else under their given label at weight 0.5, or at weight 0 while the network
    gives another class a probability of at least 0.7 before epoch 40 (the doubt gate, until the
    benchmark schedule's first learning-rate drop). Train with
    :func:`~robustweights.recipe.targets.mixup` on :meth:`SurrogateRecipe.targets` (the recipe's
    docstring shows the loop). :meth:`authors` is the authors' exact recipe.

    Attributes:
        warmup_epochs: epochs at the warm-up weight for every sample (authors: 10 of 150;
            default 0).
        warmup_weight: every sample's weight in the warm-up: None (default) for :math:`w_0`,
            the authors'; 1.0 trains the warm-up as plain training (your loss unweighted).
        alpha_switch: first epoch with :math:`\alpha = 0` (authors: 40, their first
            learning-rate drop; default 0: :math:`\alpha = 0` throughout, which needs
            :math:`C \ge 3`).
        clean_passes: passes over the clean set at the start of every epoch (authors: 30 over
            2,000 images; default 0: the recommended recipe trains the trusted images in the
            pool's batches instead, marked by ``weights(..., trusted=)``, at weight 1 and mixed
            like any other image).
        clean_batch_size: batch size of those passes over a pair of tensors (128).
        eval_features: the batch's features from a separate no-grad eval-mode forward (default,
            as the authors'); False: from your training forward (``weights(..., features=)``,
            or what the hook on ``head`` recorded), one forward fewer per batch.
        dropped_weight: :math:`\rho`, the weight of a sample FBR drops (default 0.5; the
            authors' 0): the network still sees its image.
        smoothing: :math:`m`: each sample's weight is its running average
            :math:`\bar w_i \leftarrow m\,\bar w_i + (1-m)\,w_i` over its visits, from
            :math:`w_0` (0: off; needs ``sample_ids``).
        drop_rate: :math:`\tau`, the *rate rule* instead of the authors' threshold at
            :math:`w_0` (None): each batch keeps its :math:`\lfloor(1 - r(t))B\rfloor` highest
            directions :math:`d_i` at :math:`w_{\max}` and drops the rest, with
            :math:`r(t) = \tau\min(t/(T_k-1), 1)` (Co-teaching's ramp,
            :mod:`robustweights.selection`). Under DDP each rank ranks its own batch.
        drop_ramp_epochs: :math:`T_k`, epochs of that ramp.
        class_balanced: the rate rule keeps its share within each label class of the batch.
        thresholds: ``"global"`` (the authors' rule: keep :math:`d_i > 0`, or the rate rule) or
            ``"calibrated"``: keep :math:`d_i > t_{y_i}` with :math:`\alpha = 0`, where
            :math:`t_c` is the ``calibration_quantile`` of the directions of trusted images of
            class :math:`c` scored against prototypes that leave them out (or of
            ``calibration_data``), so that every class keeps the same share of its correctly
            labelled samples (:mod:`robustweights.recipe.calibration`).
        calibration_quantile: :math:`q`, the share of correctly labelled samples a calibrated
            threshold drops in every class.
        calibration_holdout: with ``thresholds="calibrated"``, hold this many trusted images of
            every class out of ``clean_data`` (an ``(inputs, labels)`` pair) for the
            calibration: they are never trained on and never in the prototypes
            (:func:`~robustweights.recipe.calibration.holdout_split`). 0: ``calibration_data``
            or, without it, leave-one-out scores of the prototype images.
        pseudo_labels: :meth:`SurrogateRecipe.targets` gives a dropped sample the class of its
            nearest clean prototype as a pseudo-label where the network's prediction agrees
            with it and is confident
            (:func:`~robustweights.recipe.targets.agreement_pseudo_labels`).
        pseudo_confidence: :math:`\kappa`, the least softmax probability of that prediction.
        pseudo_ramp_epochs: the pseudo-labels' weight ramps linearly from 0 to :math:`w_{\max}`
            over this many epochs after the warm-up.
        dropped_target: what a dropped sample that no pseudo-label took trains towards (at
            ``dropped_weight``): ``"label"`` (its given label) or ``"bootstrap"``
            (:math:`(1-\beta r)\,e_{y_i} + \beta r\,e_{g_i}`, :math:`g_i` the network's class,
            :math:`r` the pseudo-label ramp;
            :func:`~robustweights.recipe.targets.bootstrap_targets`).
        bootstrap_share: :math:`\beta`, the share of that target on the network's class.
        bootstrap_start: epochs after the warm-up before the first bootstrapped target; the
            ramp :math:`r` starts there (a network guessing from the first epochs trains on its
            own early mistakes).
        dropped_doubt: :math:`b`, the *doubt gate*: a dropped sample that no pseudo-label took
            gets weight 0 instead of ``dropped_weight`` where the network gives a class other
            than its label a probability of at least :math:`b`
            (:func:`~robustweights.recipe.targets.doubt_gate`; default 0.7; None: never, the
            authors'). It reads the network's logits (``eval_features``, or
            ``targets(..., logits=)``); with ``dropped_weight`` 0 there is no weight to take.
        dropped_doubt_until: the first epoch (as given to
            :meth:`~robustweights.SurrogateRecipe.start_epoch`) without the doubt gate; None:
            every epoch. Set it to your schedule's first learning-rate drop: on held-out seeds
            the gate gained before the drop, and gated in every epoch it lost a point where the
            network underfits. Default 40, the first drop of the benchmark's 80-epoch schedules.
        health_patience: epochs of a non-discriminating filter before the health warning.

    Example:
        >>> c = RecipeConfig()
        >>> c.warmup_epochs, c.alpha_switch, c.clean_passes, c.eval_features, c.dropped_weight
        (0, 0, 0, True, 0.5)
        >>> c.pseudo_labels, c.thresholds, c.dropped_doubt, c.dropped_doubt_until
        (True, 'global', 0.7, 40)
        >>> c == RecipeConfig.authors(warmup_epochs=0, alpha_switch=0, clean_passes=0,
        ...                           dropped_weight=0.5, pseudo_labels=True, dropped_doubt=0.7)
        True
        >>> RecipeConfig.authors().clean_passes, RecipeConfig.authors().eval_features
        (30, True)
        >>> RecipeConfig(warmup_epochs=5, alpha_switch=40).warmup_epochs
        5
    """

    warmup_epochs: int = 0
    warmup_weight: float | None = None
    alpha_switch: int = 0
    clean_passes: int = 0
    clean_batch_size: int = 128
    eval_features: bool = True
    dropped_weight: float = 0.5
    smoothing: float = 0.0
    drop_rate: float | None = None
    drop_ramp_epochs: int = 10
    class_balanced: bool = False
    health_patience: int = 2
    thresholds: str = "global"
    calibration_quantile: float = 0.2
    calibration_holdout: int = 0
    pseudo_labels: bool = True
    pseudo_confidence: float = 0.95
    pseudo_ramp_epochs: int = 10
    dropped_target: str = "label"
    bootstrap_share: float = 0.8
    bootstrap_start: int = 0
    dropped_doubt: float | None = 0.7
    dropped_doubt_until: int | None = 40

    def __post_init__(self) -> None:
        for name in ("warmup_epochs", "alpha_switch", "clean_passes", "drop_ramp_epochs"):
            check_nonneg_int(getattr(self, name), name)
        check_positive_int(self.clean_batch_size, "clean_batch_size")
        check_positive_int(self.health_patience, "health_patience")
        check_nonneg_float(self.dropped_weight, "dropped_weight")
        if self.warmup_weight is not None:
            check_nonneg_float(self.warmup_weight, "warmup_weight")
        if self.smoothing != 0:
            check_fraction(self.smoothing, "smoothing")
            if self.smoothing >= 1:
                raise ValueError(f"Expected `smoothing` to be in [0, 1), but got "
                                 f"{self.smoothing!r}")
        if self.drop_rate is not None:
            check_fraction(self.drop_rate, "drop_rate")
        if self.thresholds not in ("global", "calibrated"):
            raise ValueError(f"Expected `thresholds` to be 'global' or 'calibrated', but got "
                             f"{self.thresholds!r}")
        if self.thresholds == "calibrated" and self.drop_rate is not None:
            raise ValueError("Expected `drop_rate` to be None with `thresholds='calibrated'`, "
                             f"but got {self.drop_rate!r}")
        if not 0.0 <= self.calibration_quantile < 1.0:
            raise ValueError(f"Expected `calibration_quantile` to be in [0, 1), but got "
                             f"{self.calibration_quantile!r}")
        check_nonneg_int(self.calibration_holdout, "calibration_holdout")
        if self.calibration_holdout and self.thresholds != "calibrated":
            raise ValueError("Expected `thresholds='calibrated'` with `calibration_holdout`, but "
                             f"got {self.thresholds!r}")
        if isinstance(self.pseudo_confidence, bool) or not 0 <= self.pseudo_confidence <= 1:
            raise ValueError(f"Expected `pseudo_confidence` to be in [0, 1], but got "
                             f"{self.pseudo_confidence!r}")
        check_nonneg_int(self.pseudo_ramp_epochs, "pseudo_ramp_epochs")
        if self.dropped_target not in ("label", "bootstrap"):
            raise ValueError(f"Expected `dropped_target` to be 'label' or 'bootstrap', but got "
                             f"{self.dropped_target!r}")
        check_fraction(self.bootstrap_share, "bootstrap_share")
        check_nonneg_int(self.bootstrap_start, "bootstrap_start")
        if self.dropped_doubt is not None:
            check_fraction(self.dropped_doubt, "dropped_doubt")
        if self.dropped_doubt_until is not None:
            check_nonneg_int(self.dropped_doubt_until, "dropped_doubt_until")
        if not isinstance(self.pseudo_labels, bool):
            raise TypeError(f"Expected `pseudo_labels` to be a bool, but got "
                            f"{type(self.pseudo_labels).__name__}")

    @classmethod
    def authors(cls, **changes: Any) -> RecipeConfig:
        """The authors' exact recipe (warm-up 10, alpha switch 40, 30 clean passes, eval-mode
        features, dropped samples at weight 0), with ``changes`` (e.g. a warm-up and switch
        scaled to a shorter run). Its eval-mode forward runs inside ``weights()``; call
        ``weights()`` before the training forward to reproduce the authors' order exactly (after
        it, BatchNorm's running statistics already include the batch)."""
        authors = cls(warmup_epochs=10, alpha_switch=40, clean_passes=30, clean_batch_size=128,
                      eval_features=True, dropped_weight=0.0, smoothing=0.0,
                      drop_rate=None,
                      drop_ramp_epochs=10, class_balanced=False, health_patience=2,
                      thresholds="global", calibration_quantile=0.2, calibration_holdout=0,
                      pseudo_labels=False,
                      pseudo_confidence=0.95, pseudo_ramp_epochs=10, dropped_target="label",
                      bootstrap_share=0.8, bootstrap_start=0, dropped_doubt=None)
        return replace(authors, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain values (what a checkpoint stores)."""
        return asdict(self)


def resolve_config(config: RecipeConfig | None, options: dict[str, Any]) -> RecipeConfig:
    """``config`` (default ``RecipeConfig()``) with ``options``, fields of it given as keywords;
    a named ``TypeError`` for anything else."""
    config = config if config is not None else RecipeConfig()
    if not isinstance(config, RecipeConfig):
        raise TypeError(f"Expected `config` to be a RecipeConfig, but got "
                        f"{type(config).__name__}")
    unknown = set(options) - {f.name for f in fields(RecipeConfig)}
    if unknown:
        raise TypeError(f"Expected keyword options among the fields of RecipeConfig, but got "
                        f"{sorted(unknown)}")
    return replace(config, **options)
