"""Filter health: FilterHealth's shares and collapse rule on hand-made counts, the recipe's
held-out scoring, and the signal on a synthetic run that memorises (and one that does not)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from robustweights import RecipeConfig, SurrogateRecipe
from robustweights.phases.health import FilterCollapseWarning, FilterHealth


def _t(*v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.bool)


def test_shares_and_flags() -> None:
    h = FilterHealth(patience=2)
    h.update_pool(kept=_t(1, 1, 1, 0), agree=_t(1, 1, 1, 1))
    h.update_pool(kept=_t(1, 0), agree=_t(1, 0))
    h.update_heldout(kept=_t(1, 0), correct=_t(1, 0))
    r = h.end_epoch(3)
    assert (r.epoch, r.pool_kept, r.heldout_kept) == (3, 4 / 6, 0.5)
    assert (r.pool_agreement, r.heldout_accuracy) == (5 / 6, 0.5)
    # agreement 5/6 against accuracy 1/2 is no evidence with 2 held-out samples (z test)
    assert r.discriminating is False and r.memorising is False and r.collapsed is False
    r = h.end_epoch(4)  # nothing recorded: every share None, the streak unchanged
    assert (r.pool_kept, r.heldout_kept, r.discriminating, r.collapsed) == (None, None, None,
                                                                             False)


def test_collapse_needs_both_signals_for_patience_epochs_and_warns_once() -> None:
    h = FilterHealth(patience=2)

    def epoch(e: int, pool: float, held: float, agree: float, acc: float) -> bool:
        n = 100
        h.update_pool(kept=torch.arange(n) < pool * n, agree=torch.arange(4 * n) < agree * 4 * n)
        h.update_heldout(kept=torch.arange(n) < held * n, correct=torch.arange(n) < acc * n)
        return h.end_epoch(e).collapsed

    mem, honest = (0.9, 0.5), (0.45, 0.5)  # agreement vs held-out accuracy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = [epoch(0, 0.9, 0.6, *honest),  # keeps more of the pool, but no memorisation
                 epoch(1, 0.9, 0.6, *honest),
                 epoch(2, 0.5, 0.8, *mem),     # memorises, but the filter discriminates
                 epoch(3, 0.9, 0.6, *mem),     # both: streak 1
                 epoch(4, 0.8, 0.8, *mem),     # both (pool_kept >= heldout_kept): collapsed
                 epoch(5, 0.9, 0.5, *mem),
                 epoch(6, 0.4, 0.7, *mem),     # discriminates again: reset
                 epoch(7, 0.9, 0.6, *mem), epoch(8, 0.9, 0.6, *mem)]
    assert flags == [False, False, False, False, True, True, False, False, True]
    assert h.first_collapse == 4
    assert [type(w.message) for w in caught] == [FilterCollapseWarning]
    assert "epoch 4" in str(caught[0].message) and "80.0% of the pool" in str(caught[0].message)


def test_memorising_is_a_z_test() -> None:
    def memorising(agree: float, acc: float, n_held: int, z: float = 2.0) -> bool | None:
        h = FilterHealth(z=z)
        h.update_pool(agree=torch.arange(1000) < agree * 1000)
        h.update_heldout(kept=None, correct=torch.arange(n_held) < acc * n_held)
        return h.end_epoch(0).memorising

    # se = sqrt(.6*.4/1000 + .5*.5/50) = 0.0718: a gap of 0.1 is < 2 se, 0.2 is > 2 se
    assert memorising(0.6, 0.5, 50) is False and memorising(0.7, 0.5, 50) is True
    assert memorising(0.6, 0.5, 50, z=1.0) is True
    assert memorising(0.6, 0.5, 5000) is True  # more held-out samples: a smaller gap suffices
    with pytest.raises(ValueError, match="`z`"):
        FilterHealth(z=-1.0)


def test_state_round_trip_and_bad_patience() -> None:
    h = FilterHealth(patience=3)
    h.update_pool(kept=_t(1, 0, 0), agree=_t(1, 0, 1))
    h.update_heldout(kept=_t(1, 1), correct=_t(1, 1))
    h.end_epoch(0)
    h.update_pool(kept=_t(1, 1), agree=_t(0, 1))  # mid-epoch counts are state too
    state = copy.deepcopy(h.state_dict())
    h2 = FilterHealth(patience=3)
    h2.load_state_dict(state)
    assert h2.history == h.history
    assert h2.end_epoch(1) == h.end_epoch(1)
    with pytest.raises(ValueError, match="patience"):
        FilterHealth(patience=2).load_state_dict(state)
    with pytest.raises(ValueError, match="`state_dict\\['z'\\]`"):
        FilterHealth(patience=3, z=1.0).load_state_dict(state)
    with pytest.raises(ValueError, match="`patience`"):
        FilterHealth(patience=0)


def _run(memorise: bool, epochs: int = 26) -> tuple[SurrogateRecipe, list[bool]]:
    """Overlapping Gaussian classes (signal 0.35 per dimension), 40% of the pool labels wrong.
    ``memorise``: a wide MLP without weight decay and a 20-epoch warm-up at weight 0.5, which
    fits every wrong label before the filter starts; else a narrow, regularised MLP filtered from
    epoch 1. 40 trusted samples for the clean passes, 40 held out for the health signal."""
    torch.manual_seed(0)
    c, d, n = 4, 30, 400
    means = torch.randn(c, d) * 0.35

    def sample(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (k,))
        return means[y] + torch.randn(k, d), y

    x, y_true = sample(n)
    y = torch.where(torch.rand(n) < 0.4, (y_true + torch.randint(1, c, (n,))) % c, y_true)
    xc, yc = sample(40)
    xh, yh = sample(40)
    hid = 512 if memorise else 16
    model = nn.Sequential(nn.Linear(d, hid), nn.ReLU(), nn.Linear(hid, hid), nn.ReLU(),
                          nn.Linear(hid, c))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                          weight_decay=0.0 if memorise else 5e-3)
    recipe = SurrogateRecipe(c, config=RecipeConfig.authors(), model=model, head=model[4],
                             clean_data=(xc, yc),
                             health_data=(xh, yh), warmup_epochs=20 if memorise else 1,
                             alpha_switch=0, clean_passes=2, clean_batch_size=20)
    collapsed = []
    for epoch in range(epochs):
        recipe.start_epoch(epoch)
        model.train()
        for xb, yb in recipe.clean_batches():
            opt.zero_grad()
            recipe.clean_loss(model(xb), yb).backward()
            opt.step()
        for idx in torch.randperm(n).split(50):
            logits = model(x[idx])  # its prediction feeds the agreement signal
            w = recipe.weights(inputs=x[idx], labels=y[idx], logits=logits)
            opt.zero_grad()
            recipe.loss(logits, y[idx], w).backward()
            opt.step()
        collapsed.append(recipe.end_epoch().collapsed)
    return recipe, collapsed


def test_signal_fires_on_a_memorising_run() -> None:
    with pytest.warns(FilterCollapseWarning, match="stopped discriminating"):
        recipe, collapsed = _run(memorise=True)
    warm = recipe.health.history[19]
    assert warm.pool_kept is None and warm.pool_agreement is not None
    assert warm.pool_agreement > 0.95 > warm.heldout_accuracy  # type: ignore[operator]
    assert warm.memorising
    assert any(collapsed[20:]) and not any(collapsed[:20])


def test_signal_quiet_where_the_filter_holds() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FilterCollapseWarning)
        recipe, collapsed = _run(memorise=False)
    assert not any(collapsed)
    last = recipe.health.history[-1]
    assert last.discriminating and last.pool_kept < last.heldout_kept  # type: ignore[operator]
