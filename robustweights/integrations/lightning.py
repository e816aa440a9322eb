"""PyTorch Lightning: refresh a reweighter's clean set each epoch and checkpoint its state.

Needs the ``lightning`` extra: ``pip install "robustweights[lightning]"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import torch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "robustweights.integrations.lightning needs PyTorch Lightning; install it with "
        "`pip install \"robustweights[lightning]\"` (or `pip install lightning`)"
    ) from exc

from robustweights import FeatureCapture, Reweighter

__all__ = ["ReweighterCallback"]

CleanData = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


class ReweighterCallback(pl.Callback):
    """Keep a reweighter's clean set fresh during ``Trainer.fit`` and save it in checkpoints.

    At the start of every training epoch the callback

    1. sets the reweighter's epoch to ``trainer.current_epoch`` (``set_epoch``, which drives
       FBR's ``alpha`` schedule), and
    2. runs the clean set through the LightningModule in **eval mode** without gradients,
       streaming the captured features (and the module's outputs as logits, for reweighters
       that need them) into ``update_clean``; then it restores the module's training mode.

    The training step then calls ``reweighter.weights(features=capture.features, labels=y)``
    without a clean batch, as in ``examples/lightning_example.py``. Under DDP every rank must
    see the same number of clean batches (``update_clean`` is a collective); give each rank its
    share of the clean set.

    The reweighter's ``state_dict()`` (clean statistics, epoch, the incremental mode's
    per-sample weights) is saved in Lightning's checkpoint under this callback's entry and
    restored with ``load_state_dict`` when ``Trainer.fit(ckpt_path=...)`` resumes, so a resumed
    run computes the same weights as an uninterrupted one.

    Args:
        reweighter: a reweighter of features (and logits):
            :class:`~robustweights.SurrogateReweighter` or
            :class:`~robustweights.MetaReweighter` (last-layer form). A
            :class:`~robustweights.ModelMetaReweighter` is refused with a ``TypeError``: its
            clean set is the clean-loss gradient at the current parameters, stale after every
            step, so it takes a fresh clean batch in the training step (``clean_inputs``,
            ``clean_labels``) and needs no callback.
        capture: the :class:`~robustweights.FeatureCapture` on the module's head, the same
            object the training step reads its features from.
        clean_data: the trusted clean set, as one ``(inputs, labels)`` pair of tensors or an
            iterable of such batches (e.g. a ``DataLoader``). Moved to the module's device.

    Example:
        >>> import torch
        >>> from robustweights import FeatureCapture, SurrogateReweighter
        >>> head = torch.nn.Linear(8, 3)
        >>> cb = ReweighterCallback(SurrogateReweighter(3), FeatureCapture(head),
        ...                         (torch.randn(30, 8), torch.arange(30) % 3))
        >>> cb.state_key
        'ReweighterCallback'
    """

    def __init__(self, reweighter: Reweighter, capture: FeatureCapture,
                 clean_data: CleanData) -> None:
        if not isinstance(reweighter, Reweighter):
            raise TypeError(f"Expected `reweighter` to be a robustweights reweighter, but got "
                            f"{type(reweighter).__name__}")
        if not set(reweighter.requires) <= {"features", "logits", "labels"}:
            raise TypeError(
                "Expected `reweighter` to be a reweighter of features (SurrogateReweighter or "
                f"MetaReweighter), but got {type(reweighter).__name__}, which needs the model's "
                "`inputs`: its clean gradient is stale after every step, so pass `clean_inputs` "
                "and `clean_labels` to its `weights` in the training step instead")
        if not isinstance(capture, FeatureCapture):
            raise TypeError(f"Expected `capture` to be a FeatureCapture, but got "
                            f"{type(capture).__name__}")
        self.reweighter = reweighter
        self.capture = capture
        if (isinstance(clean_data, tuple) and len(clean_data) == 2
                and all(isinstance(t, torch.Tensor) for t in clean_data)):
            clean_data = [cast(tuple[torch.Tensor, torch.Tensor], clean_data)]
        self.clean_data = cast(Iterable[tuple[torch.Tensor, torch.Tensor]], clean_data)
        self.refreshes = 0  # how many times the clean set was rebuilt (saved in checkpoints)

    @torch.no_grad()
    def refresh(self, pl_module: pl.LightningModule) -> None:
        """Rebuild the reweighter's clean statistics from the clean set, in eval mode."""
        was_training = pl_module.training
        pl_module.eval()
        try:
            self.reweighter.reset_clean()
            for inputs, labels in self.clean_data:
                outputs = pl_module(inputs.to(pl_module.device))
                logits = outputs if isinstance(outputs, torch.Tensor) else None
                self.reweighter.update_clean(features=self.capture.features,
                                             labels=labels.to(pl_module.device), logits=logits)
        finally:
            pl_module.train(was_training)
        self.refreshes += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Set the reweighter's epoch and refresh the clean set."""
        set_epoch = getattr(self.reweighter, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(trainer.current_epoch)
        self.refresh(pl_module)

    def state_dict(self) -> dict[str, Any]:
        """The callback's entry in Lightning's checkpoint (the reweighter's state included)."""
        return {"refreshes": self.refreshes, "reweighter": self.reweighter.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.refreshes = int(state_dict["refreshes"])
        self.reweighter.load_state_dict(state_dict["reweighter"])
