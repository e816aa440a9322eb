"""Each method's selection / weighting rule on a tiny case whose answer is checked by hand."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.methods import Context, TrainConfig  # noqa: E402
from benchmarks.cifar_n.methods.ce import CE  # noqa: E402
from benchmarks.cifar_n.methods.clean_only import CleanOnly  # noqa: E402
from benchmarks.cifar_n.methods.coteaching import (  # noqa: E402
    coteaching_losses,
    forget_rate,
    small_loss_indices,
)
from benchmarks.cifar_n.methods.coteaching_plus import coteaching_plus_losses, disagreement  # noqa: E402
from benchmarks.cifar_n.methods.fbr import FBR, FBRPlus  # noqa: E402
from benchmarks.cifar_n.methods.fine import (  # noqa: E402
    alignment_scores,
    fine_select,
    gmm_clean_mask,
    principal_directions,
)
from benchmarks.cifar_n.methods.l2rw import l2rw_weights_and_losses  # noqa: E402
from benchmarks.cifar_n.methods.mwnet import VNet, mwnet_step  # noqa: E402
from benchmarks.cifar_n.runner import selection_stats  # noqa: E402
from robustweights import ModelMetaReweighter  # noqa: E402


def _tiny_context(n_pool: int = 40, n_clean: int = 20, batch_size: int = 8) -> Context:
    g = torch.Generator().manual_seed(0)
    img = lambda n: torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)  # noqa: E731
    cfg = TrainConfig(width=2, epochs=2, batch_size=batch_size, milestones=(10,),
                      channels_last=False)
    return Context(img(n_pool), torch.arange(n_pool) % 3, img(n_clean), torch.arange(n_clean) % 3,
                   3, cfg, seed=0)


def _logits_for_losses(losses: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (0, z) with label 0 whose CE is exactly the given loss."""
    z = torch.tensor([math.log(math.exp(v) - 1.0) for v in losses])
    logits = torch.stack([torch.zeros_like(z), z], 1)
    return logits, torch.zeros(len(losses), dtype=torch.long)


# ------------------------------------------------------------------------- CE / clean-only
def test_ce_trains_on_pool_and_clean_with_unit_weights() -> None:
    ctx = _tiny_context()
    m = CE()
    m.setup(ctx)
    assert len(m.y) == ctx.n_pool + ctx.n_clean, "CE trains on the noisy pool plus the clean set"
    log = m.train_epoch(0)
    assert log.weights is not None and np.all(log.weights == 1.0)


def test_clean_only_uses_only_clean_indices_for_a_ce_epoch_of_steps() -> None:
    ctx = _tiny_context(n_pool=40, n_clean=20, batch_size=8)
    m = CleanOnly()
    m.setup(ctx)
    batches = m.epoch_batches()
    assert len(batches) == math.ceil(60 / 8), "as many steps as a CE epoch over pool + clean"
    assert all(int(b.max()) < 20 for b in batches), "indices into the clean subset only"
    assert np.all(m.train_epoch(0).weights == 0.0), "no pool sample is used"


# ------------------------------------------------------------------------- Co-teaching
def test_forget_rate_ramp_matches_linspace_then_tau() -> None:
    expect = np.linspace(0, 0.4, 10)
    got = [forget_rate(e, 0.4, num_gradual=10) for e in range(10)]
    np.testing.assert_allclose(got, expect)
    assert forget_rate(10, 0.4, 10) == forget_rate(150, 0.4, 10) == 0.4


def test_small_loss_selection_and_cross_update() -> None:
    # Losses of net 1: sample 2 smallest, then 0; net 2: sample 1 smallest, then 3.
    l1 = [0.5, 2.0, 0.1, 3.0]
    l2 = [1.0, 0.2, 4.0, 0.3]
    assert small_loss_indices(torch.tensor(l1), 0.5).tolist() == [2, 0]
    z1, y = _logits_for_losses(l1)
    z2, _ = _logits_for_losses(l2)
    loss1, loss2, pick = coteaching_losses(z1, z2, y, forget=0.5)
    assert pick.tolist() == [1, 3], "net 1 learns from net 2's small-loss samples"
    assert float(loss1) == pytest.approx((2.0 + 3.0) / 2, rel=1e-5), "net 1's loss on them"
    assert float(loss2) == pytest.approx((1.0 + 4.0) / 2, rel=1e-5), "net 2 on net 1's picks"
    assert small_loss_indices(torch.tensor(l1), 1.0).tolist() == [2, 0, 1, 3], (
        "keeping 0 samples falls back to the whole batch, as the official code does")


def test_coteaching_mixup_mixes_what_the_peer_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import benchmarks.cifar_n.methods.coteaching as cot

    l1, l2 = [0.5, 2.0, 0.1, 3.0], [1.0, 0.2, 4.0, 0.3]  # as above: net 1 picks 2, 0; net 2 1, 3
    table = [_logits_for_losses(l1)[0], _logits_for_losses(l2)[0]]

    class Lookup(nn.Module):  # the given logits of sample i (inputs are sample indices)
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return table[self.k][x[:, 0].long()]

    mixed: list[list[int]] = []

    def no_mix(x, y, w, *, num_classes, alpha, generator):  # records who is mixed
        mixed.append(x[:, 0].long().tolist())
        return x, torch.nn.functional.one_hot(y, num_classes).float(), w

    monkeypatch.setattr(cot, "mixup", no_mix)
    m = cot.CoTeachingMixup(forget_rate=0.5, num_gradual=1)
    m.ctx = SimpleNamespace(num_classes=2, generator=None)  # type: ignore[assignment]
    m.nets = [Lookup(0), Lookup(1)]
    x, y = torch.arange(4.0).unsqueeze(1), torch.zeros(4, dtype=torch.long)
    loss1, loss2, pick = m._mixup_losses(5, x, y, 1.0)
    assert mixed == [[1, 3], [2, 0]], "net 1 on net 2's small-loss samples, net 2 on net 1's"
    assert pick.tolist() == [1, 3]
    assert float(loss1) == pytest.approx((2.0 + 3.0) / 2, rel=1e-5)
    assert float(loss2) == pytest.approx((1.0 + 4.0) / 2, rel=1e-5)


def test_coteaching_plus_restricts_to_disagreement() -> None:
    # Predictions: net1 argmax = [0, 1, 0, 1], net2 = [0, 0, 1, 1] -> disagree on 1 and 2.
    z1 = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.0, 1.0]])
    y = torch.zeros(4, dtype=torch.long)
    assert disagreement(z1, z2).tolist() == [1, 2]
    loss1, loss2, pick = coteaching_plus_losses(z1, z2, y, forget=0.5)
    # Within {1, 2}: net 2's losses are ln(1+e^-1) (idx 1) < ln(1+e^0.5) (idx 2) -> keeps 1.
    assert pick.tolist() == [1], "net 1 updated on net 2's small-loss disagreement sample"
    assert float(loss1) == pytest.approx(float(F.cross_entropy(z1[1:2], y[1:2])), rel=1e-6)
    # Net 1's losses: idx 1 ln(1+e) > idx 2 ln(1+e^-3) -> net 2 updated on sample 2.
    assert float(loss2) == pytest.approx(float(F.cross_entropy(z2[2:3], y[2:3])), rel=1e-6)


def test_coteaching_plus_without_disagreement_makes_no_update() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    loss1, loss2, pick = coteaching_plus_losses(z, z.detach().clone(), torch.tensor([0, 0]), 0.2)
    assert pick.numel() == 0 and loss1.item() == 0.0 and loss2.item() == 0.0
    loss1.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) == 0.0


# ------------------------------------------------------------------------- FINE
def test_fine_principal_direction_score_and_gmm() -> None:
    # Class 0 lives along e1 (scaled), class 1 along e2; two mislabelled class-0 samples lie
    # along e2 and two along e1 carry label 1.
    feats = np.array([[3.0, 0.0], [2.0, 0.0], [4.0, 0.1], [1.0, 0.0], [0.0, 1.0], [0.1, 2.0],
                      [0.0, 3.0], [0.0, 1.5], [0.0, 2.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    dirs = principal_directions(feats[:4], labels[:4], 2)
    assert abs(dirs[0] @ np.array([1.0, 0.0])) == pytest.approx(1.0, abs=1e-3), "u_0 = +-e1"
    scores = alignment_scores(np.array([[0.6, 0.8]]), np.array([0]), np.array([[1.0, 0.0],
                                                                                [0.0, 1.0]]))
    assert scores[0] == pytest.approx(0.6), "|<u_y, f/||f||>| = 0.6"
    keep = fine_select(feats, labels, 2, previous=None, seed=0)
    assert keep.tolist() == [True] * 4 + [False, False] + [True] * 4 + [False, False], keep


def test_gmm_keeps_the_high_mode() -> None:
    scores = np.r_[np.full(20, 0.95), np.full(10, 0.1)] + np.linspace(0, 0.01, 30)
    keep = gmm_clean_mask(scores, np.zeros(30, dtype=int), 1)
    assert keep.tolist() == [True] * 20 + [False] * 10


# ------------------------------------------------------------------------- L2RW
def test_l2rw_weights_hand_case() -> None:
    # Linear head at zero: softmax = (1/2, 1/2), residual r = softmax - onehot(y).
    # Clean: x=(1,0), y=0 -> s = (-1/2, 1/2). <grad l_i, grad L_c> = (r_i.s)(x_i.x_c) + r_i.s:
    #   A: x=(1,0), y=0: 1/2*1 + 1/2 = 1;  B: x=(1,0), y=1: -1;  C: x=(0,1), y=0: 0 + 1/2.
    # Normalised: w = (1, 0, 1/2) / 1.5 = (2/3, 0, 1/3).
    model = nn.Linear(2, 2)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    rw = ModelMetaReweighter(model, nn.CrossEntropyLoss(reduction="none"), normalization="sum")
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    w, losses = l2rw_weights_and_losses(rw, x, y, torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    torch.testing.assert_close(w, torch.tensor([2 / 3, 0.0, 1 / 3]))
    torch.testing.assert_close(losses, torch.full((3,), float(np.log(2))))  # the step's losses
    assert losses.requires_grad


# ------------------------------------------------------------------------- MW-Net
def test_mwnet_step_raises_the_weight_of_the_clean_like_loss() -> None:
    # W = [[1, 0], [0, 0]]: for x = e1 the logits are (1, 0). Sample A (label 0) has loss
    # ln(1 + e^-1) = 0.313 and agrees with the clean sample (e1, label 0); sample B (label 1)
    # has loss 1.313 and conflicts with it. The meta step must move V up at A's loss relative
    # to B's; the actual step must be SGD on mean(V(l_i) l_i) with the updated V.
    torch.manual_seed(0)
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    vnet = VNet(100)
    opt_m = torch.optim.SGD(model.parameters(), lr=0.5)
    opt_v = torch.optim.Adam(vnet.parameters(), lr=1e-2)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    la, lb = math.log(1 + math.exp(-1)), math.log(1 + math.exp(1))
    probe = torch.tensor([[la], [lb]])
    before = vnet(probe).detach().squeeze(1)
    w_before_model = model.weight.detach().clone()
    w, losses, _ = mwnet_step(model, vnet, opt_m, opt_v, x, y, torch.tensor([[1.0, 0.0]]),
                              torch.tensor([0]), lr=0.5)
    after = vnet(probe).detach().squeeze(1)
    assert (after[0] - after[1]) > (before[0] - before[1]), (before, after)
    torch.testing.assert_close(losses, torch.tensor([la, lb]))
    torch.testing.assert_close(w, after)
    # Manual actual step: grad of mean(w_i * CE_i) w.r.t. W at the old weights.
    ref = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        ref.weight.copy_(w_before_model)
    (w * F.cross_entropy(ref(x), y, reduction="none")).mean().backward()
    assert ref.weight.grad is not None
    torch.testing.assert_close(model.weight.detach(), w_before_model - 0.5 * ref.weight.grad)


# ------------------------------------------------------------------------- FBR
def test_fbr_rule_hand_case_and_alpha_switch() -> None:
    # C = 3 prototypes: clean class 0 at (1, 0), class 1 at (0, 1), class 2 at (-1, -1); the
    # balanced mean is 0, so P = the class means. Training features f = (2, 0):
    #   S = f P^T = (2, 0, -2); second max 0 -> S' = (2, 0, -2).
    #   label 0: d = 2 - a*(0 - 2) = 2 + 2a;  label 1: d = 0 - a*(2 - 2) = 0;
    #   label 2: d = -2 - a*(2 + 0) = -2 - 2a.
    # Before the switch a = 1/(C-1) = 1/2: d = (3, 0, -3); eta = w0/3 = 1/6;
    #   w = clip(0.5 + d/6) = (1, 0.5, 0) -> threshold (<= 0.5 dropped) -> (1, 0, 0).
    # After the switch a = 0: for f = (2, 0), (1, 0), (2, 0) with labels (0, 0, 2):
    #   d = (2, 1, -2); eta = w0/2 = 1/4; w = (1, 0.75, 0), all above the threshold or 0.
    ctx = _tiny_context()
    m = FBR(warmup=1, clean_passes=1, alpha_switch=3)
    m.setup(ctx)
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    rw = m.recipe.reweighter
    rw.set_clean(features=clean, labels=torch.tensor([0, 1, 2]))
    f = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    rw.set_epoch(2)
    assert rw.current_alpha() == pytest.approx(0.5)
    torch.testing.assert_close(rw.weights(features=f, labels=y), torch.tensor([1.0, 0.0, 0.0]))
    rw.set_epoch(3)
    assert rw.current_alpha() == 0.0
    f2 = torch.tensor([[2.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    torch.testing.assert_close(rw.weights(features=f2, labels=torch.tensor([0, 0, 2])),
                               torch.tensor([1.0, 0.75, 0.0]))


def test_fbr_warmup_weights_are_half_then_reweighted() -> None:
    ctx = _tiny_context()
    m = FBR(warmup=1, clean_passes=1, alpha_switch=1)
    m.setup(ctx)
    first = m.train_epoch(0).weights
    assert first is not None and np.all(first == 0.5), "warm-up: every weight w_init"
    second = m.train_epoch(1).weights
    assert second is not None and not np.all(second == 0.5)
    assert set(np.unique(second)) <= {0.0} | set(second[second > 0.5]), "weights are 0 or > 0.5"


def test_fbr_plus_keeps_dropped_samples_at_its_floor() -> None:
    ctx = _tiny_context()
    m = FBRPlus(warmup=1, alpha_switch=1, dropped_weight=0.3)
    m.setup(ctx)
    m.train_epoch(0)
    w = m.train_epoch(1).weights
    assert w is not None and w.min() == pytest.approx(0.3) and (w > 0.5).any()
    assert np.all(np.isclose(w, 0.3) | (w > 0.5)), "dropped at the floor, kept above w0"


def test_fbr_makes_clean_passes_in_warmup_too() -> None:
    ctx = _tiny_context(n_clean=20, batch_size=8)
    m = FBR(warmup=2, clean_passes=2, alpha_switch=3)
    m.setup(ctx)
    steps: list[int] = []
    m.opt.register_step_post_hook(lambda *a: steps.append(1))
    m.train_epoch(0)  # warm-up: 2 passes x 3 clean batches + 5 pool batches
    assert len(steps) == 2 * 3 + 5


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # (no steps here)
def test_fbr_loss_norm_divides_by_the_batch_or_by_the_sum_of_weights(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _tiny_context()
    for norm in ("batch", "weights"):
        m = FBR(warmup=0, clean_passes=0, alpha_switch=0, loss_norm=norm)
        m.setup(ctx)
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        recipe_loss = m.recipe.loss

        def spy(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                recipe_loss=recipe_loss, seen=seen) -> torch.Tensor:
            seen.append((F.cross_entropy(logits, y, reduction="none").detach(), w.detach()))
            return recipe_loss(logits, y, w)

        monkeypatch.setattr(m.recipe, "loss", spy)
        losses: list[float] = []
        monkeypatch.setattr(m, "_step",
                            lambda k, loss, losses=losses: losses.append(float(loss.detach())))
        m.train_epoch(0)
        assert len(losses) == len(seen) == 5
        for loss, (per_sample, w) in zip(losses, seen, strict=True):
            total = float((w * per_sample).sum())
            expected = total / len(w) if norm == "batch" else \
                (total / float(w.sum()) if float(w.sum()) > 0 else 0.0)
            assert loss == pytest.approx(expected, rel=1e-5, abs=1e-7)
        if norm == "weights":  # the case that tells the two apart: a batch with a dropped sample
            assert any(0 < float(w.sum()) < len(w) for _, w in seen)
    with pytest.raises(ValueError, match="loss_norm"):
        FBR(loss_norm="kept").setup(ctx)


# ------------------------------------------------------------------------- scoring
def test_selection_stats_precision_recall() -> None:
    w = np.array([1.0, 0.0, 1.0, np.nan, 0.5])
    clean = np.array([True, True, False, True, True])
    s = selection_stats(w, clean)
    # Visited: 0,1,2,4. Kept: 0,2,4. Clean among visited: 0,1,4.
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["kept_frac_noisy"] == 1.0 and s["kept_frac_clean"] == pytest.approx(2 / 3)
    assert s["weighted_precision"] == pytest.approx(1.5 / 2.5)


def test_selection_stats_use_the_filters_verdict_under_a_floor() -> None:
    # A floor of 0.3 keeps every weight above 0: the filter's verdict says what it kept.
    w = np.array([1.0, 0.3, 1.0, np.nan, 0.3])
    kept = np.array([1.0, 0.0, 1.0, np.nan, 0.0])
    clean = np.array([True, True, False, True, True])
    s = selection_stats(w, clean, kept)
    # Visited: 0,1,2,4. Kept: 0,2. Clean among visited: 0,1,4.
    assert s["precision"] == pytest.approx(1 / 2) and s["recall"] == pytest.approx(1 / 3)
    assert s["kept_frac"] == pytest.approx(2 / 4)
    assert s["weighted_precision"] == pytest.approx(1.6 / 2.6)
    assert selection_stats(w, clean)["recall"] == 1.0  # weights alone: everything kept


def test_report_wraps_the_reproduce_command_for_the_docs_column() -> None:
    import shlex

    from benchmarks.cifar_n.report import wrap_command

    cmd = ("python -m benchmarks.cifar_n --preset memorise --methods fbr_plus --noise worst "
           "--seeds 0 1 2 --set " + " ".join(f"fbr_plus.option{i}=value{i}" for i in range(12)))
    lines = wrap_command(cmd)
    assert len(lines) > 2 and all(len(line) <= 88 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1])
    joined = " ".join(line.removesuffix("\\").strip() for line in lines)
    assert shlex.split(joined) == shlex.split(cmd)


# ------------------------------------------------------------------------- ELR rows
def test_elr_running_targets_cover_what_each_method_trains_on() -> None:
    ctx = _tiny_context()
    ce = CE(mixup=1.0, elr=3.0)
    ce.setup(ctx)
    ce.train_epoch(0)
    assert ce.elr is not None and ce.elr.targets is not None
    assert ce.elr.targets.shape[0] == ctx.n_pool + ctx.n_clean, "pool and clean set, as CE trains"
    assert bool((ce.elr.targets.sum(1) > 0).all()), "every sample visited once"
    fbr = FBRPlus(elr=3.0, mixup=1.0, trusted_in_batches=False, clean_passes=3)  # ELR's runs
    fbr.setup(_tiny_context())
    fbr.train_epoch(0)
    assert fbr.elr is not None and fbr.elr[0].targets is not None
    assert fbr.elr[0].targets.shape[0] == ctx.n_pool, "the pool batches only"


@pytest.mark.parametrize("method", [CE, FBRPlus])
def test_elr_before_its_start_trains_as_without_it(method) -> None:
    # The running targets are mixed beside the labels by the same draw: until the term counts,
    # the run is the run without ELR to the last bit (same losses, same weights).
    def run(**elr: float) -> list[float]:
        torch.manual_seed(0)  # the model's initialisation
        before = {"trusted_in_batches": False, "clean_passes": 3} if method is FBRPlus else {}
        m = method(mixup=1.0, **before, **elr)  # FBR+ as it was when ELR was measured
        m.setup(_tiny_context())
        return [m.train_epoch(e).loss for e in range(2)]

    plain = run()
    assert run(elr=3.0, elr_start=2) == plain
    assert run(elr=3.0, elr_start=1)[1] != plain[1], "from its start the term counts"


# ------------------------------------------------------------------------- GCE rows
def test_soft_gce_is_cross_entropys_gradient_scaled_by_p_to_the_rho() -> None:
    from benchmarks.cifar_n.methods.base import soft_gce
    z = torch.tensor([[2.0, 0.0, -1.0], [0.3, 0.1, 0.5]], requires_grad=True)
    y = torch.tensor([0, 2])
    w = torch.tensor([1.0, 0.5])
    rho = 0.7
    soft_gce(z, F.one_hot(y, 3).float(), w, rho).backward()
    z2 = z.detach().clone().requires_grad_(True)
    p_y = torch.softmax(z2, 1).gather(1, y[:, None]).squeeze(1).detach()
    (w * p_y.pow(rho) * F.cross_entropy(z2, y, reduction="none")).mean().backward()
    assert z.grad is not None and z2.grad is not None
    torch.testing.assert_close(z.grad, z2.grad)
    # rho -> 0 is cross-entropy; hand value at rho = 1: (1 - p_y) w, batch mean
    q = F.one_hot(y, 3).float()
    torch.testing.assert_close(soft_gce(z.detach(), q, w, 1e-6),
                               (w * F.cross_entropy(z.detach(), y, reduction="none")).mean(),
                               rtol=1e-4, atol=1e-5)
    assert math.isclose(float(soft_gce(z.detach(), q, w, 1.0)),
                        float((w * (1 - torch.softmax(z.detach(), 1)[[0, 1], y])).mean()),
                        rel_tol=1e-6)


@pytest.mark.parametrize("method", [CE, FBRPlus])
def test_gce_replaces_the_mixed_batch_loss_and_needs_mixup(method) -> None:
    def run(**kw: float) -> float:
        torch.manual_seed(0)
        m = method(mixup=1.0, **kw)
        m.setup(_tiny_context())
        return m.train_epoch(0).loss

    assert run(gce=0.7) != run()
    with pytest.raises(ValueError, match="`mixup` > 0 with `gce`"):
        method(mixup=0.0, gce=0.7).setup(_tiny_context())
    for bad in (-0.1, 1.5, float("nan"), True, "0.7"):
        with pytest.raises(ValueError, match="`gce`"):
            method(mixup=1.0, gce=bad).setup(_tiny_context())


def test_floor_until_drops_the_floor_from_that_epoch() -> None:
    def epoch0(**kw: object) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        torch.manual_seed(0)
        m = FBRPlus(**kw)
        m.setup(_tiny_context())
        log = m.train_epoch(0)
        assert log.kept is not None and log.pseudo_labels is not None
        return log.loss, log.weights, log.kept > 0, log.pseudo_labels >= 0

    loss, w, kept, pseudo = epoch0()
    floored = ~kept & ~pseudo
    assert floored.any() and kept.any()
    np.testing.assert_allclose(w[floored], 0.5)  # the default floor
    loss_off, w_off, kept_off, pseudo_off = epoch0(floor_until=0)
    assert (~kept_off & ~pseudo_off).any()
    assert (w_off[~kept_off & ~pseudo_off] == 0).all() and (w_off[kept_off] > 0).all()
    assert loss_off != loss
    later = epoch0(floor_until=1)  # not yet: the default's epoch exactly
    assert later[0] == loss
    np.testing.assert_array_equal(later[1], w)
    for bad in (-1, 1.5, True, "40"):
        with pytest.raises(ValueError, match="`floor_until`"):
            FBRPlus(floor_until=bad).setup(_tiny_context())


def test_trusted_in_batches_with_every_weight_one_is_ce_mixup() -> None:
    """With the trusted images in the pool's batches and every weight 1 (floor 1, no
    pseudo-labels), the recipe's epoch is CE + mixup's step for step: same batches, same mixing,
    same loss, same parameters (the eval forward that scores the pool changes nothing)."""
    from benchmarks.cifar_n.methods.ce import CEMixup

    def epoch0(m: CE | FBRPlus) -> tuple[float, list[torch.Tensor]]:
        torch.manual_seed(0)
        m.setup(_tiny_context())
        loss = m.train_epoch(0).loss
        return loss, [p.detach().clone() for p in m.eval_model().parameters()]

    ce_loss, ce_params = epoch0(CEMixup())
    fbr = FBRPlus(trusted_in_batches=True, clean_passes=0, dropped_weight=1.0,
                  pseudo_labels=False)
    fbr_loss, fbr_params = epoch0(fbr)
    assert math.isclose(fbr_loss, ce_loss, rel_tol=1e-6)
    for a, b in zip(fbr_params, ce_params, strict=True):
        torch.testing.assert_close(a, b)
    default_loss, _ = epoch0(FBRPlus(trusted_in_batches=True, clean_passes=0))
    assert default_loss != ce_loss  # the floor (0.5) does change the loss
    log = FBRPlus(trusted_in_batches=True, clean_passes=0)
    log.setup(_tiny_context())
    w = log.train_epoch(0).weights
    assert not np.isnan(w).any() and ((w >= 0.5) & (w <= 1.0)).all()  # every pool image scored
    for bad in ({"clean_passes": 3}, {"mixup": 0.0}, {"features": "peer"}, {"elr": 1.0},
                {"trusted_in_batches": "yes"}):
        with pytest.raises(ValueError, match="`trusted_in_batches`"):
            FBRPlus(**{"trusted_in_batches": True, "clean_passes": 0, **bad}).setup(
                _tiny_context())


def _spy_stream(ctx: Context) -> tuple[list[int], list[torch.Tensor]]:
    """Record, on ``ctx``, the length of every epoch stream drawn and every image batch trained
    on (the inputs of ``train_view``)."""
    drawn: list[int] = []
    seen: list[torch.Tensor] = []
    batches, view = ctx.batches, ctx.train_view

    def spy(n: int, batch_size: int | None = None) -> Iterator[torch.Tensor]:
        drawn.append(n)
        return batches(n, batch_size)

    ctx.batches = spy  # type: ignore[method-assign]
    ctx.train_view = lambda x: (seen.append(x), view(x))[1]  # type: ignore[method-assign]
    return drawn, seen


def test_trusted_in_batches_never_trains_on_the_images_held_out_for_calibration() -> None:
    """With ``calibration_holdout`` the trusted stream is the pool plus the trusted images left
    after the hold-out: one epoch draws ``n_pool + n_clean - holdout`` samples, and every
    image trained on is a pool image or one of the recipe's own clean images."""
    ctx = _tiny_context(n_pool=40, n_clean=21)
    m = FBRPlus(thresholds="calibrated", calibration_holdout=6)
    m.setup(ctx)
    assert m.calib is not None and len(m.calib[1]) == 6 and len(m.clean[1]) == 15
    drawn, seen = _spy_stream(ctx)
    w = m.train_epoch(0).weights
    assert drawn == [40 + 15]
    held = {bytes(x.contiguous().numpy()) for x in m.calib[0]}
    trained = {bytes(x.contiguous().numpy()) for b in seen for x in b}
    assert trained and not trained & held
    assert w is not None and not np.isnan(w).any()
    for bad in (2, "6", -3):  # 2 < 3 classes would hold nothing out
        with pytest.raises(ValueError, match="`calibration_holdout`"):
            FBRPlus(thresholds="calibrated", calibration_holdout=bad).setup(_tiny_context())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")  # (no steps here)
def test_trusted_in_batches_with_loss_norm_weights_divides_by_the_batch_weight_sum(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``loss_norm="weights"`` in the trusted-in-batches loop steps on sum w l / sum w (the
    batch loss times B / sum w), and with every weight 1 it is the "batch" loss exactly."""
    import benchmarks.cifar_n.methods.fbr as fbr_module

    batch: list[tuple[float, torch.Tensor]] = []
    inner = fbr_module.mixed_batch_loss

    def spy(z: torch.Tensor, q: torch.Tensor, w: torch.Tensor, gce: float) -> torch.Tensor:
        out = inner(z, q, w, gce)
        batch.append((float(out.detach()), w.detach().clone()))
        return out

    monkeypatch.setattr(fbr_module, "mixed_batch_loss", spy)
    m = FBRPlus(loss_norm="weights")
    m.setup(_tiny_context())
    stepped: list[float] = []
    monkeypatch.setattr(m, "sgd_step", lambda opt, loss: stepped.append(float(loss.detach())))
    m.train_epoch(0)
    assert len(stepped) == len(batch) > 1
    assert any(float(w.mean()) < 0.99 for _, w in batch)  # the floor lowers some weights
    for loss, (plain, w) in zip(stepped, batch, strict=True):
        assert math.isclose(loss, plain * len(w) / float(w.sum()), rel_tol=1e-5)
    ones = {"dropped_weight": 1.0, "pseudo_labels": False}
    losses = [FBRPlus(loss_norm=norm, **ones) for norm in ("batch", "weights")]
    for method in losses:
        torch.manual_seed(0)
        method.setup(_tiny_context())
    assert math.isclose(losses[0].train_epoch(0).loss, losses[1].train_epoch(0).loss,
                        rel_tol=1e-6)


def test_floor_gate_keeps_the_floor_where_the_network_agrees_with_the_label() -> None:
    """With ``floor_gate="agree"`` a dropped sample without a pseudo-label keeps the 0.5 floor
    exactly where the eval forward's class of its image is its given label; kept samples and
    pseudo-labels are untouched."""
    from benchmarks.cifar_n.methods import fbr as fbr_module

    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    original = fbr_module.FBR._end_floor

    def spy(self, recipe, t, w, epoch):  # type: ignore[no-untyped-def]
        t2, w2 = original(self, recipe, t, w, epoch)
        agree = recipe.eval_logits.argmax(1) == t.labels
        seen.append((w.numpy().copy(), w2.numpy(), (t.kept | t.pseudo).numpy(), agree.numpy()))
        return t2, w2

    torch.manual_seed(0)
    m = FBRPlus(floor_gate="agree")
    m.setup(_tiny_context())
    fbr_module.FBR._end_floor = spy  # type: ignore[method-assign]
    try:
        gated_loss = m.train_epoch(0).loss
    finally:
        fbr_module.FBR._end_floor = original  # type: ignore[method-assign]
    w, w2, keep, agree = (np.concatenate(a) for a in zip(*seen, strict=True))
    floored = ~keep
    assert (floored & agree).any() and (floored & ~agree).any()  # both cases occur
    np.testing.assert_array_equal(w2[keep], w[keep])
    np.testing.assert_allclose(w2[floored & agree], 0.5)
    assert (w2[floored & ~agree] == 0).all()
    torch.manual_seed(0)
    plain = FBRPlus()
    plain.setup(_tiny_context())
    assert plain.train_epoch(0).loss != gated_loss  # the gate changed the training
    for bad in ("yes", True, 1):
        with pytest.raises(ValueError, match="`floor_gate`"):
            FBRPlus(floor_gate=bad).setup(_tiny_context())
    with pytest.raises(ValueError, match="`eval_features` with `floor_gate`"):
        FBR(floor_gate="agree", eval_features=False).setup(_tiny_context())


def test_consistency_trains_a_second_view_of_the_dropped_samples_towards_the_eval_guess() -> None:
    """With ``consistency`` > 0 every batch adds the consistency term over exactly its dropped
    samples that took no pseudo-label, against the eval forward's logits of those rows, at
    lambda times the ramp."""
    from benchmarks.cifar_n.methods import fbr as fbr_module

    floors: list[tuple[np.ndarray, torch.Tensor]] = []
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_floor, original_loss = fbr_module.FBR._end_floor, fbr_module.consistency_loss

    def spy_floor(self, recipe, t, w, epoch):  # type: ignore[no-untyped-def]
        dropped = ~(t.kept | t.pseudo)
        floors.append((dropped.numpy().copy(), recipe.eval_logits[dropped].clone()))
        return original_floor(self, recipe, t, w, epoch)

    def spy_loss(logits, target, weights=None, *, temperature=0.5):  # type: ignore[no-untyped-def]
        assert temperature == 0.25
        calls.append((logits.detach().clone(), target.clone()))
        return original_loss(logits, target, weights, temperature=temperature)

    torch.manual_seed(0)
    m = FBRPlus(consistency=2.0, consistency_temperature=0.25, pseudo_ramp=1)
    m.setup(_tiny_context())
    fbr_module.FBR._end_floor = spy_floor  # type: ignore[method-assign]
    fbr_module.consistency_loss = spy_loss
    try:
        loss = m.train_epoch(0).loss
    finally:
        fbr_module.FBR._end_floor = original_floor  # type: ignore[method-assign]
        fbr_module.consistency_loss = original_loss
    with_drops = [(d, z) for d, z in floors if d.any()]
    assert with_drops and len(calls) == len(with_drops)
    for (dropped, z_eval), (logits, target) in zip(with_drops, calls, strict=True):
        assert logits.shape == (int(dropped.sum()), z_eval.shape[1])
        torch.testing.assert_close(target, z_eval)
    torch.manual_seed(0)
    plain = FBRPlus()
    plain.setup(_tiny_context())
    assert plain.train_epoch(0).loss != loss  # the term is in the loss
    torch.manual_seed(0)
    guarded = FBRPlus(consistency=2.0, consistency_temperature=0.25, pseudo_ramp=1,
                      consistency_prior=True)
    guarded.setup(_tiny_context())
    assert guarded.train_epoch(0).loss != loss  # the prior penalty is in the loss
    torch.manual_seed(0)
    train_guess = FBRPlus(consistency=2.0, consistency_temperature=0.25, pseudo_ramp=1,
                          consistency_guess="train")
    train_guess.setup(_tiny_context())
    assert train_guess.train_epoch(0).loss != loss  # another guess, another loss
    with pytest.raises(ValueError, match="`consistency_guess`"):
        FBRPlus(consistency=1.0, consistency_guess="peer").setup(_tiny_context())
    with pytest.raises(ValueError, match="`consistency_prior`"):
        FBRPlus(consistency=1.0, consistency_prior="yes").setup(_tiny_context())
    with pytest.raises(ValueError, match="`consistency`"):
        FBRPlus(consistency=-1.0).setup(_tiny_context())
    with pytest.raises(ValueError, match="`consistency`"):
        FBRPlus(consistency="x").setup(_tiny_context())
    with pytest.raises(ValueError, match="`consistency_temperature`"):
        FBRPlus(consistency_temperature=0.0).setup(_tiny_context())
    with pytest.raises(ValueError, match="`trusted_in_batches` with `consistency`"):
        FBRPlus(consistency=1.0, trusted_in_batches=False, clean_passes=3).setup(_tiny_context())


def test_union_batches_draws_every_trusted_sample_repeat_times() -> None:
    """One epoch of ``union_batches`` visits every pool index once and every trusted index
    ``repeat`` times; with ``repeat`` = 1 it is ``batches`` over the union exactly."""
    a, b = _tiny_context(n_pool=13, n_clean=5, batch_size=4), _tiny_context(13, 5, 4)
    for x, y in zip(a.union_batches(13, 5), b.batches(18), strict=True):
        torch.testing.assert_close(x, y)
    idx = torch.cat(list(a.union_batches(13, 5, repeat=3)))
    counts = torch.bincount(idx, minlength=18)
    assert len(idx) == 13 + 3 * 5 and idx.max() < 18
    assert (counts[:13] == 1).all() and (counts[13:] == 3).all()


def test_trusted_repeat_is_the_same_stream_for_ce_mixup_and_the_recipe() -> None:
    """With ``trusted_repeat`` = 3 the recipe's trusted-in-batches epoch trains on 3 draws of
    every trusted image, and with every weight 1 it is still CE + mixup's (same repeat) step for
    step; with 1 it is the stream without repeats."""
    from benchmarks.cifar_n.methods.ce import CEMixup

    def epoch0(m: CE | FBRPlus) -> tuple[float, list[torch.Tensor], int]:
        torch.manual_seed(0)
        ctx = _tiny_context()
        m.setup(ctx)
        seen: list[int] = []
        view = ctx.train_view
        ctx.train_view = lambda x: (seen.append(len(x)), view(x))[1]  # type: ignore[method-assign]
        loss = m.train_epoch(0).loss
        return loss, [p.detach().clone() for p in m.eval_model().parameters()], sum(seen)

    ce_loss, ce_params, ce_seen = epoch0(CEMixup(trusted_repeat=3))
    fbr_loss, fbr_params, fbr_seen = epoch0(FBRPlus(dropped_weight=1.0, pseudo_labels=False,
                                                    trusted_repeat=3))
    assert ce_seen == fbr_seen == 40 + 3 * 20
    assert math.isclose(fbr_loss, ce_loss, rel_tol=1e-6)
    for a, b in zip(fbr_params, ce_params, strict=True):
        torch.testing.assert_close(a, b)
    assert epoch0(CEMixup(trusted_repeat=1))[2] == 40 + 20
    assert epoch0(CE(trusted_repeat=2))[2] == 40 + 2 * 20  # plain CE's steps too
    for bad in (0, 1.5, "3", True):
        for method in (CEMixup, FBRPlus):
            with pytest.raises(ValueError, match="`trusted_repeat`"):
                method(trusted_repeat=bad).setup(_tiny_context())
    with pytest.raises(ValueError, match="`trusted_in_batches` with `trusted_repeat`"):
        FBRPlus(trusted_in_batches=False, clean_passes=3, trusted_repeat=2).setup(
            _tiny_context())


def test_floor_gate_confident_drops_the_floor_only_where_another_class_is_likely() -> None:
    """With ``floor_gate="confident"`` a dropped sample without a pseudo-label loses its 0.5
    floor exactly where the eval forward gives a class other than its label a probability of
    at least ``floor_gate_confidence``; kept samples and pseudo-labels are untouched."""
    from benchmarks.cifar_n.methods import fbr as fbr_module

    seen: list[tuple[np.ndarray, ...]] = []
    original = fbr_module.FBR._end_floor

    def spy(self, recipe, t, w, epoch):  # type: ignore[no-untyped-def]
        t2, w2 = original(self, recipe, t, w, epoch)
        prob = recipe.eval_logits.softmax(1)
        other = torch.stack([torch.cat([r[:k], r[k + 1:]]).max()  # by hand, row by row
                             for r, k in zip(prob, t.labels.tolist(), strict=True)])
        seen.append((w.numpy().copy(), w2.numpy(), t2.weights.numpy(),
                     (t.kept | t.pseudo).numpy(), other.numpy()))
        return t2, w2

    torch.manual_seed(0)
    m = FBRPlus(floor_gate="confident", floor_gate_confidence=0.35,  # 3 classes: both cases
                dropped_doubt=None)  # only the benchmark's gate
    m.setup(_tiny_context())
    fbr_module.FBR._end_floor = spy  # type: ignore[method-assign]
    try:
        m.train_epoch(0)
    finally:
        fbr_module.FBR._end_floor = original  # type: ignore[method-assign]
    w, w2, tw, keep, other = (np.concatenate(a) for a in zip(*seen, strict=True))
    floored, doubt = ~keep, other >= 0.35
    assert (floored & doubt).any() and (floored & ~doubt).any()  # both cases occur
    np.testing.assert_array_equal(w2[keep], w[keep])
    np.testing.assert_allclose(w2[floored & ~doubt], 0.5)
    assert (w2[floored & doubt] == 0).all() and (tw[floored & doubt] == 0).all()
    for bad in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="`floor_gate_confidence`"):
            FBRPlus(floor_gate="confident", floor_gate_confidence=bad).setup(_tiny_context())


def test_floor_gate_start_and_end_keep_the_floor_outside_their_epochs() -> None:
    """With ``floor_gate_start`` (``floor_gate_end``) the gate is off before (from) that epoch:
    such an epoch trains exactly as the recipe without the gate, an epoch inside them as the
    gated one."""
    def loss(epoch: int, **kw: object) -> float:
        torch.manual_seed(0)
        m = FBRPlus(**{"dropped_doubt": None, **kw})  # only the benchmark's gate
        m.setup(_tiny_context())
        return m.train_epoch(epoch).loss

    gate = {"floor_gate": "confident", "floor_gate_confidence": 0.35}
    assert loss(0, floor_gate_start=1, **gate) == loss(0) != loss(0, **gate)
    assert loss(1, floor_gate_start=1, **gate) == loss(1, **gate)
    assert loss(0, floor_gate_end=1, **gate) == loss(0, **gate)
    assert loss(1, floor_gate_end=1, **gate) == loss(1) != loss(1, **gate)
    for bad in ({"floor_gate_start": -1, **gate}, {"floor_gate_start": 1.5, **gate},
                {"floor_gate_start": 2}):  # no gate to start
        with pytest.raises(ValueError, match="`floor_gate_start`"):
            FBRPlus(**bad).setup(_tiny_context())
    for bad in ({"floor_gate_end": 0, **gate}, {"floor_gate_end": 3, "floor_gate_start": 3,
                                                **gate}, {"floor_gate_end": 2}):
        with pytest.raises(ValueError, match="`floor_gate_end`"):
            FBRPlus(**bad).setup(_tiny_context())


def test_library_doubt_gate_trains_as_the_benchmarks_confident_gate() -> None:
    """``dropped_doubt`` / ``dropped_doubt_until`` (the library's gate, inside
    ``SurrogateRecipe.targets``, the default's) train exactly as the benchmark's
    ``floor_gate="confident"`` / ``floor_gate_end`` at the same bar, inside the window and after
    it, and unlike the recipe without a gate inside it."""
    def loss(epoch: int, **kw: object) -> float:
        torch.manual_seed(0)
        m = FBRPlus(**kw)
        m.setup(_tiny_context())
        return m.train_epoch(epoch).loss

    bench = {"dropped_doubt": None, "floor_gate": "confident", "floor_gate_confidence": 0.35}
    library = {"dropped_doubt": 0.35}  # 3 classes: both cases occur (the test above)
    assert loss(0, **library) == loss(0, **bench) != loss(0, dropped_doubt=None)
    assert loss(1, **library, dropped_doubt_until=1) == loss(1, **bench, floor_gate_end=1) \
        == loss(1, dropped_doubt=None)
    assert loss(0, **library, dropped_doubt_until=1) == loss(0, **library)
    default = FBRPlus().params
    assert (default["dropped_doubt"], default["dropped_doubt_until"]) == (0.7, 40)
    for bad in ({"dropped_doubt": 0.0}, {"dropped_doubt_until": -1}):
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
            FBRPlus(**bad).setup(_tiny_context())


def test_floor_gate_quantile_sets_the_bar_from_the_trusted_images_doubts() -> None:
    """With ``floor_gate_quantile`` q the epoch's bar is the 1 - q quantile of each trusted
    image's largest other-class probability under the epoch-start network (computed here row by
    row), never under ``floor_gate_confidence``, and the epoch's log carries it."""
    def doubts(m: FBRPlus) -> np.ndarray:
        x, y = m.clean
        with torch.no_grad():
            prob = m.c.predict(m.model, x)[0].softmax(1)
        return np.array([max(p for j, p in enumerate(r.tolist()) if j != k)
                         for r, k in zip(prob, y.tolist(), strict=True)])

    for q, floor in ((0.5, 0.01), (0.1, 0.01), (0.5, 0.99)):
        torch.manual_seed(0)
        m = FBRPlus(floor_gate="confident", floor_gate_confidence=floor, floor_gate_quantile=q)
        m.setup(_tiny_context())
        expected = max(floor, float(np.quantile(doubts(m), 1 - q)))
        log = m.train_epoch(0)
        assert m.gate_bar == pytest.approx(expected, abs=1e-6)
        assert log.extra["gate_bar"] == m.gate_bar
    assert 0.0 <= log.extra["trusted_doubt_q90"] <= log.extra["trusted_doubt_q95"] <= 1.0
    for bad in ({"floor_gate_quantile": 1.5}, {"floor_gate_quantile": 0.1, "floor_gate": None},
                {"floor_gate_quantile": 0.1, "floor_gate": "agree"}):
        with pytest.raises(ValueError, match="`floor_gate_quantile`"):
            FBRPlus(**{"floor_gate": "confident", **bad}).setup(_tiny_context())


def test_trusted_in_batches_with_health_holdout_scores_health_on_images_it_never_trains() -> None:
    """With ``health_holdout`` the trusted stream leaves the held-out images out (one epoch draws
    ``n_pool + n_clean - holdout`` samples) and the epoch's health report is measured on them."""
    ctx = _tiny_context(n_pool=40, n_clean=21)
    m = FBRPlus(health_holdout=6)
    m.setup(ctx)
    assert m.held is not None and len(m.held[1]) == 6 and len(m.clean[1]) == 15
    drawn, seen = _spy_stream(ctx)
    log = m.train_epoch(0)
    assert drawn == [40 + 15]
    held = {bytes(x.contiguous().numpy()) for x in m.held[0]}
    trained = {bytes(x.contiguous().numpy()) for b in seen for x in b}
    assert trained and not trained & held
    assert 0.0 <= log.extra["health_heldout_kept"] <= 1.0
    assert 0.0 <= log.extra["health_heldout_accuracy"] <= 1.0


def test_floor_gate_when_agreement_follows_the_previous_epochs_health_report() -> None:
    """With ``floor_gate_when="agreement"`` the confident gate is off until a health report finds
    the pool's agreement above the held-out accuracy, and off again after one that does not: its
    first epoch trains exactly as the recipe without the gate."""
    from robustweights.phases.health import HealthReport

    def run(**kw: object) -> tuple[FBRPlus, float]:
        torch.manual_seed(0)
        m = FBRPlus(health_holdout=6, floor_gate_confidence=0.35, **kw)
        m.setup(_tiny_context(n_pool=40, n_clean=21))
        return m, m.train_epoch(0).loss

    m, loss = run(floor_gate="confident", floor_gate_when="agreement")
    assert loss == run()[1] and loss != run(floor_gate="confident")[1]
    for agreement, accuracy, on in ((0.6, 0.5, True), (0.4, 0.5, False), (None, 0.5, False)):
        report = HealthReport(1, 0.5, 0.5, agreement, accuracy, True, None, False)
        m.recipe.end_epoch = lambda r=report: r  # type: ignore[method-assign]
        m.train_epoch(1)
        assert m.gate_on is on
    for bad in ({"floor_gate_when": "always"}, {"floor_gate_when": "agreement",
                                                "health_holdout": 0},
                {"floor_gate_when": "agreement", "floor_gate": None}):  # nothing to switch
        with pytest.raises(ValueError, match="`floor_gate_when`"):
            FBRPlus(**{"floor_gate": "confident", "health_holdout": 6, **bad}).setup(
                _tiny_context(n_pool=40, n_clean=21))
