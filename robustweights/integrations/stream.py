"""One epoch of a :class:`~robustweights.SurrogateRecipe` as a training loader for a framework.

Framework-free (torch only): the Lightning integration and the Hugging Face ``Trainer`` example
both hand a :class:`RecipeStream` to the framework as its train dataloader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist

from robustweights._distributed import is_distributed
from robustweights.recipe import SurrogateRecipe

__all__ = ["RecipeStream"]


def _set_sampler_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch(epoch)`` on ``loader`` and on its samplers wherever they have one
    (``loader.sampler``, ``loader.batch_sampler`` and the sampler inside that), as Lightning and
    the ``Trainer`` do for the loaders they see. Setting the same epoch twice is harmless."""
    seen: list[Any] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for obj in (loader, getattr(loader, "sampler", None), batch_sampler,
                getattr(batch_sampler, "sampler", None),
                getattr(batch_sampler, "batch_sampler", None)):
        if obj is not None and all(obj is not s for s in seen):
            seen.append(obj)
            if callable(getattr(obj, "set_epoch", None)):
                obj.set_epoch(epoch)


class RecipeStream:
    """``recipe.epoch_batches(pool)`` as a re-iterable loader: what a framework's loop iterates
    so that every clean step of the recipe is one of its own training steps.

    Each ``iter()`` is one epoch: ``("clean", (x, y))`` for each batch of the recipe's clean
    passes, then ``("pool", batch)`` for each batch of ``pool``. The training step dispatches on
    the tag::

        kind, batch = batch
        if kind == "clean":
            x, y = batch
            return recipe.clean_loss(model(x), y)
        x, y, idx = batch
        logits = model(x)                    # first: the default takes its features
        w = recipe.weights(inputs=x, labels=y, sample_ids=idx, logits=logits)
        return recipe.loss(logits, y, w)

    so DDP's gradient sync, AMP, gradient clipping and accumulation apply to the clean steps as
    to the pool's. Call ``recipe.start_epoch(epoch)`` at every epoch start (the Lightning
    ``RecipeCallback`` does; with the ``Trainer``, a ``TrainerCallback.on_epoch_begin``).

    - ``len()``: the clean steps of an epoch plus ``len(pool)`` (a ``TypeError`` if either is
      unknown, which frameworks read as "unsized"), so the framework knows the epoch's length.
    - The pool's sampler gets ``set_epoch(recipe.epoch)`` when the stream reaches the pool (a
      ``DistributedSampler`` then shuffles per epoch, and a resumed run sees the same batches);
      :meth:`set_epoch` forwards a framework's own call to the pool.
    - Under ``torch.distributed`` the first ``iter()`` checks (one small collective) that every
      rank streams as many clean and pool batches per epoch: each clean step is a DDP step, and
      a rank with one more batch than the others would hang the group.

    Args:
        recipe: the :class:`~robustweights.SurrogateRecipe`.
        pool: the noisy training data, a re-iterable of batches (e.g. a ``DataLoader``), on each
            rank its own shard.

    Example:
        >>> import torch
        >>> from robustweights import SurrogateRecipe
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> recipe = SurrogateRecipe(2, model=net, head=net[2], clean_passes=2, clean_batch_size=5,
        ...                          clean_data=(torch.randn(10, 4), torch.arange(10) % 2))
        >>> pool = [(torch.randn(6, 4), torch.randint(0, 2, (6,)), torch.arange(6))] * 3
        >>> stream = RecipeStream(recipe, pool)
        >>> len(stream), [kind for kind, _ in stream]
        (7, ['clean', 'clean', 'clean', 'clean', 'pool', 'pool', 'pool'])
    """

    def __init__(self, recipe: SurrogateRecipe, pool: Iterable[Any]) -> None:
        if not isinstance(recipe, SurrogateRecipe):
            raise TypeError(f"Expected `recipe` to be a SurrogateRecipe, but got "
                            f"{type(recipe).__name__}")
        if isinstance(pool, Iterator) or not isinstance(pool, Iterable):
            raise TypeError(f"Expected `pool` to be a re-iterable of batches (e.g. a DataLoader), "
                            f"but got {type(pool).__name__}")
        self.recipe = recipe
        self.pool = pool
        self._ranks_checked = False

    def pool_loader(self) -> Iterable[Any]:
        """The pool as this rank iterates it (subclasses may shard it here)."""
        return self.pool

    def __len__(self) -> int:
        clean = self.recipe.clean_steps_per_epoch
        if clean is None:
            raise TypeError("RecipeStream has no len(): the recipe's clean data has none")
        return clean + len(self.pool_loader())  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        pool = self.pool_loader()
        if not self._ranks_checked:
            self._check_ranks(pool)
            self._ranks_checked = True
        return self.recipe.epoch_batches(self._pool_at_epoch(pool))

    def _pool_at_epoch(self, pool: Iterable[Any]) -> Iterator[Any]:
        # Runs when the stream reaches the pool, after the epoch's clean steps: by then
        # ``recipe.start_epoch`` has run whenever the framework fetched the first batch early.
        _set_sampler_epoch(pool, self.recipe.epoch)
        yield from pool

    def set_epoch(self, epoch: int) -> None:
        """Forward a framework's ``set_epoch`` to the pool and its samplers."""
        _set_sampler_epoch(self.pool_loader(), epoch)

    def _check_ranks(self, pool: Iterable[Any]) -> None:
        if not is_distributed():
            return
        clean = self.recipe.clean_steps_per_epoch
        try:
            n_pool = len(pool)  # type: ignore[arg-type]
        except TypeError:
            n_pool = None
        if clean is None or n_pool is None:  # unsized: nothing to compare
            return
        mine = torch.tensor([clean, -clean, n_pool, -n_pool], device=self.recipe.device)
        seen = mine.clone()
        dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        if not torch.equal(seen, mine):  # every rank sees the same maxima, so all raise
            raise ValueError(
                f"Expected every rank to stream the same number of batches per epoch (each "
                f"clean step is a DDP step), but rank {dist.get_rank()} has {clean} clean and "
                f"{n_pool} pool batches, and the ranks range over {int(-seen[1])}-"
                f"{int(seen[0])} clean and {int(-seen[3])}-{int(seen[2])} pool batches")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(recipe={self.recipe!r}, pool={type(self.pool).__name__})"
