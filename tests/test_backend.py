"""Framework boundary: the caller's framework, device and dtype come back out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from boundary_arrays import YC, ZC, F, G, Y, Z

from robustweights import MetaReweighter, SurrogateReweighter


class FakeNamespace:
    """An array-API namespace whose `from_dlpack` wraps the result again."""

    @staticmethod
    def from_dlpack(x):
        return Producer(np.from_dlpack(x))


class Producer:
    """A minimal DLPack producer that is neither NumPy nor torch (stands in for JAX/CuPy)."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __array_namespace__(self):
        return FakeNamespace


def fbr(features, labels, clean_features, clean_labels):
    return SurrogateReweighter(4, alpha=0.2).weights(
        features=features, labels=labels, clean_features=clean_features,
        clean_labels=clean_labels)


def test_numpy_in_numpy_out():
    w = fbr(F, Y, G, YC)
    assert isinstance(w, np.ndarray) and w.dtype == np.float32 and w.shape == (40,)


def test_torch_in_torch_out_matches_numpy():
    w = fbr(torch.from_numpy(F), torch.from_numpy(Y), torch.from_numpy(G), torch.from_numpy(YC))
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    np.testing.assert_array_equal(w.numpy(), fbr(F, Y, G, YC))


def test_lists_and_mixed_frameworks_are_accepted():
    w = fbr(torch.from_numpy(F), Y.tolist(), G, torch.from_numpy(YC))
    assert isinstance(w, torch.Tensor)


def test_dlpack_producer_round_trip():
    w = fbr(Producer(F), Producer(Y), Producer(G), Producer(YC))
    assert isinstance(w, Producer)
    np.testing.assert_array_equal(w.array, fbr(F, Y, G, YC))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    # Large values would overflow float16 in the Gram/prototype products: 300^2 * 8 > 65504.
    Fh, Gh = torch.from_numpy(F * 300).to(dtype), torch.from_numpy(G * 300).to(dtype)
    rw = SurrogateReweighter(4, alpha=0.2)
    w = rw.weights(features=Fh, labels=torch.from_numpy(Y), clean_features=Gh,
                   clean_labels=torch.from_numpy(YC))
    assert w.dtype == dtype and torch.isfinite(w).all()
    assert rw.last_scores.dtype == torch.float32
    w32 = SurrogateReweighter(4, alpha=0.2).weights(
        features=Fh.float(), labels=torch.from_numpy(Y), clean_features=Gh.float(),
        clean_labels=torch.from_numpy(YC))
    torch.testing.assert_close(w.float(), w32, rtol=1e-2, atol=1e-2)


def test_half_precision_l2rw():
    rw = MetaReweighter(4)
    w = rw.weights(logits=torch.from_numpy(Z).half(), features=torch.from_numpy(F).half(),
                   labels=torch.from_numpy(Y), clean_logits=torch.from_numpy(ZC).half(),
                   clean_features=torch.from_numpy(G).half(), clean_labels=torch.from_numpy(YC))
    assert w.dtype == torch.float16 and rw.last_scores.dtype == torch.float32
    assert torch.isfinite(w).all()


class BrokenProducer(Producer):
    """Claims DLPack support but cannot export (as a JAX tracer, or a deleted buffer)."""

    def __dlpack__(self, **kwargs):
        raise BufferError("buffer was deleted")


def test_failing_dlpack_producer_names_the_argument():
    with pytest.raises(TypeError, match=r"Expected `features` to be a DLPack producer torch "
                                        r"can import, but torch\.from_dlpack failed on "
                                        r"BrokenProducer"):
        fbr(BrokenProducer(F), Y, G, YC)


def test_float64_stays_float64():
    w = fbr(F.astype(np.float64), Y, G.astype(np.float64), YC)
    assert w.dtype == np.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_in_cuda_out():
    dev = torch.device("cuda")
    t = lambda a: torch.from_numpy(a).to(dev)  # noqa: E731
    w = fbr(t(F), t(Y), t(G), t(YC))
    assert w.device.type == "cuda"
    np.testing.assert_allclose(w.cpu().numpy(), fbr(F, Y, G, YC), rtol=1e-5, atol=1e-6)
    rw = MetaReweighter(4)
    wl = rw.weights(logits=t(Z), features=t(F), labels=t(Y), clean_logits=t(ZC),
                    clean_features=t(G), clean_labels=t(YC))
    assert wl.device.type == "cuda"
