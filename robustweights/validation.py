"""Input validation for the whole package: reweighters, the phase monitor and helpers.

All messages have the form "Expected `<arg>` to be <requirement>, but got <value>" so the
argument at fault is named. Argument (configuration) checks and tensor checks are separate;
tensor checks run on every public call unless a reweighter is built with ``validate=False``.
Sample ids are checked by one function, :func:`check_sample_ids`, everywhere.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from robustweights._backend import to_torch

__all__ = [
    "MAX_MAGNITUDE",
    "check_batch_scope",
    "check_finite",
    "check_fraction",
    "check_label_shape",
    "check_labels",
    "check_mask",
    "check_matrix",
    "check_nonneg_float",
    "check_num_classes",
    "check_positive_float",
    "check_positive_int",
    "check_same_rows",
    "check_sample_ids",
    "check_scalar",
    "check_values",
    "check_vector",
    "check_weights",
]

#: Dtypes the kernels accept for features and logits.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Largest magnitude accepted in features and logits, about 3e144. Only float64 can exceed it
#: (float32 ends near 3.4e38). The kernels rescale by powers of two, but clean sums, squared
#: scales and the float64 step of distributed FBR need headroom below float64's 1.8e308.
MAX_MAGNITUDE = 2.0**480


def check_num_classes(num_classes: Any) -> int:
    # numbers.Integral: NumPy integers (e.g. from labels.max() + 1) are integers too.
    if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
            or num_classes < 2):
        raise ValueError(
            f"Expected `num_classes` to be an integer >= 2, but got {num_classes!r}"
        )
    return int(num_classes)


def check_nonneg_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
            or value == float("inf"):
        raise ValueError(f"Expected `{name}` to be a non-negative finite float, but got {value!r}")
    return float(value)


def check_positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        raise ValueError(f"Expected `{name}` to be a positive finite float, but got {value!r}")
    return float(value)


def check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"Expected `{name}` to be a float in (0, 1], but got {value!r}")
    return float(value)


def check_matrix(x: torch.Tensor, name: str, cols: int | None = None,
                 allow_empty: bool = False) -> torch.Tensor:
    """A floating 2-D tensor with ``cols`` columns (if given), non-empty unless
    ``allow_empty`` (a distributed rank's share of the clean set may be empty)."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"Expected `{name}` to have a floating dtype, but got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"Expected `{name}` to be 2-D (N, D), but got shape {tuple(x.shape)}")
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"Expected `{name}` to hold at least one sample, but got shape "
                         f"{tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(
            f"Expected `{name}` to have {cols} columns, but got shape {tuple(x.shape)}"
        )
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"Expected `{name}` to be finite, but got {bad} NaN/inf entries")


def check_label_shape(y: torch.Tensor, name: str, n: int | None = None,
                      allow_empty: bool = False) -> torch.Tensor:
    """Integer class labels of shape (n,), returned as int64; the value range is checked by
    :func:`check_values` (or :func:`check_labels`), which needs a host sync."""
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"Expected `{name}` to be integer class indices, but got {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D, but got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have {n} entries, but got {y.shape[0]}")
    if y.numel() == 0 and not allow_empty:
        raise ValueError(f"Expected `{name}` to hold at least one label, but got none")
    return y.long()


def _check_range(lo: int, hi: int, name: str, num_classes: int) -> None:
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"Expected `{name}` to lie in [0, {num_classes - 1}], but got values in [{lo}, {hi}]"
        )


def check_labels(y: torch.Tensor, name: str, num_classes: int, n: int | None = None
                 ) -> torch.Tensor:
    """Integer class labels of shape (n,) in ``[0, num_classes)``; returned as int64."""
    y = check_label_shape(y, name, n)
    _check_range(int(y.min()), int(y.max()), name, num_classes)
    return y


def check_values(floats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                 num_classes: int) -> None:
    """Finiteness of every float tensor and the range of every label tensor, with a single
    host synchronisation for all of them (tensors on one device, shapes already checked)."""
    # max |x| is NaN for a NaN entry and inf for an infinite one: one probe checks both the
    # finiteness and the magnitude bound.
    floats = {name: t for name, t in floats.items() if t.numel()}
    probes = [t.detach().abs().amax().to(torch.float64) for t in floats.values()]
    labels = {name: y for name, y in labels.items() if y.numel()}
    for y in labels.values():
        probes += [y.min().to(torch.float64), y.max().to(torch.float64)]
    if not probes:
        return
    values = torch.stack(probes).tolist()  # the one device -> host copy
    for (name, t), size in zip(floats.items(), values, strict=False):
        if not math.isfinite(size):
            check_finite(t, name)  # raises, counting the bad entries
        if size > MAX_MAGNITUDE:
            raise ValueError(f"Expected `{name}` to have magnitudes at most 2**480 (about "
                             f"3e144), but got {size:.3g}")
    ranges = values[len(floats):]
    for i, name in enumerate(labels):
        _check_range(int(ranges[2 * i]), int(ranges[2 * i + 1]), name, num_classes)


def check_same_rows(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"Expected `{a_name}` and `{b_name}` to have the same number of rows, but got "
            f"{a.shape[0]} and {b.shape[0]}"
        )


def check_batch_scope(value: Any) -> str:
    if value not in ("global", "local"):
        raise ValueError(f"Expected `batch_scope` to be 'global' or 'local', but got {value!r}")
    return str(value)


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be an integer >= 1, but got {value!r}")
    return value


def check_sample_ids(x: Any, n: int) -> torch.Tensor:
    """Sample ids: ``n`` non-negative integers, returned as int64 on their device.

    Raises:
        TypeError: for a non-integer dtype.
        ValueError: for a shape other than ``(n,)`` or a negative id.
    """
    ids = to_torch(x, "sample_ids").detach()
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
        raise TypeError(f"Expected `sample_ids` to be integers, but got dtype {ids.dtype}")
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"Expected `sample_ids` to have shape ({n},), but got "
                         f"{tuple(ids.shape)}")
    if n and int(ids.min()) < 0:
        raise ValueError(f"Expected `sample_ids` to be non-negative, but got minimum "
                         f"{int(ids.min())}")
    return ids.long()


def check_vector(x: Any, name: str) -> torch.Tensor:
    """A non-empty, finite, 1-D array of real numbers, as a float64 tensor."""
    t = to_torch(x, name)
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise TypeError(f"Expected `{name}` to be real numbers, but got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] == 0:
        raise ValueError(f"Expected `{name}` to be a non-empty 1-D array, but got shape "
                         f"{tuple(t.shape)}")
    t = t.detach().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"Expected `{name}` to be finite, but got "
                         f"{int((~torch.isfinite(t)).sum())} NaN/inf entries")
    return t


def check_weights(x: Any, name: str = "weights") -> torch.Tensor:
    """Non-negative finite weights (B,), as a float64 tensor."""
    w = check_vector(x, name)
    if bool((w < 0).any()):
        raise ValueError(f"Expected `{name}` to be non-negative, but got minimum {float(w.min())}")
    return w


def check_mask(x: Any, name: str, n: int) -> torch.Tensor:
    """A boolean mask of shape (n,) (0/1 integers accepted), as a CPU bool tensor."""
    t = to_torch(x, name).detach().cpu()
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have shape ({n},), but got {tuple(t.shape)}")
    if t.dtype != torch.bool:
        if t.dtype.is_floating_point or t.dtype.is_complex or not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"Expected `{name}` to be a boolean mask, but got dtype {t.dtype}")
        t = t.bool()
    return t


def check_scalar(x: Any, name: str) -> float:
    """A non-negative finite real scalar (a number or a 0-d/1-element array)."""
    if isinstance(x, bool):
        raise TypeError(f"Expected `{name}` to be a number, but got {x!r}")
    t = to_torch(x, name)
    if t.numel() != 1 or t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"Expected `{name}` to be a real scalar, but got shape "
                         f"{tuple(t.shape)} and dtype {t.dtype}")
    v = float(t.reshape(()))
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"Expected `{name}` to be a non-negative finite number, but got {v!r}")
    return v
