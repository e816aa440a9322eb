"""FBRRecipe: each step of the authors' recipe on hand-checkable cases, the options, state, and
a short run that learns."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustweights import FBRRecipe, SurrogateReweighter


class ModeNet(nn.Module):
    """A small net with BatchNorm (so train and eval features differ) that records the mode and
    batch size of every forward."""

    def __init__(self, d_in: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.fc = nn.Linear(16, classes)
        self.calls: list[tuple[bool, int, bool]] = []  # (training, batch, grad enabled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, x.shape[0], torch.is_grad_enabled()))
        return self.fc(self.body(x))


def make(classes: int = 3, m: int = 30, **kw: object) -> tuple[FBRRecipe, ModeNet, torch.Tensor,
                                                                torch.Tensor]:
    torch.manual_seed(0)
    model = ModeNet(classes=classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    xc = torch.randn(m, 6)
    yc = torch.arange(m) % classes
    args: dict[str, object] = {"warmup_epochs": 1, "alpha_switch": 3, "clean_passes": 2,
                               "clean_batch_size": 8}
    args.update(kw)
    recipe = FBRRecipe(model, head=model.fc, clean_inputs=xc, clean_labels=yc, optimizer=opt,
                       num_classes=classes, **args)  # type: ignore[arg-type]
    return recipe, model, xc, yc


def test_clean_passes_every_epoch_including_warmup() -> None:
    recipe, model, _, _ = make(m=30, clean_passes=3, clean_batch_size=8)
    steps = []
    recipe.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    for epoch in range(3):  # epoch 0 is warm-up
        before = len(model.calls)
        recipe.start_epoch(epoch)
        train_calls = [c for c in model.calls[before:] if c[0]]
        # 3 passes x ceil(30 / 8) = 12 train-mode batches of sizes 8, 8, 8, 6 per pass
        assert len(train_calls) == 12
        assert sorted(c[1] for c in train_calls) == sorted([8, 8, 8, 6] * 3)
    assert len(steps) == 36  # one optimizer step per clean batch, in all three epochs


def test_clean_prototypes_from_eval_mode_unaugmented_features() -> None:
    recipe, model, xc, yc = make()
    model.train()
    recipe.start_epoch(0)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        feats = model.body(xc)
    model.train()
    ref = SurrogateReweighter(3, alpha=0.5)
    ref.set_clean(features=feats, labels=yc)
    recipe.epoch = recipe.warmup_epochs  # past warm-up, alpha still 1/(C-1) = 0.5
    recipe.reweighter.set_epoch(recipe.epoch)
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    model.eval()
    with torch.no_grad():
        fx = model.body(x)
    model.train()
    expected = ref.weights(features=fx, labels=y)
    assert torch.equal(recipe.weights(x, y), expected)


@pytest.mark.parametrize("training", [True, False])
def test_batch_features_in_eval_mode_and_mode_restored(training: bool) -> None:
    recipe, model, _, _ = make()
    recipe.start_epoch(1)  # past warm-up
    model.train(training)
    model.calls.clear()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    loss = recipe.loss(x, y)
    assert model.training == training
    # first a no-grad eval forward for the features, then the training forward with grad
    assert model.calls[0] == (False, 10, False)
    assert model.calls[1] == (training, 10, True)
    assert len(model.calls) == 2
    loss.backward()


def test_no_extra_forward_in_warmup() -> None:
    recipe, model, _, _ = make(warmup_epochs=2)
    recipe.start_epoch(0)
    model.train()
    model.calls.clear()
    recipe.loss(torch.randn(10, 6), torch.randint(0, 3, (10,)))
    assert model.calls == [(True, 10, True)]  # the training forward only
    assert torch.equal(recipe.last_weights, torch.full((10,), 0.5))  # type: ignore[arg-type]


def test_train_mode_features_option_uses_one_forward() -> None:
    recipe, model, _, _ = make(eval_features=False)
    recipe.start_epoch(1)
    model.train()
    model.calls.clear()
    recipe.loss(torch.randn(10, 6), torch.randint(0, 3, (10,)))
    assert model.calls == [(True, 10, True)]


def test_warmup_weights_and_alpha_schedule() -> None:
    recipe, _, _, _ = make(warmup_epochs=2, alpha_switch=3)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    alphas = []
    for epoch in range(5):
        recipe.start_epoch(epoch)
        w = recipe.weights(x, y)
        if epoch < 2:
            assert recipe.in_warmup
            assert torch.equal(w, torch.full((9,), 0.5))
        else:
            assert not recipe.in_warmup
            assert set(w.unique().tolist()) <= {0.0} | set(w[w > 0.5].tolist())
        alphas.append(recipe.reweighter.current_alpha())
    assert alphas == [0.5, 0.5, 0.5, 0.0, 0.0]


def test_loss_is_weighted_mean_of_ce() -> None:
    recipe, model, _, _ = make()
    recipe.start_epoch(1)
    model.eval()  # deterministic forward so the two passes agree
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    loss = recipe.loss(x, y)
    w = recipe.last_weights
    assert w is not None
    with torch.no_grad():
        expected = (w * F.cross_entropy(model(x), y, reduction="none")).mean()
    assert torch.allclose(loss.detach(), expected)


def test_dropped_weight_floor() -> None:
    recipe, _, _, _ = make(dropped_weight=0.3)
    recipe.start_epoch(1)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    w = recipe.weights(x, y)
    raw = recipe.last_fbr_weights
    assert raw is not None and bool((raw == 0).any())
    assert torch.equal(w, raw.clamp_min(0.3))


def test_smoothing_running_average_per_sample() -> None:
    recipe, _, _, _ = make(smoothing=0.75)
    recipe.start_epoch(1)
    x, y = torch.randn(6, 6), torch.randint(0, 3, (6,))
    ids = torch.tensor([4, 0, 9, 2, 7, 5])
    w1 = recipe.weights(x, y, sample_ids=ids)
    raw1 = recipe.last_fbr_weights
    assert torch.allclose(w1, 0.75 * 0.5 + 0.25 * raw1)  # type: ignore[operator]
    w2 = recipe.weights(x, y, sample_ids=ids)
    raw2 = recipe.last_fbr_weights
    assert torch.allclose(w2, 0.75 * w1 + 0.25 * raw2)  # type: ignore[operator]
    with pytest.raises(ValueError, match="`sample_ids`"):
        recipe.weights(x, y)


def test_incremental_reweighter_gets_the_sample_ids() -> None:
    rw = SurrogateReweighter(3, alpha=0.5, mode="incremental", eta=0.5)
    recipe, _, _, _ = make(reweighter=rw)
    recipe.start_epoch(1)
    x, y, ids = torch.randn(6, 6), torch.randint(0, 3, (6,)), torch.tensor([3, 1, 4, 0, 5, 2])
    first = recipe.weights(x, y, sample_ids=ids)
    second = recipe.weights(x, y, sample_ids=ids)  # the per-sample store moved on
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match="`sample_ids`"):
        recipe.weights(x, y)


def test_pseudo_label_term() -> None:
    recipe, model, _, _ = make(pseudo_label_weight=0.5, pseudo_label_temperature=0.5)
    recipe.start_epoch(1)
    model.eval()
    x, y = torch.randn(30, 6), torch.randint(0, 3, (30,))
    loss = recipe.loss(x, y)
    with torch.no_grad():
        z = model(x)
    w, raw = recipe.last_weights, recipe.last_fbr_weights
    assert raw is not None and bool((raw == 0).any())
    q = torch.softmax(z / 0.5, 1)
    soft = -(q * torch.log_softmax(z, 1)).sum(1)
    expected = (w * F.cross_entropy(z, y, reduction="none")).mean() \
        + 0.5 * ((raw == 0).float() * soft).mean()
    assert torch.allclose(loss.detach(), expected)


def _run(recipe: FBRRecipe, model: nn.Module, opt: torch.optim.Optimizer, epochs: range,
         x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    out = []
    gen = torch.Generator().manual_seed(123 + epochs.start)
    for epoch in epochs:
        recipe.start_epoch(epoch)
        model.train()
        for idx in torch.randperm(len(y), generator=gen).split(16):
            loss = recipe.loss(x[idx], y[idx], sample_ids=idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(recipe.last_weights.clone())  # type: ignore[union-attr]
    return out


def test_state_dict_resume_is_exact() -> None:
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    recipe, model, xc, yc = make(smoothing=0.5, dropped_weight=0.1)
    opt = recipe.optimizer
    _run(recipe, model, opt, range(0, 2), x, y)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), recipe.state_dict()))
    straight = _run(recipe, model, opt, range(2, 4), x, y)

    model2 = ModeNet()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    recipe2 = FBRRecipe(model2, head=model2.fc, clean_inputs=xc, clean_labels=yc,
                        optimizer=opt2, num_classes=3, warmup_epochs=1, alpha_switch=3,
                        clean_passes=2, clean_batch_size=8, smoothing=0.5, dropped_weight=0.1)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    recipe2.load_state_dict(saved[2])
    resumed = _run(recipe2, model2, opt2, range(2, 4), x, y)
    assert len(straight) == len(resumed)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed, strict=True))
    with pytest.raises(ValueError, match="_version"):
        recipe2.load_state_dict({**saved[2], "_version": 99})
    with pytest.raises(ValueError, match=r"`state_dict\['smoothing'\]`"):
        recipe2.load_state_dict({**saved[2], "smoothing": 0.9})


def test_bad_arguments() -> None:
    model = ModeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xc, yc = torch.randn(6, 6), torch.arange(6) % 3
    kw = {"head": model.fc, "clean_inputs": xc, "clean_labels": yc, "optimizer": opt,
          "num_classes": 3}
    with pytest.raises(ValueError, match="`warmup_epochs`"):
        FBRRecipe(model, **{**kw, "warmup_epochs": -1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`smoothing`"):
        FBRRecipe(model, **{**kw, "smoothing": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`dropped_weight`"):
        FBRRecipe(model, **{**kw, "dropped_weight": 2.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`clean_labels`"):
        FBRRecipe(model, **{**kw, "clean_labels": yc[:3]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`optimizer`"):
        FBRRecipe(model, **{**kw, "optimizer": "sgd"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`num_classes`"):
        FBRRecipe(model, **{**kw, "reweighter": SurrogateReweighter(4)})  # type: ignore[arg-type]
    assert "FBRRecipe(num_classes=3" in repr(FBRRecipe(model, **kw))  # type: ignore[arg-type]


def test_short_run_learns_and_filters() -> None:
    """Gaussian classes with 40% of the pool labels flipped: the recipe's network classifies
    held-out points well and its kept samples are much cleaner than the pool."""
    torch.manual_seed(0)
    c, d, n = 4, 10, 800
    means = torch.randn(c, d) * 1.2

    def sample(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (k,))
        return means[y] + torch.randn(k, d), y

    x, y_true = sample(n)
    flip = torch.rand(n) < 0.4
    y = torch.where(flip, (y_true + torch.randint(1, c, (n,))) % c, y_true)
    xc, yc = sample(40)
    xt, yt = sample(500)
    model = nn.Sequential(nn.Linear(d, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, c))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recipe = FBRRecipe(model, head=model[3], clean_inputs=xc, clean_labels=yc, optimizer=opt,
                       num_classes=c, warmup_epochs=1, alpha_switch=4, clean_passes=3,
                       clean_batch_size=20)
    kept = torch.zeros(n, dtype=torch.bool)
    for epoch in range(8):
        recipe.start_epoch(epoch)
        model.train()
        for idx in torch.randperm(n).split(50):
            loss = recipe.loss(x[idx], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            kept[idx] = recipe.last_weights > 0  # type: ignore[operator]
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    precision = float((~flip[kept]).float().mean())
    assert acc > 0.85, acc
    assert precision > 0.9 > float((~flip).float().mean()) + 0.2, precision
    assert 0.3 < float(kept.float().mean()) < 0.9
    assert math.isfinite(recipe.last_clean_loss)
