r"""The FBR training recipe as steps the caller composes: :class:`SurrogateRecipe`. The
accuracy the paper reports (Zhang et al., arXiv 2510.12209) comes from the recipe around FBR's
weights as much as from the weights; the caller's loop, or a framework's, runs every step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from robustweights._data import (
    Batch,
    CleanData,
    batches_per_pass,
    check_batch_logits,
    check_class_labels,
    check_data,
    eval_mode,
    iterate,
)
from robustweights._sample_store import SampleStore
from robustweights._validation import (
    check_keywords_only,
    check_loss_fn,
    check_nonneg_int,
)
from robustweights.features import FeatureCapture
from robustweights.losses import LossFn, per_sample_losses
from robustweights.phases.health import FilterHealth, HealthReport
from robustweights.recipe.calibration import holdout_split, recipe_thresholds
from robustweights.recipe.checkpoint import load_recipe_state_dict, recipe_state_dict
from robustweights.recipe.config import RecipeConfig, resolve_config
from robustweights.recipe.health import score_heldout
from robustweights.recipe.targets import (
    Targets,
    bootstrap_targets,
    doubt_gate,
    pseudo_label_targets,
)
from robustweights.recipe.weights import pool_weights
from robustweights.surrogate import AlphaSchedule, SurrogateReweighter

__all__ = ["SurrogateRecipe"]

def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


class SurrogateRecipe:
    r"""Feature-based reweighting (FBR) as a training recipe whose steps the caller runs.

    Every epoch::

        recipe.start_epoch(epoch)                    # the schedule: warm-up, alpha
        for xc, yc in recipe.clean_batches():        # clean passes if configured (none by
            step(recipe.clean_loss(net(xc), yc))     # default); then the prototypes' refresh
        for x, y, trusted in loader:                 # the pool and the trusted images
            w = recipe.weights(inputs=x, labels=y, trusted=trusted)  # its own eval forward
            t = recipe.targets(y, w)                 # pseudo-labels, the floor
            xm, q, wm = mixup(x, t.labels, t.weights, num_classes=C)
            step(soft_cross_entropy(net(xm), q, wm))

    where ``step(loss)`` is yours (``opt.zero_grad(); loss.backward(); opt.step()``, AMP, ...)
    and :func:`~robustweights.recipe.targets.mixup` and
    :func:`~robustweights.recipe.targets.soft_cross_entropy` are the loss helpers (without mixup:
    ``step(recipe.loss(net(x), t.labels, t.weights))``; with ``eval_features=False``, run the
    forward first and pass its ``logits=``).
    The steps are the authors' recipe (their public code): ``clean_passes`` shuffled passes over
    the clean set every epoch, warm-up included; prototypes from eval-mode penultimate features
    (the input of ``head``) of ``prototype_data``, refreshed when the clean passes end
    (:meth:`refresh_prototypes`); weights :math:`w_0` in the warm-up, then FBR's from the
    batch's features (the training forward's, which the hook on ``head`` records, or with
    ``eval_features`` the authors' no-grad eval-mode forward of ``model``: the network you
    train, an EMA teacher or a peer), :math:`\alpha = 1/(C-1)` before ``alpha_switch`` and 0
    after; :meth:`loss` :math:`= \frac1B\sum_i w_i\,\ell(z_i, y_i)`, weights detached.
    ``docs/recipes.md`` maps every step to the authors' code. The schedule and the options
    beyond it (per-class calibrated thresholds, pseudo-labels for dropped samples, a floor,
    smoothing, the *rate rule*) are one :class:`~robustweights.RecipeConfig`. With
    ``health_data`` (trusted samples held out of ``clean_data``), :meth:`end_epoch` reports
    whether the filter still discriminates. The hook on ``head`` stays until :meth:`remove`
    (or the end of a ``with`` block).

    Args:
        num_classes: :math:`C`.
        model: the feature network (any ``nn.Module``; DDP-wrapped too); returns logits.
        head: its linear head, whose *input* is the penultimate feature (e.g. ``model.fc``).
        clean_data: the trusted clean set: an ``(inputs, labels)`` pair of tensors on the model's
            device, or a re-iterable of such batches (a ``DataLoader``, moved to the device of
            ``model``'s first parameter). Under DDP give every rank the same number of clean
            batches (each clean step is a DDP step).
        prototype_data: the data of the prototypes (default: ``clean_data``; give a loader
            without augmentation when ``clean_data`` augments).
        health_data: held-out trusted samples for :meth:`end_epoch` (a pair of tensors or a
            re-iterable of batches, like ``clean_data``).
        calibration_data: held-out trusted samples for ``thresholds="calibrated"`` (default:
            ``calibration_holdout`` images of ``clean_data``, or each prototype image scored
            against prototypes that leave it out).
        config: the schedule and options, a :class:`~robustweights.RecipeConfig` (its defaults).
        options: fields of ``config`` to change, as keywords (``warmup_epochs=5``).
        loss_fn: per-sample loss ``loss_fn(logits, labels) -> (B,)`` (default cross-entropy).
        reweighter: a configured :class:`~robustweights.SurrogateReweighter` (default: the
            reference one with the alpha schedule above).
        generator: the random source of the clean passes' order (CPU). Default: a generator
            seeded with ``torch.initial_seed()``, so the order follows ``torch.manual_seed``.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> xc, yc = torch.randn(30, 4), torch.arange(30) % 3
        >>> recipe = SurrogateRecipe(3, model=net, head=net[2], clean_data=(xc, yc),
        ...                          config=RecipeConfig(warmup_epochs=1, clean_passes=2))
        >>> recipe.start_epoch(0)                         # warm-up: weights 0.5
        >>> for xb, yb in recipe.clean_batches():
        ...     opt.zero_grad(); recipe.clean_loss(net(xb), yb).backward(); opt.step()
        >>> x, y = torch.randn(5, 4), torch.zeros(5, dtype=torch.long)
        >>> w = recipe.weights(inputs=x, labels=y, logits=net(x))
        >>> w
        tensor([0.5000, 0.5000, 0.5000, 0.5000, 0.5000])
        >>> recipe.loss(net(x), y, w).backward()
    """

    def __init__(self, num_classes: int, *, model: nn.Module, head: nn.Module,
                 clean_data: CleanData, prototype_data: CleanData | None = None,
                 health_data: CleanData | None = None,
                 calibration_data: CleanData | None = None, config: RecipeConfig | None = None,
                 loss_fn: LossFn | None = None, reweighter: SurrogateReweighter | None = None,
                 generator: torch.Generator | None = None, **options: Any) -> None:
        if not isinstance(model, nn.Module) or not isinstance(head, nn.Module):
            bad, name = (model, "model") if not isinstance(model, nn.Module) else (head, "head")
            raise TypeError(f"Expected `{name}` to be a torch.nn.Module, but got "
                            f"{type(bad).__name__}")
        self.config = resolve_config(config, options)
        cfg = self.config
        self.model = model
        self.clean_data = check_data(clean_data, "clean_data")
        if cfg.calibration_holdout:  # the trusted images the thresholds are calibrated on
            if calibration_data is not None:
                raise ValueError("Expected `calibration_data` or `calibration_holdout`, not both")
            self.clean_data, calibration_data = holdout_split(
                self.clean_data, cfg.calibration_holdout, num_classes)
        self.prototype_data = (self.clean_data if prototype_data is None
                               else check_data(prototype_data, "prototype_data"))
        self.loss_fn: LossFn = _cross_entropy if loss_fn is None else check_loss_fn(loss_fn)
        self.reweighter = reweighter if reweighter is not None else SurrogateReweighter(
            num_classes, alpha=AlphaSchedule(num_classes, cfg.alpha_switch))
        if self.reweighter.num_classes != num_classes:
            raise ValueError(f"Expected the reweighter's `num_classes` to be {num_classes}, but "
                             f"got {self.reweighter.num_classes}")
        self.num_classes = num_classes
        for name in ("dropped_weight", "warmup_weight"):
            value = getattr(cfg, name)
            if value is not None and value > self.reweighter.w_max:
                raise ValueError(f"Expected `{name}` to be at most `w_max` = "
                                 f"{self.reweighter.w_max}, but got {value!r}")
        self.health_data = None if health_data is None else check_data(health_data,
                                                                        "health_data")
        self.health = FilterHealth(patience=cfg.health_patience)
        self.generator = (generator if generator is not None
                          else torch.Generator().manual_seed(torch.initial_seed()))
        self.epoch = 0
        self.last_weights: torch.Tensor | None = None  # the weights of the latest batch
        self.last_fbr_weights: torch.Tensor | None = None  # before smoothing and the floor
        self._stale = True  # prototypes older than the latest clean step
        self._eval_logits: torch.Tensor | None = None
        self._smoothed = SampleStore(fill=self.reweighter.w_init)  # with ``smoothing``
        self._capture = FeatureCapture(head)
        self.calibration_data = (None if calibration_data is None
                                 else check_data(calibration_data, "calibration_data"))
        self._thresholds: torch.Tensor | None = None  # per class, with thresholds="calibrated"
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None  # features, labels used
        self._used = -1  # the capture's count when its features were last used

    def __repr__(self) -> str:
        return (f"SurrogateRecipe(num_classes={self.num_classes}, config={self.config!r}, "
                f"model={type(self.model).__name__})")

    # ------------------------------------------------------------------ schedule
    @property
    def in_warmup(self) -> bool:
        """Whether the current epoch is a warm-up epoch (every weight ``w_init``, or the
        config's ``warmup_weight``)."""
        return self.epoch < self.config.warmup_epochs

    @property
    def eval_logits(self) -> torch.Tensor | None:
        """The logits (B, C, detached) of the eval-mode forward that :meth:`weights` ran on the
        latest pool batch with ``eval_features=True`` (None otherwise): the network's prediction
        of the batch as :meth:`weights` got it, e.g. for
        :class:`~robustweights.recipe.elr.PredictionAverage` when the training forward sees
        mixed images."""
        return self._eval_logits

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.empty(0)).device

    def start_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from 0): the warm-up and alpha schedule follow it. The
        prototypes are then out of date until :meth:`clean_batches` ends or
        :meth:`refresh_prototypes` runs."""
        self.epoch = check_nonneg_int(epoch, "epoch")
        self.reweighter.set_epoch(self.epoch)
        self._stale = True  # at least once an epoch (the network moved), also without passes

    def clean_batches(self) -> Iterator[Batch]:
        """This epoch's clean passes: ``clean_passes`` passes over ``clean_data``, as
        ``(inputs, labels)`` batches on the model's device. Train on each; after the last one
        (also with no pass) the generator refreshes the prototypes
        (:meth:`refresh_prototypes`), so iterate it to its end before :meth:`weights`."""
        for _ in range(self.config.clean_passes):
            for batch in self._iterate(self.clean_data, shuffle=True):
                self._stale = True
                yield batch
                self._used = self._capture.count  # that forward was a clean batch's
        self.refresh_prototypes()

    @property
    def clean_steps_per_epoch(self) -> int | None:
        """How many batches :meth:`clean_batches` yields (None for an iterable without len)."""
        per_pass = batches_per_pass(self.clean_data, self.config.clean_batch_size)
        return None if per_pass is None else self.config.clean_passes * per_pass

    def epoch_batches(self, pool: Iterable[Any]) -> Iterator[tuple[str, Any]]:
        """One epoch as a stream of tagged batches: ``("clean", (x, y))`` for each clean-pass
        batch, then ``("pool", batch)`` for each batch of ``pool``. What a framework's loop
        iterates (Lightning, ``Trainer``), so that each clean step is one of its training steps."""
        for batch in self.clean_batches():
            yield "clean", batch
        for batch in pool:
            yield "pool", batch

    def _iterate(self, data: CleanData, *, shuffle: bool, chunk: int | None = None
                 ) -> Iterator[Batch]:
        return iterate(data, shuffle=shuffle, batch_size=self.config.clean_batch_size,
                       generator=self.generator, chunk=chunk, device=self.device)

    # ------------------------------------------------------------------ prototypes
    @torch.no_grad()
    def refresh_prototypes(self) -> None:
        """Recompute the clean prototypes (and the calibrated thresholds) from eval-mode features
        of ``prototype_data``. :meth:`clean_batches` calls it after its last batch; call it
        yourself before :meth:`weights` if you do not iterate the clean passes."""
        feats, labels = [], []
        with eval_mode(self.model):
            for x, y in self._iterate(self.prototype_data, shuffle=False, chunk=512):
                self.model(x)
                feats.append(self._capture.features)
                labels.append(y)
        feats_, labels_ = torch.cat(feats), torch.cat(labels)
        self.reweighter.set_clean(features=feats_, labels=labels_)
        if self.config.thresholds == "calibrated":
            self._thresholds = recipe_thresholds(self, feats_, labels_)
        self._stale = False
        self._used = self._capture.count  # these forwards were not a pool batch's

    # ------------------------------------------------------------------ weights and targets
    def weights(self, *args: Any, labels: torch.Tensor | None = None,
                inputs: torch.Tensor | None = None,
                sample_ids: torch.Tensor | None = None, features: torch.Tensor | None = None,
                logits: torch.Tensor | None = None,
                trusted: torch.Tensor | None = None) -> torch.Tensor:
        """The weights (B,) of one pool batch, as the recipe says (class docstring). Every
        input is checked in every epoch, warm-up included.

        Args:
            labels: the batch's (noisy) labels, integers in ``[0, C)``.
            inputs: the batch as the training forward gets it (augmented); needed with
                ``eval_features=True`` (the eval forward's input).
            sample_ids: the samples' dataset indices (needed by ``smoothing`` and by an
                incremental-mode reweighter).
            features: with ``eval_features=False``, the training forward's penultimate features
                (default: what the recipe's hook on ``head`` recorded at the latest forward).
            logits: the training forward's logits, for the health report's agreement signal
                (not needed with ``eval_features=True``, whose eval forward gives them).
            trusted: bool (B,), the rows that are trusted images (the recommended recipe trains
                them in the pool's batches): weight :math:`w_{\\max}`, never scored, counted
                or relabelled (:meth:`targets` keeps their labels); the other rows are weighted
                exactly as a batch of their own would be.
        """
        check_keywords_only(self, "weights", args, ("labels", "inputs"))
        return pool_weights(self, labels=labels, inputs=inputs, sample_ids=sample_ids,
                            features=features, logits=logits, trusted=trusted)

    @torch.no_grad()
    def targets(self, labels: torch.Tensor, weights: torch.Tensor, *,
                logits: torch.Tensor | None = None,
                peer_logits: torch.Tensor | None = None) -> Targets:
        r"""The training targets of the batch whose :meth:`weights` were just computed: the
        weights, and with ``pseudo_labels`` a pseudo-label for each dropped sample whose nearest
        clean prototype and network prediction agree (and a peer's, with ``peer_logits``) at
        softmax probability :math:`\ge \kappa`. Such a sample gets weight
        :math:`w_{\max}\,\min(1, (t - t_w + 1)/T_p)` in epoch :math:`t` (warm-up :math:`t_w`,
        ramp :math:`T_p`). With ``dropped_target="bootstrap"`` the other dropped samples
        train towards :math:`(1-\beta r)\,e_{y_i} + \beta r\,e_{g_i}` (``Targets.guess``,
        ``Targets.soft_targets``), :math:`r` the same ramp started ``bootstrap_start`` epochs
        later. With ``dropped_doubt`` :math:`b`, before epoch ``dropped_doubt_until``, the
        dropped samples that took no pseudo-label and whose network prediction gives another
        class a probability :math:`\ge b` get weight 0
        (:func:`~robustweights.recipe.targets.doubt_gate`). Pure: no state is written.

        Args:
            labels: the batch's given labels, as passed to :meth:`weights`.
            weights: what :meth:`weights` returned for it.
            logits: the network's logits of the batch (the training forward's, detached), needed
                with ``pseudo_labels``, bootstrapping or the doubt gate unless
                ``eval_features`` ran an eval forward.
            peer_logits: a second network's logits of the batch: a third view that must agree.
        """
        labels = check_class_labels(labels, self.num_classes)
        for name, z in (("logits", logits), ("peer_logits", peer_logits)):
            if z is not None:
                check_batch_logits(z, labels.shape[0], self.num_classes, name)
        if not isinstance(weights, torch.Tensor) or weights.shape != labels.shape:
            raise ValueError(f"Expected `weights` of shape {tuple(labels.shape)}, but got "
                             f"{getattr(weights, 'shape', type(weights).__name__)}")
        labels, w = labels.to(weights.device), weights.detach()
        none = torch.zeros_like(labels, dtype=torch.bool)
        if self.in_warmup:
            return Targets(w, labels, ~none, none)
        if self._batch is None or not torch.equal(self._batch[1].to(labels.device), labels):
            raise ValueError("Expected `weights()` to be called on this batch before `targets()`")
        kept = cast(torch.Tensor, self.last_fbr_weights).to(w.device) > 0
        cfg = self.config
        doubt = cfg.dropped_doubt is not None and (
            cfg.dropped_doubt_until is None or self.epoch < cfg.dropped_doubt_until)
        if not cfg.pseudo_labels and cfg.dropped_target == "label" and not doubt:
            return Targets(w, labels, kept, none)
        source = self._eval_logits if self._eval_logits is not None else logits
        if source is None:
            raise ValueError("Expected `logits` to be given with `pseudo_labels`, "
                             "`dropped_target='bootstrap'` or `dropped_doubt` and "
                             "`eval_features=False`, but got None")
        t = self.epoch - cfg.warmup_epochs + 1  # >= 1 after the warm-up
        out = Targets(w, labels, kept, none)
        if cfg.pseudo_labels:
            clean = self.reweighter.clean
            out = pseudo_label_targets(
                w, labels, kept, self._batch[0], clean["class_sums"], clean["class_counts"],
                source, confidence=cfg.pseudo_confidence, peer_logits=peer_logits,
                weight=self.reweighter.w_max * _ramp(t, cfg.pseudo_ramp_epochs))
        if cfg.dropped_target == "bootstrap":
            share = cfg.bootstrap_share * _ramp(t - cfg.bootstrap_start, cfg.pseudo_ramp_epochs)
            out = bootstrap_targets(out, source.to(w.device), share=share)
        if doubt:
            out = doubt_gate(out, source, bar=cast(float, cfg.dropped_doubt))
        return out

    # ------------------------------------------------------------------ losses (pure)
    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
             ) -> torch.Tensor:
        r"""The weighted loss of one pool batch from its training forward's ``logits``:
        :math:`\frac1B\sum_i w_i\,\ell(z_i, y_i)`, weights detached (0 for an empty batch).
        Pure: no state is read or written. For :meth:`targets`, pass ``t.labels, t.weights``."""
        labels = check_class_labels(labels, self.num_classes).to(logits.device)
        if not isinstance(weights, torch.Tensor) or weights.shape != labels.shape:
            raise ValueError(f"Expected `weights` of shape {tuple(labels.shape)}, but got "
                             f"{getattr(weights, 'shape', type(weights).__name__)}")
        if labels.numel() == 0:
            return logits.sum() * 0.0
        per_sample = per_sample_losses(self.loss_fn, logits, labels)
        return (weights.detach().to(per_sample) * per_sample).mean()

    def clean_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The plain mean loss of a clean batch: ``loss_fn`` averaged. Pure."""
        labels = check_class_labels(labels, self.num_classes).to(logits.device)
        if labels.numel() == 0:
            return logits.sum() * 0.0
        return self.loss_fn(logits, labels).mean()

    # ------------------------------------------------------------------ health
    @torch.no_grad()
    def end_epoch(self) -> HealthReport:
        """Close the epoch: score ``health_data`` with the epoch's prototypes and the network as
        it is now (eval mode), then the epoch's :class:`~robustweights.phases.health.HealthReport`
        (warning once on collapse). Held-out samples count as kept when their direction passes
        the rule: :math:`d > 0` for the threshold rule, at least the epoch's pool quantile at
        the dropped fraction for the rate rule."""
        score_heldout(self)
        return self.health.end_epoch(self.epoch)

    @torch.no_grad()
    def directions(self, *args: Any, labels: torch.Tensor | None = None,
                   inputs: torch.Tensor | None = None,
                   features: torch.Tensor | None = None,
                   alpha: float | None = None) -> torch.Tensor:
        r"""FBR's directions :math:`d_i` (B,) of samples against the current prototypes, without
        changing any state: a diagnostic (with ``alpha=0``, :math:`d_i > 0` exactly when
        :math:`y_i` is the class of the nearest centred prototype). The features are those of
        an eval-mode forward of ``model`` on ``inputs``, or ``features`` if given; ``alpha``
        defaults to the schedule's current value. Its forward counts as used features: a
        :meth:`weights` call after it needs a new training forward."""
        check_keywords_only(self, "directions", args, ("labels", "inputs"))
        labels = check_class_labels(labels, self.num_classes)
        if self.reweighter.clean.empty:
            raise ValueError("Expected prototypes before `directions()`: iterate "
                             "`clean_batches()` or call `refresh_prototypes()` first")
        if features is None:
            if inputs is None:
                raise ValueError("Expected `inputs` or `features` to be given, but got neither")
            with eval_mode(self.model):
                self.model(inputs)
            features = self._capture.features
            self._used = self._capture.count
        return cast(torch.Tensor, self.reweighter.directions(
            features=features, labels=labels.to(features.device), alpha=alpha))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (epoch, RNG, stores, the reweighter's prototypes,
        the thresholds, the health counts) and the configuration, checked on load; CPU tensors
        and plain values. The model, optimizer and data are yours to save, as for an LR
        scheduler (give your pool ``DataLoader`` its own ``generator=`` and save it too)."""
        return recipe_state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict`, atomically: a ``ValueError`` (an unexpected or missing
        key with ``strict``, a newer layout, a configuration mismatch, a bad entry) leaves the
        recipe as it was."""
        load_recipe_state_dict(self, state_dict, strict)

    def __enter__(self) -> SurrogateRecipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the feature hook the recipe installed on ``head`` (also what leaving a
        ``with SurrogateRecipe(...) as recipe:`` block does)."""
        self._capture.remove()


def _ramp(t: int, epochs: int) -> float:
    r"""The linear ramp :math:`\min(1, \max(0, t)/T)` in its :math:`t`-th epoch (a step at
    :math:`t = 1` when :math:`T = 0`)."""
    return min(1.0, max(0, t) / epochs) if epochs else float(t > 0)
