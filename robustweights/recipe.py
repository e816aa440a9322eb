"""The whole FBR training recipe around any classifier with a linear head, in a few lines.

:class:`SurrogateReweighter` computes FBR's weights for one batch. The accuracy the paper reports
comes from the *recipe* around those weights (Zhang et al., arXiv 2510.12209; the authors'
public code, GitHub ``yiz134/Feature_based_reweight``): plain passes over the clean set at the
start of every epoch, eval-mode features, a warm-up at weight 0.5 and an alpha schedule tied to the
learning-rate drop. :class:`FBRRecipe` runs all of it; its defaults are the authors' recipe, and
three options add what our CIFAR-N measurements found useful (see the README, "Which recipe
should I use?").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustweights.features import FeatureCapture
from robustweights.state import STATE_VERSION, check_state_dict, cpu_copy
from robustweights.surrogate import SurrogateReweighter, alpha_schedule
from robustweights.validation import check_fraction, check_nonneg_float

__all__ = ["FBRRecipe"]

def _check_epochs(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative int, but got {value!r}")
    return value


class FBRRecipe:
    r"""Feature-based reweighting as a training recipe: clean passes, eval-mode features, the
    warm-up and alpha schedule, the weights and the weighted loss.

    Every epoch::

        recipe.start_epoch(epoch)       # clean passes, then the clean prototypes
        for x, y, idx in loader:        # idx (sample ids) only needed with ``smoothing``
            loss = recipe.loss(x, y, sample_ids=idx)
            opt.zero_grad(); loss.backward(); opt.step()

    What it does (the authors' recipe, as their public code runs it for CIFAR):

    1. :meth:`start_epoch`: ``clean_passes`` passes of plain mean cross-entropy over the clean set
       (shuffled, batches of ``clean_batch_size``, no augmentation, the caller's optimizer), in
       every epoch *including the warm-up*; then the clean set's penultimate features in eval
       mode, un-augmented, as the reweighter's clean statistics.
    2. :meth:`weights`: the batch's features from a separate no-grad forward in **eval mode**
       (BatchNorm running statistics, as for the clean prototypes), the model's mode restored;
       every weight :math:`w_0` (0.5) while ``epoch < warmup_epochs``, else FBR's weights with
       :math:`\alpha = 1/(C-1)` before ``alpha_switch`` and 0 from then on.
    3. :meth:`loss`: the training forward and :math:`\frac1B\sum_i w_i\,\mathrm{CE}(z_i, y_i)`.

    Options beyond the authors' recipe (all off by default):

    - ``dropped_weight`` :math:`\rho`: a sample FBR drops (weight 0) is kept at weight
      :math:`\rho` instead, so the network still sees its image; FBR's hard filter otherwise
      keeps the cleanest set but too little of it when data are scarce.
    - ``smoothing`` :math:`m`: each sample's weight is the running average
      :math:`\bar w_i \leftarrow m\,\bar w_i + (1-m)\,w_i` over its visits (starting at
      :math:`w_0`), so one unlucky batch does not drop a sample that FBR keeps most of the time.
      Needs ``sample_ids``.
    - ``pseudo_label_weight`` :math:`\lambda`: a dropped sample also trains towards the
      sharpened eval-mode prediction :math:`q_i = \mathrm{softmax}(z^{\text{eval}}_i / T)` of the
      network (free: the eval forward already computed it), adding
      :math:`\frac{\lambda}{B}\sum_{i\ \text{dropped}} \mathrm{CE}(z_i, q_i)` to the loss.

    Args:
        model: the classifier (any ``nn.Module``, DDP-wrapped too); its forward returns logits.
        head: the linear head whose *input* is the penultimate feature (e.g. ``model.fc``).
        clean_inputs, clean_labels: the trusted clean set as tensors on the model's device.
            Under DDP give every rank the same clean set: the clean passes step the DDP model, so
            every rank must make the same number of clean steps (the prototypes are means, so a
            clean set repeated on every rank gives the same prototypes as one process).
        optimizer: the optimizer of the pool steps; the clean passes step it too.
        num_classes: :math:`C`.
        warmup_epochs: epochs at weight ``w_init`` (authors: 10 of 150).
        alpha_switch: first epoch with :math:`\alpha = 0` (authors: 40 of 150, their first
            learning-rate drop; put it on your first drop).
        clean_passes: passes over the clean set per epoch (authors: 30 over 2,000 images).
        clean_batch_size: batch size of the clean passes (128).
        eval_features: take the training batch's features in eval mode from a separate forward
            (authors; costs one no-grad forward). ``False`` reuses the training forward's
            train-mode features instead.
        dropped_weight, smoothing, pseudo_label_weight, pseudo_label_temperature: see above.
        reweighter: a configured :class:`SurrogateReweighter` (default: the reference one with
            the schedule above).
        generator: the random source of the clean passes' shuffling (CPU generator).

    Example:
        >>> import torch, torch.nn as nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> xc, yc = torch.randn(30, 4), torch.arange(30) % 3
        >>> recipe = FBRRecipe(model, head=model[2], clean_inputs=xc, clean_labels=yc,
        ...                    optimizer=opt, num_classes=3, warmup_epochs=1, clean_passes=2)
        >>> recipe.start_epoch(0)             # warm-up: clean passes, weights 0.5
        >>> recipe.weights(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
        tensor([0.5000, 0.5000, 0.5000, 0.5000, 0.5000])
        >>> loss = recipe.loss(torch.randn(5, 4), torch.zeros(5, dtype=torch.long))
        >>> loss.backward()
    """

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

    # ------------------------------------------------------------------ state
    _CONFIG = ("num_classes", "warmup_epochs", "alpha_switch", "clean_passes", "clean_batch_size",
               "eval_features", "dropped_weight", "smoothing", "pseudo_label_weight",
               "pseudo_label_temperature")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: the epoch, the clean passes' RNG, the smoothing
        store and the reweighter's state, with the configuration (checked on load). CPU tensors
        and plain values only. The model and optimizer are left out: save them yourself, as an
        LR scheduler leaves out its optimizer."""
        return {"_version": STATE_VERSION, **{k: getattr(self, k) for k in self._CONFIG},
                "epoch": self.epoch, "generator": self.generator.get_state(),
                "smoothed": cpu_copy(self._smoothed),
                "reweighter": self.reweighter.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore a :meth:`state_dict` (tensors move to the clean set's device).

        Raises:
            ValueError: for unexpected or missing keys (``strict``), a newer state layout, or a
                configuration mismatch (e.g. ``smoothing``); the message names the key.
        """
        check_state_dict(state_dict, owner="FBRRecipe",
                         keys=(*self._CONFIG, "epoch", "generator", "smoothed", "reweighter"),
                         config={k: getattr(self, k) for k in self._CONFIG}, strict=strict)
        if "epoch" in state_dict:
            self.epoch = _check_epochs(state_dict["epoch"], "state_dict['epoch']")
            self.reweighter.set_epoch(self.epoch)
        if "generator" in state_dict:
            self.generator.set_state(state_dict["generator"])
        if "smoothed" in state_dict:
            sm = state_dict["smoothed"]
            self._smoothed = None if sm is None else sm.to(self.clean_labels.device)
        if "reweighter" in state_dict:
            self.reweighter.load_state_dict(state_dict["reweighter"], strict=strict)

    def remove(self) -> None:
        """Remove the feature hook from the head."""
        self._capture.remove()
