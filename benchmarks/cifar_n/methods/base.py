"""What every benchmark method shares: the training context, the epoch log and the base class.

A method sees a :class:`Context`: the noisy pool (images and *noisy* labels only), the trusted
clean subset, the training configuration and helpers (batches, augmentation, model and
optimiser factories). It never sees the pool's true labels; the runner uses those afterwards to
score what the method kept.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.cifar_n.augment import crop_flip, normalize
from benchmarks.cifar_n.models import build_model
from robustweights.recipe import soft_cross_entropy

__all__ = ["AUGMENTATIONS", "Context", "EpochLog", "Method", "TrainConfig", "check_gce",
           "mixed_batch_loss", "per_sample_ce", "soft_gce"]

#: Training-batch augmentations: none, a random horizontal flip, or the standard CIFAR random
#: crop of the 4-pixel zero-padded image followed by the flip.
AUGMENTATIONS = ("none", "flip", "crop_flip")


@dataclass
class TrainConfig:
    """Backbone and optimiser settings shared by every method of one benchmark run.

    Attributes:
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        augment: one of :data:`AUGMENTATIONS` (``True`` / ``False`` are read as ``"crop_flip"``
            / ``"none"``, the values older records hold).
        channels_last: NHWC memory format (faster convolutions on CPU).
    """

    arch: str = "cnn"
    width: int | None = 16
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-3
    nesterov: bool = False
    milestones: tuple[int, ...] = (30, 45)
    gamma: float = 0.1
    augment: str = "crop_flip"
    channels_last: bool = True
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.augment, bool):
            self.augment = "crop_flip" if self.augment else "none"
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"Expected `augment` to be one of {list(AUGMENTATIONS)}, but got "
                             f"{self.augment!r}")


@dataclass
class EpochLog:
    """What a method reports after one epoch.

    Attributes:
        loss: mean training loss of the epoch.
        weights: (n_pool,) the weight each pool sample got at its visit this epoch (selection
            methods: 1 kept, 0 dropped; NaN if not visited). L2RW's sum-to-one weights are
            reported times the batch size (mean-one scale) so that histograms compare.
        extra: method-specific scalars (e.g. FBR's alpha, Co-teaching's forget rate).
        pseudo_labels: (n_pool,) the pseudo-label each pool sample trained towards at its visit
            this epoch, -1 where none (methods that label what they drop).
        kept: (n_pool,) 1 where the method's filter kept the sample at its visit this epoch, 0
            where it dropped it, NaN if not visited; None: kept means weight > 0 (methods whose
            dropped samples keep a floor weight give it).
    """

    loss: float
    weights: np.ndarray | None = None
    extra: dict[str, float] = field(default_factory=dict)
    pseudo_labels: np.ndarray | None = None
    kept: np.ndarray | None = None


def per_sample_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample, (B,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def soft_gce(logits: torch.Tensor, soft_targets: torch.Tensor, weights: torch.Tensor,
             rho: float) -> torch.Tensor:
    r"""Generalised cross-entropy (Zhang and Sabuncu, NeurIPS 2018) against soft targets, the
    weighted batch mean :math:`\frac1B\sum_i w_i \sum_c q_{ic}(1 - p_{ic}^\rho)/\rho`: its
    gradient is cross-entropy's scaled by :math:`p^\rho`, so a sample the network finds unlikely
    under its label (often a wrong one) pulls less. :math:`\rho \to 0` is cross-entropy."""
    p = torch.softmax(logits, 1).clamp_min(1e-12)
    per = (soft_targets.to(p.dtype) * (1 - p.pow(rho))).sum(1) / rho
    return (weights.detach().to(per.dtype) * per).mean()


def check_gce(params: dict[str, Any]) -> float:
    """A method's ``gce`` parameter (:math:`\\rho`; 0: cross-entropy), checked: in [0, 1], and
    only with mixup, whose batch loss it replaces."""
    rho = params["gce"]
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 <= rho <= 1:
        raise ValueError(f"Expected `gce` to be a number in [0, 1], but got {rho!r}")
    if rho > 0 and float(params["mixup"]) == 0:
        raise ValueError("Expected `mixup` > 0 with `gce`: the generalised cross-entropy "
                         "replaces the mixed batch's loss")
    return float(rho)


def mixed_batch_loss(logits: torch.Tensor, soft_targets: torch.Tensor, weights: torch.Tensor,
                     gce: float) -> torch.Tensor:
    """The loss of a mixed batch: cross-entropy against its soft targets, or GCE with
    :math:`\\rho` = ``gce`` > 0."""
    if gce > 0:
        return soft_gce(logits, soft_targets, weights, gce)
    return soft_cross_entropy(logits, soft_targets, weights)


class Context:
    """The data and helpers one method run uses.

    Args:
        pool_images, pool_labels: the noisy pool (uint8 NHWC, noisy labels).
        clean_images, clean_labels: the trusted clean subset (true labels).
        num_classes: C.
        config: the shared :class:`TrainConfig`.
        seed: seeds the batch order and augmentation (:attr:`generator`).
        device: where tensors live.
    """

    def __init__(self, pool_images: torch.Tensor, pool_labels: torch.Tensor,
                 clean_images: torch.Tensor, clean_labels: torch.Tensor, num_classes: int,
                 config: TrainConfig, seed: int, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.config = config
        self.num_classes = num_classes
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.pool_x = normalize(pool_images.to(self.device))
        self.pool_y = pool_labels.to(self.device).long()
        self.clean_x = normalize(clean_images.to(self.device))
        self.clean_y = clean_labels.to(self.device).long()
        self._clean_stream: Iterator[torch.Tensor] | None = None

    # ------------------------------------------------------------------ sizes
    @property
    def n_pool(self) -> int:
        return int(self.pool_y.shape[0])

    @property
    def n_clean(self) -> int:
        return int(self.clean_y.shape[0])

    def steps_per_epoch(self, n: int) -> int:
        return math.ceil(n / self.config.batch_size)

    # ------------------------------------------------------------------ data
    def union(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool followed by the clean subset: the training set of methods that use the clean
        samples as ordinary training data (indices ``< n_pool`` are pool samples)."""
        return torch.cat([self.pool_x, self.clean_x]), torch.cat([self.pool_y, self.clean_y])

    def batches(self, n: int, batch_size: int | None = None) -> Iterator[torch.Tensor]:
        """Index batches of a fresh random permutation of ``range(n)`` (the last may be short)."""
        bs = batch_size or self.config.batch_size
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        yield from perm.split(bs)

    def union_batches(self, n_pool: int, n_trusted: int, repeat: int = 1
                      ) -> Iterator[torch.Tensor]:
        """Index batches of one shuffled epoch over ``n_pool`` pool samples followed by
        ``n_trusted`` trusted ones (a union as :meth:`union` orders it), each trusted sample
        drawn ``repeat`` times (each draw its own augmentation and mixing partner). With
        ``repeat`` = 1 these are :meth:`batches` of ``n_pool + n_trusted`` exactly."""
        for idx in self.batches(n_pool + repeat * n_trusted):
            # the extra copies fold back onto the trusted indices (none to fold at repeat 1)
            yield torch.where(idx < n_pool, idx, n_pool + (idx - n_pool) % n_trusted)

    def clean_batch(self, size: int | None = None) -> torch.Tensor:
        """Indices of the next clean mini-batch, cycling through reshuffled passes of the clean
        subset (a data loader over the meta set, as L2RW and MW-Net use it)."""
        size = min(size or self.config.batch_size, self.n_clean)
        if self._clean_stream is None:
            self._clean_stream = self._clean_indices(size)
        return next(self._clean_stream)

    def _clean_indices(self, size: int) -> Iterator[torch.Tensor]:
        while True:
            perm = torch.randperm(self.n_clean, generator=self.generator).to(self.device)
            for b in perm.split(size):
                if len(b) == size:
                    yield b

    def train_view(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch: augmented when configured, in the model's memory format."""
        if self.config.augment != "none":
            x = crop_flip(x, padding=4 if self.config.augment == "crop_flip" else 0,
                          generator=self.generator)
        return self.memory_format(x)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # ------------------------------------------------------------------ models
    def new_model(self) -> nn.Module:
        model = build_model(self.config.arch, self.num_classes, self.config.width)
        model = model.to(self.device)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def new_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay, nesterov=c.nesterov)

    def new_scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        c = self.config
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(c.milestones),
                                                    gamma=c.gamma)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor,
                capture: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eval-mode logits of ``x`` in batches (and the captured features if ``capture``)."""
        was_training = model.training
        model.eval()
        logits, feats = [], []
        for chunk in x.split(self.config.eval_batch_size):
            logits.append(model(self.memory_format(chunk)))
            if capture is not None:
                feats.append(capture.features)
        model.train(was_training)
        return torch.cat(logits), (torch.cat(feats) if capture is not None else None)


class Method(abc.ABC):
    """One training method. Subclasses set :attr:`name`, build their models in :meth:`setup` and
    train one epoch in :meth:`train_epoch`.

    Attributes:
        name: the CLI name.
        selects: whether the method keeps or drops pool samples (then the runner reports the
            precision and recall of the kept samples against the true labels).
        uses_pool_only: True if the weighted/selected training set is the pool alone (the clean
            subset serves as meta data); False if the clean subset is ordinary training data.
    """

    name: ClassVar[str] = ""
    selects: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults())
        if unknown:
            raise ValueError(f"Expected parameters of `{self.name}` among "
                             f"{sorted(self.defaults())}, but got {sorted(unknown)}")
        self.params = {**self.defaults(), **params}
        self.ctx: Context | None = None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The method's own hyperparameters and their published defaults."""
        return {}

    @property
    def c(self) -> Context:
        if self.ctx is None:
            raise RuntimeError(f"`{self.name}`: call setup(ctx) before training")
        return self.ctx

    def setup(self, ctx: Context) -> None:
        """Build models, optimisers and schedulers."""
        self.ctx = ctx

    @abc.abstractmethod
    def train_epoch(self, epoch: int) -> EpochLog:
        """Train one epoch (``epoch`` counts from 0) and step the learning-rate schedules."""

    @abc.abstractmethod
    def eval_model(self) -> nn.Module:
        """The network whose test accuracy is reported."""

    def sgd_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def ce_steps(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, batches: Iterable[torch.Tensor]) -> float:
        """One SGD step on the mean cross-entropy of each index batch into ``(x, y)``; returns
        the loss averaged over all samples seen (0 if none)."""
        total, n = 0.0, 0
        for idx in batches:
            loss = per_sample_ce(model(self.c.train_view(x[idx])), y[idx]).mean()
            self.sgd_step(opt, loss)
            total, n = total + loss.item() * len(idx), n + len(idx)
        return total / max(n, 1)
