"""The functional forms equal the classes bit for bit, and never communicate across ranks."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import robustweights.functional.fbr as ffbr
import robustweights.functional.l2rw as fl2rw
from robustweights import MetaReweighter, SurrogateReweighter
from robustweights.functional import fbr_weights, l2rw_weights


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
def test_fbr_weights_equal_the_class(seed, dtype, alpha, ratio, missing, missing_weight):
    F, y, G, yc, _, _ = _data(seed, dtype, missing=missing)
    opts = dict(alpha=alpha, ratio=ratio, missing_class_weight=missing_weight)
    want = SurrogateReweighter(4, **opts).weights(features=F, labels=y, clean_features=G,
                                                  clean_labels=yc)
    got = fbr_weights(F, y, G, yc, num_classes=4, **opts)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([torch.float16, torch.bfloat16, torch.float32,
                                               torch.float64]),
       st.sampled_from(["sum", "mean", "none"]), st.booleans(), st.sampled_from([1.0, 0.1]))
def test_l2rw_weights_equal_the_class(seed, dtype, normalization, bias, lr):
    F, y, G, yc, Z, ZC = _data(seed, dtype)
    opts = dict(normalization=normalization, bias=bias, lr=lr)
    want = MetaReweighter(4, **opts).weights(logits=Z, features=F, labels=y, clean_logits=ZC,
                                             clean_features=G, clean_labels=yc)
    got = l2rw_weights(Z, F, y, ZC, G, yc, **opts)
    assert got.dtype == want.dtype and torch.equal(got, want), (got, want)


def test_functional_takes_numpy_and_infers_num_classes():
    F, y, G, yc, Z, ZC = _data(3, torch.float64)
    want = SurrogateReweighter(4, alpha=0.2).weights(features=F, labels=y, clean_features=G,
                                                     clean_labels=yc)
    got = fbr_weights(F.numpy(), y.numpy(), G.numpy(), yc.numpy(), alpha=0.2)
    assert isinstance(got, torch.Tensor) and torch.equal(got, want)
    got = l2rw_weights(Z.numpy(), F.numpy(), y.numpy(), ZC.numpy(), G.numpy(), yc.numpy())
    assert torch.equal(got, MetaReweighter(4).weights(logits=Z, features=F, labels=y,
                                                      clean_logits=ZC, clean_features=G,
                                                      clean_labels=yc))


def test_functional_errors_name_the_argument():
    F, y, G, yc, Z, ZC = _data(0, torch.float32)
    with pytest.raises(ValueError, match="Expected `clean_features` to be finite"):
        fbr_weights(F, y, G * float("nan"), yc, alpha=0.1)
    with pytest.raises(ValueError, match="Expected `alpha` to be a non-negative finite float"):
        fbr_weights(F, y, G, yc, alpha=-1.0)
    with pytest.raises(ValueError, match="`clean_labels` to cover at least 2 classes"):
        fbr_weights(F, y, G, torch.zeros_like(yc), alpha=0.1)
    with pytest.raises(ValueError, match=r"`labels` to lie in \[0, 3\]"):
        fbr_weights(F, y + 4, G, yc, alpha=0.1, num_classes=4)
    with pytest.raises(ValueError, match=r"`features` to have the clean set's dimension D = 5"):
        fbr_weights(F, y, G[:, :5], yc, alpha=0.1)
    with pytest.raises(ValueError, match=r"`clean_logits` to have 4 columns"):
        l2rw_weights(Z, F, y, ZC[:, :3], G, yc)
    with pytest.raises(ValueError, match=r"`logits` to have as many rows as `features` \(30\)"):
        l2rw_weights(Z[:5], F, y, ZC, G, yc)
    with pytest.raises(ValueError, match="`normalization` to be one of"):
        l2rw_weights(Z, F, y, ZC, G, yc, normalization="max")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fbr_weights(F, y, G, yc)  # type: ignore[call-arg]  # alpha is required


def test_functional_kernels_never_communicate():
    # The classes do the syncing; the pure kernels must not reach torch.distributed at all.
    # Checked on the code's names, imports and arguments (docstrings may mention ranks).
    for module in (ffbr, fl2rw):
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
    np.testing.assert_array_equal(w, fbr_weights(F, y, G, yc, alpha=0.3, num_classes=4).numpy())
