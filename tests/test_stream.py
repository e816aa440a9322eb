"""RecipeStream (``robustweights.integrations.stream``): the recipe's epoch as a re-iterable,
sized loader for framework loops; the pool's sampler epoch; the ranks' batch counts under DDP."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from robustweights import SurrogateRecipe
from robustweights.integrations import RecipeStream


def make(m: int = 20, **kw: object) -> SurrogateRecipe:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    args: dict[str, object] = {"clean_passes": 2, "clean_batch_size": 8,
                               "clean_data": (torch.randn(m, 4), torch.arange(m) % 3),
                               "generator": torch.Generator().manual_seed(1)}
    args.update(kw)
    return SurrogateRecipe(3, model=net, head=net[2], **args)  # type: ignore[arg-type]


def pool(n: int = 30, batch: int = 10) -> DataLoader:
    ds = TensorDataset(torch.randn(n, 4), torch.randint(0, 3, (n,)), torch.arange(n))
    return DataLoader(ds, batch_size=batch,
                      sampler=DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0))


class Unsized:
    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator:
        return iter(self.batches)


def test_each_iteration_is_one_epoch_of_epoch_batches() -> None:
    recipe, loader = make(), pool()
    reference = copy.deepcopy(recipe)
    stream = RecipeStream(recipe, loader)
    # 2 passes of ceil(20 / 8) = 3 clean batches, then 3 pool batches
    assert len(stream) == 2 * 3 + 3
    for epoch in range(2):  # re-iterable: a new epoch each time, as the recipe's own stream
        recipe.start_epoch(epoch)
        reference.start_epoch(epoch)
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        want = list(reference.epoch_batches(loader))
        got = list(stream)
        assert [k for k, _ in got] == ["clean"] * 6 + ["pool"] * 3
        for (k, a), (_, b) in zip(got, want, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), k


def test_pool_sampler_follows_the_recipe_epoch_when_the_stream_reaches_it() -> None:
    recipe, loader = make(), pool()
    stream = RecipeStream(recipe, loader)
    sampler = loader.sampler
    recipe.start_epoch(3)
    it = iter(stream)
    assert sampler.epoch == 0  # type: ignore[attr-defined]  # not before the pool's turn
    recipe.start_epoch(4)  # e.g. a framework that fetched the first (clean) batch early
    kinds = [k for k, _ in it]
    assert kinds[-1] == "pool" and sampler.epoch == 4  # type: ignore[attr-defined]
    stream.set_epoch(7)  # a framework's own call reaches the pool's sampler
    assert sampler.epoch == 7  # type: ignore[attr-defined]
    order = torch.cat([b[2] for k, b in stream if k == "pool"])  # the recipe's epoch again: 4
    recipe.start_epoch(5)
    assert not torch.equal(torch.cat([b[2] for k, b in stream if k == "pool"]), order), (
        "a new permutation per epoch")


def test_len_is_unknown_when_the_clean_data_or_the_pool_has_none() -> None:
    batches = [(torch.randn(5, 4), torch.arange(5) % 3)]
    with pytest.raises(TypeError, match="has no len"):
        len(RecipeStream(make(), Unsized(batches)))
    with pytest.raises(TypeError, match="the recipe's clean data has none"):
        len(RecipeStream(make(clean_data=Unsized(batches)), pool()))
    assert [k for k, _ in RecipeStream(make(clean_passes=1), Unsized(batches))] == [
        "clean"] * 3 + ["pool"]


def test_rejects_wrong_arguments() -> None:
    with pytest.raises(TypeError, match="Expected `recipe` to be a SurrogateRecipe, but got"):
        RecipeStream(object(), pool())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `pool` to be a re-iterable of batches .* but "
                                        r"got generator"):
        RecipeStream(make(), (b for b in pool()))


SIZES = {"equal": (20, 20), "unequal": (20, 12)}  # clean samples on rank 0 and rank 1


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))
    try:
        for name, sizes in SIZES.items():
            stream = RecipeStream(make(m=sizes[rank]), pool())
            try:
                message = f"ok {sum(1 for _ in stream)}"
            except ValueError as exc:
                message = str(exc)
            with open(f"{out}.{name}.{rank}", "w") as f:
                f.write(message)
    finally:
        dist.destroy_process_group()


def test_ranks_with_different_clean_step_counts_raise_instead_of_hanging(tmp_path) -> None:
    out = str(tmp_path / "msg")
    mp.spawn(_worker, args=(str(tmp_path / "init"), out), nprocs=2)
    read = {name: [open(f"{out}.{name}.{r}").read() for r in range(2)] for name in SIZES}
    assert read["equal"] == ["ok 9", "ok 9"], read
    # 2 passes of ceil(20 / 8) = 3 vs ceil(12 / 8) = 2 batches: every rank raises, none hangs
    for r, msg in enumerate(read["unequal"]):
        assert msg.startswith("Expected every rank to stream the same number of batches per "
                              f"epoch (each clean step is a DDP step), but rank {r} has "
                              f"{6 if r == 0 else 4} clean and 3 pool batches, and the ranks "
                              "range over 4-6 clean and 3-3 pool batches"), msg
