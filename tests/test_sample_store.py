"""The per-sample-id store shared by FBR's incremental mode and the phase monitor."""

from __future__ import annotations

import pytest
import torch

from robustweights._sample_store import SampleStore


def test_store_grows_by_id_and_reads_fill_for_unwritten_ids():
    store = SampleStore(fill=0.5)
    like = torch.zeros(1, dtype=torch.float64)
    assert len(store) == 0
    assert store.gather(torch.tensor([4, 0]), like=like).tolist() == [0.5, 0.5]
    assert len(store) == 5 and not bool(store.seen.any())
    store.scatter(torch.tensor([4, 7]), torch.tensor([0.25, 1.0], dtype=torch.float64))
    assert len(store) == 8
    assert store.gather(torch.tensor([7, 4, 2]), like=like).tolist() == [1.0, 0.25, 0.5]
    assert store.seen.tolist() == [False] * 4 + [True, False, False, True]


def test_store_follows_the_dtype_of_its_values():
    store = SampleStore(fill=0.0)
    store.scatter(torch.tensor([1]), torch.tensor([0.5], dtype=torch.float64))
    got = store.gather(torch.tensor([1]), like=torch.zeros(1, dtype=torch.float32))
    assert got.dtype == torch.float32 and store.values.dtype == torch.float32


def test_lookup_does_not_grow_and_says_what_is_known():
    store = SampleStore(fill=-1.0)
    values, known = store.lookup(torch.tensor([0, 3]))
    assert values.tolist() == [-1.0, -1.0] and known.tolist() == [False, False]
    store.scatter(torch.tensor([2]), torch.tensor([0.3], dtype=torch.float64))
    values, known = store.lookup(torch.tensor([2, 1, 9]))
    assert values.tolist() == [0.3, -1.0, -1.0] and known.tolist() == [True, False, False]
    assert len(store) == 3


def test_store_state_dict_round_trip_and_checks():
    store = SampleStore(fill=0.5)
    assert store.state_dict() == {"values": None, "seen": None}
    store.scatter(torch.tensor([0, 2]), torch.tensor([0.1, 0.9], dtype=torch.float64))
    state = store.state_dict()
    clone = SampleStore(fill=0.5)
    clone.load_state_dict(state)
    assert torch.equal(clone.values, store.values) and torch.equal(clone.seen, store.seen)
    state["values"][0] = 7.0  # a copy: the store is not aliased by its state
    assert store.values[0] == 0.1
    values_only = SampleStore()
    values_only.load_state_dict({"values": torch.ones(3)})
    assert values_only.seen.tolist() == [True, True, True]
    with pytest.raises(ValueError, match=r"Expected the sample store's `values` to be None or a "
                                         r"1-D tensor"):
        SampleStore().load_state_dict({"values": torch.ones(2, 2)})
    with pytest.raises(ValueError, match=r"`seen` to have shape \(3,\), but got \(2,\)"):
        SampleStore().load_state_dict({"values": torch.ones(3),
                                       "seen": torch.ones(2, dtype=torch.bool)})
