"""L2RW: closed forms vs autograd through the literal virtual SGD step, state, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import l2rw_normalise, l2rw_virtual_step_reference
from torch import nn

from robustweights import FeatureCapture, MetaReweighter, ModelMetaReweighter, weighted_mean
from robustweights.functional import model_meta_weights

CE = nn.CrossEntropyLoss(reduction="none")


def head_data(seed, B=32, M=20, D=6, C=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(D, C).to(dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(C, D, generator=g, dtype=dtype))
        head.bias.copy_(torch.randn(C, generator=g, dtype=dtype))
    h = torch.randn(B, D, generator=g, dtype=dtype)
    hc = torch.randn(M, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (B,), generator=g)
    yc = torch.randint(0, C, (M,), generator=g)
    return head, h, y, hc, yc


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lr", [1.0, 0.1])
def test_last_layer_matches_virtual_step_autograd(seed, lr):
    head, h, y, hc, yc = head_data(seed)
    u_ref = l2rw_virtual_step_reference(head, CE, h, y, hc, yc, lr=lr)
    rw = MetaReweighter(4, normalization="none", lr=lr)
    with torch.no_grad():
        z, zc = head(h), head(hc)
    rw.weights(logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc,
               clean_labels=yc)
    torch.testing.assert_close(rw.last_scores, u_ref, rtol=1e-5, atol=1e-12)
    w = MetaReweighter(4).weights(logits=z, features=h, labels=y, clean_logits=zc,
                                  clean_features=hc, clean_labels=yc)
    np.testing.assert_allclose(w.numpy(), l2rw_normalise(u_ref.numpy()), rtol=1e-5, atol=1e-12)


def test_last_layer_without_bias_matches_bias_free_head():
    head, h, y, hc, yc = head_data(7)
    nobias = nn.Linear(6, 4, bias=False).double()
    with torch.no_grad():
        nobias.weight.copy_(head.weight)
        z, zc = nobias(h), nobias(hc)
    u_ref = l2rw_virtual_step_reference(nobias, CE, h, y, hc, yc)
    rw = MetaReweighter(4, normalization="none", bias=False)
    rw.weights(logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc,
               clean_labels=yc)
    torch.testing.assert_close(rw.last_scores, u_ref, rtol=1e-5, atol=1e-12)


class SmallNet(nn.Module):
    def __init__(self, batchnorm: bool = True, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(5, 16)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(16))
        layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3)]
        self.body = nn.Sequential(*layers[:-1])
        self.fc = layers[-1]

    def forward(self, x):
        return self.fc(self.body(x))


def net_data(seed, B=24, M=16):
    torch.manual_seed(seed)
    net = SmallNet().double()
    x = torch.randn(B, 5, dtype=torch.float64)
    xc = torch.randn(M, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (B,))
    yc = torch.randint(0, 3, (M,))
    return net, x, y, xc, yc


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("train_mode", [True, False])
def test_full_network_matches_virtual_step_autograd(seed, train_mode):
    net, x, y, xc, yc = net_data(seed)
    net.train(train_mode)
    u_ref = l2rw_virtual_step_reference(net, CE, x, y, xc, yc, lr=0.5)
    rw = ModelMetaReweighter(net, CE, normalization="none", lr=0.5)
    rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    torch.testing.assert_close(rw.last_scores, u_ref, rtol=1e-5, atol=1e-12)


def test_full_network_head_only_equals_last_layer_form():
    # Freeze everything but the head: the full-network scores are the last-layer closed form.
    net, x, y, xc, yc = net_data(4)
    net.eval()
    for p in net.body.parameters():
        p.requires_grad_(False)
    full = ModelMetaReweighter(net, CE, normalization="none")
    full.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    cap = FeatureCapture(net.fc)
    with torch.no_grad():
        z = net(x)
        h = cap.features
        zc = net(xc)
        hc = cap.features
    last = MetaReweighter(3, normalization="none")
    last.weights(logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc,
                 clean_labels=yc)
    torch.testing.assert_close(full.last_scores, last.last_scores, rtol=1e-8, atol=1e-12)


def test_full_network_leaves_model_untouched():
    net, x, y, xc, yc = net_data(1)
    net.body[3].p = 0.3  # dropout consumes RNG in the extra passes
    net.train()
    net(x).sum().backward()  # existing .grad must survive
    before = {k: v.clone() for k, v in net.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    torch.manual_seed(123)
    rw = ModelMetaReweighter(net, CE)
    w = rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    after_rng = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3)), "RNG state changed"
    assert net.training and net.body[1].training
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), f"state `{k}` changed"
    for k, p in net.named_parameters():
        assert torch.equal(p.grad, grads[k]), f"grad of `{k}` changed"
    assert torch.isfinite(w).all()


def test_clean_gradient_streaming_equals_one_batch():
    torch.manual_seed(0)
    net = SmallNet(batchnorm=False).double()
    x, xc = torch.randn(10, 5, dtype=torch.float64), torch.randn(30, 5, dtype=torch.float64)
    y, yc = torch.randint(0, 3, (10,)), torch.randint(0, 3, (30,))
    one = ModelMetaReweighter(net, CE, normalization="none")
    one.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    stream = ModelMetaReweighter(net, CE, normalization="none")
    stream.set_clean(inputs=xc[:7], labels=yc[:7])
    stream.update_clean(inputs=xc[7:19], labels=yc[7:19])
    stream.update_clean(inputs=xc[19:], labels=yc[19:])
    stream.weights(inputs=x, labels=y)
    torch.testing.assert_close(stream.last_scores, one.last_scores, rtol=1e-10, atol=1e-14)


def test_last_layer_streaming_equals_one_batch():
    head, h, y, hc, yc = head_data(2, M=50)
    with torch.no_grad():
        z, zc = head(h), head(hc)
    one = MetaReweighter(4)
    one.set_clean(logits=zc, features=hc, labels=yc)
    stream = MetaReweighter(4)
    for s in (slice(0, 13), slice(13, 40), slice(40, 50)):
        stream.update_clean(logits=zc[s], features=hc[s], labels=yc[s])
    torch.testing.assert_close(stream.weights(logits=z, features=h, labels=y),
                               one.weights(logits=z, features=h, labels=y))


def test_normalisations():
    u = torch.tensor([2.0, -1.0, 1.0, 0.0])
    from robustweights.normalization import normalize_weights

    torch.testing.assert_close(normalize_weights(u, "sum"), torch.tensor([2 / 3, 0, 1 / 3, 0]))
    torch.testing.assert_close(normalize_weights(u, "mean"), torch.tensor([8 / 3, 0, 4 / 3, 0]))
    torch.testing.assert_close(normalize_weights(u, "none"), torch.tensor([2.0, 0, 1, 0]))
    for normalization in ("sum", "mean"):
        torch.testing.assert_close(normalize_weights(-u.abs(), normalization=normalization),
                                   torch.zeros(4))


def test_all_zero_when_no_sample_helps():
    # Clean set of class 0 only, confidently predicted; training samples confidently class 1,
    # labelled 1: every gradient step on them raises the clean loss.
    h = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[-5.0, 5.0], [-6.0, 6.0]], dtype=torch.float64)
    hc = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    zc = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    rw = MetaReweighter(2)
    w = rw.weights(logits=z, features=h, labels=torch.tensor([1, 1]), clean_logits=zc,
                   clean_features=hc, clean_labels=torch.tensor([0]))
    assert (rw.last_scores < 0).all()
    assert torch.equal(w, torch.zeros(2, dtype=torch.float64))


@st.composite
def l2rw_batches(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    B, M = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    C, D = draw(st.integers(2, 6)), draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return (rng.normal(size=(B, C)) * scale, rng.normal(size=(B, D)), rng.integers(0, C, B),
            rng.normal(size=(M, C)) * scale, rng.normal(size=(M, D)), rng.integers(0, C, M), C)


@settings(max_examples=60, deadline=None)
@given(l2rw_batches())
def test_weights_nonnegative_and_sum_to_one_or_zero(data):
    z, h, y, zc, hc, yc, C = data
    w = MetaReweighter(C).weights(logits=z, features=h, labels=y, clean_logits=zc,
                                  clean_features=hc, clean_labels=yc)
    assert np.isfinite(w).all() and (w >= 0).all()
    assert abs(w.sum() - 1) < 1e-9 or w.sum() == 0
    wm = MetaReweighter(C, normalization="mean").weights(
        logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc, clean_labels=yc)
    assert abs(wm.mean() - 1) < 1e-9 or wm.sum() == 0


@settings(max_examples=40, deadline=None)
@given(l2rw_batches(), st.randoms(use_true_random=False))
def test_l2rw_permutation_equivariance(data, rnd):
    z, h, y, zc, hc, yc, C = data
    p = np.array(rnd.sample(range(len(y)), len(y)))
    q = np.array(rnd.sample(range(len(yc)), len(yc)))
    rw = MetaReweighter(C)
    w = rw.weights(logits=z, features=h, labels=y, clean_logits=zc, clean_features=hc,
                   clean_labels=yc)
    wp = rw.weights(logits=z[p], features=h[p], labels=y[p], clean_logits=zc[q],
                    clean_features=hc[q], clean_labels=yc[q])
    np.testing.assert_allclose(wp, w[p], rtol=1e-9, atol=1e-12)


def test_fused_weights_and_losses_equal_separate_passes():
    net, x, y, xc, yc = net_data(5)
    net.train()
    twin = SmallNet().double()
    twin.load_state_dict(net.state_dict())
    separate = ModelMetaReweighter(twin, CE, normalization="mean")
    w_ref = separate.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    loss_ref = weighted_mean(CE(twin(x), y), w_ref)  # the step's own forward
    loss_ref.backward()

    fused = ModelMetaReweighter(net, CE, normalization="mean")
    w, losses = fused.weights_and_losses(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    torch.testing.assert_close(w, w_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused.last_scores, separate.last_scores, rtol=1e-10, atol=1e-14)
    weighted_mean(losses, w).backward()
    for (k, p), q in zip(net.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-10, atol=1e-12, msg=k)
    # The fused pass is the training forward: BatchNorm statistics move exactly once, as in twin.
    for (k, b), c in zip(net.named_buffers(), twin.buffers(), strict=True):
        assert torch.equal(b, c), f"buffer `{k}` differs from one plain forward"


def test_batch_inputs_are_keyword_only():
    _, h, y, _, _ = head_data(0)
    with pytest.raises(TypeError, match=r"takes its inputs as keyword arguments only, e\.g\. "
                                        r"`weights\(logits=\.\.\., features=\.\.\., labels"):
        MetaReweighter(4).weights(h, y)
    net, x, y, xc, yc = net_data(0)
    rw = ModelMetaReweighter(net, CE)
    for method in (rw.weights, rw.weights_and_losses):
        with pytest.raises(TypeError, match=r"ModelMetaReweighter\.\w+\(\) takes its inputs as "
                                            r"keyword arguments only, e\.g\. `\w+\(inputs=\.\.\., "
                                            r"labels=\.\.\.\)`, but got 2 positional"):
            method(x, y, clean_inputs=xc, clean_labels=yc)


def test_model_reweighter_is_a_reweighter():
    from robustweights import Reweighter

    net, *_ = net_data(0)
    assert isinstance(ModelMetaReweighter(net, CE), Reweighter)
    assert not hasattr(MetaReweighter, "from_model")


@pytest.mark.parametrize("kind", ["last_layer", "model"])
def test_per_call_clean_batch_leaves_the_cache_alone(kind):
    # One rule for every reweighter: a clean batch passed to weights() is a temporary.
    net, x, y, xc, yc = net_data(3)
    net.eval()
    if kind == "model":
        rw = ModelMetaReweighter(net, CE, normalization="none")
        cache, other = dict(inputs=xc[:8], labels=yc[:8]), dict(inputs=xc[8:], labels=yc[8:])
        batch = dict(inputs=x, labels=y)
    else:
        head, h, y, hc, yc = head_data(3)
        with torch.no_grad():
            z, zc = head(h), head(hc)
        rw = MetaReweighter(4, normalization="none")
        cache = dict(logits=zc[:8], features=hc[:8], labels=yc[:8])
        other = dict(logits=zc[8:], features=hc[8:], labels=yc[8:])
        batch = dict(logits=z, features=h, labels=y)
    rw.set_clean(**cache)
    cached = rw.weights(**batch)
    per_call = rw.weights(**batch, **{f"clean_{k}": v for k, v in other.items()})
    assert not torch.equal(per_call, cached)
    assert torch.equal(rw.weights(**batch), cached), "the per-call clean batch replaced the cache"


def test_model_reweighter_checks_labels():
    net, x, y, xc, yc = net_data(0)
    rw = ModelMetaReweighter(net, CE, num_classes=3)
    with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 2\], but got values in \[3,"):
        rw.weights(inputs=x, labels=y + 3, clean_inputs=xc, clean_labels=yc)
    with pytest.raises(ValueError, match=r"`clean_labels` to lie in \[0, 2\]"):
        rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc + 3)
    rw = ModelMetaReweighter(net, CE)  # no class count: the lower end only
    with pytest.raises(ValueError, match=r"`labels` to be non-negative class indices, but got"):
        rw.weights(inputs=x, labels=y - 1, clean_inputs=xc, clean_labels=yc)
    with pytest.raises(ValueError, match=r"`labels` to have 24 entries, but got 23"):
        rw.weights(inputs=x, labels=y[:23], clean_inputs=xc, clean_labels=yc)
    with pytest.raises(TypeError, match=r"`labels` to be integer class indices"):
        rw.update_clean(inputs=xc, labels=yc.double())
    with pytest.raises(ValueError, match=r"`labels` to be 1-D"):
        rw.weights(inputs=x, labels=y.reshape(4, 6), clean_inputs=xc, clean_labels=yc)
    w = rw.weights(inputs=x, labels=y.numpy(), clean_inputs=xc, clean_labels=yc.numpy())
    assert isinstance(w, torch.Tensor) and w.shape == (24,)  # labels may be any array


def test_reprs_show_the_configuration():
    assert repr(MetaReweighter(3, normalization="mean")) == (
        "MetaReweighter(num_classes=3, normalization='mean', lr=1.0, bias=True)")
    net = SmallNet()
    assert repr(ModelMetaReweighter(net, CE, lr=0.5)) == (
        "ModelMetaReweighter(model=SmallNet, loss_fn=CrossEntropyLoss(), lr=0.5, "
        "normalization='sum')")
    assert repr(ModelMetaReweighter(net, CE, num_classes=3)).endswith(", num_classes=3)")


@pytest.mark.parametrize("train_mode", [False, True])
def test_model_reweighter_under_autocast_computes_in_full_precision(train_mode):
    # Forward-mode AD under autocast fails inside torch (an eval-mode BatchNorm mixes float32
    # and bfloat16); the reweighter turns autocast off for its passes: the same weights.
    from robustweights.functional import model_meta_weights

    torch.manual_seed(0)
    net = SmallNet().train(train_mode)  # float32, BatchNorm
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    xc, yc = torch.randn(8, 5), torch.randint(0, 3, (8,))
    rw = ModelMetaReweighter(net, CE, normalization="none")
    want = rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
        fused, losses = rw.weights_and_losses(inputs=x, labels=y, clean_inputs=xc,
                                              clean_labels=yc)
        functional = model_meta_weights(net, CE, x, y, xc, yc, normalization="none")
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(functional, want)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-7)
    assert losses.dtype == torch.float32 and losses.requires_grad


def test_model_reweighter_without_num_classes_names_a_label_out_of_range():
    net, x, y, xc, yc = net_data(0)
    rw = ModelMetaReweighter(net, CE)  # the upper end is the loss function's to find
    with pytest.raises(ValueError, match=r"Expected `labels` to be class indices `loss_fn` accepts "
                                         r"for outputs of shape \(24, 3\), but it raised "
                                         r"IndexError.*pass `num_classes`"):
        rw.weights(inputs=x, labels=y + 3, clean_inputs=xc, clean_labels=yc)
    with pytest.raises(ValueError, match=r"Expected `clean_labels` to be class indices"):
        rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc + 3)


@pytest.mark.parametrize("kind", ["last_layer", "model"])
def test_clean_set_empty_on_every_rank_is_an_error_on_every_use(kind, monkeypatch):
    # Under torch.distributed a rank may pass an empty clean batch; when every rank did, each
    # use of that clean set is an error (not only the first, then silent zero weights).
    from robustweights import _distributed as distributed

    monkeypatch.setattr(distributed, "is_distributed", lambda group=None: True)
    monkeypatch.setattr(distributed, "all_reduce_sums", lambda sums, group=None: None)
    net, x, y, xc, yc = net_data(0)
    if kind == "model":
        rw = ModelMetaReweighter(net, CE, batch_scope="local")
        rw.set_clean(inputs=xc[:0], labels=yc[:0])
        batch = dict(inputs=x, labels=y)
    else:
        head, h, y, hc, yc = head_data(0)
        rw = MetaReweighter(4, batch_scope="local")
        rw.set_clean(logits=head(hc[:0]).detach(), features=hc[:0], labels=yc[:0])
        batch = dict(logits=head(h).detach(), features=h, labels=y)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"Expected the clean set to hold at least one sample "
                                             r"over all ranks, but got none"):
            rw.weights(**batch)


def test_model_reweighter_refuses_a_non_finite_clean_gradient():
    """Found by the fuzz: NaN clean inputs were cached silently by set_clean / update_clean
    (the error came at the next weights() call, naming the training `inputs`)."""
    net, x, y, xc, yc = net_data(0)
    bad = xc.clone()
    bad[3, 1] = float("nan")
    rw = ModelMetaReweighter(net, CE, num_classes=3)
    for method in (rw.set_clean, rw.update_clean):
        with pytest.raises(ValueError, match=r"clean gradient to be finite.*`inputs`"):
            method(inputs=bad, labels=yc)
    assert rw.clean.empty, "a refused clean batch was cached"
    with pytest.raises(ValueError, match=r"clean gradient to be finite.*`clean_inputs`"):
        rw.weights(inputs=x, labels=y, clean_inputs=bad, clean_labels=yc)
    with pytest.raises(ValueError, match=r"clean gradient to be finite.*`clean_inputs`"):
        model_meta_weights(net, CE, x, y, bad, yc)


def test_set_clean_that_fails_leaves_the_cache_alone():
    """Found by the fuzz: set_clean emptied the cache before checking its batch."""
    net, x, y, xc, yc = net_data(0)
    rw = ModelMetaReweighter(net, CE, num_classes=3)
    rw.set_clean(inputs=xc, labels=yc)
    before = rw.weights(inputs=x, labels=y)
    with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 2\]"):
        rw.set_clean(inputs=xc, labels=yc + 3)
    assert torch.equal(rw.weights(inputs=x, labels=y), before)
    lin = MetaReweighter(3)
    f, z = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    lin.set_clean(features=f, logits=z, labels=yc)
    with pytest.raises(ValueError, match=r"`features` to be finite"):
        lin.set_clean(features=f * float("nan"), logits=z, labels=yc)
    assert not lin.clean.empty
