"""Scale-safe arithmetic: exact power-of-two rescaling and saturating casts.

FBR's weights are invariant to a global positive scale of the features (the directions scale by
:math:`s^2` and the step :math:`\\eta` by :math:`1/s^2`), and L2RW's normalised weights to a
positive scale of the scores. So the kernels divide their inputs by a per-call scale and compute
the exact answer in a range where nothing overflows (features near 1e30 in float32 would
otherwise give similarities near 1e60, i.e. inf, and NaN after the row shift) or underflows
(features near 1e-30 would give similarities of 0, i.e. false ties). The scale is a power of two,
so dividing by it is exact: results are bit-identical to the unscaled computation wherever that
one neither overflows nor underflows.
"""

from __future__ import annotations

import math

import torch

__all__ = ["as_output", "compute_dtype", "max_abs", "pow2_scale", "saturate"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def max_abs(x: torch.Tensor) -> torch.Tensor:
    """:math:`\\max_i |x_i|` as a 0-d float64 tensor on ``x``'s device (0 for an empty ``x``)."""
    if x.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    return x.detach().abs().amax().to(torch.float64)


def pow2_scale(magnitude: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A power of two :math:`s` with ``magnitude / s`` in [1, 2) (0-d float64 tensor), clamped
    to the normal range of ``dtype`` so that :math:`s` and :math:`1/s` are representable there.

    Computed on the device without a host synchronisation (``frexp`` reads the exponent).
    """
    info = torch.finfo(dtype)
    lo, hi = int(math.log2(info.smallest_normal)), int(math.log2(info.max))
    exponent = torch.frexp(magnitude.to(torch.float64)).exponent - 1  # m = f * 2^e, f in [.5, 1)
    one = torch.ones((), dtype=torch.float64, device=magnitude.device)
    return torch.ldexp(one, exponent.clamp(lo, hi))


def saturate(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` cast to ``dtype``, values beyond its finite range clamped to it (never inf)."""
    big = torch.finfo(dtype).max
    if x.dtype.is_floating_point and torch.finfo(x.dtype).max <= big:
        return x.to(dtype)  # nothing beyond the range (and ``big`` may not fit x's dtype)
    return x.clamp(-big, big).to(dtype)


def as_output(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weights in the floating dtype of the input ``like`` (float32 for an integer input),
    saturated to its range (e.g. ``"mean"`` weights of a huge batch in float16)."""
    return saturate(w, like.dtype if like.dtype.is_floating_point else torch.float32)
