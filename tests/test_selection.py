"""robustweights.selection: the rate rule against a literal per-sample loop, and its invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustweights.selection import drop_rate_at, keep_highest


def reference_keep(scores: list[float], drop: float, labels: list[int] | None) -> list[bool]:
    """Literal loop: in each group (all samples, or one label class), sort the members by score,
    best first (earlier position first on ties), and keep the first floor((1 - drop) * n)."""
    groups: dict[int, list[int]] = {}
    for i in range(len(scores)):
        groups.setdefault(0 if labels is None else labels[i], []).append(i)
    keep = [False] * len(scores)
    for members in groups.values():
        ranked = sorted(members, key=lambda i: (-scores[i], i))
        for i in ranked[: int((1.0 - drop) * len(members))]:
            keep[i] = True
    return keep


def test_ramp_is_coteachings_linspace() -> None:
    assert [drop_rate_at(t, 0.4, 10) for t in (0, 9, 20)] == [0.0, 0.4, 0.4]
    assert math.isclose(drop_rate_at(3, 0.4, 10), 0.4 * 3 / 9)
    assert drop_rate_at(0, 0.4, 1) == 0.4 == drop_rate_at(0, 0.4, 0)


def test_hand_checked_global_and_per_class() -> None:
    s = torch.tensor([3.0, 2.0, 1.0, -1.0, -2.0, -3.0])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    assert keep_highest(s, 0.5).tolist() == [True, True, True, False, False, False]
    assert keep_highest(s, 0.5, labels=y).tolist() == [True, False, False, True, False, False]
    assert keep_highest(s, 0.0).all() and not keep_highest(s, 1.0).any()
    assert keep_highest(torch.tensor([1.0, float("nan"), 0.0]), 0.3).tolist() == [
        True, False, True]
    assert keep_highest(torch.zeros(0), 0.3).shape == (0,)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.integers(0, 3)), min_size=1, max_size=40),
       st.floats(0, 1), st.booleans())
def test_matches_the_literal_loop(rows: list[tuple[float, int]], drop: float,
                                  per_class: bool) -> None:
    scores = [r[0] for r in rows]
    labels = [r[1] for r in rows] if per_class else None
    got = keep_highest(torch.tensor(scores, dtype=torch.float64), drop,
                       labels=None if labels is None else torch.tensor(labels))
    assert got.tolist() == reference_keep(scores, drop, labels)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=30, unique=True), st.floats(0, 1),
       st.randoms(use_true_random=False))
def test_permutation_equivariant(scores: list[float], drop: float, rnd: object) -> None:
    perm = list(range(len(scores)))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    s = torch.tensor(scores, dtype=torch.float64)  # distinct values stay distinct (no ties)
    p = torch.tensor(perm)
    assert torch.equal(keep_highest(s[p], drop), keep_highest(s, drop)[p])


def test_small_loss_weights_match_coteaching_selection() -> None:
    from benchmarks.cifar_n.methods.coteaching import small_loss_indices
    from robustweights.functional import small_loss_weights

    g = torch.Generator().manual_seed(0)
    for drop in (0.0, 0.2, 0.5, 0.9):
        losses = torch.rand(37, generator=g)
        w = small_loss_weights(losses, drop_rate=drop)
        picked = torch.zeros(37)
        picked[small_loss_indices(losses, drop)] = 1.0
        assert torch.equal(w, picked), drop
    # per class: the smallest half of each label class
    w = small_loss_weights(torch.tensor([0.1, 0.5, 0.9, 0.2, 0.4, 0.3]), drop_rate=0.5,
                           labels=torch.tensor([0, 0, 0, 1, 1, 1]))
    assert w.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="`drop_rate`"):
        small_loss_weights(torch.zeros(3), drop_rate=1.0)
    with pytest.raises(ValueError, match="`peer_losses`"):
        small_loss_weights(torch.zeros(3, 1), drop_rate=0.1)
