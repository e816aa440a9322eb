"""The FBR recipe as it was before it became composable steps (robustweights 0.1.0.dev, commit
5fb3a32): a trainer that runs its own clean passes with ``zero_grad / backward / step`` and a
hard-coded cross-entropy. Kept verbatim (state handling removed) as the reference that
:class:`robustweights.SurrogateRecipe`, driven by the caller's loop, must match bit for bit
(``tests/test_recipe_equivalence.py``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustweights import FeatureCapture, SurrogateReweighter
from robustweights.surrogate import AlphaSchedule


def _check_epochs(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative int, but got {value!r}")
    return value


def check_nonneg_float(value: Any, name: str) -> float:
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    return float(value)


def alpha_schedule(num_classes: int, switch: int) -> AlphaSchedule:
    return AlphaSchedule(num_classes, switch)


class TrainerRecipe:
    """The old trainer-style recipe (see the module docstring)."""

    def __init__(self, model: nn.Module, *, head: nn.Module, clean_inputs: torch.Tensor,
                 clean_labels: torch.Tensor, optimizer: torch.optim.Optimizer,
                 num_classes: int, warmup_epochs: int = 10, alpha_switch: int = 40,
                 clean_passes: int = 30, clean_batch_size: int = 128,
                 eval_features: bool = True, dropped_weight: float = 0.0,
                 smoothing: float = 0.0, pseudo_label_weight: float = 0.0,
                 pseudo_label_temperature: float = 0.5,
                 reweighter: SurrogateReweighter | None = None,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be a torch.nn.Module, but got "
                            f"{type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Expected `optimizer` to be a torch.optim.Optimizer, but got "
                            f"{type(optimizer).__name__}")
        if not isinstance(clean_inputs, torch.Tensor) or not isinstance(clean_labels,
                                                                         torch.Tensor):
            raise TypeError("Expected `clean_inputs` and `clean_labels` to be torch tensors")
        if clean_inputs.shape[0] != clean_labels.shape[0] or clean_labels.ndim != 1:
            raise ValueError(f"Expected `clean_labels` of shape ({clean_inputs.shape[0]},), "
                             f"but got {tuple(clean_labels.shape)}")
        if clean_labels.shape[0] == 0:
            raise ValueError("Expected `clean_inputs` to hold at least one sample, but got 0")
        self.model = model
        self.optimizer = optimizer
        self.clean_inputs = clean_inputs
        self.clean_labels = clean_labels.long()
        self.warmup_epochs = _check_epochs(warmup_epochs, "warmup_epochs")
        self.alpha_switch = _check_epochs(alpha_switch, "alpha_switch")
        self.clean_passes = _check_epochs(clean_passes, "clean_passes")
        if isinstance(clean_batch_size, bool) or not isinstance(clean_batch_size, int) \
                or clean_batch_size < 1:
            raise ValueError(f"Expected `clean_batch_size` to be a positive int, but got "
                             f"{clean_batch_size!r}")
        self.clean_batch_size = clean_batch_size
        self.eval_features = bool(eval_features)
        self.reweighter = reweighter if reweighter is not None else SurrogateReweighter(
            num_classes, alpha=alpha_schedule(num_classes, self.alpha_switch))
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
            raise ValueError(f"Expected `smoothing` in [0, 1), but got {smoothing!r}")
        self.pseudo_label_weight = check_nonneg_float(pseudo_label_weight,
                                                      "pseudo_label_weight")
        if not pseudo_label_temperature > 0:
            raise ValueError(f"Expected `pseudo_label_temperature` > 0, but got "
                             f"{pseudo_label_temperature!r}")
        self.pseudo_label_temperature = float(pseudo_label_temperature)
        self.generator = generator if generator is not None else torch.Generator()
        self.epoch = 0
        self.last_clean_loss = float("nan")
        self.last_weights: torch.Tensor | None = None  # the weights of the latest batch
        self.last_fbr_weights: torch.Tensor | None = None  # before smoothing and the floor
        self._eval_logits: torch.Tensor | None = None
        self._smoothed: torch.Tensor | None = None  # per sample id, with ``smoothing``
        self._capture = FeatureCapture(head)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in (
            "num_classes", "warmup_epochs", "alpha_switch", "clean_passes", "clean_batch_size",
            "eval_features", "dropped_weight", "smoothing", "pseudo_label_weight"))
        return f"FBRRecipe({opts}, model={type(self.model).__name__})"

    # ------------------------------------------------------------------ schedule
    @property
    def in_warmup(self) -> bool:
        """Whether the current epoch is a warm-up epoch (every weight ``w_init``)."""
        return self.epoch < self.warmup_epochs

    def start_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (from 0): the clean passes, then the clean prototypes from
        eval-mode features. The model's train/eval mode is restored afterwards."""
        self.epoch = _check_epochs(epoch, "epoch")
        self.reweighter.set_epoch(self.epoch)
        was_training = self.model.training
        self.model.train()
        total, n = 0.0, 0
        for _ in range(self.clean_passes):
            perm = torch.randperm(self.clean_labels.shape[0], generator=self.generator)
            for idx in perm.to(self.clean_labels.device).split(self.clean_batch_size):
                loss = F.cross_entropy(self.model(self.clean_inputs[idx]), self.clean_labels[idx])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total, n = total + float(loss.detach()) * len(idx), n + len(idx)
        self.last_clean_loss = total / n if n else float("nan")
        self.refresh_clean()
        self.model.train(was_training)

    @torch.no_grad()
    def refresh_clean(self) -> None:
        """Recompute the clean prototypes from eval-mode, un-augmented clean features."""
        feats = [f for f, _ in self._eval_forward(self.clean_inputs, chunk=512)]
        self.reweighter.set_clean(features=torch.cat(feats), labels=self.clean_labels)

    # ------------------------------------------------------------------ weights and loss
    def _eval_forward(self, inputs: torch.Tensor, chunk: int | None = None):  # type: ignore[no-untyped-def]
        """Yield (features, logits) of eval-mode no-grad forwards, the mode restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for part in (inputs.split(chunk) if chunk else (inputs,)):
                    logits = self.model(part)
                    yield self._capture.features, logits
        finally:
            self.model.train(was_training)

    def weights(self, inputs: torch.Tensor, labels: torch.Tensor,
                sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The weights of one pool batch (B,), computed as the recipe says (class docstring).

        With ``eval_features=False`` this runs a training-mode forward for the features; prefer
        :meth:`loss`, which then reuses it. In the warm-up no forward runs (every weight is
        ``w_init``)."""
        if self.in_warmup:  # the features would be thrown away
            w = torch.full(labels.shape, self.reweighter.w_init, device=inputs.device,
                           dtype=inputs.dtype if inputs.is_floating_point() else None)
            self.last_fbr_weights = self.last_weights = w
            return w
        if self.eval_features:
            ((feats, logits),) = list(self._eval_forward(inputs))
        else:
            with torch.no_grad():
                logits = self.model(inputs)
            feats = self._capture.features
        self._eval_logits = logits.detach()
        return self._weights_from(feats, labels, sample_ids)

    def _weights_from(self, feats: torch.Tensor, labels: torch.Tensor,
                      sample_ids: torch.Tensor | None) -> torch.Tensor:
        if self.smoothing and sample_ids is None:
            raise ValueError("Expected `sample_ids` to be given when `smoothing` > 0, but got "
                             "None")
        w_init = self.reweighter.w_init
        if self.in_warmup:
            w = torch.full(labels.shape, w_init, dtype=feats.dtype, device=feats.device)
            self.last_fbr_weights = w
        else:
            ids = sample_ids if self.reweighter.mode == "incremental" else None
            w = self.reweighter.weights(features=feats, labels=labels, sample_ids=ids)
            self.last_fbr_weights = w
            if self.smoothing:
                w = self._smooth(sample_ids, w)  # type: ignore[arg-type]
            if self.dropped_weight:
                w = w.clamp_min(self.dropped_weight)
        self.last_weights = w
        return w

    def _smooth(self, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ids = ids.to(w.device).long()
        if ids.shape != w.shape or (ids.numel() and int(ids.min()) < 0):
            raise ValueError(f"Expected `sample_ids` of shape {tuple(w.shape)} with ids >= 0")
        need = int(ids.max()) + 1 if ids.numel() else 0
        store = self._smoothed
        if store is None or store.shape[0] < need:
            grown = torch.full((need,), self.reweighter.w_init, dtype=w.dtype, device=w.device)
            if store is not None:
                grown[: store.shape[0]] = store.to(grown)
            store = grown
        store = store.to(device=w.device, dtype=w.dtype)
        store[ids] = self.smoothing * store[ids] + (1 - self.smoothing) * w
        self._smoothed = store
        return store[ids]

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor,
             sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        r"""The recipe's loss of one pool batch: the weights, then the training forward and
        :math:`\frac1B\sum_i w_i\,\mathrm{CE}(z_i, y_i)` (plus the pseudo-label term if on)."""
        labels = labels.to(inputs.device).long()
        if self.eval_features:
            w = self.weights(inputs, labels, sample_ids)
            logits = self.model(inputs)
        else:
            logits = self.model(inputs)
            self._eval_logits = logits.detach()
            w = self._weights_from(self._capture.features, labels, sample_ids)
        loss = (w.detach().to(logits.dtype) * F.cross_entropy(logits, labels,
                                                              reduction="none")).mean()
        if self.pseudo_label_weight and not self.in_warmup:
            assert self.last_fbr_weights is not None and self._eval_logits is not None
            dropped = (self.last_fbr_weights == 0).to(logits.dtype)
            target = torch.softmax(self._eval_logits.float() / self.pseudo_label_temperature,
                                   1).to(logits.dtype)
            soft = -(target * torch.log_softmax(logits, 1)).sum(1)
            loss = loss + self.pseudo_label_weight * (dropped * soft).mean()
        return loss

