"""Targets for what the filter drops: agreement-gated pseudo-labels, per-class thresholds
calibrated on the trusted set, mixup and the soft-target loss, on hand-checkable cases and
against literal references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustweights import RecipeConfig, SurrogateRecipe, SurrogateReweighter
from robustweights.recipe.calibration import class_thresholds, leave_one_out_directions
from robustweights.recipe.targets import (
    Targets,
    agreement_pseudo_labels,
    bootstrap_targets,
    consistency_loss,
    doubt_gate,
    mixup,
    prior_penalty,
    soft_cross_entropy,
)


# ---------------------------------------------------------------------- agreement gating
def test_pseudo_labels_need_agreement_and_confidence() -> None:
    # sample 0: agree, p = e^4/(1+e^4) = 0.982 -> accepted; 1: agree but p = 0.525 < 0.9;
    # 2: the network says 1, the prototype 0 -> refused; 3: agree, confident, peer disagrees
    z = torch.tensor([[4.0, 0.0], [0.0, 0.1], [0.0, 4.0], [0.0, 5.0]])
    proto = torch.tensor([0, 1, 0, 1])
    labels, ok = agreement_pseudo_labels(proto, z, confidence=0.9)
    assert labels.tolist() == [0, 1, 0, 1]
    assert ok.tolist() == [True, False, False, True]
    peer = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    _, ok = agreement_pseudo_labels(proto, z, confidence=0.9, peer_logits=peer)
    assert ok.tolist() == [True, False, False, False]


@pytest.mark.parametrize("kw, match", [
    ({"confidence": 1.5}, "`confidence`"),
    ({"peer_logits": torch.zeros(4, 3)}, "`peer_logits`"),
])
def test_pseudo_label_errors(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        agreement_pseudo_labels(torch.zeros(4, dtype=torch.long), torch.zeros(4, 2), **kw)
    with pytest.raises(ValueError, match="`logits`"):
        agreement_pseudo_labels(torch.zeros(3, dtype=torch.long), torch.zeros(4, 2))


# ---------------------------------------------------------------------- calibration
def _loo_reference(g: torch.Tensor, y: torch.Tensor, c: int) -> torch.Tensor:
    """Literal: for each sample, drop it, rebuild the centred prototypes, and take its alpha-0
    direction (own similarity minus the best other class, as FBR's shift gives when the own
    class wins, and own minus the second best when it does not)."""
    out = []
    for j in range(len(y)):
        keep = torch.arange(len(y)) != j
        means = torch.stack([g[keep & (y == k)].mean(0) for k in range(c)])
        mu = means.mean(0)
        s = torch.stack([(g[j] - mu) @ (means[k] - mu) for k in range(c)])
        second = s.topk(2).values[1]
        out.append(s[y[j]] - second)
    return torch.stack(out)


def test_leave_one_out_directions_match_the_literal_loop() -> None:
    g = torch.randn(24, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.arange(24) % 3
    g = g + torch.eye(3, 5, dtype=torch.float64)[y] * 2
    d, ok = leave_one_out_directions(g, y, 3)
    assert ok.all()
    torch.testing.assert_close(d, _loo_reference(g, y, 3))


def test_leave_one_out_is_not_the_plain_direction() -> None:
    # a sample alone pulls its own prototype towards itself: its plain direction is higher
    g = torch.randn(18, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(18) % 3
    g = g + torch.eye(3, 4, dtype=torch.float64)[y]
    d_loo, _ = leave_one_out_directions(g, y, 3)
    rw = SurrogateReweighter(3, alpha=0.0)
    rw.set_clean(features=g, labels=y)
    d = rw.directions(features=g, labels=y)
    assert (d >= d_loo - 1e-12).all() and (d > d_loo).sum() >= 9


def test_singleton_class_is_invalid_and_gets_threshold_zero() -> None:
    g = torch.tensor([[1.0, 0.0], [1.1, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    d, ok = leave_one_out_directions(g, y, 3)
    assert ok.tolist() == [True, True, False] and d[2] == 0
    t = class_thresholds(d, y, 3, quantile=0.5, valid=ok)
    assert t[1] == 0 and t[2] == 0  # no valid sample of class 1, none of class 2 at all
    assert t[0] == d[:2].median() or torch.isclose(t[0], d[:2].mean())


def test_thresholds_are_per_class_quantiles() -> None:
    d = torch.tensor([-3.0, -1.0, 1.0, 3.0, 10.0, 20.0])
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    t = class_thresholds(d, y, 2, quantile=0.25)
    torch.testing.assert_close(t, torch.tensor([-1.5, 12.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="`quantile`"):
        class_thresholds(d, y, 2, quantile=1.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 0.9))
def test_calibrated_share_kept_is_the_same_in_every_class(seed: int, q: float) -> None:
    # the trusted scores themselves: each class keeps (strictly above t_c) 1 - q of them
    # to within one sample (a quantile interpolates between two order statistics)
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(60, generator=gen, dtype=torch.float64) + torch.arange(60) % 3
    y = torch.arange(60) % 3
    t = class_thresholds(d, y, 3, quantile=q)
    for c in range(3):
        share = (d[y == c] > t[c]).double().mean()
        assert abs(share - (1 - q)) <= 1 / 20 + 1e-9


# ---------------------------------------------------------------------- mixup and the loss
def test_mixup_mixes_inputs_targets_and_weights_alike() -> None:
    x = torch.arange(8.0).reshape(4, 2)
    y = torch.tensor([0, 1, 2, 0])
    w = torch.tensor([1.0, 0.0, 0.5, 1.0])
    gen = torch.Generator().manual_seed(3)
    xm, q, wm = mixup(x, y, w, num_classes=3, alpha=1.0, generator=gen)
    gen = torch.Generator().manual_seed(3)  # replay the same draws by hand
    a = torch._standard_gamma(torch.full((2,), 1.0), generator=gen)
    lam = float(a[0] / a.sum())
    perm = torch.randperm(4, generator=gen)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(q, lam * F.one_hot(y, 3).float() + (1 - lam) * F.one_hot(y[perm], 3))
    torch.testing.assert_close(wm, lam * w + (1 - lam) * w[perm])
    assert torch.allclose(q.sum(1), torch.ones(4))


def test_mixup_keeps_a_pair_of_dropped_samples_at_zero() -> None:
    x, y = torch.randn(6, 3), torch.arange(6) % 2
    _, _, wm = mixup(x, y, torch.zeros(6), num_classes=2, generator=torch.Generator())
    assert (wm == 0).all()
    with pytest.raises(ValueError, match="`alpha`"):
        mixup(x, y, torch.zeros(6), num_classes=2, alpha=0.0)
    with pytest.raises(ValueError, match="samples"):
        mixup(x, y, torch.zeros(5), num_classes=2)


def test_mixup_of_soft_targets_is_the_mix_of_their_rows() -> None:
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    q = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(1)), 1)
    w = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.5])
    _, q_hard, _ = mixup(x, y, w, num_classes=3, generator=torch.Generator().manual_seed(4))
    _, q_soft, _ = mixup(x, q, w, num_classes=3, generator=torch.Generator().manual_seed(4))
    _, q_onehot, _ = mixup(x, F.one_hot(y, 3).float(), w, num_classes=3,
                           generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(q_onehot, q_hard)  # one-hot rows are the labels
    gen = torch.Generator().manual_seed(4)
    a = torch._standard_gamma(torch.full((2,), 1.0), generator=gen)
    lam, perm = float(a[0] / a.sum()), torch.randperm(5, generator=gen)
    torch.testing.assert_close(q_soft, lam * q + (1 - lam) * q[perm])
    with pytest.raises(ValueError, match="`labels` of shape"):
        mixup(x, q[:, :2], w, num_classes=3)


def test_bootstrap_moves_only_dropped_samples_without_a_pseudo_label() -> None:
    # sample 0 kept, 1 pseudo-labelled, 2 and 3 dropped; the network says class 2 for all
    t = Targets(torch.tensor([1.0, 0.7, 0.5, 0.5]), torch.tensor([0, 1, 1, 2]),
                torch.tensor([True, False, False, False]),
                torch.tensor([False, True, False, False]))
    z = torch.tensor([[0.0, 0.0, 5.0]]).repeat(4, 1)
    b = bootstrap_targets(t, z, share=0.8)
    assert b.guess is not None and b.guess_share is not None
    assert b.guess.tolist() == [0, 1, 2, 2]
    torch.testing.assert_close(b.guess_share, torch.tensor([0.0, 0.0, 0.8, 0.8]))
    assert torch.equal(b.weights, t.weights) and torch.equal(b.labels, t.labels)
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.2, 0.8],
                             [0.0, 0.0, 1.0]])  # sample 3: the guess is its own label
    torch.testing.assert_close(b.soft_targets(3), expected)
    torch.testing.assert_close(t.soft_targets(3), F.one_hot(t.labels, 3).float())
    with pytest.raises(ValueError, match="`share`"):
        bootstrap_targets(t, z, share=1.5)
    with pytest.raises(ValueError, match="`logits`"):
        bootstrap_targets(t, z[:2], share=0.5)


def test_bootstrapped_loss_gradient_by_hand() -> None:
    # the gradient of w (-sum_c q_c log softmax(z)_c) with q = (1-b) e_y + b e_g is
    # (w / B)(softmax(z) - q): a dropped sample is pulled towards the guess by b
    t = bootstrap_targets(Targets(torch.tensor([0.5]), torch.tensor([0]), torch.tensor([False]),
                                  torch.tensor([False])),
                          torch.tensor([[0.0, 1.0]]), share=0.25)
    z = torch.tensor([[0.3, -0.2]], requires_grad=True)
    soft_cross_entropy(z, t.soft_targets(2), t.weights).backward()
    p = torch.softmax(z.detach(), 1)
    torch.testing.assert_close(z.grad, 0.5 * (p - torch.tensor([[0.75, 0.25]])))


def test_soft_cross_entropy_gradient_by_hand() -> None:
    # d/dz_i of (1/B) sum_i w_i (-sum_c q_ic log softmax(z_i)_c) = (w_i / B)(softmax(z_i) - q_i)
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    w = torch.tensor([0.5, 2.0])
    soft_cross_entropy(z, q, w).backward()
    p = torch.softmax(z.detach(), 1)
    torch.testing.assert_close(z.grad, (w / 2).unsqueeze(1) * (p - q))
    # with one-hot targets it is the weighted mean cross-entropy
    yy = torch.tensor([1, 0])
    torch.testing.assert_close(soft_cross_entropy(z, F.one_hot(yy, 3).float(), w),
                               (w * F.cross_entropy(z, yy, reduction="none")).mean())
    assert float(soft_cross_entropy(torch.zeros(0, 3), torch.zeros(0, 3))) == 0.0
    with pytest.raises(ValueError, match="`soft_targets`"):
        soft_cross_entropy(z, q[:1])
    with pytest.raises(ValueError, match="`weights`"):
        soft_cross_entropy(z, q, w[:1])


def test_consistency_loss_gradient_by_hand() -> None:
    # L = (1/B) sum_i w_i ||p_i - q_i||^2, p = softmax(z), q = softmax(z' / T) held fixed:
    # dL/dz_i = (2 w_i / B) (diag(p_i) - p_i p_i^T)(p_i - q_i), and no gradient reaches z'
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 0.0]], requires_grad=True)
    zt = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]], requires_grad=True)
    w = torch.tensor([0.5, 2.0])
    consistency_loss(z, zt, w, temperature=0.5).backward()
    p, q = torch.softmax(z.detach(), 1), torch.softmax(zt.detach() / 0.5, 1)
    d = p - q
    by_hand = (2 * w / 2).unsqueeze(1) * (p * d - p * (p * d).sum(1, keepdim=True))
    torch.testing.assert_close(z.grad, by_hand)
    assert zt.grad is None
    # the value: a uniform prediction against a certain target, (1/2)^2 + (1/2)^2
    one = consistency_loss(torch.zeros(1, 2), torch.tensor([[0.0, 50.0]]))
    assert float(one) == pytest.approx(0.5)
    same = z.detach()
    assert float(consistency_loss(same, same, temperature=1.0)) == 0.0  # agrees with itself
    assert float(consistency_loss(torch.zeros(0, 3), torch.zeros(0, 3))) == 0.0
    with pytest.raises(ValueError, match="`target_logits`"):
        consistency_loss(z, zt[:1])
    with pytest.raises(ValueError, match="`weights`"):
        consistency_loss(z, zt, w[:1])
    with pytest.raises(ValueError, match="`temperature`"):
        consistency_loss(z, zt, temperature=0.0)
    with pytest.raises(ValueError, match="`logits`"):
        consistency_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError, match="`logits`"):
        consistency_loss(torch.zeros(2, 3, dtype=torch.long), zt)
    with pytest.raises(ValueError, match="`temperature`"):
        consistency_loss(z, zt, temperature="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`temperature`"):
        consistency_loss(z, zt, temperature=float("nan"))


def test_prior_penalty_value_and_gradient_by_hand() -> None:
    # P = (1/C) sum_c (log(1/C) - log pbar_c), pbar = (1/B) sum_i softmax(z_i):
    # dP/dz_ik = -(1/(C B)) (p_ik / pbar_k - p_ik sum_c p_ic / pbar_c)
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 0.0]], requires_grad=True)
    prior_penalty(z).backward()
    p = torch.softmax(z.detach(), 1)
    pbar = p.mean(0)
    by_hand = -(p / pbar - p * (p / pbar).sum(1, keepdim=True)) / (3 * 2)
    torch.testing.assert_close(z.grad, by_hand)
    value = (torch.log(torch.tensor(1 / 3)) - torch.log(pbar)).mean()
    torch.testing.assert_close(prior_penalty(z.detach()), value)
    # 0 where the mean prediction is uniform, larger the more the batch leans to one class
    assert float(prior_penalty(torch.zeros(4, 5))) == pytest.approx(0.0, abs=1e-7)
    one_class = torch.tensor([[5.0, 0.0, 0.0]]).repeat(4, 1)
    assert float(prior_penalty(one_class)) > float(prior_penalty(z.detach())) > 0
    assert float(prior_penalty(torch.zeros(0, 3))) == 0.0
    with pytest.raises(ValueError, match="`logits`"):
        prior_penalty(torch.zeros(3))
    with pytest.raises(TypeError, match="`logits`"):
        prior_penalty(torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------------- the recipe step
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3) * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _recipe(**kw: object) -> SurrogateRecipe:
    """A recipe on the identity-feature net, started at epoch 0 with its prototypes."""
    net = Net()
    xc = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.2, 1.0, 0.0],
                       [0.0, 0.0, 1.0], [0.0, 0.1, 1.0]])
    yc = torch.tensor([0, 0, 1, 1, 2, 2])
    options = {"eval_features": False, "dropped_weight": 0.0, "pseudo_labels": False, **kw}
    recipe = SurrogateRecipe(3, model=net, head=net.fc, clean_data=(xc, yc),
                             config=RecipeConfig(warmup_epochs=0, alpha_switch=0,
                                                 clean_passes=0,
                                                 **options))  # type: ignore[arg-type]
    recipe.start_epoch(0)
    list(recipe.clean_batches())  # no pass; its end refreshes the prototypes
    return recipe


_THREE = (torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.62, 0.6, 0.0]]),
          torch.tensor([0, 0, 1]))


def _three_sample_targets(epoch: int, **kw: object) -> Targets:
    """The targets of the batch ``_THREE`` in ``epoch`` of a recipe with options ``kw``."""
    r = _recipe(**kw)
    r.start_epoch(epoch)
    r.refresh_prototypes()
    x, y = _THREE
    logits = r.model(x)
    w = r.weights(inputs=x, labels=y)
    return r.targets(y, w, logits=logits.detach())


def test_targets_give_dropped_samples_the_agreed_pseudo_label() -> None:
    # features = inputs (identity body); prototypes: class k near the k-th unit vector.
    # Sample 0 labelled 0 near class 0: kept. Sample 1 labelled 0 near class 1, and the network
    # (logits 10x the features) is sure of class 1: dropped, pseudo-label 1. Sample 2 labelled 1
    # nearer class 0, the network unsure (logits 6.2 and 6.0): dropped, no pseudo-label.
    t = _three_sample_targets(1, pseudo_labels=True, pseudo_confidence=0.9,
                              pseudo_ramp_epochs=4)  # ramp (1 - 0 + 1) / 4 = 0.5
    assert isinstance(t, Targets)
    assert t.kept.tolist() == [True, False, False]
    assert t.pseudo.tolist() == [False, True, False]
    assert t.labels.tolist() == [0, 1, 1]
    torch.testing.assert_close(t.weights, torch.tensor([1.0, 0.5, 0.0]))


def test_doubt_gate_zeroes_only_doubted_dropped_samples() -> None:
    # 3 classes, labels 0: sample 0 kept, 1 pseudo-labelled, 2-4 dropped. Other-class
    # probabilities by hand: 0 and 1 are sure of class 1 (never gated: kept, pseudo); 2 gives
    # class 2 e^2 / (e^2 + 2) = 0.787; 3 gives class 1 exactly 0.5 (logits 0, 0, -inf-like);
    # 4 is sure of its label.
    t = Targets(torch.tensor([1.0, 0.7, 0.5, 0.5, 0.5]), torch.tensor([0, 1, 0, 0, 0]),
                torch.tensor([True, False, False, False, False]),
                torch.tensor([False, True, False, False, False]))
    z = torch.tensor([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, -60.0],
                      [9.0, 0.0, 0.0]])
    cases = {0.5: [1.0, 0.7, 0.0, 0.0, 0.5], 0.78: [1.0, 0.7, 0.0, 0.5, 0.5],
             0.8: [1.0, 0.7, 0.5, 0.5, 0.5]}
    for bar, expected in cases.items():
        out = doubt_gate(t, z, bar=bar)
        torch.testing.assert_close(out.weights, torch.tensor(expected))
        assert torch.equal(out.labels, t.labels) and torch.equal(out.kept, t.kept)
        assert torch.equal(out.pseudo, t.pseudo)
    for bad in (0.0, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="`bar`"):
            doubt_gate(t, z, bar=bad)  # type: ignore[arg-type]
    for bad_z in (z[:4], z[:, :1], z.long()):  # rows, a label without a column, not floating
        with pytest.raises((ValueError, TypeError), match="`logits`"):
            doubt_gate(t, bad_z, bar=0.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_doubt_gate_only_zeroes_dropped_rows_and_is_permutation_equivariant(
        seed: int, bar: float, other_bar: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, c = 12, 4
    z = 3 * torch.randn(n, c, generator=gen)
    labels = torch.randint(0, c, (n,), generator=gen)
    kept = torch.rand(n, generator=gen) < 0.4
    pseudo = ~kept & (torch.rand(n, generator=gen) < 0.3)
    w = torch.rand(n, generator=gen)
    t = Targets(w, labels, kept, pseudo)
    out = doubt_gate(t, z, bar=bar).weights
    # the literal rule, row by row
    for i in range(n):
        p = z[i].softmax(0)
        doubted = max(float(p[k]) for k in range(c) if k != int(labels[i])) >= bar
        gated = doubted and not bool(kept[i]) and not bool(pseudo[i])
        assert float(out[i]) == (0.0 if gated else float(w[i]))
    perm = torch.randperm(n, generator=gen)
    shuffled = doubt_gate(Targets(w[perm], labels[perm], kept[perm], pseudo[perm]), z[perm],
                          bar=bar).weights
    assert torch.equal(shuffled, out[perm])
    # a higher bar gates a subset of the rows a lower one gates
    low, high = sorted((bar, other_bar))
    assert bool(((doubt_gate(t, z, bar=high).weights == 0)
                 <= (doubt_gate(t, z, bar=low).weights == 0)).all())


def test_targets_with_dropped_doubt_gate_the_doubted_dropped_samples() -> None:
    # _THREE: sample 1 (labelled 0) is sure of class 1 (p = e^10 / (e^10 + 2)); sample 2
    # (labelled 1) gives class 0 p = e^6.2 / (e^6.2 + e^6 + 1) = 0.549; both dropped.
    p2 = math.exp(6.2) / (math.exp(6.2) + math.exp(6.0) + 1.0)
    assert 0.54 < p2 < 0.56
    for bar, expected in ((0.5, [1.0, 0.0, 0.0]), (0.6, [1.0, 0.0, 0.5]),
                          (1.0, [1.0, 0.5, 0.5])):
        t = _three_sample_targets(1, dropped_weight=0.5, dropped_doubt=bar)
        torch.testing.assert_close(t.weights, torch.tensor(expected))
    # from epoch `dropped_doubt_until` on there is no gate, and no logits are needed
    for until, expected in ((2, [1.0, 0.0, 0.0]), (1, [1.0, 0.5, 0.5])):
        t = _three_sample_targets(1, dropped_weight=0.5, dropped_doubt=0.5,
                                  dropped_doubt_until=until)
        torch.testing.assert_close(t.weights, torch.tensor(expected))
    late = _recipe(dropped_weight=0.5, dropped_doubt=0.5, dropped_doubt_until=1)
    late.start_epoch(1)
    late.refresh_prototypes()
    x, y = _THREE
    late.model(x)  # the training forward the hook reads
    w = late.weights(inputs=x, labels=y)
    torch.testing.assert_close(late.targets(y, w).weights, torch.tensor([1.0, 0.5, 0.5]))
    # a pseudo-label is never gated: sample 1 keeps its pseudo-label weight (ramp 0.5)
    t = _three_sample_targets(1, dropped_weight=0.5, dropped_doubt=0.5, pseudo_labels=True,
                              pseudo_confidence=0.9, pseudo_ramp_epochs=4)
    torch.testing.assert_close(t.weights, torch.tensor([1.0, 0.5, 0.0]))
    # without logits and without the eval forward the gate has nothing to read
    r = _recipe(dropped_weight=0.5, dropped_doubt=0.5)
    r.start_epoch(1)
    r.refresh_prototypes()
    x, y = _THREE
    r.model(x)  # the training forward the hook reads
    with pytest.raises(ValueError, match="`dropped_doubt`"):
        r.targets(y, r.weights(inputs=x, labels=y))
    for bad in (0.0, 1.5, True):
        with pytest.raises(ValueError, match="`dropped_doubt`"):
            RecipeConfig(dropped_doubt=bad)  # type: ignore[arg-type]
    for bad in (-1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="`dropped_doubt_until`"):
            RecipeConfig(dropped_doubt_until=bad)  # type: ignore[arg-type]
    assert (RecipeConfig().dropped_doubt, RecipeConfig().dropped_doubt_until) == (0.7, 40)
    assert RecipeConfig.authors().dropped_doubt is None


def test_targets_bootstrap_the_dropped_samples_with_the_ramp() -> None:
    # as above; sample 2 (labelled 1, the network says 0 at 6.2 against 6.0) is dropped and not
    # pseudo-labelled: bootstrapped towards 0 with share 0.8 * ramp 0.5
    t = _three_sample_targets(1, pseudo_labels=True, pseudo_confidence=0.9,
                              pseudo_ramp_epochs=4, dropped_target="bootstrap",
                              bootstrap_share=0.8, dropped_weight=0.5)
    assert t.pseudo.tolist() == [False, True, False] and t.labels.tolist() == [0, 1, 1]
    assert t.guess is not None and t.guess_share is not None
    assert t.guess.tolist() == [0, 1, 0]
    torch.testing.assert_close(t.guess_share, torch.tensor([0.0, 0.0, 0.4]))
    torch.testing.assert_close(t.weights, torch.tensor([1.0, 0.5, 0.5]))
    torch.testing.assert_close(t.soft_targets(3)[2], torch.tensor([0.4, 0.6, 0.0]))
    # a later start: nothing bootstrapped before it, then the ramp from there
    for start, epoch, share in ((2, 1, 0.0), (2, 2, 0.2), (2, 3, 0.4), (2, 6, 0.8), (0, 1, 0.4)):
        ts = _three_sample_targets(epoch, dropped_target="bootstrap", bootstrap_start=start,
                                   pseudo_ramp_epochs=4, dropped_weight=0.5)
        assert ts.guess_share is not None
        torch.testing.assert_close(ts.guess_share[2], torch.tensor(share))
    # without pseudo-labels the bootstrap still needs the network's logits
    x, y = _THREE
    r2 = _recipe(dropped_target="bootstrap")
    r2.model(x)
    w2 = r2.weights(inputs=x, labels=y)
    with pytest.raises(ValueError, match="`logits`"):
        r2.targets(y, w2)
    assert r2.targets(y, w2, logits=r2.model(x).detach()).guess is not None


def test_trusted_rows_are_kept_at_w_max_and_the_pool_rows_weighted_as_alone() -> None:
    # _THREE's pool rows, then a trusted row labelled 0 that sits on class 1's prototype with a
    # network sure of class 1: as a pool row it would be dropped and pseudo-labelled 1.
    x = torch.cat([_THREE[0], torch.tensor([[0.0, 1.0, 0.0]])])
    y = torch.cat([_THREE[1], torch.tensor([0])])
    trusted = torch.tensor([False, False, False, True])
    kw = {"pseudo_labels": True, "pseudo_confidence": 0.9, "pseudo_ramp_epochs": 1,
          "dropped_weight": 0.5}
    for eval_features in (False, True):
        alone, mixed = _recipe(eval_features=eval_features, **kw), _recipe(
            eval_features=eval_features, **kw)
        logits = mixed.model(x)
        w = mixed.weights(inputs=x, labels=y, trusted=trusted)
        t = mixed.targets(y, w, logits=logits.detach())
        alone.model(x[:3])
        w_alone = alone.weights(inputs=x[:3], labels=y[:3])
        t_alone = alone.targets(y[:3], w_alone, logits=alone.model(x[:3]).detach())
        torch.testing.assert_close(w, torch.cat([w_alone, torch.ones(1)]))
        torch.testing.assert_close(t.weights, torch.cat([t_alone.weights, torch.ones(1)]))
        assert t.kept.tolist() == [*t_alone.kept.tolist(), True]
        assert t.pseudo.tolist() == [False, True, False, False]  # the trusted row keeps label 0
        assert t.labels.tolist() == [0, 1, 1, 0]
        assert mixed.health._counts["pool_scored"] == 3  # the trusted row is not counted
    # the warm-up: w0 for the pool rows, w_max for the trusted one
    r = _recipe()
    r2 = SurrogateRecipe(3, model=r.model, head=r.model.fc, clean_data=(x, y),
                         config=RecipeConfig(warmup_epochs=1, clean_passes=0))
    r2.start_epoch(0)
    torch.testing.assert_close(r2.weights(inputs=x, labels=y, trusted=trusted),
                               torch.tensor([0.5, 0.5, 0.5, 1.0]))
    # every row trusted: nothing scored
    r3 = _recipe(**kw)
    r3.model(x)
    torch.testing.assert_close(r3.weights(inputs=x, labels=y, trusted=torch.ones(4, dtype=bool)),
                               torch.ones(4))
    assert r3.health._counts["pool_scored"] == 0
    with pytest.raises(TypeError, match="`trusted`"):
        r3.weights(inputs=x, labels=y, trusted=torch.ones(4))
    with pytest.raises(ValueError, match="`trusted`"):
        r3.weights(inputs=x, labels=y, trusted=torch.ones(3, dtype=bool))


def test_targets_without_pseudo_labels_are_the_weights() -> None:
    r = _recipe(dropped_doubt=None)  # nothing reads the logits, so none are needed
    x, y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 0])
    r.model(x)
    w = r.weights(inputs=x, labels=y)
    t = r.targets(y, w)
    assert t.pseudo.tolist() == [False, False] and t.labels.tolist() == [0, 0]
    assert torch.equal(t.weights, w)


def test_targets_errors() -> None:
    r = _recipe(pseudo_labels=True)
    x, y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="`weights\\(\\)` to be called"):
        r.targets(y, torch.ones(2))
    r.model(x)
    w = r.weights(inputs=x, labels=y)
    with pytest.raises(ValueError, match="`logits`"):
        r.targets(y, w)
    with pytest.raises(ValueError, match="`weights` of shape"):
        r.targets(y, w[:1])


def test_calibrated_thresholds_change_who_is_kept() -> None:
    # with the global rule a sample is kept when its label's prototype is the nearest; with
    # q = 0 the threshold of each class is its lowest leave-one-out trusted direction
    g = torch.Generator().manual_seed(0)
    yc = torch.arange(60) // 20
    xc = torch.randn(60, 3, generator=g) * 0.3 + torch.eye(3)[yc]
    net = Net()
    r = SurrogateRecipe(3, model=net, head=net.fc, clean_data=(xc, yc),
                        config=RecipeConfig(warmup_epochs=0, alpha_switch=0, clean_passes=0,
                                            thresholds="calibrated", calibration_quantile=0.0,
                                            eval_features=False, dropped_weight=0.0))
    r.start_epoch(0)
    r.refresh_prototypes()
    x = torch.tensor([[0.55, 0.45, 0.0], [0.45, 0.55, 0.0], [0.2, 0.5, 0.6]])
    y = torch.tensor([0, 0, 0])
    net(x)
    w = r.weights(inputs=x, labels=y)
    d_loo, _ = leave_one_out_directions(xc, yc, 3)
    t0 = d_loo[yc == 0].min()
    d = r.directions(labels=y, features=x, alpha=0.0)
    assert torch.equal(w > 0, d > t0.to(d))
    assert not torch.equal(w > 0, d > 0)  # the calibrated rule is not the global one here


def test_config_checks_the_new_options() -> None:
    with pytest.raises(ValueError, match="`thresholds`"):
        RecipeConfig(thresholds="local")
    with pytest.raises(ValueError, match="`drop_rate`"):
        RecipeConfig(thresholds="calibrated", drop_rate=0.3)
    with pytest.raises(ValueError, match="`calibration_quantile`"):
        RecipeConfig(calibration_quantile=1.0)
    with pytest.raises(ValueError, match="`pseudo_confidence`"):
        RecipeConfig(pseudo_confidence=1.5)
    with pytest.raises(TypeError, match="`pseudo_labels`"):
        RecipeConfig(pseudo_labels=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`dropped_target`"):
        RecipeConfig(dropped_target="prototype")
    with pytest.raises(ValueError, match="`bootstrap_share`"):
        RecipeConfig(bootstrap_share=0.0)
    with pytest.raises(ValueError, match="`bootstrap_start`"):
        RecipeConfig(bootstrap_start=-1)


# ---------------------------------------------------------------------- calibration holdout
def test_holdout_split_holds_k_of_every_class_out() -> None:
    from robustweights.recipe.calibration import holdout_split

    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    x = torch.arange(len(y)).float().unsqueeze(1)  # an input is its index
    (xt, yt), (xh, yh) = holdout_split((x, y), 2, 3)
    assert torch.bincount(yh, minlength=3).tolist() == [2, 2, 2]
    kept, held = xt[:, 0].long().tolist(), xh[:, 0].long().tolist()
    assert sorted(kept + held) == list(range(len(y))) and not set(kept) & set(held)
    assert kept == sorted(kept) and held == sorted(held), "original order kept"
    assert torch.equal(y[xt[:, 0].long()], yt) and torch.equal(y[xh[:, 0].long()], yh)
    again = holdout_split((x, y), 2, 3)[1][0]
    assert torch.equal(again, xh), "a fixed shuffle: the same split every time"
    assert holdout_split((x, y), 2, 3, seed=1)[1][0].tolist() != xh.tolist()
    with pytest.raises(ValueError, match=r"`calibration_holdout` = 4.*classes \[0, 1\]"):
        holdout_split((x, y), 4, 3)  # 4, 4 and 5 images: none left to train on in 0 and 1
    loader = [(x[:4], y[:4])]
    with pytest.raises(ValueError, match="`calibration_data` instead"):
        holdout_split(loader, 1, 3)


def test_recipe_with_calibration_holdout_never_trains_on_the_held_images() -> None:
    yc = torch.arange(60) % 3
    xc = torch.arange(60).float().unsqueeze(1).repeat(1, 3)  # an input is its index
    net = Net()
    r = SurrogateRecipe(3, model=net, head=net.fc, clean_data=(xc, yc), clean_batch_size=7,
                        thresholds="calibrated", calibration_holdout=4, clean_passes=3)
    xh, yh = r.calibration_data
    assert torch.bincount(yh, minlength=3).tolist() == [4, 4, 4]
    held = set(xh[:, 0].long().tolist())
    r.start_epoch(0)
    seen = [int(i) for xb, _ in r.clean_batches() for i in xb[:, 0].long()]
    assert len(seen) == 3 * 48 and not held & set(seen), "3 passes over the other 48"
    assert r.prototype_data is r.clean_data and len(r.clean_data[1]) == 48
    with pytest.raises(ValueError, match="`calibration_data` or `calibration_holdout`"):
        SurrogateRecipe(3, model=net, head=net.fc, clean_data=(xc, yc), calibration_data=(xc, yc),
                        thresholds="calibrated", calibration_holdout=4)
    with pytest.raises(ValueError, match="`thresholds='calibrated'` with `calibration_holdout`"):
        RecipeConfig(calibration_holdout=4)
    with pytest.raises(ValueError, match="`calibration_holdout`"):
        RecipeConfig(thresholds="calibrated", calibration_holdout=-1)
