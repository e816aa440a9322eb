"""Real JAX arrays through the DLPack boundary: JAX (CPU) in, JAX out, same values as NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from boundary_arrays import YC, ZC, F, G, Y, Z, rng

from robustweights import MetaReweighter, SurrogateReweighter

jax = pytest.importorskip("jax", reason="JAX is not installed: pip install -e '.[jax]'")
jnp = pytest.importorskip("jax.numpy", reason="JAX is not installed: pip install -e '.[jax]'")



def fbr(features, labels, clean_features, clean_labels, **kwargs):
    return SurrogateReweighter(4, alpha=0.2, **kwargs).weights(
        features=features, labels=labels, clean_features=clean_features,
        clean_labels=clean_labels)


def assert_jax_on_cpu(w, dtype, n):
    assert isinstance(w, jax.Array), f"expected a jax.Array, got {type(w).__name__}"
    assert w.dtype == dtype, f"expected dtype {dtype}, got {w.dtype}"
    assert w.shape == (n,), f"expected shape ({n},), got {w.shape}"
    assert {d.platform for d in w.devices()} == {"cpu"}, f"expected CPU, got {w.devices()}"


def test_fbr_jax_in_jax_out_equals_numpy():
    w = fbr(jnp.asarray(F), jnp.asarray(Y), jnp.asarray(G), jnp.asarray(YC))
    assert_jax_on_cpu(w, jnp.float32, 40)
    np.testing.assert_array_equal(np.asarray(w), fbr(F, Y, G, YC))


def test_fbr_cached_clean_set_from_jax():
    rw = SurrogateReweighter(4, alpha=0.2)
    rw.set_clean(features=jnp.asarray(G), labels=jnp.asarray(YC))
    w = rw.weights(features=jnp.asarray(F), labels=jnp.asarray(Y))
    assert_jax_on_cpu(w, jnp.float32, 40)
    np.testing.assert_array_equal(np.asarray(w), fbr(F, Y, G, YC))


def test_fbr_incremental_mode_with_jax_sample_ids():
    rw = SurrogateReweighter(4, alpha=0.2, mode="incremental")
    ref = SurrogateReweighter(4, alpha=0.2, mode="incremental")
    for _ in range(3):
        w = rw.weights(features=jnp.asarray(F), labels=jnp.asarray(Y),
                       clean_features=jnp.asarray(G), clean_labels=jnp.asarray(YC),
                       sample_ids=jnp.arange(40))
        expected = ref.weights(features=F, labels=Y, clean_features=G, clean_labels=YC,
                               sample_ids=np.arange(40))
    assert_jax_on_cpu(w, jnp.float32, 40)
    np.testing.assert_array_equal(np.asarray(w), expected)


def test_l2rw_last_layer_jax_in_jax_out_equals_numpy():
    m = MetaReweighter(4)
    w = m.weights(logits=jnp.asarray(Z), features=jnp.asarray(F), labels=jnp.asarray(Y),
                  clean_logits=jnp.asarray(ZC), clean_features=jnp.asarray(G),
                  clean_labels=jnp.asarray(YC))
    assert_jax_on_cpu(w, jnp.float32, 40)
    expected = m.weights(logits=Z, features=F, labels=Y, clean_logits=ZC, clean_features=G,
                         clean_labels=YC)
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-6, atol=1e-7)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_jax_keeps_its_dtype(dtype):
    dt = getattr(jnp, dtype)
    w = fbr(jnp.asarray(F, dtype=dt), jnp.asarray(Y), jnp.asarray(G, dtype=dt), jnp.asarray(YC))
    assert_jax_on_cpu(w, dt, 40)
    assert bool(jnp.isfinite(w).all()), "half-precision weights must be finite"


def test_transposed_and_strided_jax_views():
    w = fbr(jnp.asarray(np.ascontiguousarray(F.T)).T, jnp.asarray(Y), jnp.asarray(G),
            jnp.asarray(YC))
    np.testing.assert_array_equal(np.asarray(w), fbr(F, Y, G, YC))
    w = fbr(jnp.asarray(F)[::2], jnp.asarray(Y)[::2], jnp.asarray(G), jnp.asarray(YC))
    assert_jax_on_cpu(w, jnp.float32, 20)


def test_mixed_jax_and_numpy_inputs_follow_the_features():
    w = fbr(jnp.asarray(F), Y, G, jnp.asarray(YC))
    assert_jax_on_cpu(w, jnp.float32, 40)


def test_jax_outputs_of_a_jitted_model_are_accepted():
    params = jnp.asarray(rng.normal(size=(8, 8)).astype(np.float32))
    feats = jax.jit(lambda x: jnp.tanh(x @ params))
    w = fbr(feats(jnp.asarray(F)), jnp.asarray(Y), feats(jnp.asarray(G)), jnp.asarray(YC))
    assert_jax_on_cpu(w, jnp.float32, 40)


def test_traced_jax_input_raises_a_clear_error():
    rw = SurrogateReweighter(4, alpha=0.2)
    rw.set_clean(features=G, labels=YC)
    traced = jax.jit(lambda x: rw.weights(features=x, labels=jnp.asarray(Y)))
    with pytest.raises(TypeError, match="Expected `features` to be a concrete array, but got a "
                                        "JAX tracer"):
        traced(jnp.asarray(F))


def test_bad_labels_from_jax_name_the_argument():
    with pytest.raises(ValueError, match="Expected `labels` to have 40 entries, but got 5"):
        fbr(jnp.asarray(F), jnp.asarray(Y)[:5], jnp.asarray(G), jnp.asarray(YC))
