"""SurrogateRecipe: each step of the authors' recipe on hand-checkable cases, the options,
state, and a short run that learns."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustweights import RecipeConfig, SurrogateRecipe, SurrogateReweighter


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


def make(classes: int = 3, m: int = 30, **kw: object
         ) -> tuple[SurrogateRecipe, ModeNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ModeNet(classes=classes)
    xc = torch.randn(m, 6)
    yc = torch.arange(m) % classes
    args: dict[str, object] = {"warmup_epochs": 1, "alpha_switch": 3, "clean_passes": 2,
                               "clean_batch_size": 8, "dropped_weight": 0.0}
    args.update(kw)
    recipe = SurrogateRecipe(classes, config=RecipeConfig.authors(),
                             model=model, head=model.fc, clean_data=(xc, yc),
                             **args)  # type: ignore[arg-type]
    return recipe, model, xc, yc


def sgd_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()


def train_epoch(recipe: SurrogateRecipe, model: nn.Module, opt: torch.optim.Optimizer,
                epoch: int, x: torch.Tensor, y: torch.Tensor, order: torch.Generator,
                batch: int = 16) -> list[torch.Tensor]:
    """The README's loop: the recipe's clean passes, then the weighted pool batches."""
    recipe.start_epoch(epoch)
    recipe.refresh_prototypes()
    model.train()
    for xc, yc in recipe.clean_batches():
        sgd_step(opt, recipe.clean_loss(model(xc), yc))
    out = []
    for idx in torch.randperm(len(y), generator=order).split(batch):
        w = recipe.weights(inputs=x[idx], labels=y[idx], sample_ids=idx)
        sgd_step(opt, recipe.loss(model(x[idx]), y[idx], w))
        out.append(w.clone())
    return out


def test_clean_batches_every_epoch_including_warmup() -> None:
    recipe, model, xc, _ = make(m=30, clean_passes=3, clean_batch_size=8)
    for epoch in range(3):  # epoch 0 is warm-up
        recipe.start_epoch(epoch)
        batches = list(recipe.clean_batches())
        # 3 passes x ceil(30 / 8) = 12 batches of sizes 8, 8, 8, 6 per pass, each pass a
        # permutation of the clean set
        assert sorted(len(b[1]) for b in batches) == sorted([8, 8, 8, 6] * 3)
        for p in range(3):
            xs = torch.cat([b[0] for b in batches[4 * p: 4 * p + 4]])
            assert torch.equal(xs[xs[:, 0].argsort()], xc[xc[:, 0].argsort()])
        assert recipe.clean_steps_per_epoch == 12
    # the recipe's only forwards: after each epoch's passes, the prototypes' refresh (eval mode,
    # no grad, the whole clean set), and no step
    assert model.calls == [(False, 30, False)] * 3


def test_recipe_never_steps_or_backpropagates() -> None:
    recipe, model, _, _ = make()
    before = [p.detach().clone() for p in model.parameters()]
    for epoch in range(3):
        recipe.start_epoch(epoch)
        for _ in recipe.clean_batches():
            pass
        recipe.weights(inputs=torch.randn(10, 6), labels=torch.randint(0, 3, (10,)))
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_clean_prototypes_from_eval_mode_unaugmented_features() -> None:
    recipe, model, xc, yc = make()
    model.train()
    recipe.start_epoch(1)  # past warm-up, alpha still 1/(C-1) = 0.5
    recipe.refresh_prototypes()
    model.eval()
    with torch.no_grad():
        feats = model.body(xc)
    model.train()
    ref = SurrogateReweighter(3, alpha=0.5)
    ref.set_clean(features=feats, labels=yc)
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    model.eval()
    with torch.no_grad():
        fx = model.body(x)
    model.train()
    expected = ref.weights(features=fx, labels=y)
    assert torch.equal(recipe.weights(inputs=x, labels=y), expected)
    assert model.training  # mode restored


def test_peer_exchange_weights_come_from_the_peer_alone() -> None:
    """The two-network exchange (examples/peer_recipe.py): network 0's recipe is built on
    network 1, so its weights are FBR's on network 1's eval-mode features against network 1's
    clean prototypes, computed after both networks' clean passes, whatever network 0 is."""
    torch.manual_seed(0)
    nets = [ModeNet(), ModeNet()]
    xc, yc = torch.randn(30, 6), torch.arange(30) % 3
    recipes = [SurrogateRecipe(3, model=nets[1 - k], head=nets[1 - k].fc, clean_data=(xc, yc),
                               config=RecipeConfig.authors(warmup_epochs=0, alpha_switch=3,
                                                           clean_passes=1, clean_batch_size=8))
               for k in range(2)]
    opts = [torch.optim.SGD(n.parameters(), lr=0.1) for n in nets]
    for k, recipe in enumerate(recipes):  # recipe k's clean passes train network k
        recipe.start_epoch(1)
        for xb, yb in recipe.clean_batches():
            sgd_step(opts[k], recipe.clean_loss(nets[k](xb), yb))
    for recipe in recipes:  # each scores the other network, which has trained since
        recipe.refresh_prototypes()
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    with torch.no_grad():
        for p in nets[0].parameters():  # network 0 cannot matter to its own weights
            p.add_(torch.randn_like(p))
    peer = nets[1]
    peer.eval()
    with torch.no_grad():
        ref = SurrogateReweighter(3, alpha=0.5)  # alpha 1/(C-1) before the switch
        ref.set_clean(features=peer.body(xc), labels=yc)
        expected = ref.weights(features=peer.body(x), labels=y)
    peer.train()
    assert torch.equal(recipes[0].weights(inputs=x, labels=y), expected)
    assert peer.training and nets[0].training  # modes restored


def test_prototypes_refreshed_at_the_end_of_the_clean_passes() -> None:
    recipe, model, _, _ = make(clean_passes=1)
    recipe.start_epoch(1)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    with pytest.raises(ValueError, match="prototypes"):
        recipe.weights(inputs=x, labels=y)  # never refreshed: an error, not a hidden pass
    model.calls.clear()
    batches = recipe.clean_batches()
    next(batches)
    assert model.calls == []  # not before the passes end
    assert len(list(batches)) == 3  # ceil(30 / 8) = 4 batches in the pass
    assert [c[1] for c in model.calls] == [30]  # then one forward of the clean set
    model.calls.clear()
    recipe.weights(inputs=x, labels=y)
    recipe.weights(inputs=x, labels=y)
    assert [c[1] for c in model.calls] == [5, 5]  # weights() itself never refreshes
    recipe.start_epoch(2)  # a new epoch: out of date until the passes (or an explicit refresh)
    with pytest.raises(ValueError, match="prototypes"):
        recipe.weights(inputs=x, labels=y)
    model.calls.clear()
    recipe.refresh_prototypes()
    assert [c[1] for c in model.calls] == [30]
    no_passes, model2, _, _ = make(clean_passes=0)  # no pass: the empty generator refreshes
    for epoch in (1, 2):
        no_passes.start_epoch(epoch)
        model2.calls.clear()
        assert list(no_passes.clean_batches()) == []
        no_passes.weights(inputs=x, labels=y)
        assert [c[1] for c in model2.calls] == [30, 5]


@pytest.mark.parametrize("training", [True, False])
def test_batch_features_in_eval_mode_and_mode_restored(training: bool) -> None:
    recipe, model, _, _ = make()
    recipe.start_epoch(1)  # past warm-up
    recipe.refresh_prototypes()
    model.train(training)
    model.body[1].eval()  # a submodule the caller froze in eval mode stays so
    model.calls.clear()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    w = recipe.weights(inputs=x, labels=y)
    loss = recipe.loss(model(x), y, w)
    assert model.training == training and not model.body[1].training
    # first a no-grad eval forward for the features, then the caller's forward with grad
    assert model.calls == [(False, 10, False), (training, 10, True)]
    loss.backward()


def test_no_forward_in_warmup() -> None:
    recipe, model, _, _ = make(warmup_epochs=2)
    recipe.start_epoch(0)
    model.calls.clear()
    w = recipe.weights(inputs=torch.randn(10, 6), labels=torch.randint(0, 3, (10,)))
    assert model.calls == []
    assert torch.equal(w, torch.full((10,), 0.5))


def test_train_mode_features_option_uses_the_callers_forward() -> None:
    recipe, model, _, _ = make(eval_features=False)
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    model.train()
    model.calls.clear()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    logits = model(x)
    w = recipe.weights(inputs=x, labels=y)  # from the hook's record of the forward above
    assert model.calls == [(True, 10, True)]
    with torch.no_grad():
        feats = model.body(x)
    assert torch.equal(w, recipe.weights(labels=y, features=feats))
    recipe.loss(logits, y, w).backward()


def test_train_mode_features_after_the_clean_passes() -> None:
    # the clean passes end with a refresh (a forward of the clean set through the hooked
    # model); the batch's forward comes after it, so its features are the batch's
    recipe, model, _, _ = make(eval_features=False)
    twin, twin_model, _, _ = make(eval_features=False)
    twin_model.load_state_dict(model.state_dict())
    for r in (recipe, twin):
        r.start_epoch(1)
        list(r.clean_batches())
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    model.train()
    model(x)
    w = recipe.weights(inputs=x, labels=y)
    twin_model.train()
    with torch.no_grad():
        feats = twin_model.body(x)  # (the same BatchNorm update as model(x) above)
    assert torch.equal(w, twin.weights(labels=y, features=feats))


def test_train_mode_features_must_be_of_a_new_forward() -> None:
    # with eval_features=False, weights() before the batch's forward would silently score the
    # previous batch (or the last clean batch, of the same size): an error instead
    recipe, model, _, _ = make(eval_features=False, clean_batch_size=10)
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    model.train()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    model(x)
    recipe.weights(inputs=x, labels=y)
    with pytest.raises(ValueError, match="already used"):
        recipe.weights(inputs=x, labels=y)  # no forward since
    for xc, yc in recipe.clean_batches():
        recipe.clean_loss(model(xc), yc)
    with pytest.raises(ValueError, match="already used"):
        recipe.weights(inputs=x, labels=y)  # the hook holds the last clean batch (10 rows too)
    model(x)
    recipe.weights(inputs=x, labels=y)
    recipe.weights(labels=y, features=torch.randn(10, 16))  # explicit features: no check


def test_warmup_weights_and_alpha_schedule() -> None:
    recipe, _, _, _ = make(warmup_epochs=2, alpha_switch=3)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    alphas = []
    for epoch in range(5):
        recipe.start_epoch(epoch)
        recipe.refresh_prototypes()
        w = recipe.weights(inputs=x, labels=y)
        if epoch < 2:
            assert recipe.in_warmup
            assert torch.equal(w, torch.full((9,), 0.5))
        else:
            assert not recipe.in_warmup
            assert set(w.unique().tolist()) <= {0.0} | set(w[w > 0.5].tolist())
        alphas.append(recipe.reweighter.current_alpha())
    assert alphas == [0.5, 0.5, 0.5, 0.0, 0.0]


def test_warmup_weight_trains_the_warmup_plainly() -> None:
    recipe, model, _, _ = make(warmup_epochs=2, warmup_weight=1.0, dropped_weight=0.5)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    for epoch in range(3):
        recipe.start_epoch(epoch)
        recipe.refresh_prototypes()
        w = recipe.weights(inputs=x, labels=y)
        t = recipe.targets(y, w)
        if epoch < 2:  # every sample at the warm-up weight, all kept, no eval forward's logits
            assert torch.equal(w, torch.ones(9)) and bool(t.kept.all())
            assert recipe.eval_logits is None
            logits = model(x)
            assert torch.equal(recipe.loss(logits, y, w), F.cross_entropy(logits, y))
        else:  # the filter's weights: kept at w_max, dropped at the floor
            assert set(w.unique().tolist()) <= {0.5, 1.0} and torch.equal(t.kept, w == 1.0)
    whole, _, _, _ = make(warmup_epochs=1, warmup_weight=1, eval_features=False)  # an int
    whole.start_epoch(0)
    w = whole.weights(labels=y, features=torch.randn(9, 16))
    assert w.dtype == torch.float32 and torch.equal(w, torch.ones(9))
    half, _, _, _ = make(warmup_epochs=1)  # None: w0, the authors'
    half.start_epoch(0)
    assert torch.equal(half.weights(inputs=x, labels=y), torch.full((9,), 0.5))


def test_loss_is_weighted_mean_of_any_per_sample_loss() -> None:
    recipe, model, _, _ = make()
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    w = recipe.weights(inputs=x, labels=y)
    logits = model(x)
    expected = (w * F.cross_entropy(logits, y, reduction="none")).mean()
    assert torch.equal(recipe.loss(logits, y, w), expected)
    assert torch.equal(recipe.clean_loss(logits, y), F.cross_entropy(logits, y))

    def smoothed(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, t, reduction="none", label_smoothing=0.1)

    recipe2, _, _, _ = make(loss_fn=smoothed)
    assert torch.equal(recipe2.loss(logits, y, w), (w * smoothed(logits, y)).mean())
    assert torch.equal(recipe2.clean_loss(logits, y), smoothed(logits, y).mean())
    recipe3, _, _, _ = make(loss_fn=F.cross_entropy)  # reduces to a scalar: refused
    with pytest.raises(ValueError, match="reduction='none'"):
        recipe3.loss(logits, y, w)


def test_dropped_weight_floor() -> None:
    recipe, _, _, _ = make(dropped_weight=0.3)
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    w = recipe.weights(inputs=x, labels=y)
    raw = recipe.last_fbr_weights
    assert raw is not None and bool((raw == 0).any())
    assert torch.equal(w, raw.clamp_min(0.3))


def test_smoothing_running_average_per_sample() -> None:
    recipe, _, _, _ = make(smoothing=0.75)
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    x, y = torch.randn(6, 6), torch.randint(0, 3, (6,))
    ids = torch.tensor([4, 0, 9, 2, 7, 5])
    w1 = recipe.weights(inputs=x, labels=y, sample_ids=ids)
    raw1 = recipe.last_fbr_weights
    assert torch.allclose(w1, 0.75 * 0.5 + 0.25 * raw1)  # type: ignore[operator]
    w2 = recipe.weights(inputs=x, labels=y, sample_ids=ids)
    raw2 = recipe.last_fbr_weights
    assert torch.allclose(w2, 0.75 * w1 + 0.25 * raw2)  # type: ignore[operator]
    with pytest.raises(ValueError, match="`sample_ids`"):
        recipe.weights(inputs=x, labels=y)


def test_incremental_reweighter_gets_the_sample_ids() -> None:
    rw = SurrogateReweighter(3, alpha=0.5, mode="incremental", eta=0.5)
    recipe, _, _, _ = make(reweighter=rw)
    recipe.start_epoch(1)
    recipe.refresh_prototypes()
    x, y, ids = torch.randn(6, 6), torch.randint(0, 3, (6,)), torch.tensor([3, 1, 4, 0, 5, 2])
    first = recipe.weights(inputs=x, labels=y, sample_ids=ids)
    second = recipe.weights(inputs=x, labels=y, sample_ids=ids)  # the per-sample store moved on
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match="`sample_ids`"):
        recipe.weights(inputs=x, labels=y)


def test_drop_rate_keeps_the_highest_directions_with_the_ramp() -> None:
    recipe, _, _, _ = make(drop_rate=0.5, drop_ramp_epochs=3, warmup_epochs=0, alpha_switch=0)
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    for epoch, dropped in [(0, 0), (1, 5), (2, 10), (5, 10)]:  # 0.5 * linspace over 3 epochs
        recipe.start_epoch(epoch)
        recipe.refresh_prototypes()
        w = recipe.weights(inputs=x, labels=y)
        d = recipe.reweighter.last_scores
        assert d is not None
        assert int((w == 0).sum()) == dropped and bool(((w == 0) | (w == 1)).all())
        if dropped:  # every kept direction is at least every dropped one
            assert float(d[w == 1].min()) >= float(d[w == 0].max())
    recipe_cb, _, _, _ = make(drop_rate=0.5, drop_ramp_epochs=1, warmup_epochs=0,
                              class_balanced=True)
    recipe_cb.start_epoch(0)
    recipe_cb.refresh_prototypes()
    w = recipe_cb.weights(inputs=x, labels=y)
    for c in range(3):  # floor(half) of each label class kept
        assert int((w[y == c] == 1).sum()) == int(0.5 * int((y == c).sum()))
    recipe_floor, _, _, _ = make(drop_rate=0.5, drop_ramp_epochs=1, warmup_epochs=0,
                                 dropped_weight=0.2)
    recipe_floor.start_epoch(0)
    recipe_floor.refresh_prototypes()
    assert torch.equal(recipe_floor.weights(inputs=x, labels=y).unique(), torch.tensor([0.2, 1.0]))


def test_dataloader_clean_set_and_prototype_data() -> None:
    """A DataLoader clean set (its own shuffling and transform) is iterated once per pass; the
    prototypes come from ``prototype_data`` (un-augmented) in eval mode."""
    torch.manual_seed(0)
    model = ModeNet()
    xc, yc = torch.randn(20, 6), torch.arange(20) % 3

    class Noisy(torch.utils.data.Dataset):  # a "transform": inputs jittered on every access
        def __len__(self) -> int:
            return 20

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return xc[i] + 0.1 * torch.randn(6), yc[i]

    loader = torch.utils.data.DataLoader(Noisy(), batch_size=8, shuffle=True)
    protos = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xc, yc), batch_size=7)
    recipe = SurrogateRecipe(3, config=RecipeConfig.authors(),
                             model=model, head=model.fc, clean_data=loader,
                             prototype_data=protos, warmup_epochs=0, alpha_switch=5,
                             clean_passes=2)
    assert recipe.clean_steps_per_epoch == 6
    recipe.start_epoch(0)
    batches = list(recipe.clean_batches())
    assert [len(b[1]) for b in batches] == [8, 8, 4] * 2
    assert all(b[1].dtype == torch.long for b in batches)
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    pair = SurrogateRecipe(3, config=RecipeConfig.authors(),
                           model=model, head=model.fc, clean_data=(xc, yc), warmup_epochs=0,
                           alpha_switch=5)
    pair.refresh_prototypes()
    assert torch.equal(recipe.weights(inputs=x, labels=y),
                       pair.weights(inputs=x, labels=y))  # same prototypes
    with pytest.raises(TypeError, match="`clean_data`"):
        SurrogateRecipe(3, config=RecipeConfig.authors(),
                        model=model, head=model.fc, clean_data=iter(batches))  # one-shot


def test_default_generator_follows_torch_seed() -> None:
    def order(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        recipe, _, _, _ = make()
        torch.manual_seed(seed)  # make() reseeds; the recipe's own generator follows the seed
        recipe = SurrogateRecipe(3, config=RecipeConfig.authors(),
                                 model=recipe.model, head=recipe.model.fc,  # type: ignore
                                 clean_data=recipe.clean_data)
        return [b[1] for b in recipe.clean_batches()]

    assert all(torch.equal(a, b) for a, b in zip(order(0), order(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(order(0), order(1), strict=True))


def test_amp_grad_scaler_and_clipping() -> None:
    """The caller's AMP step (CPU autocast in bfloat16, GradScaler) and gradient clipping around
    the recipe: finite weights, losses and parameters, and the network learns."""
    x, _, y, _, xc, yc, xt, yt = _gaussians()
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    recipe = SurrogateRecipe(4, config=RecipeConfig.authors(),
                             model=model, head=model[3], clean_data=(xc, yc),
                             warmup_epochs=1, alpha_switch=4, clean_passes=2,
                             clean_batch_size=20)

    def amp_step(loss: torch.Tensor) -> None:
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        scaler.step(opt)
        scaler.update()

    for epoch in range(6):
        recipe.start_epoch(epoch)
        recipe.refresh_prototypes()
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for xb, yb in recipe.clean_batches():
                amp_step(recipe.clean_loss(model(xb), yb))
            for idx in torch.randperm(len(y)).split(50):
                w = recipe.weights(inputs=x[idx], labels=y[idx])
                assert w.dtype == torch.bfloat16 or w.dtype == torch.float32
                assert bool(torch.isfinite(w).all())
                loss = recipe.loss(model(x[idx]), y[idx], w)
                assert loss.dtype == torch.float32  # cross-entropy autocasts to float32
                amp_step(loss)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert float((model(xt).argmax(1) == yt).float().mean()) > 0.8


def test_epoch_batches_stream() -> None:
    recipe, _, _, _ = make(m=30, clean_passes=2, clean_batch_size=8)
    pool = [("a",), ("b",), ("c",)]
    recipe.start_epoch(0)
    recipe.refresh_prototypes()
    stream = list(recipe.epoch_batches(pool))
    assert [k for k, _ in stream] == ["clean"] * 8 + ["pool"] * 3
    assert [b for k, b in stream if k == "pool"] == pool


def test_authors_configuration() -> None:
    model = ModeNet()
    kw = {"model": model, "head": model.fc, "clean_data": (torch.randn(6, 6),
                                                           torch.arange(6) % 3)}
    authors = SurrogateRecipe(3, config=RecipeConfig.authors(), **kw).config  # type: ignore
    assert (authors.warmup_epochs, authors.alpha_switch, authors.clean_passes,
            authors.eval_features, authors.dropped_weight, authors.drop_rate) == (
        10, 40, 30, True, 0.0, None)
    assert RecipeConfig.authors(warmup_epochs=5).warmup_epochs == 5
    default = SurrogateRecipe(3, **kw).config  # type: ignore[arg-type]
    # The recommended recipe (docs/results/recipe_selection): the authors' rule from epoch 0,
    # no clean passes (the trusted images train in the pool's batches), eval-mode features,
    # pseudo-labels or weight 0.5 for dropped samples, 0 where the network doubts their label
    # before the first learning-rate drop.
    assert default == RecipeConfig() == RecipeConfig.authors(
        warmup_epochs=0, alpha_switch=0, clean_passes=0, dropped_weight=0.5,
        pseudo_labels=True, dropped_doubt=0.7)
    changed = SurrogateRecipe(3, config=RecipeConfig.authors(), warmup_epochs=5,
                              **kw).config  # type: ignore[arg-type]
    assert changed == RecipeConfig.authors(warmup_epochs=5)
    with pytest.raises(TypeError, match="RecipeConfig"):
        SurrogateRecipe(3, warmup=5, **kw)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`config`"):
        SurrogateRecipe(3, config={"warmup_epochs": 5}, **kw)  # type: ignore[arg-type]


def test_state_dict_resume_is_exact() -> None:
    """Resume from a checkpoint taken mid-epoch, after the clean passes and some pool steps."""
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    recipe, model, xc, yc = make(smoothing=0.5, dropped_weight=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    order = torch.Generator().manual_seed(123)
    for epoch in range(2):
        train_epoch(recipe, model, opt, epoch, x, y, order)
    recipe.start_epoch(2)
    for xb, yb in recipe.clean_batches():
        sgd_step(opt, recipe.clean_loss(model(xb), yb))
    w = recipe.weights(inputs=x[:16], labels=y[:16], sample_ids=torch.arange(16))
    sgd_step(opt, recipe.loss(model(x[:16]), y[:16], w))
    saved = copy.deepcopy((model.state_dict(), opt.state_dict(), recipe.state_dict(),
                           order.get_state()))

    def rest(r: SurrogateRecipe, m: nn.Module, o: torch.optim.Optimizer,
             g: torch.Generator) -> list[torch.Tensor]:
        out = [r.weights(inputs=x[16:], labels=y[16:], sample_ids=torch.arange(16, 64))]
        return out + train_epoch(r, m, o, 3, x, y, g)

    straight = rest(recipe, model, opt, order)
    model2 = ModeNet()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05)
    recipe2 = SurrogateRecipe(3, config=RecipeConfig.authors(),
                              model=model2, head=model2.fc, clean_data=(xc, yc),
                              warmup_epochs=1, alpha_switch=3, clean_passes=2,
                              clean_batch_size=8, smoothing=0.5, dropped_weight=0.1)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    recipe2.load_state_dict(saved[2])
    order2 = torch.Generator()
    order2.set_state(saved[3])
    resumed = rest(recipe2, model2, opt2, order2)
    assert len(straight) == len(resumed)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed, strict=True))
    with pytest.raises(ValueError, match="_version"):
        recipe2.load_state_dict({**saved[2], "_version": 99})
    with pytest.raises(ValueError, match=r"`state_dict\['config'\]`.*smoothing"):
        recipe2.load_state_dict({**saved[2], "config": {**saved[2]["config"], "smoothing": 0.9}})


def test_bad_arguments() -> None:
    model = ModeNet()
    xc, yc = torch.randn(6, 6), torch.arange(6) % 3
    kw = {"model": model, "head": model.fc, "clean_data": (xc, yc)}
    with pytest.raises(ValueError, match="`warmup_epochs`"):
        SurrogateRecipe(3, **{**kw, "warmup_epochs": -1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`smoothing`"):
        SurrogateRecipe(3, **{**kw, "smoothing": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`dropped_weight`"):
        SurrogateRecipe(3, **{**kw, "dropped_weight": 2.0})  # type: ignore[arg-type]
    for bad in (-0.5, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="`warmup_weight`"):
            SurrogateRecipe(3, **{**kw, "warmup_weight": bad})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`clean_data`"):
        SurrogateRecipe(3, **{**kw, "clean_data": (xc, yc[:3])})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`clean_data`"):
        SurrogateRecipe(3, **{**kw, "clean_data": (xc[:0], yc[:0])})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`model`"):
        SurrogateRecipe(3, **{**kw, "model": "net"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`clean_data`"):
        SurrogateRecipe(3, **{**kw, "clean_data": 5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`num_classes`"):
        SurrogateRecipe(3, **{**kw, "reweighter": SurrogateReweighter(4)})  # type: ignore
    with pytest.raises(TypeError, match="pseudo_label_temperature"):  # removed option
        SurrogateRecipe(3, **{**kw, "pseudo_label_temperature": 0})  # type: ignore[arg-type]
    recipe = SurrogateRecipe(3, config=RecipeConfig.authors(), **kw)  # type: ignore[arg-type]
    recipe.start_epoch(20)
    recipe.refresh_prototypes()
    with pytest.raises(ValueError, match="`inputs`"):
        recipe.weights(labels=yc)
    assert "SurrogateRecipe(num_classes=3" in repr(recipe)


@pytest.mark.parametrize("warmup", [True, False], ids=["warm-up", "after"])
@pytest.mark.parametrize("eval_features", [True, False], ids=["eval", "forward"])
def test_bad_batch_inputs_named_in_every_phase(warmup: bool, eval_features: bool) -> None:
    recipe, model, _, _ = make(warmup_epochs=5 if warmup else 0, eval_features=eval_features)
    recipe.start_epoch(0)
    list(recipe.clean_batches())
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])

    def call(**kw: object) -> torch.Tensor:
        model(x)  # a fresh forward each time, so only the bad input can fail
        return recipe.weights(**{"inputs": x, "labels": y, **kw})  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="`labels` to be integer"):
        call(labels=y.float())
    with pytest.raises(ValueError, match="`labels` to be 1-D"):
        call(labels=y.unsqueeze(1))
    with pytest.raises(ValueError, match="`labels` to lie in"):
        call(labels=torch.tensor([0, 1, 3, 0]))
    with pytest.raises(TypeError, match=r"`labels` to be a torch\.Tensor"):
        call(labels=[0, 1, 2, 0])
    with pytest.raises(ValueError, match="`sample_ids`"):
        call(sample_ids=torch.tensor([0, 1, -2, 3]))
    with pytest.raises(ValueError, match="`inputs`"):
        call(inputs=x[:3])
    with pytest.raises(TypeError, match="keyword arguments only"):
        recipe.weights(x, y)  # type: ignore[misc]
    if not eval_features:  # no forward since the last call: the features are not this batch's
        call()
        with pytest.raises(ValueError, match="already used"):
            recipe.weights(inputs=x, labels=y)
        nan = torch.randn(4, 16)
        nan[2, 3] = float("nan")  # found by the fuzz: accepted in the warm-up
        with pytest.raises(ValueError, match="`features` to be finite"):
            call(features=nan)
        with pytest.raises(TypeError, match=r"`features` to be a torch\.Tensor"):
            call(features=nan.tolist())
    assert call().shape == (4,)


def test_weights_before_any_forward_names_the_features() -> None:
    """Found by the fuzz: a RuntimeError from the feature hook when no forward had run."""
    recipe, _, _, _ = make(warmup_epochs=1, eval_features=False)
    recipe.start_epoch(0)
    with pytest.raises(ValueError, match=r"features of this batch \(2 rows\), but got no "
                                         r"forward.*`features=`"):
        recipe.weights(inputs=torch.randn(2, 6), labels=torch.tensor([0, 1]))


def test_losses_check_their_labels_and_weights() -> None:
    """Found by the fuzz: float labels were truncated, (B, 1) or out-of-range labels crashed
    inside the loss, and an empty batch took weights of any shape."""
    recipe, model, _, _ = make()
    z, y = model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])
    w = torch.ones(4)
    for loss in (lambda labels: recipe.loss(z, labels, w),
                 lambda labels: recipe.clean_loss(z, labels)):
        with pytest.raises(TypeError, match="`labels` to be integer"):
            loss(y.float() + 0.5)
        with pytest.raises(ValueError, match="`labels` to be 1-D"):
            loss(y[:, None])
        with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 2\]"):
            loss(torch.tensor([0, 1, 3, 0]))
        with pytest.raises(TypeError, match=r"`labels` to be a torch\.Tensor"):
            loss([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"`weights` of shape \(0,\), but got"):
        recipe.loss(z[:0], y[:0], torch.ones(1))
    with pytest.raises(ValueError, match=r"`weights` of shape \(4,\), but got"):
        recipe.loss(z, y, torch.ones(5))


def test_directions_under_autocast() -> None:
    """Found by the fuzz: float32 features under bfloat16 autocast overflowed on the way out
    (the float32 range does not fit bfloat16)."""
    recipe, _, _, _ = make(warmup_epochs=0)
    recipe.start_epoch(0)
    list(recipe.clean_batches())
    y = torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = recipe.directions(labels=y, features=torch.randn(4, 16))
    assert d.shape == (4,) and bool(torch.isfinite(d).all())


def test_empty_batch_losses_are_zero() -> None:
    recipe, model, _, _ = make()
    z = model(torch.randn(0, 6))
    y = torch.zeros(0, dtype=torch.long)
    for loss in (recipe.loss(z, y, torch.zeros(0)), recipe.clean_loss(z, y)):
        assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_rejected_load_leaves_the_recipe_untouched() -> None:
    recipe, _, _, _ = make()
    recipe.start_epoch(2)
    list(recipe.clean_batches())
    before = recipe.state_dict()
    bad = recipe.state_dict()
    bad["epoch"] = 7
    bad["health"] = {"_version": 1, "nonsense": 1}  # rejected after `epoch` was read
    with pytest.raises(ValueError):
        recipe.load_state_dict(bad)
    after = recipe.state_dict()
    assert after["epoch"] == before["epoch"] == 2
    assert torch.equal(after["generator"], before["generator"])
    assert str(after["reweighter"]) == str(before["reweighter"])
    bad = recipe.state_dict()
    bad["thresholds"] = torch.zeros(5)
    with pytest.raises(ValueError, match="thresholds"):
        recipe.load_state_dict(bad)


def test_context_manager_removes_the_hook() -> None:
    model = ModeNet()
    xc, yc = torch.randn(6, 6), torch.arange(6) % 3
    with SurrogateRecipe(3, model=model, head=model.fc, clean_data=(xc, yc)) as recipe:
        model(xc)
        assert recipe._capture.count == 1
    model(xc)
    assert recipe._capture.count == 1  # the hook is gone


def _gaussians() -> tuple[torch.Tensor, ...]:
    """Gaussian classes (4 classes, 10 dims) with 40% of the pool labels flipped."""
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
    return x, y_true, y, flip, xc, yc, xt, yt


@pytest.mark.parametrize("authors", [True, False], ids=["authors", "default"])
def test_short_run_learns_and_filters(authors: bool) -> None:
    """The network of the README's loop classifies held-out points well and its kept samples
    are much cleaner than the pool: the authors' configuration (weights before the training
    forward, their order) and the default, recommended one (targets and mixup)."""
    from robustweights.recipe import mixup, soft_cross_entropy

    x, _, y, flip, xc, yc, xt, yt = _gaussians()
    n, c = len(y), 4
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, c))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = {"warmup_epochs": 1, "alpha_switch": 4} if authors else {}
    recipe = SurrogateRecipe(c, config=RecipeConfig.authors() if authors else RecipeConfig(),
                             model=model, head=model[3], clean_data=(xc, yc), clean_passes=3,
                             clean_batch_size=20, **schedule)  # type: ignore[arg-type]
    kept = torch.zeros(n, dtype=torch.bool)
    mix = torch.Generator().manual_seed(0)
    for epoch in range(8):
        recipe.start_epoch(epoch)
        model.train()
        for xb, yb in recipe.clean_batches():
            sgd_step(opt, recipe.clean_loss(model(xb), yb))
        for idx in torch.randperm(n).split(50):
            w = recipe.weights(inputs=x[idx], labels=y[idx])
            if authors:
                sgd_step(opt, recipe.loss(model(x[idx]), y[idx], w))
                kept[idx] = w > 0
            else:
                t = recipe.targets(y[idx], w)
                xm, q, wm = mixup(x[idx], t.labels, t.weights, num_classes=c, generator=mix)
                sgd_step(opt, soft_cross_entropy(model(xm), q, wm))
                kept[idx] = t.kept
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    precision = float((~flip[kept]).float().mean())
    assert acc > 0.85, acc
    assert precision > 0.9 > float((~flip).float().mean()) + 0.2, precision
    assert 0.3 < float(kept.float().mean()) < 0.9


def test_targets_after_a_refused_weights_call() -> None:
    """weights() that refuses a batch after its checks leaves no batch for targets()."""
    recipe, model, _, _ = make(warmup_epochs=0, eval_features=False)
    recipe.start_epoch(0)
    list(recipe.clean_batches())
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    model(x)
    w = recipe.weights(inputs=x, labels=y)
    nan = torch.randn(4, 16)
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="`features` to be finite"):
        recipe.weights(inputs=x, labels=y, features=nan)
    with pytest.raises(ValueError, match=r"`weights\(\)` to be called on this batch"):
        recipe.targets(y, w)


@pytest.mark.parametrize("warmup", [True, False], ids=["warm-up", "after"])
def test_logits_checked_in_weights_and_targets(warmup: bool) -> None:
    """Found by the fuzz: logits of another shape crashed the health signal (or were silently
    ignored), a list of weights crashed targets()."""
    recipe, model, _, _ = make(warmup_epochs=5 if warmup else 0, eval_features=False,
                               pseudo_labels=True)
    recipe.start_epoch(0)
    list(recipe.clean_batches())
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    for bad in (torch.randn(5, 3), torch.randn(4, 4), torch.randn(4)):
        z = model(x)
        with pytest.raises(ValueError, match=r"`logits` to have shape \(4, 3\), but got"):
            recipe.weights(inputs=x, labels=y, logits=bad)
    with pytest.raises(TypeError, match=r"`logits` to be a torch\.Tensor, but got ndarray"):
        recipe.weights(inputs=x, labels=y, logits=z.detach().numpy())
    w = recipe.weights(inputs=x, labels=y, logits=z.detach())
    with pytest.raises(ValueError, match=r"`logits` to have shape \(4, 3\)"):
        recipe.targets(y, w, logits=torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"`peer_logits` to have shape \(4, 3\)"):
        recipe.targets(y, w, logits=z.detach(), peer_logits=torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"`weights` of shape \(4,\), but got list"):
        recipe.targets(y, w.tolist(), logits=z.detach())  # type: ignore[arg-type]
    assert recipe.targets(y, w, logits=z.detach()).labels.shape == (4,)
