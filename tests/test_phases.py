"""Phases: statistics vs naive references, detection on synthetic trajectories with known
boundaries, the online monitor (agreement with the offline rule, warn once, freeze), errors."""

from __future__ import annotations

import json
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from robustweights import MetaReweighter, SurrogateReweighter
from robustweights.phases import (
    PHASES,
    PhaseBoundaries,
    PhaseMonitor,
    PostFilteringWarning,
    coupling_magnitude,
    detect_phases,
    effective_sample_size,
    kept_fraction,
    kept_precision_recall,
)

# ----------------------------------------------------------------------------- references


def naive_ess(w):
    # Exact rational arithmetic: squares of tiny weights (1e-160) underflow in floats.
    w = [Fraction(x) for x in w]
    s = sum(w)
    sq = sum(x * x for x in w)
    return float(s * s / sq) if sq > 0 else 0.0


def naive_precision_recall(w, clean, tau=0.0):
    kept = [x > tau for x in w]
    hits = sum(1 for k, c in zip(kept, clean, strict=True) if k and c)
    return (hits / sum(kept) if sum(kept) else 0.0, hits / sum(clean) if sum(clean) else 0.0)


def trajectory(T=300, t_filter=40, t_post=150, coupling_peak_at=None, t_coupling=None):
    """Piecewise signals with known boundaries under the default thresholds.

    kept = 1 before ``t_filter`` and <= 0.9 from it; the clean loss falls from 1 to 0.3 before
    ``t_post`` and is <= 0.05 from it; the coupling rises to its peak 2 at ``coupling_peak_at``
    (default min(20, t_post // 2)), then stays >= 0.5 until ``t_coupling`` (default ``t_post``)
    and is <= 0.1 from it.
    """
    t = np.arange(T)
    if coupling_peak_at is None:
        coupling_peak_at = min(20, max(t_post // 2, 1))
    kept = np.where(t < t_filter, 1.0, np.maximum(0.6, 0.9 - 0.002 * (t - t_filter)))
    loss = np.where(t < t_post, 1.0 - 0.7 * t / t_post, 0.05 * 0.99 ** (t - t_post))
    t_c = t_post if t_coupling is None else t_coupling
    rise = 0.5 + 1.5 * t / coupling_peak_at
    coupling = np.where(t <= coupling_peak_at, rise, np.maximum(0.5, 2.0 - 0.01 * t))
    coupling = np.where(t < t_c, coupling, 0.1 * 0.99 ** (t - t_c))
    return kept, loss, coupling


# ----------------------------------------------------------------------------- statistics


def test_ess_known_values():
    assert effective_sample_size([1.0] * 7) == pytest.approx(7.0)
    assert effective_sample_size([0.0, 2.0, 2.0, 0.0, 2.0]) == pytest.approx(3.0)
    assert effective_sample_size(np.zeros(4)) == 0.0
    assert effective_sample_size(torch.tensor([5.0])) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=40),
       st.floats(0.01, 100.0))
@example([3.918032019753505e-160] * 2, 0.5)  # tiny weights: their squares underflow
@example([5e-324], 0.5)  # the scaled weight underflows to 0: a different input, no invariance
def test_ess_matches_naive_and_is_scale_invariant(w, scale):
    ess = effective_sample_size(np.array(w))
    assert ess == pytest.approx(naive_ess(w), rel=1e-9, abs=1e-12)
    assert 0.0 <= ess <= len(w) + 1e-9, "ESS must lie in [0, B]"
    scaled = np.array(w) * scale
    if np.array_equal(scaled > 0, np.array(w) > 0):  # scaling kept every non-zero weight
        assert effective_sample_size(scaled) == pytest.approx(ess, rel=1e-9, abs=1e-12)
    else:
        assert effective_sample_size(scaled) == pytest.approx(naive_ess(scaled.tolist()),
                                                             rel=1e-9, abs=1e-12)


def test_kept_fraction_and_threshold():
    w = [0.0, 0.2, 0.5, 1.0]
    assert kept_fraction(w) == 0.75
    assert kept_fraction(w, threshold=0.5) == 0.25
    assert kept_fraction(torch.zeros(3)) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.7, 1.0]), st.booleans()), min_size=1,
                max_size=50), st.sampled_from([0.0, 0.5]))
def test_precision_recall_matches_naive_loop(pairs, tau):
    w = [p[0] for p in pairs]
    clean = [p[1] for p in pairs]
    got = kept_precision_recall(np.array(w), np.array(clean), threshold=tau)
    assert got == pytest.approx(naive_precision_recall(w, clean, tau))


def test_precision_recall_empty_denominators_are_zero_not_nan():
    assert kept_precision_recall([0.0, 0.0], [True, False]) == (0.0, 0.0)
    assert kept_precision_recall([1.0, 1.0], [False, False]) == (0.0, 0.0)


def test_precision_recall_accepts_integer_masks_and_torch():
    w = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert kept_precision_recall(w, torch.tensor([1, 0, 1, 0])) == (0.5, 0.5)


def test_coupling_magnitude_array_and_scalar():
    assert coupling_magnitude(np.array([0.5, -1.5])) == pytest.approx(1.0)
    assert coupling_magnitude(torch.tensor([-2.0])) == pytest.approx(2.0)
    assert coupling_magnitude(0.25) == 0.25
    assert coupling_magnitude(torch.tensor(3.0)) == 3.0


# ----------------------------------------------------------------------------- detection


def test_detects_known_boundaries():
    kept, loss, coupling = trajectory(t_filter=40, t_post=150)
    b = detect_phases(kept, loss, coupling)
    assert (b.filtering, b.post_filtering) == (40, 150)
    assert [b.phase_at(t) for t in (0, 39, 40, 149, 150, 299)] == [
        "alignment", "alignment", "filtering", "filtering", "post_filtering", "post_filtering"]


@pytest.mark.parametrize("t_filter,t_post", [(1, 2), (10, 200), (60, 61), (100, 250)])
def test_detects_known_boundaries_at_many_positions(t_filter, t_post):
    kept, loss, coupling = trajectory(t_filter=t_filter, t_post=t_post)
    assert detect_phases(kept, loss, coupling) == PhaseBoundaries(t_filter, t_post)


def test_post_filtering_waits_for_the_coupling():
    # The loss is small from step 100 but the coupling only vanishes at step 180.
    kept, loss, coupling = trajectory(t_filter=30, t_post=100, t_coupling=180)
    assert detect_phases(kept, loss, coupling).post_filtering == 180
    # Without a coupling signal, the loss alone decides.
    assert detect_phases(kept, loss).post_filtering == 100


def test_running_peak_not_initial_value():
    # The coupling peaks (2.0) at step 20, four times its initial value 0.5: 0.1 * initial
    # would be reached by the tail much earlier than 0.1 * peak. The tail starts at 0.1 * 0.99^k
    # <= 0.2 = 0.1 * peak, so the boundary is t_post, not later.
    kept, loss, coupling = trajectory(t_filter=10, t_post=120, coupling_peak_at=20)
    assert coupling.max() == pytest.approx(2.0)
    assert detect_phases(kept, loss, coupling).post_filtering == 120
    # With a tail between 0.1 * initial and 0.1 * peak the rule must not fire.
    coupling2 = np.where(np.arange(len(coupling)) >= 120, 0.21, coupling)
    assert detect_phases(kept, loss, coupling2).post_filtering is None


def test_non_vanishing_coupling_is_never_post_filtering():
    # FBR's directions keep their size while the clean loss falls.
    kept, loss, _ = trajectory(t_filter=0, t_post=100)
    b = detect_phases(kept, loss, np.full(len(kept), 0.4))
    assert (b.filtering, b.post_filtering) == (0, None)


def test_post_filtering_before_any_drop_gives_empty_filtering_phase():
    kept, loss, coupling = trajectory(t_filter=500, t_post=80, T=300)
    assert detect_phases(kept, loss, coupling) == PhaseBoundaries(80, 80)


def test_phases_never_go_back():
    kept, loss, coupling = trajectory(t_filter=20, t_post=100)
    kept[150:] = 1.0  # everything kept again
    loss[150:] = 5.0  # and the clean loss jumps
    b = detect_phases(kept, loss, coupling)
    assert (b.filtering, b.post_filtering) == (20, 100)
    assert b.phase_at(299) == "post_filtering"


def test_patience_ignores_short_dips():
    kept, loss, coupling = trajectory(t_filter=50, t_post=150)
    kept[10] = 0.5  # a one-step dip in the kept fraction
    loss[60], coupling[60] = 0.01, 0.01  # and a one-step dip of both post-filtering signals
    assert detect_phases(kept, loss, coupling) == PhaseBoundaries(10, 60)
    assert detect_phases(kept, loss, coupling, patience=3) == PhaseBoundaries(52, 152)


def test_thresholds_move_the_boundaries():
    t = np.arange(100)
    kept = 1.0 - 0.005 * t - 0.001  # dropped fraction 0.005 t + 0.001
    loss = 0.97 ** t
    assert detect_phases(kept, filter_onset=0.1).filtering == 20
    assert detect_phases(kept, filter_onset=0.3).filtering == 60
    assert detect_phases(kept, loss, loss_fraction=0.5).post_filtering == 23  # 0.97^23 < 0.5
    assert detect_phases(kept, loss, loss_fraction=0.1).post_filtering == 76  # 0.97^76 < 0.1


def test_missing_steps_are_nan():
    kept, loss, coupling = trajectory(t_filter=10, t_post=100)
    loss = loss.copy()
    loss[100:110] = np.nan  # no clean evaluation on these steps
    coupling[:50] = np.nan
    assert detect_phases(kept, loss, coupling).post_filtering == 110


def test_all_phases_named_in_order():
    assert PHASES == ("alignment", "filtering", "post_filtering")
    assert PhaseBoundaries().phase_at(10**6) == "alignment"


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 3))
def test_online_monitor_agrees_with_offline_rule_and_is_causal(seed, patience):
    rng = np.random.default_rng(seed)
    T = 60
    kept = np.clip(1.0 - np.cumsum(rng.random(T) * 0.02), 0.0, 1.0)
    loss = np.exp(-np.cumsum(rng.random(T) * 0.1)) + rng.random(T) * 0.02
    coupling = np.exp(-np.cumsum(rng.random(T) * 0.1)) * (1 + rng.random(T))
    offline = detect_phases(kept, loss, coupling, patience=patience)
    mon = PhaseMonitor(patience=patience, warn=False)
    for k, lo, c in zip(kept, loss, coupling, strict=True):
        n = 100
        w = np.r_[np.ones(round(k * n)), np.zeros(n - round(k * n))]
        mon.update(w, clean_loss=lo, coupling=c)
    kept_used = np.array(mon.to_dict()["kept_fraction"])
    assert mon.boundaries == detect_phases(kept_used, loss, coupling, patience=patience)
    # Causality: the boundaries found on any prefix are those of the full run, cut at the prefix.
    cut = T // 2
    prefix = detect_phases(kept[:cut], loss[:cut], coupling[:cut], patience=patience)
    for name in ("filtering", "post_filtering"):
        full = getattr(offline, name)
        assert getattr(prefix, name) == (full if full is not None and full < cut else None)


# ----------------------------------------------------------------------------- monitor


def feed(mon, T=300, t_filter=40, t_post=150, **kwargs):
    kept, loss, coupling = trajectory(T=T, t_filter=t_filter, t_post=t_post)
    reports = []
    for t in range(T):
        n_kept = round(kept[t] * 100)
        w = np.r_[np.full(n_kept, 1.0 + t), np.zeros(100 - n_kept)]
        reports.append(mon.update(w, clean_loss=loss[t], coupling=coupling[t], **kwargs))
    return reports


def test_monitor_reports_phases_and_statistics():
    mon = PhaseMonitor(warn=False)
    reports = feed(mon)
    assert [r.phase for r in reports[38:42]] == ["alignment"] * 2 + ["filtering"] * 2
    assert reports[150].phase == "post_filtering" and mon.phase == "post_filtering"
    assert mon.boundaries == PhaseBoundaries(40, 150)
    r = reports[100]
    n_kept = round((0.9 - 0.002 * 60) * 100)
    assert r.kept_fraction == pytest.approx(n_kept / 100)
    assert r.effective_sample_size == pytest.approx(n_kept)  # n_kept equal non-zero weights
    assert (r.precision, r.recall) == (None, None)
    assert r.step == 100 and r.clean_loss == pytest.approx(1.0 - 0.7 * 100 / 150)


def test_monitor_precision_recall_with_true_labels():
    mon = PhaseMonitor(warn=False)
    w = np.array([1.0, 0.5, 0.0, 0.0, 0.2])
    clean = np.array([True, False, True, False, True])
    r = mon.update(w, true_clean=clean)
    assert (r.precision, r.recall) == pytest.approx(naive_precision_recall(w, clean))


def test_monitor_accepts_reweighter_outputs_as_coupling():
    rng = np.random.default_rng(0)
    F, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    G, yc = rng.normal(size=(30, 6)), np.arange(30) % 3
    Z, Zc = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
    meta = MetaReweighter(3)
    w = meta.weights(logits=Z, features=F, labels=y, clean_logits=Zc, clean_features=G,
                     clean_labels=yc)
    fbr = SurrogateReweighter(3, alpha=0.0)
    w2 = fbr.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
    mon = PhaseMonitor(warn=False)
    r = mon.update(w, coupling=meta.last_scores)
    assert r.coupling == pytest.approx(float(meta.last_scores.abs().mean()))
    r2 = mon.update(w2, coupling=fbr.last_scores)
    assert r2.coupling == pytest.approx(float(fbr.last_scores.abs().mean()))


def test_warns_once_on_entering_post_filtering():
    mon = PhaseMonitor()
    kept, loss, coupling = trajectory(t_filter=40, t_post=150)
    for t in range(150):
        with warnings.catch_warnings():
            warnings.simplefilter("error", PostFilteringWarning)  # no warning before
            mon.update(np.ones(10) * kept[t], clean_loss=loss[t], coupling=coupling[t])
    with pytest.warns(PostFilteringWarning, match=r"post-filtering phase at step 150.*freez"):
        mon.update(np.ones(10), clean_loss=loss[150], coupling=coupling[150])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PostFilteringWarning)  # and never again
        for t in range(151, 300):
            mon.update(np.ones(10), clean_loss=loss[t], coupling=coupling[t])


def test_warning_can_be_turned_off_and_is_a_user_warning():
    assert issubclass(PostFilteringWarning, UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PostFilteringWarning)
        feed(PhaseMonitor(warn=False))


def test_reset_forgets_everything_and_warns_again():
    mon = PhaseMonitor(freeze=True)
    with pytest.warns(PostFilteringWarning):
        feed(mon)
    assert mon.frozen
    mon.reset()
    assert (mon.history, mon.frozen, mon.phase, mon.boundaries) == (
        [], False, "alignment", PhaseBoundaries())
    with pytest.warns(PostFilteringWarning):
        feed(mon)


def test_freeze_returns_weights_stored_before_post_filtering():
    mon = PhaseMonitor(freeze=True, warn=False)
    fresh = np.array([9.0, 9.0, 9.0])
    loss = [1.0, 0.5, 0.4, 0.05, 0.01]
    ws = [np.array([0.5, 0.5, 0.5]), np.array([0.8, 0.2, 0.5]), np.array([0.9, 0.0, 0.6]),
          np.array([0.1, 0.7, 0.3]), np.array([0.2, 0.2, 0.2])]
    for t in range(3):
        mon.update(ws[t], clean_loss=loss[t])
        assert not mon.frozen
        assert mon.weights_to_use(fresh) is fresh  # unchanged until frozen
    mon.update(ws[3], clean_loss=loss[3])  # post-filtering detected here
    assert mon.frozen and mon.phase == "post_filtering"
    # The weights of the update that entered post-filtering are not stored.
    np.testing.assert_array_equal(mon.weights_to_use(fresh), ws[2])
    mon.update(ws[4], clean_loss=loss[4])
    np.testing.assert_array_equal(mon.weights_to_use(fresh), ws[2])


def test_freeze_with_minibatch_ids_and_unseen_ids():
    mon = PhaseMonitor(freeze=True, warn=False)
    mon.update(torch.tensor([0.3, 0.0]), sample_ids=torch.tensor([4, 1]), clean_loss=1.0)
    mon.update(torch.tensor([0.7, 0.1]), sample_ids=torch.tensor([0, 4]), clean_loss=0.9)
    mon.update(torch.tensor([1.0, 1.0]), sample_ids=torch.tensor([0, 1]), clean_loss=0.01)
    assert mon.frozen
    fresh = torch.tensor([5.0, 5.0, 5.0, 5.0], dtype=torch.float32)
    got = mon.weights_to_use(fresh, sample_ids=torch.tensor([4, 1, 0, 7]))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    # id 4: last stored 0.1; id 1: 0.0; id 0: 0.7; id 7 never seen: the fresh weight.
    torch.testing.assert_close(got, torch.tensor([0.1, 0.0, 0.7, 5.0]))


def test_freeze_preserves_numpy_type_and_dtype():
    mon = PhaseMonitor(freeze=True, warn=False)
    mon.update(np.array([0.25, 0.75], dtype=np.float32), clean_loss=1.0)
    mon.update(np.array([1.0, 1.0], dtype=np.float32), clean_loss=0.0)
    got = mon.weights_to_use(np.array([0.0, 0.0], dtype=np.float32))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    np.testing.assert_array_equal(got, [0.25, 0.75])


def test_without_freeze_the_monitor_never_freezes():
    mon = PhaseMonitor(warn=False)
    feed(mon)
    assert mon.phase == "post_filtering" and not mon.frozen
    w = np.ones(3)
    assert mon.weights_to_use(w) is w


def test_custom_steps_and_json_export():
    mon = PhaseMonitor(warn=False)
    kept, loss, coupling = trajectory(T=50, t_filter=5, t_post=20)
    for t in range(50):
        w = np.r_[np.ones(round(kept[t] * 10)), np.zeros(10 - round(kept[t] * 10))]
        mon.update(w, clean_loss=loss[t], coupling=coupling[t], true_clean=np.ones(10, bool),
                   step=10 * t)
    assert mon.boundaries == PhaseBoundaries(50, 200)
    d = json.loads(json.dumps(mon.to_dict()))
    assert d["step"][:3] == [0, 10, 20] and len(d["kept_fraction"]) == 50
    assert d["boundaries"] == {"filtering": 50, "post_filtering": 200}
    assert d["phase"][-1] == "post_filtering" and d["precision"][0] == 1.0


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("weights,exc,match", [
    (np.zeros((2, 2)), ValueError, r"Expected `weights` to be a non-empty 1-D array, but got "
                                   r"shape \(2, 2\)"),
    (np.zeros(0), ValueError, r"Expected `weights` to be a non-empty 1-D array"),
    (np.array([1.0, np.nan]), ValueError, r"Expected `weights` to be finite, but got 1 NaN/inf"),
    (np.array([1.0, -0.5]), ValueError, r"Expected `weights` to be non-negative, but got "
                                        r"minimum -0.5"),
    (np.array([True, False]), TypeError, r"Expected `weights` to be real numbers, but got dtype "
                                         r"torch.bool"),
    ("abc", TypeError, r"Expected `weights` to be"),
])
def test_weight_errors(weights, exc, match):
    for fn in (effective_sample_size, kept_fraction,
               lambda w: PhaseMonitor(warn=False).update(w)):
        with pytest.raises(exc, match=match):
            fn(weights)


def test_true_clean_errors():
    with pytest.raises(ValueError, match=r"Expected `true_clean` to have shape \(3,\), but got "
                                         r"\(2,\)"):
        kept_precision_recall([1.0, 0.0, 1.0], [True, False])
    with pytest.raises(ValueError, match=r"Expected `true_clean` to be a boolean mask, but got "
                                         r"dtype torch.float64"):
        kept_precision_recall([1.0, 0.0], [0.5, 1.0])
    with pytest.raises(ValueError, match=r"Expected `true_clean` to be a boolean mask, but got "
                                         r"dtype torch.int64"):
        PhaseMonitor().update([1.0, 0.0], true_clean=[2, 0])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(clean_loss=-1.0), ValueError,
     r"Expected `clean_loss` to be a non-negative finite number, but got -1.0"),
    (dict(clean_loss=float("inf")), ValueError,
     r"Expected `clean_loss` to be a non-negative finite number, but got inf"),
    (dict(clean_loss=[0.1, 0.2]), ValueError,
     r"Expected `clean_loss` to be a real scalar, but got shape \(2,\)"),
    (dict(clean_loss=True), TypeError, r"Expected `clean_loss` to be a number, but got True"),
    (dict(coupling=-0.1), ValueError,
     r"Expected `coupling` to be a non-negative finite number, but got -0.1"),
    (dict(coupling=[0.1, np.inf]), ValueError, r"Expected `coupling` to be finite"),
    (dict(sample_ids=[0.0, 1.0]), TypeError,
     r"Expected `sample_ids` to be integers, but got dtype torch.float64"),
    (dict(sample_ids=[0, 1, 2]), ValueError,
     r"Expected `sample_ids` to have shape \(2,\), but got \(3,\)"),
    (dict(sample_ids=[0, -1]), ValueError,
     r"Expected `sample_ids` to be non-negative, but got minimum -1"),
])
def test_update_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        PhaseMonitor().update([1.0, 0.0], **kwargs)


def test_weights_to_use_checks_its_inputs_once_frozen():
    mon = PhaseMonitor(freeze=True, warn=False)
    mon.update([1.0, 0.0], clean_loss=1.0)
    mon.update([1.0, 0.0], clean_loss=0.0)
    with pytest.raises(ValueError, match=r"Expected `sample_ids` to have shape \(2,\)"):
        mon.weights_to_use([1.0, 1.0], sample_ids=[0])
    with pytest.raises(ValueError, match=r"Expected `weights` to be non-negative"):
        mon.weights_to_use([-1.0, 1.0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(filter_onset=0.0), r"Expected `filter_onset` to be a float in \(0, 1\], but got 0.0"),
    (dict(loss_fraction=1.5), r"Expected `loss_fraction` to be a float in \(0, 1\], but got 1.5"),
    (dict(coupling_fraction=-1), r"Expected `coupling_fraction` to be a float in \(0, 1\], but "
                                 r"got -1"),
    (dict(patience=0), r"Expected `patience` to be an integer >= 1, but got 0"),
    (dict(patience=True), r"Expected `patience` to be an integer >= 1, but got True"),
    (dict(patience=1.5), r"Expected `patience` to be an integer >= 1, but got 1.5"),
])
def test_threshold_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PhaseMonitor(**kwargs)
    with pytest.raises(ValueError, match=match):
        detect_phases([1.0, 0.5], **kwargs)


def test_keep_threshold_errors():
    with pytest.raises(ValueError, match=r"Expected `keep_threshold` to be a non-negative finite "
                                         r"float, but got -1"):
        PhaseMonitor(keep_threshold=-1)
    with pytest.raises(ValueError, match=r"Expected `threshold` to be a non-negative finite "
                                         r"float, but got -0.5"):
        kept_fraction([1.0], threshold=-0.5)
    with pytest.raises(ValueError, match=r"Expected `threshold` to be a non-negative"):
        kept_precision_recall([1.0], [True], threshold=float("inf"))


def test_detect_phases_sequence_errors():
    with pytest.raises(ValueError, match=r"Expected `kept_fraction` to lie in \[0, 1\], but got "
                                         r"values in \[0.5, 1.5\]"):
        detect_phases([0.5, 1.5])
    with pytest.raises(ValueError, match=r"Expected `kept_fraction` to be a non-empty 1-D array"):
        detect_phases([])
    with pytest.raises(ValueError, match=r"Expected `clean_loss` to have shape \(2,\) like "
                                         r"`kept_fraction`, but got \(3,\)"):
        detect_phases([1.0, 1.0], [1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match=r"Expected `coupling` to have shape \(2,\)"):
        detect_phases([1.0, 1.0], coupling=np.ones((2, 1)))
    with pytest.raises(ValueError, match=r"Expected `clean_loss` to be non-negative and finite "
                                         r"\(NaN marks a missing step\), but got values in "
                                         r"\[-1.0, 1.0\]"):
        detect_phases([1.0, 1.0], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"Expected `coupling` to be non-negative and finite"):
        detect_phases([1.0, 1.0], coupling=[1.0, np.inf])
