r"""The FBR training recipe as steps the caller composes: :class:`SurrogateRecipe`.

:class:`~robustweights.SurrogateReweighter` computes FBR's weights for one batch. The accuracy the
paper reports comes from the *recipe* around those weights (Zhang et al., arXiv 2510.12209; the
authors' public code, GitHub ``yiz134/Feature_based_reweight``): plain passes over the clean set
at the start of every epoch, eval-mode features, a warm-up at weight 0.5 and an alpha schedule
tied to the learning-rate drop. :class:`SurrogateRecipe` holds that schedule and its state and
hands out each step's ingredients (the clean batches, the weights, the weighted loss); the
caller's loop, or a framework's, does every forward, backward and optimizer step, so any loss,
optimizer, AMP, gradient clipping, DataLoader, Lightning or ``Trainer`` composes with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from robustweights.features import FeatureCapture
from robustweights.phases.health import FilterHealth, HealthReport
from robustweights.sample_store import SampleStore
from robustweights.selection import drop_rate_at, keep_highest
from robustweights.state import STATE_VERSION, check_state_dict, cpu_copy
from robustweights.surrogate import AlphaSchedule, SurrogateReweighter
from robustweights.validation import (
    check_fraction,
    check_nonneg_float,
    check_nonneg_int,
    check_positive_int,
    check_sample_ids,
)

__all__ = ["SurrogateRecipe"]

Batch = tuple[torch.Tensor, torch.Tensor]
CleanData = Batch | Iterable[Batch]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _is_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def _check_data(data: Any, name: str) -> CleanData:
    """A ``(inputs, labels)`` pair of tensors or a re-iterable of such batches."""
    if _is_pair(data):
        x, y = data
        if y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"Expected `{name}` labels of shape ({x.shape[0]},), but got "
                             f"{tuple(y.shape)}")
        if y.shape[0] == 0:
            raise ValueError(f"Expected `{name}` to hold at least one sample, but got 0")
        return (x, y.long())
    if isinstance(data, Iterator) or not isinstance(data, Iterable):
        raise TypeError(f"Expected `{name}` to be an (inputs, labels) pair of tensors or a "
                        f"re-iterable of such batches (e.g. a DataLoader), but got "
                        f"{type(data).__name__}")
    return data


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


#: The authors' recipe, as their public code runs it for CIFAR (``SurrogateRecipe.authors``).
AUTHORS: dict[str, Any] = {"warmup_epochs": 10, "alpha_switch": 40, "clean_passes": 30,
                           "eval_features": True, "dropped_weight": 0.0}


class SurrogateRecipe:
    r"""Feature-based reweighting (FBR) as a training recipe whose steps the caller runs.

    Every epoch::

        recipe.start_epoch(epoch)                    # the schedule: warm-up, alpha
        for xc, yc in recipe.clean_batches():        # the clean passes (your step)
            step(recipe.clean_loss(net(xc), yc))
        for x, y, idx in loader:                     # the pool (your step)
            w = recipe.weights(x, y, sample_ids=idx)
            step(recipe.loss(net(x), y, w))

    where ``step(loss)`` is yours: ``opt.zero_grad(); loss.backward(); opt.step()``, or with AMP
    ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``, clipping included.

    What the steps do (the authors' recipe, as their public code runs it for CIFAR):

    1. :meth:`clean_batches`: ``clean_passes`` passes over the clean set in every epoch,
       *warm-up included*: a pair of tensors is shuffled by :attr:`generator` into batches of
       ``clean_batch_size``; an iterable (a ``DataLoader`` with its own transforms) is iterated
       once per pass. Train them with the plain mean loss, :meth:`clean_loss`.
    2. The clean prototypes: the penultimate features (the input of ``head``) of
       ``prototype_data`` in **eval mode**, without gradients; recomputed by :meth:`weights`
       whenever clean passes ran since the last refresh (or call :meth:`refresh_clean`).
    3. :meth:`weights`: every weight :math:`w_0` (0.5) while ``epoch < warmup_epochs``; else the
       batch's features from a separate no-grad forward of ``model`` in eval mode (BatchNorm
       running statistics, as for the prototypes; the mode is restored), and FBR's weights with
       :math:`\alpha = 1/(C-1)` before ``alpha_switch`` and 0 from then on.
    4. :meth:`loss`: :math:`\frac1B\sum_i w_i\,\ell(z_i, y_i)` for the per-sample ``loss_fn``
       :math:`\ell` (cross-entropy by default), the weights treated as constants.

    ``model`` is the network whose features score the samples; it is usually the network you
    train, but may be another one (an EMA teacher, a peer network): the recipe only runs
    no-grad eval-mode forwards of it and never changes its parameters.

    Options beyond the authors' recipe:

    - ``dropped_weight`` :math:`\rho`: a sample FBR drops (weight 0) is kept at weight
      :math:`\rho`, so the network still sees its image (0.3 was the best measured where the
      network barely memorises, the ``cpu`` benchmark; it hurts where it memorises).
    - ``smoothing`` :math:`m`: each sample's weight is the running average
      :math:`\bar w_i \leftarrow m\,\bar w_i + (1-m)\,w_i` over its visits (from :math:`w_0`).
      Needs ``sample_ids``.
    - ``pseudo_label_weight`` :math:`\lambda`: a dropped sample also trains towards the sharpened
      eval-mode prediction :math:`q_i = \mathrm{softmax}(z^{\text{eval}}_i / T)`, adding
      :math:`\frac{\lambda}{B}\sum_{i\ \text{dropped}} \mathrm{CE}(z_i, q_i)` to the loss.
    - ``drop_rate`` :math:`\tau`: instead of the threshold at :math:`w_0`, keep the
      :math:`\lfloor(1 - r(t))B\rfloor` samples of each batch with the highest direction
      :math:`d_i` at weight :math:`w_{\max}` and drop the rest (weight ``dropped_weight``), the
      dropped fraction ramping as Co-teaching's, :math:`r(t) = \tau\min(t/(T_k-1), 1)` with
      :math:`T_k` = ``drop_ramp_epochs`` (:mod:`robustweights.selection`). Hard from the first
      epochs, so the dropped samples are never fitted and stay recognisable. ``class_balanced``
      keeps that share within each label class of the batch. Under DDP each rank ranks its own
      batch.
    - ``eval_features=False``: no separate forward: pass the training forward's features to
      :meth:`weights` (``features=``), or let the recipe read them from its hook on ``head``
      after your forward.

    Filter health: with ``health_data`` (a few trusted samples held out of ``clean_data``, never
    trained on), :meth:`end_epoch` reports whether the filter still discriminates: the share of
    the pool it kept against the share of held-out samples it would keep (a recall estimate),
    and the network's agreement with the pool's labels against its held-out accuracy (a
    memorisation proxy); it warns once with a
    :class:`~robustweights.phases.health.FilterCollapseWarning` when the filter has kept the pool
    at least as readily as clean data for ``health_patience`` epochs
    (:mod:`robustweights.phases.health`). Without ``health_data`` the report has the pool's
    shares only.

    Named configurations: :meth:`authors` (the paper's code exactly).

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
        loss_fn: per-sample loss ``loss_fn(logits, labels) -> (B,)`` (default cross-entropy).
        warmup_epochs: epochs at weight ``w_init`` (default 10, as the authors' 10 of 150).
        alpha_switch: first epoch with :math:`\alpha = 0` (authors: 40 of 150, their first
            learning-rate drop; put it on your first drop).
        clean_passes: passes over the clean set per epoch (authors: 30 over 2,000 images).
        clean_batch_size: batch size of the clean passes over a pair of tensors (128).
        eval_features: features from a separate eval-mode forward (the authors') or not.
        dropped_weight, smoothing, pseudo_label_weight, pseudo_label_temperature: see above.
        drop_rate, drop_ramp_epochs, class_balanced: the rate rule, see above (``drop_rate``
            None: the threshold rule).
        health_data: held-out trusted samples for :meth:`end_epoch` (a pair of tensors or a
            re-iterable of batches, like ``clean_data``); ``health_patience``: epochs.
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
        ...                          warmup_epochs=1, clean_passes=2)
        >>> recipe.start_epoch(0)                         # warm-up: weights 0.5
        >>> for xb, yb in recipe.clean_batches():
        ...     opt.zero_grad(); recipe.clean_loss(net(xb), yb).backward(); opt.step()
        >>> x, y = torch.randn(5, 4), torch.zeros(5, dtype=torch.long)
        >>> w = recipe.weights(x, y)
        >>> w
        tensor([0.5000, 0.5000, 0.5000, 0.5000, 0.5000])
        >>> recipe.loss(net(x), y, w).backward()
    """

    def __init__(self, num_classes: int, *, model: nn.Module, head: nn.Module,
                 clean_data: CleanData, prototype_data: CleanData | None = None,
                 loss_fn: LossFn | None = None, warmup_epochs: int = 10,
                 alpha_switch: int = 40, clean_passes: int = 30, clean_batch_size: int = 128,
                 eval_features: bool = True, dropped_weight: float = 0.0,
                 smoothing: float = 0.0, pseudo_label_weight: float = 0.0,
                 pseudo_label_temperature: float = 0.5, drop_rate: float | None = None,
                 drop_ramp_epochs: int = 10, class_balanced: bool = False,
                 health_data: CleanData | None = None, health_patience: int = 2,
                 reweighter: SurrogateReweighter | None = None,
                 generator: torch.Generator | None = None) -> None:
        for value, name in ((model, "model"), (head, "head")):
            if not isinstance(value, nn.Module):
                raise TypeError(f"Expected `{name}` to be a torch.nn.Module, but got "
                                f"{type(value).__name__}")
        self.model = model
        self.clean_data = _check_data(clean_data, "clean_data")
        self.prototype_data = (self.clean_data if prototype_data is None
                               else _check_data(prototype_data, "prototype_data"))
        self.loss_fn: LossFn = loss_fn if loss_fn is not None else _cross_entropy
        self.warmup_epochs = check_nonneg_int(warmup_epochs, "warmup_epochs")
        self.alpha_switch = check_nonneg_int(alpha_switch, "alpha_switch")
        self.clean_passes = check_nonneg_int(clean_passes, "clean_passes")
        self.clean_batch_size = check_positive_int(clean_batch_size, "clean_batch_size")
        self.eval_features = bool(eval_features)
        self.reweighter = reweighter if reweighter is not None else SurrogateReweighter(
            num_classes, alpha=AlphaSchedule(num_classes, self.alpha_switch))
        if self.reweighter.num_classes != num_classes:
            raise ValueError(f"Expected the reweighter's `num_classes` to be {num_classes}, but "
                             f"got {self.reweighter.num_classes}")
        self.num_classes = num_classes
        self.dropped_weight = check_nonneg_float(dropped_weight, "dropped_weight")
        if self.dropped_weight > self.reweighter.w_max:
            raise ValueError(f"Expected `dropped_weight` to be at most `w_max` = "
                             f"{self.reweighter.w_max}, but got {dropped_weight!r}")
        self.smoothing = 0.0 if smoothing == 0 else check_fraction(smoothing, "smoothing")
        if self.smoothing >= 1:
            raise ValueError(f"Expected `smoothing` to be in [0, 1), but got {smoothing!r}")
        self.pseudo_label_weight = check_nonneg_float(pseudo_label_weight,
                                                      "pseudo_label_weight")
        if not pseudo_label_temperature > 0:
            raise ValueError(f"Expected `pseudo_label_temperature` to be > 0, but got "
                             f"{pseudo_label_temperature!r}")
        self.pseudo_label_temperature = float(pseudo_label_temperature)
        self.drop_rate = None if drop_rate is None else check_fraction(drop_rate, "drop_rate")
        self.drop_ramp_epochs = check_nonneg_int(drop_ramp_epochs, "drop_ramp_epochs")
        self.class_balanced = bool(class_balanced)
        self.health_data = None if health_data is None else _check_data(health_data,
                                                                        "health_data")
        self.health = FilterHealth(patience=health_patience)
        self._epoch_directions: list[torch.Tensor] = []  # this epoch's pool d (rate cutoff)
        self._proto: Batch | None = None  # the prototypes' features and labels
        self.generator = (generator if generator is not None
                          else torch.Generator().manual_seed(torch.initial_seed()))
        self.epoch = 0
        self.last_clean_loss = float("nan")  # mean clean_loss since start_epoch
        self.last_weights: torch.Tensor | None = None  # the weights of the latest batch
        self.last_fbr_weights: torch.Tensor | None = None  # before smoothing and the floor
        self._clean_sum, self._clean_n = 0.0, 0
        self._stale = True  # prototypes older than the latest clean step
        self._eval_logits: torch.Tensor | None = None
        self._smoothed = SampleStore(fill=self.reweighter.w_init)  # with ``smoothing``
        self._capture = FeatureCapture(head)

    @classmethod
    def authors(cls, num_classes: int, **kwargs: Any) -> SurrogateRecipe:
        """The authors' exact recipe (:data:`AUTHORS`: warm-up 10, alpha switch 40, 30 clean
        passes, eval-mode features, dropped samples at weight 0); ``kwargs`` as for the class
        (e.g. a warm-up and switch scaled to a shorter run) override it."""
        return cls(num_classes, **{**AUTHORS, **kwargs})

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._CONFIG)
        return f"SurrogateRecipe({opts}, model={type(self.model).__name__})"

    # ------------------------------------------------------------------ schedule
    @property
    def in_warmup(self) -> bool:
        """Whether the current epoch is a warm-up epoch (every weight ``w_init``)."""
        return self.epoch < self.warmup_epochs

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters()), torch.empty(0)).device

    def start_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from 0): the warm-up and alpha schedule follow it, and the
        prototypes are recomputed at the epoch's first :meth:`weights` call."""
        self.epoch = check_nonneg_int(epoch, "epoch")
        self.reweighter.set_epoch(self.epoch)
        self._clean_sum, self._clean_n = 0.0, 0
        self.last_clean_loss = float("nan")
        self._epoch_directions = []
        self._stale = True  # at least once an epoch (the network moved), also without passes

    def clean_batches(self) -> Iterator[Batch]:
        """This epoch's clean passes: ``clean_passes`` passes over ``clean_data``, as
        ``(inputs, labels)`` batches on the model's device. Train on each; the prototypes are
        refreshed at the next :meth:`weights` call."""
        for _ in range(self.clean_passes):
            for batch in self._iterate(self.clean_data, shuffle=True):
                self._stale = True
                yield batch

    @property
    def clean_steps_per_epoch(self) -> int | None:
        """How many batches :meth:`clean_batches` yields (None for an iterable without len)."""
        data = self.clean_data
        if _is_pair(data):
            n = data[1].shape[0]  # type: ignore[index]
            return self.clean_passes * -(-n // self.clean_batch_size)
        try:
            return self.clean_passes * len(data)  # type: ignore[arg-type]
        except TypeError:
            return None

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
        if _is_pair(data):
            x, y = cast(Batch, data)
            n = y.shape[0]
            if shuffle:
                order = torch.randperm(n, generator=self.generator).to(y.device)
                for idx in order.split(self.clean_batch_size):
                    yield x[idx], y[idx]
            else:
                yield from zip(x.split(chunk or n), y.split(chunk or n), strict=True)
            return
        device = self.device
        for batch in data:  # type: ignore[union-attr]
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("Expected the clean data to yield (inputs, labels) batches, but "
                                f"got {type(batch).__name__}")
            yield batch[0].to(device), batch[1].to(device).long()

    # ------------------------------------------------------------------ prototypes
    @torch.no_grad()
    def refresh_clean(self) -> None:
        """Recompute the clean prototypes from eval-mode features of ``prototype_data``."""
        feats, labels = [], []
        with eval_mode(self.model):
            for x, y in self._iterate(self.prototype_data, shuffle=False, chunk=512):
                self.model(x)
                feats.append(self._capture.features)
                labels.append(y)
        self._proto = (torch.cat(feats), torch.cat(labels))
        self.reweighter.set_clean(features=self._proto[0], labels=self._proto[1])
        self._stale = False

    # ------------------------------------------------------------------ weights and loss
    def weights(self, inputs: torch.Tensor | None, labels: torch.Tensor, *,
                sample_ids: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> torch.Tensor:
        """The weights (B,) of one pool batch, as the recipe says (class docstring).

        Args:
            inputs: the batch as the training forward gets it (augmented); unused in the
                warm-up and with ``eval_features=False``.
            labels: its (noisy) labels.
            sample_ids: the samples' dataset indices (needed by ``smoothing`` and by an
                incremental-mode reweighter).
            features: with ``eval_features=False``, the training forward's penultimate features
                (default: what the recipe's hook on ``head`` recorded at the latest forward).
        """
        labels = labels.long()
        if self.in_warmup:  # every weight w_init: no forward, no prototypes needed
            w = torch.full(labels.shape, self.reweighter.w_init, device=labels.device,
                           dtype=_float_dtype(inputs, features))
            self.last_fbr_weights = self.last_weights = w
            self._eval_logits = None
            return w
        if self._stale:
            self.refresh_clean()
        if self.eval_features:
            if inputs is None:
                raise ValueError("Expected `inputs` to be given with `eval_features=True`, but "
                                 "got None")
            with torch.no_grad(), eval_mode(self.model):
                self._eval_logits = self.model(inputs).detach()
                feats = self._capture.features
        else:
            feats = self._capture.features if features is None else features.detach()
            self._eval_logits = None
        labels = labels.to(feats.device)
        w = self._weights_from(feats, labels, sample_ids)
        self._epoch_directions.append(
            cast(torch.Tensor, self.reweighter.last_directions).detach().float())
        self.health.update_pool(
            kept=cast(torch.Tensor, self.last_fbr_weights) > 0,
            agree=None if self._eval_logits is None else self._eval_logits.argmax(1) == labels)
        return w

    def _weights_from(self, feats: torch.Tensor, labels: torch.Tensor,
                      sample_ids: torch.Tensor | None) -> torch.Tensor:
        if self.smoothing and sample_ids is None:
            raise ValueError("Expected `sample_ids` to be given when `smoothing` > 0, but got "
                             "None")
        rw = self.reweighter
        ids = sample_ids if rw.mode == "incremental" else None
        w = rw.weights(features=feats, labels=labels, sample_ids=ids)
        if self.drop_rate is not None:
            rate = drop_rate_at(self.epoch, self.drop_rate, self.drop_ramp_epochs)
            d = cast(torch.Tensor, rw.last_directions)  # set by every weights() call
            keep = keep_highest(d, rate, labels=labels if self.class_balanced else None)
            present = rw.clean["class_counts"].to(labels.device)[labels] > 0
            w = torch.where(present, torch.where(keep, rw.w_max, 0.0),
                            rw.missing_class_weight).to(w.dtype)
        self.last_fbr_weights = w
        if self.smoothing:
            w = self._smooth(sample_ids, w)  # type: ignore[arg-type]
        if self.dropped_weight:
            w = w.clamp_min(self.dropped_weight)
        self.last_weights = w
        return w

    def _smooth(self, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ids = check_sample_ids(ids, w.shape[0]).to(w.device)
        avg = self.smoothing * self._smoothed.gather(ids, like=w) + (1 - self.smoothing) * w
        self._smoothed.scatter(ids, avg)
        return avg

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
             ) -> torch.Tensor:
        r"""The weighted loss of one pool batch from its training forward's ``logits``:
        :math:`\frac1B\sum_i w_i\,\ell(z_i, y_i)`, plus the pseudo-label term if on."""
        labels = labels.to(logits.device).long()
        per_sample = self.loss_fn(logits, labels)
        if per_sample.shape != labels.shape:
            raise ValueError(f"Expected `loss_fn` to return per-sample losses of shape "
                             f"{tuple(labels.shape)}, but got {tuple(per_sample.shape)}: use "
                             "reduction='none'")
        loss = (weights.detach().to(per_sample.dtype) * per_sample).mean()
        if self._eval_logits is None:  # no eval forward (warm-up, eval_features=False): this one
            self.health.update_pool(agree=logits.detach().argmax(1) == labels)
        if self.pseudo_label_weight and not self.in_warmup:
            fbr_w = self.last_fbr_weights
            if fbr_w is None or fbr_w.shape != labels.shape:
                raise RuntimeError("Expected `weights()` to be called on this batch before "
                                   "`loss()` when `pseudo_label_weight` > 0")
            source = self._eval_logits if self._eval_logits is not None else logits.detach()
            dropped = (fbr_w == 0).to(logits.dtype)
            target = torch.softmax(source.float() / self.pseudo_label_temperature,
                                   1).to(logits.dtype)
            soft = -(target * torch.log_softmax(logits, 1)).sum(1)
            loss = loss + self.pseudo_label_weight * (dropped * soft).mean()
        return loss

    def clean_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The plain mean loss of a clean batch (``loss_fn`` averaged); its running mean over
        the epoch is :attr:`last_clean_loss`."""
        loss = self.loss_fn(logits, labels.to(logits.device).long()).mean()
        n = labels.shape[0]
        self._clean_sum, self._clean_n = self._clean_sum + float(loss.detach()) * n, \
            self._clean_n + n
        self.last_clean_loss = self._clean_sum / self._clean_n
        return loss

    # ------------------------------------------------------------------ health
    @torch.no_grad()
    def end_epoch(self) -> HealthReport:
        """Close the epoch: score ``health_data`` with the epoch's prototypes and the network as
        it is now (eval mode), then the epoch's :class:`~robustweights.phases.health.HealthReport`
        (warning once on collapse). Held-out samples count as kept when their direction passes
        the rule: :math:`d > 0` for the threshold rule, at least the epoch's pool quantile at
        the dropped fraction for the rate rule."""
        if self.health_data is not None:
            with eval_mode(self.model):
                for x, y in self._iterate(self.health_data, shuffle=False, chunk=512):
                    logits = self.model(x)
                    kept = None
                    if not self.in_warmup and self._proto is not None:
                        kept = self._heldout_kept(self._capture.features, y)
                    self.health.update_heldout(kept=kept, correct=logits.argmax(1) == y)
        return self.health.end_epoch(self.epoch)

    def _heldout_kept(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        d = self.directions(None, labels, features=feats).float()
        if self.drop_rate is None:
            return d > 0
        rate = drop_rate_at(self.epoch, self.drop_rate, self.drop_ramp_epochs)
        pool = torch.cat(self._epoch_directions) if self._epoch_directions else d
        return d >= torch.quantile(pool.to(d.device), rate)

    @torch.no_grad()
    def directions(self, inputs: torch.Tensor | None, labels: torch.Tensor, *,
                   features: torch.Tensor | None = None,
                   alpha: float | None = None) -> torch.Tensor:
        r"""FBR's directions :math:`d_i` (B,) of samples against the current prototypes, without
        changing any state: a diagnostic (with ``alpha=0``, :math:`d_i > 0` exactly when
        :math:`y_i` is the class of the nearest centred prototype). The features are those of
        an eval-mode forward of ``model`` on ``inputs``, or ``features`` if given; ``alpha``
        defaults to the schedule's current value. The prototypes are computed first if none
        exist yet."""
        if self._proto is None:
            self.refresh_clean()
        if features is None:
            if inputs is None:
                raise ValueError("Expected `inputs` or `features` to be given, but got neither")
            with eval_mode(self.model):
                self.model(inputs)
            features = self._capture.features
        probe = SurrogateReweighter(  # a one-off reweighter with a per-call clean set
            self.num_classes, sync=False,
            alpha=self.reweighter.current_alpha() if alpha is None else alpha)
        proto_x, proto_y = cast(Batch, self._proto)
        probe.weights(features=features, labels=labels.to(features.device),
                      clean_features=proto_x, clean_labels=proto_y)
        return cast(torch.Tensor, probe.last_directions)

    # ------------------------------------------------------------------ state
    _CONFIG = ("num_classes", "warmup_epochs", "alpha_switch", "clean_passes", "clean_batch_size",
               "eval_features", "dropped_weight", "smoothing", "pseudo_label_weight",
               "pseudo_label_temperature", "drop_rate", "drop_ramp_epochs", "class_balanced")
    _STATE = ("epoch", "generator", "smoothed", "stale", "reweighter", "health", "directions",
              "prototypes")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the epoch, the clean passes' RNG, whether the
        prototypes are due a refresh, the smoothing store and the reweighter's state (its
        prototypes), with the configuration (checked on load). CPU tensors and plain values. The
        model, optimizer and data are left out: save them yourself, as an LR scheduler leaves out
        its optimizer."""
        return {"_version": STATE_VERSION, **{k: getattr(self, k) for k in self._CONFIG},
                "epoch": self.epoch, "generator": self.generator.get_state(),
                "smoothed": self._smoothed.state_dict(), "stale": self._stale,
                "reweighter": self.reweighter.state_dict(), "health": self.health.state_dict(),
                "directions": cpu_copy(torch.cat(self._epoch_directions))
                if self._epoch_directions else None,
                "prototypes": None if self._proto is None else tuple(
                    cpu_copy(t) for t in self._proto)}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict` (tensors move to the model's device).

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer state layout, or a
                configuration mismatch (e.g. ``smoothing``); the message names the key.
        """
        check_state_dict(state_dict, owner="SurrogateRecipe", keys=(*self._CONFIG, *self._STATE),
                         config={k: getattr(self, k) for k in self._CONFIG}, strict=strict)
        if "epoch" in state_dict:
            self.epoch = check_nonneg_int(state_dict["epoch"], "state_dict['epoch']")
            self.reweighter.set_epoch(self.epoch)
        if "generator" in state_dict:
            self.generator.set_state(state_dict["generator"])
        if "smoothed" in state_dict:
            self._smoothed.load_state_dict(state_dict["smoothed"])
        if "stale" in state_dict:
            self._stale = bool(state_dict["stale"])
        if "reweighter" in state_dict:
            self.reweighter.load_state_dict(state_dict["reweighter"], strict=strict)
        if "health" in state_dict:
            self.health.load_state_dict(state_dict["health"], strict=strict)
        if "directions" in state_dict:
            d = state_dict["directions"]
            self._epoch_directions = [] if d is None else [d.to(self.device)]
        if "prototypes" in state_dict:
            pr = state_dict["prototypes"]
            self._proto = None if pr is None else (pr[0].to(self.device), pr[1].to(self.device))

    def remove(self) -> None:
        """Remove the feature hook from the head."""
        self._capture.remove()


def _float_dtype(*tensors: torch.Tensor | None) -> torch.dtype | None:
    for t in tensors:
        if t is not None and t.is_floating_point():
            return t.dtype
    return None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode; every submodule's own train/eval flag restored afterwards (also on
    error), so a submodule the caller froze in eval mode stays so."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
