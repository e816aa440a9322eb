"""The NumPy arrays the framework-boundary tests (test_backend.py, test_jax.py) push through the
reweighters: one training batch (B = 40, D = 8, C = 4) and one clean batch (M = 30)."""

import numpy as np

rng = np.random.default_rng(1)
F = rng.normal(size=(40, 8)).astype(np.float32)
Y = rng.integers(0, 4, 40)
G = rng.normal(size=(30, 8)).astype(np.float32)
YC = np.arange(30) % 4
Z = rng.normal(size=(40, 4)).astype(np.float32)
ZC = rng.normal(size=(30, 4)).astype(np.float32)
