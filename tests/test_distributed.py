"""torch.distributed: 2 gloo ranks on CPU give the weights of one process on the concatenated data.

One spawned group runs every scenario under three settings and writes its weights to disk; the
test process, which has no process group, computes the references with the collectives patched to
raise (so the single-process path provably communicates nothing):

* ``global`` (``sync=True``, ``batch_scope="global"``): the ranks' weights, concatenated in rank
  order, equal one process's on the concatenated training batch and clean set;
* ``local`` (``batch_scope="local"``): each rank's weights equal one process's on the rank's own
  batch against the whole clean set;
* ``nosync`` (``sync=False``): each rank's weights equal one process's on the rank's own data.

Ranks get uneven slices (sizes differ) so nothing relies on equal batch sizes; the ``*_empty_shard``
scenarios give rank 0 no clean sample at all (it contributes zeros), and ``fbr_stream_uneven``
has the ranks make different numbers of ``update_clean`` calls (the reduction is lazy: one
collective when the statistics are needed, however many calls came before).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from robustweights import MetaReweighter, ModelMetaReweighter, SurrogateReweighter
from robustweights import _distributed as distributed

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
TRAIN_SPLIT = (15, 22)  # training samples on rank 0 and rank 1
CLEAN_SPLIT = (33, 28)
EMPTY_CLEAN_SPLIT = (0, 61)  # rank 0 holds no clean sample
C = 4
CE = nn.CrossEntropyLoss(reduction="none")
SETTINGS: dict[str, dict[str, Any]] = {"global": {}, "local": {"batch_scope": "local"},
                                       "nosync": {"sync": False}}


# ----------------------------------------------------------------------------- data
def _split(t: torch.Tensor, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    return list(torch.split(t, list(sizes)))


def make_data() -> dict[str, dict[str, list[torch.Tensor]]]:
    """Every data set as per-rank lists: ``data[name][key][rank]``, float64."""
    g = torch.Generator().manual_seed(0)
    B, M, D = sum(TRAIN_SPLIT), sum(CLEAN_SPLIT), 8
    centres = torch.randn(C, D, generator=g, dtype=torch.float64) * 2
    yc = torch.randint(0, C, (M,), generator=g)
    G = centres[yc] + torch.randn(M, D, generator=g, dtype=torch.float64)
    ytrue = torch.randint(0, C, (B,), generator=g)
    F = centres[ytrue] + torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(B, generator=g) < 0.4, torch.randint(0, C, (B,), generator=g),
                    ytrue)
    ids = torch.randperm(1000, generator=g)[:B]
    clean = {"features": _split(G, CLEAN_SPLIT), "labels": _split(yc, CLEAN_SPLIT)}
    # Incremental mode: a second batch of the same samples (features moved) on the other rank.
    F2 = F + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
    swap = torch.cat([torch.arange(TRAIN_SPLIT[0], B), torch.arange(TRAIN_SPLIT[0])])
    swapped_split = TRAIN_SPLIT[::-1]
    fbr = {"features": _split(F, TRAIN_SPLIT), "labels": _split(y, TRAIN_SPLIT),
           "ids": _split(ids, TRAIN_SPLIT), "features2": _split(F2[swap], swapped_split),
           "labels2": _split(y[swap], swapped_split), "ids2": _split(ids[swap], swapped_split),
           **{f"clean_{k}": v for k, v in clean.items()}}
    # Rank 0 holds only samples with a positive direction: per rank it would keep them all.
    rw = SurrogateReweighter(C, alpha=0.3)
    rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    assert rw.last_scores is not None
    pos: torch.Tensor = rw.last_scores > 0
    order = torch.cat([pos.nonzero().flatten(), (~pos).nonzero().flatten()])
    assert pos.sum() >= TRAIN_SPLIT[0] and (~pos).any(), "rank 0 should get positives only"
    fbr_pos = dict(fbr, features=_split(F[order], TRAIN_SPLIT),
                   labels=_split(y[order], TRAIN_SPLIT))
    # Last-layer L2RW: a fixed linear head's logits.
    W = torch.randn(C, D, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    head = {"logits": _split(F @ W.T + b, TRAIN_SPLIT), "features": fbr["features"],
            "labels": fbr["labels"], "clean_logits": _split(G @ W.T + b, CLEAN_SPLIT),
            "clean_features": clean["features"], "clean_labels": clean["labels"]}
    # Full network: inputs for a small MLP without BatchNorm.
    x = torch.randn(B, 5, generator=g, dtype=torch.float64)
    xc = torch.randn(M, 5, generator=g, dtype=torch.float64)
    labels, clean_labels = torch.randint(0, 3, (B,), generator=g), torch.randint(0, 3, (M,),
                                                                                generator=g)
    net = {"inputs": _split(x, TRAIN_SPLIT), "labels": _split(labels, TRAIN_SPLIT),
           "clean_inputs": _split(xc, CLEAN_SPLIT), "clean_labels": _split(clean_labels,
                                                                           CLEAN_SPLIT)}
    out = {"fbr": fbr, "fbr_pos": fbr_pos, "head": head, "net": net}
    for key in ("fbr", "head", "net"):  # the same data, the clean set all on rank 1
        out[f"{key}_empty"] = {k: _split(torch.cat(v), EMPTY_CLEAN_SPLIT)
                               if k.startswith("clean_") else v for k, v in out[key].items()}
    return out


def _small_net() -> nn.Module:
    torch.manual_seed(0)  # identical on every rank (DDP would broadcast rank 0's anyway)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)).double()


# ----------------------------------------------------------------------------- scenarios
# Each takes one data set (``d[key]`` a tensor) and reweighter options and returns weights; the
# ranks run it on their slices, the references on concatenations.
def fbr_cached(d, **kw):
    rw = SurrogateReweighter(C, alpha=0.3, **kw)
    half = d["clean_features"].shape[0] // 2  # streamed in two chunks (a collective each)
    rw.set_clean(features=d["clean_features"][:half], labels=d["clean_labels"][:half])
    rw.update_clean(features=d["clean_features"][half:], labels=d["clean_labels"][half:])
    return [rw.weights(features=d["features"], labels=d["labels"])]


def fbr_stream_uneven(d, **kw):
    # Chunks of 10: 4 update_clean calls on rank 0 (33 samples), 3 on rank 1 (28).
    rw = SurrogateReweighter(C, alpha=0.3, **kw)
    rw.reset_clean()
    for i in range(0, d["clean_features"].shape[0], 10):
        rw.update_clean(features=d["clean_features"][i:i + 10],
                        labels=d["clean_labels"][i:i + 10])
    return [rw.weights(features=d["features"], labels=d["labels"])]


def fbr_per_call(d, **kw):
    rw = SurrogateReweighter(C, alpha=0.3, **kw)
    return [rw.weights(features=d["features"], labels=d["labels"],
                       clean_features=d["clean_features"], clean_labels=d["clean_labels"])]


def fbr_incremental(d, **kw):
    rw = SurrogateReweighter(C, alpha=0.3, mode="incremental", eta=0.05, **kw)
    rw.set_clean(features=d["clean_features"], labels=d["clean_labels"])
    w1 = rw.weights(features=d["features"], labels=d["labels"], sample_ids=d["ids"])
    w2 = rw.weights(features=d["features2"], labels=d["labels2"], sample_ids=d["ids2"])
    return [w1, w2]


def l2rw_last_layer(d, normalization, cached, **kw):
    rw = MetaReweighter(C, normalization=normalization, **kw)
    clean = {k: d[f"clean_{k}"] for k in ("logits", "features", "labels")}
    if cached:
        rw.set_clean(**clean)
        return [rw.weights(logits=d["logits"], features=d["features"], labels=d["labels"])]
    return [rw.weights(logits=d["logits"], features=d["features"], labels=d["labels"],
                       **{f"clean_{k}": v for k, v in clean.items()})]


def l2rw_full(d, normalization, cached, **kw):
    net = _small_net()
    if dist.is_initialized():  # the user's DDP model: the reweighter unwraps it
        net = nn.parallel.DistributedDataParallel(net)
    rw = ModelMetaReweighter(net, CE, normalization=normalization, **kw)
    if not cached:
        return [rw.weights(inputs=d["inputs"], labels=d["labels"],
                           clean_inputs=d["clean_inputs"], clean_labels=d["clean_labels"])]
    half = d["clean_inputs"].shape[0] // 2
    rw.set_clean(inputs=d["clean_inputs"][:half], labels=d["clean_labels"][:half])
    rw.update_clean(inputs=d["clean_inputs"][half:], labels=d["clean_labels"][half:])
    return [rw.weights(inputs=d["inputs"], labels=d["labels"])]


SCENARIOS: dict[str, tuple[str, Callable[..., list[Any]], dict[str, Any]]] = {
    "fbr_cached": ("fbr", fbr_cached, {}),
    "fbr_per_call": ("fbr", fbr_per_call, {}),
    "fbr_ratio_cached": ("fbr", fbr_cached, {"ratio": 0.3}),
    "fbr_ratio_per_call": ("fbr", fbr_per_call, {"ratio": 0.3}),
    # w_max = 3 leaves kept weights unclipped, so a per-rank "no negative: all w_max" shows.
    "fbr_rank0_all_positive": ("fbr_pos", fbr_per_call, {"w_max": 3.0}),
    "fbr_ratio_rank0_all_positive": ("fbr_pos", fbr_cached, {"ratio": 0.5, "w_max": 3.0}),
    "fbr_incremental": ("fbr", fbr_incremental, {}),
    "l2rw_last_sum_cached": ("head", l2rw_last_layer, {"normalization": "sum", "cached": True}),
    "l2rw_last_sum_per_call": ("head", l2rw_last_layer, {"normalization": "sum",
                                                         "cached": False}),
    "l2rw_last_mean_cached": ("head", l2rw_last_layer, {"normalization": "mean",
                                                        "cached": True}),
    "l2rw_last_mean_per_call": ("head", l2rw_last_layer, {"normalization": "mean",
                                                          "cached": False}),
    "l2rw_full_sum_per_call": ("net", l2rw_full, {"normalization": "sum", "cached": False}),
    "l2rw_full_mean_cached": ("net", l2rw_full, {"normalization": "mean", "cached": True}),
    "fbr_stream_uneven": ("fbr", fbr_stream_uneven, {}),
    "fbr_cached_empty_shard": ("fbr_empty", fbr_cached, {}),
    "fbr_per_call_empty_shard": ("fbr_empty", fbr_per_call, {}),
    "fbr_incremental_empty_shard": ("fbr_empty", fbr_incremental, {}),
    "l2rw_last_sum_cached_empty_shard": ("head_empty", l2rw_last_layer,
                                         {"normalization": "sum", "cached": True}),
    "l2rw_last_mean_per_call_empty_shard": ("head_empty", l2rw_last_layer,
                                            {"normalization": "mean", "cached": False}),
    "l2rw_full_sum_per_call_empty_shard": ("net_empty", l2rw_full,
                                           {"normalization": "sum", "cached": False}),
    "l2rw_full_mean_cached_empty_shard": ("net_empty", l2rw_full,
                                          {"normalization": "mean", "cached": True}),
}


def settings_of(name: str) -> dict[str, dict[str, Any]]:
    """Without a reduction (``sync=False``) a rank with no clean sample has no clean set, so the
    empty-shard scenarios run with the reduction on only."""
    if name.endswith("_empty_shard"):
        return {k: v for k, v in SETTINGS.items() if k != "nosync"}
    return SETTINGS


def run_scenario(name: str, data, ranks: tuple[int, ...], clean_ranks: tuple[int, ...],
                 **options) -> list[torch.Tensor]:
    """Run a scenario on the concatenation of the given ranks' training and clean slices."""
    key, fn, kwargs = SCENARIOS[name]
    d = {k: torch.cat([v[r] for r in (clean_ranks if k.startswith("clean_") else ranks)])
         for k, v in data[key].items()}
    return [torch.as_tensor(w) for w in fn(d, **kwargs, **options)]


# ----------------------------------------------------------------------------- the ranks
def _worker(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        data = torch.load(f"{tmp}/data.pt")
        out: dict[Any, Any] = {(name, setting): run_scenario(name, data, (rank,), (rank,),
                                                             **options)
                               for name in SCENARIOS
                               for setting, options in settings_of(name).items()}
        out["collectives"] = count_collectives(data, rank)
        torch.save(out, f"{tmp}/rank{rank}.pt")
        dist.barrier()  # tear down together: a gloo peer leaving early can abort the other
    finally:
        dist.destroy_process_group()


def count_collectives(data, rank: int) -> dict[str, int]:
    """How many all-reduces K clean updates cost: none at update time, one at the first use."""
    calls = {"n": 0}
    real = dist.all_reduce

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    d = {k: v[rank] for k, v in data["head"].items()}
    net_d = {k: v[rank] for k, v in data["net"].items()}
    dist.all_reduce = counting
    try:
        out = {}
        for name, rw, update, use in (
            ("fbr", SurrogateReweighter(C, alpha=0.3),
             lambda rw, s: rw.update_clean(features=d["clean_features"][s],
                                           labels=d["clean_labels"][s]),
             lambda rw: rw.sync_clean()),
            # batch_scope="local": the weights call's only collective is the clean reduction.
            ("l2rw_last_layer", MetaReweighter(C, batch_scope="local"),
             lambda rw, s: rw.update_clean(logits=d["clean_logits"][s],
                                           features=d["clean_features"][s],
                                           labels=d["clean_labels"][s]),
             lambda rw: rw.weights(logits=d["logits"], features=d["features"],
                                   labels=d["labels"])),
            ("l2rw_model", ModelMetaReweighter(_small_net(), CE),
             lambda rw, s: rw.update_clean(inputs=net_d["clean_inputs"][s],
                                           labels=net_d["clean_labels"][s]),
             lambda rw: rw.sync_clean()),
        ):
            calls["n"] = 0
            for i in range(5):  # K = 5 clean batches
                update(rw, slice(5 * i, 5 * i + 5))
            out[f"{name}_updates"] = calls["n"]
            try:  # unreduced statistics must not be checkpointed: each rank holds a share
                rw.state_dict()
                out[f"{name}_state_dict_refused"] = 0
            except RuntimeError:
                out[f"{name}_state_dict_refused"] = 1
            use(rw)
            out[f"{name}_sync"] = calls["n"] - out[f"{name}_updates"]
            use(rw)  # nothing pending: no collective
            out[f"{name}_second_sync"] = calls["n"] - out[f"{name}_updates"] - out[f"{name}_sync"]
        return out
    finally:
        dist.all_reduce = real


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    data = make_data()
    torch.save(data, tmp / "data.pt")
    mp.spawn(_worker, args=(str(tmp),), nprocs=WORLD, join=True)
    return data, [torch.load(tmp / f"rank{r}.pt") for r in range(WORLD)]


def _no_collectives(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a collective was called without a process group")

    for fn in ("all_reduce", "all_gather", "broadcast", "all_gather_object"):
        monkeypatch.setattr(dist, fn, boom)


def _references(data, name, setting):
    everyone = tuple(range(WORLD))
    if setting == "global":
        return run_scenario(name, data, everyone, everyone)
    per_rank = [run_scenario(name, data, (r,), everyone if setting == "local" else (r,))
                for r in everyone]
    # Concatenate per output in rank order, as the global comparison does.
    return [torch.cat([p[i] for p in per_rank]) for i in range(len(per_rank[0]))]


@pytest.mark.parametrize("name", SCENARIOS)
def test_ranks_match_single_process(spawned, name, monkeypatch):
    data, results = spawned
    _no_collectives(monkeypatch)
    settings = settings_of(name)
    got = {s: [torch.cat([results[r][(name, s)][i] for r in range(WORLD)])
               for i in range(len(results[0][(name, s)]))] for s in settings}
    for setting in settings:
        want = _references(data, name, setting)
        for i, (g, w) in enumerate(zip(got[setting], want, strict=True)):
            assert g.dtype == torch.float64, f"{name}/{setting}: dtype {g.dtype}"
            np.testing.assert_allclose(
                g.numpy(), w.numpy(), rtol=1e-6, atol=1e-6,
                err_msg=f"{name}, setting {setting!r}, output {i}: 2 gloo ranks differ from one "
                        f"process on the {'concatenated' if setting == 'global' else 'per-rank'} "
                        "data")
    # The comparison must be able to fail: per-rank answers differ from the global one here.
    for setting in set(settings) - {"global"}:
        gap = max(float((a - b).abs().max())
                  for a, b in zip(got[setting], got["global"], strict=True))
        assert gap > 1e-3, f"{name}: {setting!r} equals 'global' (gap {gap}): weak test data"
    assert any(float(w.abs().max()) > 0 for w in got["global"]), f"{name}: all weights zero"


def test_clean_updates_cost_one_collective(spawned):
    _, results = spawned
    for rank in range(WORLD):
        counts = results[rank]["collectives"]
        for name in ("fbr", "l2rw_last_layer", "l2rw_model"):
            assert counts[f"{name}_updates"] == 0, f"{name}: update_clean communicated: {counts}"
            assert counts[f"{name}_sync"] == 1, f"{name}: 5 clean batches, one reduction: {counts}"
            assert counts[f"{name}_second_sync"] == 0, f"{name}: nothing pending: {counts}"
            assert counts[f"{name}_state_dict_refused"] == 1, f"{name}: {counts}"


# ----------------------------------------------------------------------------- one process
def test_collectives_are_noops_without_process_group(monkeypatch):
    _no_collectives(monkeypatch)
    assert not distributed.is_distributed()
    t = torch.tensor([3.0, 1.0, 2.0])
    assert distributed.all_reduce(t, "max") is t
    sums = {"a": t}
    distributed.all_reduce_sums(sums)
    assert sums["a"] is t
    assert distributed.all_gather_cat(t, t) == (t, t)
    torch.testing.assert_close(distributed.k_smallest(t, 2), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(distributed.k_smallest(t, 5),
                               torch.tensor([1.0, 2.0, 3.0, float("inf"), float("inf")]))


def test_batch_scope_is_checked():
    with pytest.raises(ValueError, match="Expected `batch_scope` to be 'global' or 'local', but "
                                         "got 'world'"):
        SurrogateReweighter(3, batch_scope="world")
    with pytest.raises(ValueError, match="`batch_scope`"):
        MetaReweighter(3, batch_scope=None)
    assert ModelMetaReweighter(_small_net(), CE, batch_scope="local").batch_scope == "local"


def test_model_reweighter_unwraps_data_parallel():
    net = _small_net()
    assert ModelMetaReweighter(nn.DataParallel(net), CE).model is net


# ----------------------------------------------------------------------------- the example
def test_ddp_example_runs():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ddp_example.py")],
                          capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"example failed:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert "2 processes" in out, out
    acc, _kept, precision, pool = map(float, re.findall(r"\d\.\d+", out.splitlines()[-1]))
    assert acc > 0.8, out
    assert precision > pool + 0.15, f"kept samples should be cleaner than the pool: {out}"
