"""Framework boundary: accept NumPy, PyTorch or any DLPack producer; hand back the caller's kind.

Kernels work on torch tensors. The public ``weights`` call converts every input with
:func:`to_torch` (zero-copy where the producer allows it) and converts the result back with
:func:`from_torch`, using the *kind* of a reference input so that NumPy in gives NumPy out, a
CUDA tensor in gives a CUDA tensor out, and a JAX/CuPy array in gives the same library's array.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ArrayKind", "from_torch", "kind_of", "to_torch"]


@dataclass(frozen=True)
class ArrayKind:
    """Where an input came from, so the output can be returned the same way."""

    framework: str  # "torch", "numpy" or "dlpack"
    namespace: Any = None  # for "dlpack": the producer's array namespace (has from_dlpack)


def kind_of(x: Any, name: str = "input") -> ArrayKind:
    """Classify an array-like input by framework."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"Expected `{name}` to be a NumPy array, torch.Tensor or DLPack producer, "
                        f"but got an object of type {type(x).__name__}")
    if isinstance(x, torch.Tensor):
        return ArrayKind("torch")
    if isinstance(x, np.ndarray) or np.isscalar(x) or isinstance(x, (list, tuple)):
        return ArrayKind("numpy")
    if hasattr(x, "__dlpack__"):
        return ArrayKind("dlpack", _namespace_of(x))
    raise TypeError(
        f"Expected `{name}` to be a NumPy array, torch.Tensor or DLPack producer (JAX, CuPy, ...), "
        f"but got an object of type {type(x).__name__}"
    )


def _namespace_of(x: Any) -> Any:
    # The array API standard gives the producer's namespace; fall back to the top-level module
    # of the type (jax, cupy, ...) when it exposes from_dlpack.
    getter = getattr(x, "__array_namespace__", None)
    if getter is not None:
        try:
            return getter()
        except Exception:  # a broken namespace just means no round trip
            pass
    root = type(x).__module__.split(".")[0]
    try:
        module = importlib.import_module(root)
    except ImportError:
        return None
    if root == "jaxlib":
        module = importlib.import_module("jax.numpy")
    return module if hasattr(module, "from_dlpack") else None


def to_torch(x: Any, name: str) -> torch.Tensor:
    """Convert ``x`` to a torch tensor without copying when possible.

    Raises:
        TypeError: if ``x`` is not an array the library understands; the message names ``name``.
    """
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise TypeError(f"Expected `{name}` to be a numeric array, but got dtype={x.dtype}")
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, (list, tuple)) or (np.isscalar(x) and not isinstance(x, (str, bytes))):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Expected `{name}` to be numeric, but got dtype={arr.dtype}")
        return torch.as_tensor(arr)
    if hasattr(x, "__dlpack__"):
        if "Tracer" in type(x).__name__:
            # A JAX tracer (inside jax.jit / grad / vmap) has no buffer to share.
            raise TypeError(
                f"Expected `{name}` to be a concrete array, but got a JAX tracer "
                f"({type(x).__name__}): compute the weights outside jax.jit/grad/vmap, on "
                f"concrete arrays (e.g. the jitted function's outputs)"
            )
        try:
            return torch.from_dlpack(x)
        except (AttributeError, BufferError, RuntimeError, TypeError) as exc:
            raise TypeError(
                f"Expected `{name}` to be a DLPack producer torch can import, but "
                f"torch.from_dlpack failed on {type(x).__name__}: {exc}"
            ) from exc
    raise TypeError(
        f"Expected `{name}` to be a NumPy array, torch.Tensor or DLPack producer, "
        f"but got an object of type {type(x).__name__}"
    )


def from_torch(t: torch.Tensor, kind: ArrayKind) -> Any:
    """Return ``t`` in the framework described by ``kind``."""
    if kind.framework == "torch":
        return t
    if kind.framework == "numpy":
        return t.detach().cpu().numpy()
    if kind.namespace is None:
        raise TypeError(
            "Cannot return weights to the input's framework: it offers no `from_dlpack`; "
            "pass NumPy arrays or torch tensors instead"
        )
    return kind.namespace.from_dlpack(t.detach().contiguous())
