"""Every bad input gets a clear error that names the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustweights import (
    FeatureCapture,
    MetaReweighter,
    ModelMetaReweighter,
    SurrogateReweighter,
    WeightedLoss,
)

rng = np.random.default_rng(0)
F = rng.normal(size=(6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])
G = rng.normal(size=(9, 4))
YC = np.array([0, 1, 2] * 3)


def fbr(**kw):
    return SurrogateReweighter(3, alpha=0.1, **kw)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=1), "`num_classes` to be an integer >= 2, but got 1"),
    (dict(num_classes=2.5), "`num_classes` to be an integer >= 2"),
    (dict(num_classes=True), "`num_classes` to be an integer >= 2"),
    (dict(num_classes=3, alpha=-1), "`alpha` to be a non-negative finite float, but got -1"),
    (dict(num_classes=3, alpha=float("nan")), "`alpha` to be a non-negative finite float"),
    (dict(num_classes=3, ratio=0.0), r"`ratio` to be a float in \(0, 1\], but got 0.0"),
    (dict(num_classes=3, ratio=1.5), r"`ratio` to be a float in \(0, 1\]"),
    (dict(num_classes=3, w_max=0), "`w_max` to be a positive finite float, but got 0"),
    (dict(num_classes=3, w_init=1.0), "`w_init` to be below `w_max`"),
    (dict(num_classes=3, threshold=-0.1), "`threshold` to be a non-negative"),
    (dict(num_classes=3, mode="fast"), "`mode` to be 'recompute' or 'incremental'"),
    (dict(num_classes=3, eta=0), "`eta` to be a positive finite float"),
    (dict(num_classes=3, missing_class_weight=2.0), "`missing_class_weight` to be at most"),
])
def test_surrogate_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SurrogateReweighter(**kwargs)


def test_callable_alpha_is_checked_when_used():
    rw = SurrogateReweighter(3, alpha=lambda epoch: -1.0)
    with pytest.raises(ValueError, match=r"`alpha\(epoch\)` to be a non-negative"):
        rw.weights(features=F, labels=Y, clean_features=G, clean_labels=YC)


@pytest.mark.parametrize("kwargs, match", [
    (dict(normalization="softmax"), "`normalization` to be one of"),
    (dict(lr=0.0), "`lr` to be a positive finite float"),
])
def test_meta_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MetaReweighter(3, **kwargs)


@pytest.mark.parametrize("batch, match, exc", [
    (dict(features=F[:, :3]), "`features` to have the clean set's dimension D = 4, but got 3",
     ValueError),
    (dict(features=F[0]), r"`features` to be 2-D \(N, D\), but got shape \(4,\)", ValueError),
    (dict(features=F[:0], labels=Y[:0]), "`features` to hold at least one sample", ValueError),
    (dict(labels=Y[:5]), "`labels` to have 6 entries, but got 5", ValueError),
    (dict(labels=Y + 1), r"`labels` to lie in \[0, 2\], but got values in \[1, 3\]", ValueError),
    (dict(labels=Y - 1), r"`labels` to lie in \[0, 2\], but got values in \[-1, 1\]", ValueError),
    (dict(labels=Y.astype(float)), "`labels` to be integer class indices, but got", TypeError),
    (dict(labels=Y.reshape(2, 3)), "`labels` to be 1-D", ValueError),
    (dict(features=np.where(np.eye(6, 4) > 0, np.nan, F)), "`features` to be finite, but got 4",
     ValueError),
    (dict(features=np.full((6, 4), np.inf)), "`features` to be finite", ValueError),
    (dict(features=F.astype(np.int64)), "`features` to have a floating dtype", TypeError),
    (dict(features="abc"), "`features` to be a NumPy array, torch.Tensor or DLPack", TypeError),
    (dict(features=None), "`features` to be given, but got None", ValueError),
    (dict(labels=None), "`labels` to be given, but got None", ValueError),
])
def test_fbr_batch_errors(batch, match, exc):
    args = dict(features=F, labels=Y, clean_features=G, clean_labels=YC)
    args.update(batch)
    with pytest.raises(exc, match=match):
        fbr().weights(**args)


@pytest.mark.parametrize("clean, match", [
    (dict(clean_features=G[:, :2]), "`features` to have the clean set's dimension D = 2"),
    (dict(clean_labels=YC[:4]), "`clean_labels` to have 9 entries, but got 4"),
    (dict(clean_labels=YC + 5), r"`clean_labels` to lie in \[0, 2\]"),
    (dict(clean_features=G[:0], clean_labels=YC[:0]), "`clean_features` to hold at least one"),
    (dict(clean_features=G * np.nan), "`clean_features` to be finite"),
    (dict(clean_labels=np.zeros(9, int)), "`clean_labels` to cover at least 2 classes, but got 1"),
    (dict(clean_features=None), "`clean_features` to be given, but got None"),
])
def test_fbr_clean_errors(clean, match):
    args = dict(features=F, labels=Y, clean_features=G, clean_labels=YC)
    args.update(clean)
    with pytest.raises(ValueError, match=match):
        fbr().weights(**args)


def test_no_clean_set_at_all():
    with pytest.raises(ValueError, match=r"Expected a clean batch .* or a clean set cached"):
        fbr().weights(features=F, labels=Y)


def test_streaming_dimension_change_is_rejected():
    rw = fbr()
    rw.update_clean(features=G, labels=YC)
    with pytest.raises(ValueError, match="did the feature dimension change"):
        rw.update_clean(features=G[:, :3], labels=YC)


def test_sample_ids_checked():
    rw = SurrogateReweighter(3, mode="incremental")
    with pytest.raises(ValueError, match=r"`sample_ids` to have shape \(6,\), but got \(2,\)"):
        rw.weights(features=F, labels=Y, clean_features=G, clean_labels=YC,
                   sample_ids=np.array([0, 1]))
    with pytest.raises(ValueError, match="`sample_ids` to be non-negative, but got minimum -5"):
        rw.weights(features=F, labels=Y, clean_features=G, clean_labels=YC,
                   sample_ids=-np.arange(6))


def test_meta_batch_errors():
    z = rng.normal(size=(6, 3))
    args = dict(logits=z, features=F, labels=Y, clean_logits=rng.normal(size=(9, 3)),
                clean_features=G, clean_labels=YC)
    rw = MetaReweighter(3)
    with pytest.raises(ValueError, match=r"`logits` to have 3 columns, but got shape \(6, 4\)"):
        rw.weights(**{**args, "logits": rng.normal(size=(6, 4))})
    with pytest.raises(ValueError,
                       match=r"`logits` to have as many rows as `features` \(5\), but got 6"):
        rw.weights(**{**args, "features": F[:5]})
    with pytest.raises(ValueError, match="`logits` to be finite"):
        rw.weights(**{**args, "logits": z * np.inf})
    with pytest.raises(ValueError, match="`logits` to be given"):
        rw.weights(**{**args, "logits": None})
    with pytest.raises(ValueError, match="`features` to have the clean set's dimension D = 3"):
        rw.weights(**{**args, "clean_features": G[:, :3]})


def test_full_network_errors():
    net = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    y = torch.randint(0, 3, (5,))
    with pytest.raises(TypeError, match=r"`model` to be a torch\.nn\.Module"):
        ModelMetaReweighter(lambda t: t, nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ValueError, match="reduction='none'"):
        ModelMetaReweighter(net, nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="`batch_scope` to be 'global' or 'local'"):
        ModelMetaReweighter(net, nn.CrossEntropyLoss(reduction="none"), batch_scope="all")
    rw = ModelMetaReweighter(net, lambda out, t: nn.functional.cross_entropy(out, t))
    with pytest.raises(ValueError, match=r"`loss_fn` to return per-sample losses of shape \(5,\)"):
        rw.weights(inputs=x, labels=y, clean_inputs=x, clean_labels=y)
    rw = ModelMetaReweighter(net, nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ValueError, match="clean gradient cached"):
        rw.weights(inputs=x, labels=y)
    with pytest.raises(ValueError, match=r"`clean_labels` to be given, but got None"):
        rw.weights(inputs=x, labels=y, clean_inputs=x)
    with pytest.raises(ValueError, match=r"`clean_inputs` to be given, but got None"):
        rw.weights(inputs=x, labels=y, clean_labels=y)
    with pytest.raises(ValueError, match="`inputs` to hold at least one sample"):
        rw.weights(inputs=x[:0], labels=y[:0], clean_inputs=x, clean_labels=y)
    with pytest.raises(ValueError, match="`clean_inputs` to hold at least one sample"):
        rw.weights(inputs=x, labels=y, clean_inputs=x[:0], clean_labels=y[:0])
    with pytest.raises(ValueError, match="`inputs` to be given"):
        rw.weights(labels=y, clean_inputs=x, clean_labels=y)
    with pytest.raises(ValueError, match="`labels` to be given"):
        rw.weights(inputs=x, clean_inputs=x, clean_labels=y)
    with pytest.raises(TypeError, match=r"`inputs` to be a torch\.Tensor"):
        rw.weights(inputs=x.numpy(), labels=y, clean_inputs=x, clean_labels=y)


def test_helper_errors():
    with pytest.raises(TypeError, match=r"`module` to be a torch\.nn\.Module"):
        FeatureCapture("fc")  # type: ignore[arg-type]
    cap = FeatureCapture(nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match="No features captured yet"):
        _ = cap.features
    with pytest.raises(ValueError, match="`reduction` to be 'mean', 'sum' or 'none'"):
        WeightedLoss(nn.CrossEntropyLoss(), reduction="avg")  # type: ignore[arg-type]
    crit = WeightedLoss(nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"`weights` of shape \(2,\), but got \(3,\)"):
        crit(torch.zeros(2, 3), torch.tensor([0, 1]), weights=torch.ones(3))


def test_positional_batch_inputs_are_refused_with_a_hint():
    with pytest.raises(TypeError, match=r"SurrogateReweighter\.weights\(\) takes its inputs "
                                        r"as keyword arguments only, e\.g\. `weights\("
                                        r"features=\.\.\., labels=\.\.\.\)`, but got 2 "
                                        r"positional"):
        fbr().weights(F, Y)


def test_empty_clean_batch_is_refused_on_one_process():
    # Only a distributed rank may hold no clean sample (tests/test_distributed.py).
    with pytest.raises(ValueError, match=r"`features` to hold at least one sample"):
        fbr().update_clean(features=G[:0], labels=YC[:0])
    with pytest.raises(ValueError, match=r"`clean_features` to hold at least one sample"):
        fbr().weights(features=F, labels=Y, clean_features=G[:0], clean_labels=YC[:0])


def test_clean_updates_stay_pending_until_used():
    rw = fbr()
    rw.update_clean(features=G[:4], labels=YC[:4])
    rw.update_clean(features=G[4:], labels=YC[4:])
    assert rw.clean.pending
    w = rw.weights(features=F, labels=Y)
    assert not rw.clean.pending
    np.testing.assert_allclose(w, fbr().weights(features=F, labels=Y, clean_features=G,
                                                clean_labels=YC), rtol=1e-12)


def test_integer_argument_checks():
    from robustweights._validation import check_nonneg_int

    assert check_nonneg_int(0, "epoch") == 0 and check_nonneg_int(np.int64(3), "epoch") == 3
    for bad in (-1, 1.0, True, "2"):
        with pytest.raises(ValueError, match=rf"Expected `epoch` to be a non-negative integer, "
                                             rf"but got {bad!r}"):
            check_nonneg_int(bad, "epoch")
    with pytest.raises(ValueError, match="`switch_epoch` to be a non-negative integer"):
        from robustweights import AlphaSchedule

        AlphaSchedule(3, switch_epoch=-1)


def test_surrogate_weights_check_the_weight_bounds_as_the_class_does():
    from robustweights.functional import surrogate_weights

    for kw, match in ((dict(w_init=1.0), "`w_init` to be below `w_max`"),
                      (dict(missing_class_weight=2.0), "`missing_class_weight` to be at most")):
        with pytest.raises(ValueError, match=match):
            fbr(**kw)
        with pytest.raises(ValueError, match=match):
            surrogate_weights(F, Y, G, YC, alpha=0.1, **kw)


def test_numpy_integer_num_classes_is_accepted():
    rw = SurrogateReweighter(np.int64(3), alpha=0.5)
    assert rw.num_classes == 3 and type(rw.num_classes) is int
    with pytest.raises(ValueError, match="`num_classes` to be an integer >= 2, but got True"):
        SurrogateReweighter(True)  # type: ignore[arg-type]
