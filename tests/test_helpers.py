"""WeightedLoss, weighted_mean and FeatureCapture."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustweights import FeatureCapture, WeightedLoss, weighted_mean


def test_weighted_loss_matches_manual_formula():
    z = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([1.0, 0.0, 0.5, 2.0, 1.0])
    manual = (F.cross_entropy(z, y, reduction="none") * w).mean()
    crit = nn.CrossEntropyLoss()  # a "mean" module: WeightedLoss works on a copy
    got = WeightedLoss(crit)(z, y, weights=w)
    torch.testing.assert_close(got, manual)
    assert crit.reduction == "mean", "the user's loss module must not be modified"
    torch.testing.assert_close(WeightedLoss(crit, reduction="sum")(z, y, w), manual * 5)
    torch.testing.assert_close(weighted_mean(F.cross_entropy(z, y, reduction="none"), w.numpy()),
                               manual)


def test_weights_are_constants():
    z = torch.randn(4, 3, requires_grad=True)
    w = torch.rand(4, requires_grad=True)
    WeightedLoss(lambda a, b: F.cross_entropy(a, b, reduction="none"))(
        z, torch.tensor([0, 1, 2, 0]), weights=w).backward()
    assert z.grad is not None and w.grad is None


def test_unweighted_call_is_the_plain_loss():
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(WeightedLoss(nn.CrossEntropyLoss())(z, y), F.cross_entropy(z, y))


def test_feature_capture_records_head_input():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    head = nn.Linear(4, 2)
    x = torch.randn(6, 3, 8, 8)
    with FeatureCapture(head) as cap:
        logits = head(conv(x).flatten(1))
        torch.testing.assert_close(cap.features, conv(x).flatten(1))
        assert not cap.features.requires_grad
        torch.testing.assert_close(head(cap.features), logits)
        assert cap.count == 2  # two forwards of the head so far
    head(torch.randn(2, 4))
    assert cap.features.shape == (6, 4), "the hook must be gone after the context exits"
    assert cap.count == 2


def test_feature_capture_flattens_and_can_keep_graph():
    head = nn.Conv2d(5, 2, 1)
    cap = FeatureCapture(head, detach=False)
    x = torch.randn(3, 5, 1, 1, requires_grad=True)
    head(x)
    assert cap.features.shape == (3, 5) and cap.features.requires_grad
    cap.remove()
    np.testing.assert_equal(cap.features.shape, (3, 5))


def test_reprs_show_the_configuration():
    from torch import nn

    from robustweights import AlphaSchedule, FeatureCapture, PhaseMonitor, SurrogateReweighter

    assert repr(WeightedLoss(nn.CrossEntropyLoss(), reduction="sum")) == (
        "WeightedLoss(CrossEntropyLoss(), reduction='sum')")
    assert repr(SurrogateReweighter(10)).startswith(
        "SurrogateReweighter(num_classes=10, alpha=AlphaSchedule(num_classes=10, "
        "switch_epoch=40), ratio=None, mode='recompute', w_init=0.5, w_max=1.0")
    assert repr(AlphaSchedule(3, 7)) == "AlphaSchedule(num_classes=3, switch_epoch=7)"
    assert repr(PhaseMonitor(patience=2)).startswith("PhaseMonitor(filter_onset=0.05, "
                                                     "loss_fraction=0.1, coupling_fraction=0.1, "
                                                     "patience=2")
    with FeatureCapture(nn.Linear(2, 2)) as cap:
        assert repr(cap) == "FeatureCapture(Linear, detach=True)"


def test_public_types_are_exported():
    import robustweights as rw

    assert rw.detect_phases([1.0, 0.5]).__class__ is rw.PhaseBoundaries
    assert isinstance(rw.PhaseMonitor().update([1.0, 0.0]), rw.PhaseReport)
    assert issubclass(rw.SurrogateReweighter, rw.Reweighter)
    assert issubclass(rw.MetaReweighter, rw.Reweighter)
