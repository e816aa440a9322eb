"""FBR: kernels vs the literal B x M Gram reference, properties, modes, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import fbr_reference

from robustweights import AlphaSchedule, SurrogateReweighter
from robustweights.functional.surrogate import surrogate_class_sums, surrogate_prototypes


def make_data(seed, B=64, M=90, D=12, C=5, missing=()):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, D)) * 2.0
    yc = rng.integers(0, C, size=M)
    for c in missing:
        yc[yc == c] = (c + 1) % C
    G = centres[yc] + rng.normal(size=(M, D))
    ytrue = rng.integers(0, C, size=B)
    F = centres[ytrue] + rng.normal(size=(B, D))
    y = ytrue.copy()
    flip = rng.random(B) < 0.4
    y[flip] = rng.integers(0, C, size=int(flip.sum()))
    return F, y, G, yc


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("ratio", [None, 0.2])
def test_matches_literal_gram_reference(seed, alpha, ratio):
    F, y, G, yc = make_data(seed)
    rw = SurrogateReweighter(5, alpha=alpha, ratio=ratio)
    w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    d_ref, w_ref = fbr_reference(F, y, G, yc, 5, alpha, ratio=ratio)
    np.testing.assert_allclose(rw.last_scores.numpy(), d_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(w, w_ref, rtol=1e-9, atol=1e-12)
    assert (w > 0).any() and (w == 0).any(), "test data should exercise both kept and dropped"


def test_alpha_zero_keeps_exactly_the_nearest_prototype_class():
    # With alpha = 0, d_i > 0 exactly when y_i is the class of highest centred similarity.
    F, y, G, yc = make_data(0, B=400)
    rw = SurrogateReweighter(5, alpha=0.0)
    w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    centred = G - np.mean([G[yc == c].mean(0) for c in range(5)], axis=0)
    protos = np.stack([centred[yc == c].mean(0) for c in range(5)])
    mu = np.mean([G[yc == c].mean(0) for c in range(5)], axis=0)
    nearest = ((F - mu) @ protos.T).argmax(1)
    np.testing.assert_array_equal(w > 0, nearest == y)
    assert 0.3 < (w > 0).mean() < 0.9


def test_reference_defaults():
    rw = SurrogateReweighter(10)
    assert (rw.w_init, rw.w_max, rw.mode, rw.ratio) == (0.5, 1.0, "recompute", None)
    assert rw.current_alpha() == pytest.approx(1 / 9)
    rw.set_epoch(40)
    assert rw.current_alpha() == 0.0
    assert AlphaSchedule(10, switch_epoch=5)(4) == pytest.approx(1 / 9)


def test_prototype_form_equals_gram_similarity():
    F, _, G, yc = make_data(3, M=200)
    Ft, Gt, yct = map(torch.tensor, (F, G, yc))
    mu, P, _ = surrogate_prototypes(**surrogate_class_sums(Gt, yct, 5))
    S_proto = (Ft - mu) @ P.T
    gram = (Ft - mu) @ (Gt - mu).T
    S_gram = torch.stack([gram[:, yct == c].mean(1) for c in range(5)], 1)
    torch.testing.assert_close(S_proto, S_gram, rtol=1e-10, atol=1e-10)


def test_streaming_equals_one_batch():
    F, y, G, yc = make_data(1, M=300)
    one = SurrogateReweighter(5, alpha=0.2)
    one.set_clean(features=G, labels=yc)
    stream = SurrogateReweighter(5, alpha=0.2)
    for chunk in np.array_split(np.arange(300), 7):
        stream.update_clean(features=G[chunk], labels=yc[chunk])
    stream.sync_clean(), one.sync_clean()  # merge the pending sums (no collective here)
    for key in ("class_sums", "class_counts"):
        torch.testing.assert_close(stream.clean[key], one.clean[key])
    np.testing.assert_allclose(stream.weights(features=F, labels=y),
                               one.weights(features=F, labels=y), atol=1e-12)


def test_cached_clean_equals_per_call_clean():
    F, y, G, yc = make_data(2)
    rw = SurrogateReweighter(5, alpha=0.1)
    per_call = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    assert rw.clean.empty, "a per-call clean batch must not overwrite the cache"
    rw.set_clean(features=G, labels=yc)
    np.testing.assert_array_equal(rw.weights(features=F, labels=y), per_call)


def test_missing_clean_class_is_finite_and_configurable():
    F, y, G, yc = make_data(5, missing=(2,))
    assert not (yc == 2).any() and (y == 2).any()
    for mcw in (0.0, 0.5):
        rw = SurrogateReweighter(5, alpha=0.3, missing_class="ignore", missing_class_weight=mcw)
        w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
        assert np.isfinite(w).all()
        np.testing.assert_array_equal(w[y == 2], mcw)
        _, w_ref = fbr_reference(F, y, G, yc, 5, 0.3, missing_weight=mcw)
        np.testing.assert_allclose(w, w_ref, atol=1e-12)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("mode", ["recompute", "incremental"])
def test_missing_clean_class_is_an_error_by_default(cached, mode):
    # A class the batch uses without a clean sample is never silent: an error naming it.
    F, y, G, yc = make_data(5, missing=(2, 4))
    y[:2] = [2, 4]
    rw = SurrogateReweighter(5, alpha=0.3, mode=mode)
    clean = dict(clean_features=G, clean_labels=yc)
    if cached:
        rw.set_clean(features=G, labels=yc)
        clean = {}
    ids = np.arange(len(y)) if mode == "incremental" else None
    with pytest.raises(ValueError, match=r"Expected `labels` to use only classes present in the "
                                         r"clean set, but got classes \[2, 4\], which have no "
                                         r"sample in the clean set.*missing_class='warn' or "
                                         r"'ignore'"):
        rw.weights(features=F, labels=y, sample_ids=ids, **clean)
    keep = (y != 2) & (y != 4)  # a batch of present classes only: no error, no warning
    rw.weights(features=F[keep], labels=y[keep], sample_ids=None if ids is None else ids[keep],
               **clean)


def test_missing_clean_class_warns_with_the_option():
    F, y, G, yc = make_data(5, missing=(2,))
    rw = SurrogateReweighter(5, alpha=0.3, missing_class="warn", missing_class_weight=0.5)
    with pytest.warns(UserWarning, match=r"`labels` uses classes \[2\], which have no sample in "
                                         r"the clean set.*`missing_class_weight` = 0.5"):
        w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    np.testing.assert_array_equal(w[y == 2], 0.5)


def test_missing_class_option_is_checked():
    with pytest.raises(ValueError, match=r"Expected `missing_class` to be 'error', 'warn' or "
                                         r"'ignore', but got 'drop'"):
        SurrogateReweighter(3, missing_class="drop")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:With num_classes=2 and alpha=0")
def test_top_two_tie_gives_no_positive_direction():
    # Two clean classes symmetric about the centre; a training point equidistant to both.
    G = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    yc = np.array([0, 1, 0, 1])
    rw = SurrogateReweighter(2, alpha=0.0)
    rw.weights(features=np.array([[0.0, 3.0], [2.0, 0.0]]), labels=np.array([0, 0]),
               clean_features=G, clean_labels=yc)
    d = rw.last_scores.numpy()
    assert d[0] == 0.0 and d[1] > 0


def test_no_negative_direction_gives_w_max():
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    with pytest.warns(UserWarning, match="num_classes=2 and alpha=0 no direction is ever negative"):
        rw = SurrogateReweighter(2, alpha=0.0, w_max=0.9)
    w = rw.weights(features=np.array([[2.0, 0.0], [-3.0, 0.0]]), labels=np.array([0, 1]),
                   clean_features=G, clean_labels=np.array([0, 1]))
    np.testing.assert_array_equal(w, [0.9, 0.9])


def test_hand_computed_case():
    # Prototypes +-e1 (mu = 0). Features 2e1 (label 0), e1 (label 0), -e1 (label 0):
    # S = [[2,-2],[1,-1],[-1,1]]; subtracting each row's second-largest entry gives
    # S' = [[4,0],[2,0],[0,2]].
    # alpha = 0.5: d = [4, 2, 0 - 0.5*2] = [4, 2, -1]; eta = 0.5/1 = 0.5;
    # w = clip(0.5 + 0.5 d) = [1, 1, 0]; threshold keeps [1, 1, 0].
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    rw = SurrogateReweighter(2, alpha=0.5)
    w = rw.weights(features=np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
                   labels=np.array([0, 0, 0]), clean_features=G, clean_labels=np.array([0, 1]))
    np.testing.assert_allclose(rw.last_scores.numpy(), [4.0, 2.0, -1.0])
    np.testing.assert_allclose(w, [1.0, 1.0, 0.0])
    # With w_max = 3 the intermediate weights are visible: 0.5 + 0.5 * [4, 2] = [2.5, 1.5].
    rw = SurrogateReweighter(2, alpha=0.5, w_max=3.0)
    w = rw.weights(features=np.array([[2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
                   labels=np.array([0, 0, 0]), clean_features=G, clean_labels=np.array([0, 1]))
    np.testing.assert_allclose(w, [2.5, 1.5, 0.0])


def test_incremental_mode_steps_per_sample_state():
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    rw = SurrogateReweighter(2, alpha=0.5, mode="incremental", eta=0.1)
    F = np.array([[2.0, 0.0], [-1.0, 0.0]])
    ids = np.array([7, 3])
    # d = [4, -1]: state 0.5 + 0.1 d = [0.9, 0.4]; 0.4 <= 0.5 is thresholded to 0.
    w = rw.weights(features=F, labels=np.array([0, 0]), clean_features=G,
                   clean_labels=np.array([0, 1]), sample_ids=ids)
    np.testing.assert_allclose(w, [0.9, 0.0])
    w = rw.weights(features=F, labels=np.array([0, 0]), clean_features=G,
                   clean_labels=np.array([0, 1]), sample_ids=ids)
    np.testing.assert_allclose(w, [1.0, 0.0])  # 0.9 + 0.4 clipped at w_max; 0.4 - 0.1 = 0.3
    np.testing.assert_allclose(rw._store.values[[3, 7]].numpy(), [0.3, 1.0])
    with pytest.raises(ValueError, match="`sample_ids` to be given in incremental mode"):
        rw.weights(features=F, labels=np.array([0, 0]), clean_features=G,
                   clean_labels=np.array([0, 1]))


def test_ratio_sets_the_step_from_the_k_most_negative_sample():
    G = np.array([[1.0, 0.0], [-1.0, 0.0]])
    F = np.array([[3.0, 0.0], [-1.0, 0.0], [-2.0, 0.0], [-4.0, 0.0]])
    # Label 0 everywhere, alpha 1: rows S = [3,-3], [-1,1], [-2,2], [-4,4] shift to
    # S' = [6,0], [0,2], [0,4], [0,8], so d = S'_0 - S'_1 = [6, -2, -4, -8].
    rw = SurrogateReweighter(2, alpha=1.0, ratio=0.25, w_max=10.0)  # k = 1: eta = 0.5/8
    w = rw.weights(features=F, labels=np.zeros(4, int), clean_features=G,
                   clean_labels=np.array([0, 1]))
    np.testing.assert_allclose(rw.last_scores.numpy(), [6, -2, -4, -8])
    np.testing.assert_allclose(w, [0.5 + 6 / 16, 0, 0, 0])


def test_ratio_keeps_the_dropped_set_under_the_default_threshold():
    # The threshold applies after the step (as in the reference): with the default threshold
    # w0 every sample with d <= 0 ends at or below w0 and is dropped, ratio or not; ratio only
    # makes the step smaller, so the kept weights w0 + eta * d are smaller. With threshold=0 the
    # dropped set is exactly the samples the step drives to 0, which ratio does change.
    F, y, G, yc = make_data(11, B=100)
    kw = dict(features=F, labels=y, clean_features=G, clean_labels=yc)
    plain_rw = SurrogateReweighter(5, alpha=0.25)
    plain = plain_rw.weights(**kw)
    d = plain_rw.last_scores.numpy()
    ratio = SurrogateReweighter(5, alpha=0.25, ratio=0.1).weights(**kw)
    negative = (d < 0).sum()
    assert 10 < negative < 100, f"the case needs more than k = 10 negative directions: {d}"
    np.testing.assert_array_equal(plain == 0, d <= 0)
    np.testing.assert_array_equal(ratio == 0, plain == 0)  # the same dropped set
    # the kept weights: w0 + eta * d clipped at w_max, with the k-th smallest step for ratio
    steps = np.sort(0.5 / np.abs(d[d < 0]))
    for w, eta in ((plain, steps[-1]), (ratio, steps[9])):  # k = floor(0.1 * 100) = 10
        kept = d > 0
        np.testing.assert_allclose(w[kept], np.minimum(0.5 + eta * d[kept], 1.0), rtol=1e-12)
    assert (ratio[d > 0] <= plain[d > 0]).all() and (ratio[d > 0] < plain[d > 0]).any()
    # threshold = 0: only the samples the step drives to 0 are dropped
    soft = SurrogateReweighter(5, alpha=0.25, threshold=0.0).weights(**kw)
    soft_ratio = SurrogateReweighter(5, alpha=0.25, ratio=0.1, threshold=0.0).weights(**kw)
    # (0 up to rounding: w0 + (w0/|d_j|) d_j of the sample that sets the step may be 5e-17)
    np.testing.assert_array_equal(soft < 1e-12, d < 0)  # every negative reaches 0 w/o ratio
    reaches_zero = (d < 0) & (0.5 / np.abs(np.where(d < 0, d, -1.0)) <= steps[9])
    np.testing.assert_array_equal(soft_ratio < 1e-12, reaches_zero)
    assert reaches_zero.sum() == 10 and (soft_ratio < 1e-12).sum() < (soft < 1e-12).sum()


# ---------------------------------------------------------------- hypothesis properties
# Properties hold for C = 2 with alpha = 0 too, where the library warns that nothing is filtered.
binary_alpha0 = pytest.mark.filterwarnings("ignore:With num_classes=2 and alpha=0")
@st.composite
def batches(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    B = draw(st.integers(1, 40))
    C = draw(st.integers(2, 6))
    D = draw(st.integers(1, 8))
    M = draw(st.integers(2, 40))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    F = rng.normal(size=(B, D)) * scale
    G = rng.normal(size=(M, D)) * scale
    yc = rng.integers(0, C, size=M)
    yc[:2] = [0, 1]  # at least two clean classes
    y = rng.integers(0, C, size=B)
    return F, y, G, yc, C


@binary_alpha0
@settings(max_examples=60, deadline=None)
@given(batches(), st.floats(0, 2), st.sampled_from([None, 0.3]),
       st.sampled_from([0.5, 1.0, 2.0]))
def test_weights_finite_and_in_range(data, alpha, ratio, w_max):
    F, y, G, yc, C = data
    rw = SurrogateReweighter(C, alpha=alpha, ratio=ratio, w_max=w_max, w_init=0.25,
                             missing_class="ignore")
    w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    assert np.isfinite(w).all() and (w >= 0).all() and (w <= w_max).all(), w


@binary_alpha0
@settings(max_examples=40, deadline=None)
@given(batches(), st.floats(0, 1), st.randoms(use_true_random=False))
def test_permutation_equivariance(data, alpha, rnd):
    F, y, G, yc, C = data
    perm = np.array(rnd.sample(range(len(y)), len(y)))
    cperm = np.array(rnd.sample(range(len(yc)), len(yc)))
    rw = SurrogateReweighter(C, alpha=alpha, missing_class="ignore")
    w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    wp = rw.weights(features=F[perm], labels=y[perm], clean_features=G[cperm],
                    clean_labels=yc[cperm])
    np.testing.assert_allclose(wp, w[perm], rtol=1e-9, atol=1e-9)


@binary_alpha0
@settings(max_examples=40, deadline=None)
@given(batches(), st.floats(0, 1), st.floats(-50, 50))
def test_invariant_to_constant_feature_shift(data, alpha, shift):
    F, y, G, yc, C = data
    c = np.full(F.shape[1], shift) + np.arange(F.shape[1])
    rw = SurrogateReweighter(C, alpha=alpha, missing_class="ignore")
    w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    d = rw.last_scores.numpy()
    ws = rw.weights(features=F + c, labels=y, clean_features=G + c, clean_labels=yc)
    scale = np.abs(F).max() + np.abs(G).max() + abs(shift) + F.shape[1]
    np.testing.assert_allclose(rw.last_scores.numpy(), d, atol=1e-9 * scale**2)
    # Weights depend on the signs of d and on eta (set by the smallest negative |d|): compare
    # them only when no direction sits at a floating-point knife edge.
    if np.all(np.abs(d) > 1e-6 * scale**2):
        np.testing.assert_allclose(ws, w, rtol=1e-5, atol=1e-6)


def test_cached_prototypes_follow_every_clean_update():
    F, y, G, yc = make_data(6, M=120)
    rw = SurrogateReweighter(5, alpha=0.2)
    rw.set_clean(features=G[:60], labels=yc[:60])
    first = rw.weights(features=F, labels=y)
    np.testing.assert_array_equal(rw.weights(features=F, labels=y), first)  # cache hit
    rw.update_clean(features=G[60:], labels=yc[60:])  # must invalidate the cached prototypes
    fresh = SurrogateReweighter(5, alpha=0.2)
    fresh.set_clean(features=G, labels=yc)
    np.testing.assert_array_equal(rw.weights(features=F, labels=y),
                                  fresh.weights(features=F, labels=y))
    rw.set_clean(features=G[:60], labels=yc[:60])
    np.testing.assert_array_equal(rw.weights(features=F, labels=y), first)
    rw.reset_clean()
    with pytest.raises(ValueError, match="clean set cached"):
        rw.weights(features=F, labels=y)
