"""PyTorch Lightning: the whole :class:`~robustweights.SurrogateRecipe` as Lightning training
steps (:class:`RecipeCallback`, :class:`RecipeDataLoader`), and a bare reweighter's clean set
refreshed each epoch (:class:`ReweighterCallback`); both checkpoint their state.

Needs the ``lightning`` extra: ``pip install "robustweights[lightning]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "robustweights.integrations.lightning needs PyTorch Lightning; install it with "
        "`pip install \"robustweights[lightning]\"` (or `pip install lightning`)"
    ) from exc

from robustweights import FeatureCapture, Reweighter, SurrogateRecipe
from robustweights._data import CleanData, check_data, eval_mode, iterate
from robustweights._distributed import is_distributed
from robustweights.integrations.stream import RecipeStream

__all__ = ["RecipeCallback", "RecipeDataLoader", "ReweighterCallback"]


class ReweighterCallback(pl.Callback):
    """Keep a reweighter's clean set fresh during ``Trainer.fit`` and save it in checkpoints.

    At the start of every training epoch the callback

    1. sets the reweighter's epoch to ``trainer.current_epoch`` (``set_epoch``, which drives
       FBR's ``alpha`` schedule), and
    2. runs the clean set through the LightningModule in **eval mode** without gradients,
       streaming the captured features (and the module's outputs as logits, for reweighters
       that need them) into ``update_clean``; then it restores every submodule's own mode (a
       backbone the module froze in eval mode stays in eval mode).

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
        clean_data: the trusted clean set, as one ``(inputs, labels)`` pair of tensors or a
            re-iterable of such batches (e.g. a ``DataLoader``; a one-shot iterator is refused:
            every epoch iterates it again). Moved to the module's device.

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
        self.clean_data = check_data(clean_data, "clean_data")
        self.refreshes = 0  # how many times the clean set was rebuilt (saved in checkpoints)

    @torch.no_grad()
    def refresh(self, pl_module: pl.LightningModule) -> None:
        """Rebuild the reweighter's clean statistics from the clean set, in eval mode (every
        submodule's own mode restored afterwards)."""
        device = pl_module.device
        with eval_mode(pl_module):
            self.reweighter.reset_clean()
            for inputs, labels in iterate(self.clean_data, shuffle=False, batch_size=1,
                                          generator=None, device=device):
                outputs = pl_module(inputs.to(device))
                logits = outputs if isinstance(outputs, torch.Tensor) else None
                self.reweighter.update_clean(features=self.capture.features,
                                             labels=labels.to(device), logits=logits)
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
        """Restore what :meth:`state_dict` saved (all or nothing: a rejected state changes
        nothing)."""
        refreshes = state_dict["refreshes"]
        if isinstance(refreshes, bool) or not isinstance(refreshes, int) or refreshes < 0:
            raise ValueError("Expected `state_dict['refreshes']` to be a non-negative integer, "
                             f"but got {refreshes!r}")
        self.reweighter.load_state_dict(state_dict["reweighter"])
        self.refreshes = refreshes


class RecipeCallback(pl.Callback):
    """Drive a :class:`~robustweights.SurrogateRecipe`'s schedule during ``Trainer.fit`` and save
    its state in Lightning's checkpoints.

    With :class:`RecipeDataLoader` as the train dataloader, every step of the recipe is an
    ordinary Lightning training step, clean passes included (the recommended configuration has
    none: put the trusted images in ``pool_loader`` and pass ``trusted=`` to ``weights()``), so
    Lightning's DDP gradient sync, precision (AMP), gradient clipping and accumulation apply to
    all of them::

        class Module(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                kind, batch = batch
                if kind == "clean":                                # the recipe's clean passes
                    x, y = batch
                    return self.recipe.clean_loss(self.net(x), y)
                x, y, idx = batch                                  # the noisy pool
                logits = self.net(x)                               # first: its features feed w
                w = self.recipe.weights(inputs=x, labels=y, sample_ids=idx, logits=logits)
                return self.recipe.loss(logits, y, w)

        recipe = SurrogateRecipe(C, model=module.net, head=module.net.fc, clean_data=clean)
        module.recipe = recipe
        trainer = pl.Trainer(callbacks=[RecipeCallback(recipe)], ...)
        trainer.fit(module, RecipeDataLoader(recipe, pool_loader))

    The callback

    1. calls ``recipe.start_epoch(trainer.current_epoch)`` at every training epoch start (the
       warm-up and alpha schedule). In the first epoch of a ``fit`` Lightning calls ``iter()``
       on the train dataloader before this hook (and, for a loader without ``len()``, fetches
       one batch ahead); the stream is lazy and its first batch is a clean one, which does not
       depend on the epoch, so every step still trains in the right epoch;
    2. saves ``recipe.state_dict()`` (epoch, the clean passes' generator, prototypes, per-sample
       stores) in Lightning's checkpoint under :attr:`state_key` and restores it when
       ``Trainer.fit(ckpt_path=...)`` resumes: a run resumed from a checkpoint saved at an epoch
       end (``ModelCheckpoint``'s default, or ``trainer.save_checkpoint`` after ``fit``)
       continues exactly as the uninterrupted run. Mid-epoch checkpoints restart the epoch's
       stream from its start, so they do not resume exactly.

    ``recipe.model`` is the network inside the LightningModule (not the module Lightning wraps
    in DDP): the recipe's own forwards (prototypes; with ``eval_features``, the batch's) are
    no-grad eval forwards, which need no gradient sync.
    Give ``clean_data`` as a ``DataLoader`` (the recipe moves its batches to the model's device)
    or as tensors already on the device the module trains on.

    Args:
        recipe: the :class:`~robustweights.SurrogateRecipe` the training step uses.

    Example:
        >>> import torch
        >>> from robustweights import SurrogateRecipe
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
        ...                           torch.nn.Linear(16, 3))
        >>> recipe = SurrogateRecipe(3, model=net, head=net[2],
        ...                          clean_data=(torch.randn(30, 8), torch.arange(30) % 3))
        >>> RecipeCallback(recipe).state_key
        'RecipeCallback'
    """

    def __init__(self, recipe: SurrogateRecipe) -> None:
        if not isinstance(recipe, SurrogateRecipe):
            raise TypeError(f"Expected `recipe` to be a SurrogateRecipe, but got "
                            f"{type(recipe).__name__}")
        self.recipe = recipe

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the recipe's epoch ``trainer.current_epoch``."""
        self.recipe.start_epoch(trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        """The callback's entry in Lightning's checkpoint: ``recipe.state_dict()``."""
        return self.recipe.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (``recipe.load_state_dict``, which checks the
        configuration)."""
        self.recipe.load_state_dict(state_dict)


class RecipeDataLoader(RecipeStream):
    """The train dataloader for ``Trainer.fit`` with a :class:`~robustweights.SurrogateRecipe`:
    a :class:`~robustweights.integrations.stream.RecipeStream` (each epoch the recipe's clean
    batches tagged ``"clean"``, then the pool's tagged ``"pool"``; ``len()`` for Lightning's
    progress, schedulers and ``max_steps``) that also gives the pool a ``DistributedSampler``
    under DDP, as Lightning does for the loaders it sees (this one it does not see).

    Under a distributed strategy, a pool ``DataLoader`` whose sampler is not a
    ``DistributedSampler`` is rebuilt with one, as Lightning's own injection for training does:
    shuffled, seeded with ``PL_GLOBAL_SEED`` (``seed_everything``), the ranks and world size of
    the process group (a custom sampler is wrapped in a ``DistributedSamplerWrapper``). A pool
    with its own ``DistributedSampler``, or an ``IterableDataset``, is used as given (this also
    holds for ``Trainer(use_distributed_sampler=False)``, which this loader cannot see: give the
    pool the sampler you want). The pool's sampler epoch is set to the recipe's epoch each epoch.

    Args:
        recipe: the :class:`~robustweights.SurrogateRecipe` (driven by :class:`RecipeCallback`).
        pool: the noisy training data, e.g. a ``DataLoader`` of ``(inputs, labels, sample_ids)``.
    """

    def __init__(self, recipe: SurrogateRecipe, pool: Iterable[Any]) -> None:
        super().__init__(recipe, pool)
        self._sharded: tuple[tuple[int, int], Iterable[Any]] | None = None

    def pool_loader(self) -> Iterable[Any]:
        """The pool as this rank iterates it: with a ``DistributedSampler`` under DDP."""
        pool = self.pool
        if not is_distributed():
            return pool
        if (not isinstance(pool, DataLoader) or isinstance(pool.dataset, IterableDataset)
                or isinstance(pool.sampler, DistributedSampler)):
            return pool
        key = (dist.get_world_size(), dist.get_rank())
        if self._sharded is None or self._sharded[0] != key:
            self._sharded = (key, _with_distributed_sampler(pool, *key))
        return self._sharded[1]


def _with_distributed_sampler(loader: DataLoader, world: int, rank: int) -> DataLoader:
    """``loader`` rebuilt with the ``DistributedSampler`` Lightning injects for training."""
    # Lightning's own rebuild (private helpers, imported here so that a rename in a later
    # Lightning breaks only this path, with the DDP test to say so).
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.trainer.states import RunningStage
    from lightning.pytorch.utilities.data import _update_dataloader

    kwargs = {"num_replicas": world, "rank": rank, "shuffle": True,
              "seed": int(os.getenv("PL_GLOBAL_SEED", 0))}
    sampler: DistributedSampler[Any]
    if isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        sampler = DistributedSampler(loader.dataset, **kwargs)  # type: ignore[arg-type]
    else:
        sampler = DistributedSamplerWrapper(loader.sampler, **kwargs)
    return _update_dataloader(loader, sampler, mode=RunningStage.TRAINING)
