"""The functional forms equal the classes bit for bit, and never communicate across ranks."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import robustweights.functional as functional
import robustweights.functional.meta as fmeta
import robustweights.functional.model_meta as fmodel
import robustweights.functional.surrogate as fsurrogate
from robustweights import MetaReweighter, ModelMetaReweighter, SurrogateReweighter
from robustweights.functional import meta_weights, model_meta_weights, surrogate_weights


def _data(seed: int, dtype: torch.dtype, C: int = 4, missing: bool = False):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, 6, generator=g, dtype=torch.float64) * 2
    y, yc = torch.randint(0, C, (30,), generator=g), torch.randint(0, C, (25,), generator=g)
    if missing:
        yc[yc == 0] = 1  # class 0 has no clean sample
    F = (centres[y] + torch.randn(30, 6, generator=g, dtype=torch.float64)).to(dtype)
    G = (centres[yc] + torch.randn(25, 6, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.where(torch.rand(30, generator=g) < 0.3, torch.randint(0, C, (30,), generator=g), y)
    W = torch.randn(C, 6, generator=g, dtype=torch.float64).to(dtype)
    return F, y, G, yc, F @ W.T, G @ W.T


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([torch.float16, torch.bfloat16, torch.float32,
                                               torch.float64]),
       st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([None, 0.25]), st.booleans(),
       st.sampled_from([0.0, 0.5]))
def test_surrogate_weights_equal_the_class(seed, dtype, alpha, ratio, missing, missing_weight):
    F, y, G, yc, _, _ = _data(seed, dtype, missing=missing)
    opts = dict(alpha=alpha, ratio=ratio, missing_class="ignore",
                missing_class_weight=missing_weight)
    want = SurrogateReweighter(4, **opts).weights(features=F, labels=y, clean_features=G,
                                                  clean_labels=yc)
    got = surrogate_weights(F, y, G, yc, num_classes=4, **opts)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


def test_surrogate_weights_missing_clean_class_is_an_error_by_default():
    F, y, G, yc, _, _ = _data(0, torch.float64, missing=True)
    with pytest.raises(ValueError, match=r"Expected `labels` to use only classes present in the "
                                         r"clean set, but got classes \[0\]"):
        surrogate_weights(F, y, G, yc, alpha=0.3, num_classes=4)
    with pytest.warns(UserWarning, match=r"`labels` uses classes \[0\]"):
        w = surrogate_weights(F, y, G, yc, alpha=0.3, num_classes=4, missing_class="warn")
    assert bool((w[y == 0] == 0).all())
    with pytest.raises(ValueError, match=r"Expected `missing_class` to be 'error', 'warn' or "
                                         r"'ignore', but got None"):
        surrogate_weights(F, y, G, yc, alpha=0.3, missing_class=None)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([torch.float16, torch.bfloat16, torch.float32,
                                               torch.float64]),
       st.sampled_from(["sum", "mean", "none"]), st.booleans(), st.sampled_from([1.0, 0.1]))
def test_meta_weights_equal_the_class(seed, dtype, normalization, bias, lr):
    F, y, G, yc, Z, ZC = _data(seed, dtype)
    opts = dict(normalization=normalization, bias=bias, lr=lr)
    want = MetaReweighter(4, **opts).weights(logits=Z, features=F, labels=y, clean_logits=ZC,
                                             clean_features=G, clean_labels=yc)
    got = meta_weights(Z, F, y, ZC, G, yc, **opts)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


def test_functional_takes_numpy_and_infers_num_classes():
    F, y, G, yc, Z, ZC = _data(3, torch.float64)
    want = SurrogateReweighter(4, alpha=0.2).weights(features=F, labels=y, clean_features=G,
                                                     clean_labels=yc)
    got = surrogate_weights(F.numpy(), y.numpy(), G.numpy(), yc.numpy(), alpha=0.2)
    assert isinstance(got, torch.Tensor) and torch.equal(got, want)
    got = meta_weights(Z.numpy(), F.numpy(), y.numpy(), ZC.numpy(), G.numpy(), yc.numpy())
    assert torch.equal(got, MetaReweighter(4).weights(logits=Z, features=F, labels=y,
                                                      clean_logits=ZC, clean_features=G,
                                                      clean_labels=yc))


def test_functional_errors_name_the_argument():
    F, y, G, yc, Z, ZC = _data(0, torch.float32)
    with pytest.raises(ValueError, match="Expected `clean_features` to be finite"):
        surrogate_weights(F, y, G * float("nan"), yc, alpha=0.1)
    with pytest.raises(ValueError, match="Expected `alpha` to be a non-negative finite float"):
        surrogate_weights(F, y, G, yc, alpha=-1.0)
    with pytest.raises(ValueError, match="`clean_labels` to cover at least 2 classes"):
        surrogate_weights(F, y, G, torch.zeros_like(yc), alpha=0.1)
    with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 3\]"):
        surrogate_weights(F, y + 4, G, yc, alpha=0.1, num_classes=4)
    with pytest.raises(ValueError, match=r"`features` to have the clean set's dimension D = 5"):
        surrogate_weights(F, y, G[:, :5], yc, alpha=0.1)
    with pytest.raises(ValueError, match=r"`clean_logits` to have 4 columns"):
        meta_weights(Z, F, y, ZC[:, :3], G, yc)
    with pytest.raises(ValueError, match=r"`logits` to have as many rows as `features` \(30\)"):
        meta_weights(Z[:5], F, y, ZC, G, yc)
    with pytest.raises(ValueError, match="`normalization` to be one of"):
        meta_weights(Z, F, y, ZC, G, yc, normalization="max")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        surrogate_weights(F, y, G, yc)  # type: ignore[call-arg]  # alpha is required


def test_functional_kernels_never_communicate():
    # The classes do the syncing; the pure kernels must not reach torch.distributed at all.
    # Checked on the code's names, imports and arguments (docstrings may mention ranks).
    for module in (fsurrogate, fmeta, fmodel):
        tree = ast.parse(inspect.getsource(module))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((getattr(node, "module", None) or "").split("."))
                names.update(part for a in node.names for part in a.name.split("."))
        for word in ("distributed", "dist", "all_reduce", "all_gather", "process_group"):
            assert word not in names, f"{module.__name__} uses `{word}`"


def test_numpy_result_of_the_class_matches_functional():
    F, y, G, yc, _, _ = _data(1, torch.float32)
    w = SurrogateReweighter(4, alpha=0.3).weights(features=F.numpy(), labels=y.numpy(),
                                                  clean_features=G.numpy(), clean_labels=yc.numpy())
    want = surrogate_weights(F, y, G, yc, alpha=0.3, num_classes=4)
    np.testing.assert_array_equal(w, want.numpy())


CE = nn.CrossEntropyLoss(reduction="none")


def _net_data(seed: int, dtype: torch.dtype = torch.float64):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 3))
    net = net.to(dtype)
    x, xc = torch.randn(20, 5, dtype=dtype), torch.randn(14, 5, dtype=dtype)
    return net, x, torch.randint(0, 3, (20,)), xc, torch.randint(0, 3, (14,))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalization", ["sum", "mean", "none"])
@pytest.mark.parametrize("train_mode", [True, False])
def test_model_meta_weights_equal_the_class(seed, dtype, normalization, train_mode):
    net, x, y, xc, yc = _net_data(seed, dtype)
    net.train(train_mode)
    rw = ModelMetaReweighter(net, CE, normalization=normalization, lr=0.5)
    want = rw.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    got = model_meta_weights(net, CE, x, y, xc, yc, normalization=normalization, lr=0.5)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)
    fused, _ = rw.weights_and_losses(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-7)


def test_model_meta_weights_errors_name_the_argument():
    net, x, y, xc, yc = _net_data(0)
    with pytest.raises(TypeError, match=r"`model` to be a torch\.nn\.Module"):
        model_meta_weights(lambda t: t, CE, x, y, xc, yc)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction='none'"):
        model_meta_weights(net, nn.CrossEntropyLoss(), x, y, xc, yc)
    with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 2\], but got values in"):
        model_meta_weights(net, CE, x, y + 3, xc, yc, num_classes=3)
    with pytest.raises(ValueError, match=r"`clean_labels` to be non-negative class indices"):
        model_meta_weights(net, CE, x, y, xc, yc - 3)
    with pytest.raises(ValueError, match=r"`clean_labels` to have 14 entries, but got 13"):
        model_meta_weights(net, CE, x, y, xc, yc[:13])
    with pytest.raises(TypeError, match=r"`inputs` to be a torch\.Tensor"):
        model_meta_weights(net, CE, x.numpy(), y, xc, yc)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`normalization` to be one of"):
        model_meta_weights(net, CE, x, y, xc, yc, normalization="max")  # type: ignore[arg-type]


def test_functional_exports_only_the_twins():
    assert sorted(functional.__all__) == ["meta_weights", "model_meta_weights",
                                          "small_loss_weights", "surrogate_weights"]
    for module, name in ((fsurrogate, "surrogate_weights"), (fmeta, "meta_weights"),
                         (fmodel, "model_meta_weights")):
        assert module.__all__ == [name], f"{module.__name__} exports its internals"


def test_functional_twins_take_validate_as_the_classes_do(monkeypatch):
    # One input path (_batch.prepare_batches) for every class and twin; validate=False
    # skips the tensor checks and their host synchronisations, never the options' checks.
    from robustweights import _batch

    F, y, G, yc, Z, ZC = _data(1, torch.float64)
    net = torch.nn.Linear(6, 4).double()
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    calls = {
        "surrogate": lambda v: surrogate_weights(F, y, G, yc, alpha=0.3, validate=v),
        "meta": lambda v: meta_weights(Z, F, y, ZC, G, yc, validate=v),
        "model_meta": lambda v: model_meta_weights(net, ce, F, y, G, yc, validate=v),
    }
    want = {name: fn(True) for name, fn in calls.items()}

    def boom(*args, **kwargs):
        raise AssertionError("tensor values checked with validate=False")

    monkeypatch.setattr(_batch, "check_values", boom)
    for name, fn in calls.items():
        assert torch.equal(fn(False), want[name]), name
        with pytest.raises(AssertionError, match="tensor values checked"):
            fn(True)
    with pytest.raises(ValueError, match=r"Expected `alpha` to be a non-negative finite float"):
        surrogate_weights(F, y, G, yc, alpha=-1.0, validate=False)
    with pytest.raises(ValueError, match=r"Expected `lr` to be a positive finite float"):
        meta_weights(Z, F, y, ZC, G, yc, lr=0.0, validate=False)
