"""Argument checks for the whole package (internal): reweighters, functional forms, the phase
monitor, the recipe.

All messages have the form "Expected `<arg>` to be <requirement>, but got <value>" so the
argument at fault is named. Argument (configuration) checks are here; the batches a reweighter
or a functional form takes go through one path, :func:`robustweights._batch.prepare_batches`,
whose tensor checks run on every call unless ``validate=False``. Sample ids are checked by one
function, :func:`check_sample_ids`, everywhere.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from robustweights._backend import to_torch

__all__ = [
    "check_batch_scope",
    "check_clean_classes",
    "check_fraction",
    "check_keywords_only",
    "check_loss_fn",
    "check_mask",
    "check_missing_class",
    "check_missing_classes",
    "check_module",
    "check_nonneg_float",
    "check_nonneg_int",
    "check_num_classes",
    "check_positive_float",
    "check_positive_int",
    "check_sample_ids",
    "check_scalar",
    "check_vector",
    "check_weight_bounds",
    "check_weights",
    "missing_classes",
]

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


def check_weight_bounds(*, w_init: Any, w_max: Any, threshold: Any,
                        missing_class_weight: Any) -> tuple[float, float, float | None, float]:
    r"""FBR's weight options: :math:`0 \le w_0 < w_{\max}`, a non-negative threshold (None:
    :math:`w_0`) and ``missing_class_weight`` in :math:`[0, w_{\max}]`, as floats."""
    w_max = check_positive_float(w_max, "w_max")
    w_init_ = check_nonneg_float(w_init, "w_init")
    if not w_init_ < w_max:
        raise ValueError(f"Expected `w_init` to be below `w_max` = {w_max}, but got {w_init!r}")
    tau = None if threshold is None else check_nonneg_float(threshold, "threshold")
    missing = check_nonneg_float(missing_class_weight, "missing_class_weight")
    if missing > w_max:
        raise ValueError(f"Expected `missing_class_weight` to be at most `w_max` = {w_max}, but "
                         f"got {missing_class_weight!r}")
    return w_init_, w_max, tau, missing


#: What to do when a batch uses a class without a clean sample (see :func:`check_missing_classes`).
MISSING_CLASS_CHOICES = ("error", "warn", "ignore")


def check_missing_class(value: Any) -> str:
    if value not in MISSING_CLASS_CHOICES:
        raise ValueError(f"Expected `missing_class` to be 'error', 'warn' or 'ignore', but got "
                         f"{value!r}")
    return str(value)


def missing_classes(labels: torch.Tensor, valid: torch.Tensor) -> list[int]:
    """The classes of the samples without an FBR direction (``valid`` False: their class has no
    clean sample), sorted: one host synchronisation, two when some class is missing."""
    hit = ~valid
    if not bool(hit.any()):
        return []
    return sorted({int(c) for c in labels[hit].tolist()})


def check_missing_classes(missing: Sequence[int], *, missing_class: str, weight: float,
                          name: str = "labels", stacklevel: int = 3) -> None:
    """A batch using classes without a clean sample is never silent: their samples have no FBR
    direction and get ``missing_class_weight``. ``missing_class`` ``"error"`` raises a
    ``ValueError`` naming the classes, ``"warn"`` issues a ``UserWarning`` naming them,
    ``"ignore"`` says nothing."""
    if not missing or missing_class == "ignore":
        return
    what = (f"classes {list(missing)}, which have no sample in the clean set (their samples have "
            f"no FBR direction)")
    if missing_class == "error":
        raise ValueError(f"Expected `{name}` to use only classes present in the clean set, but "
                         f"got {what}: add clean samples of these classes, or pass "
                         "missing_class='warn' or 'ignore' to give their samples "
                         f"`missing_class_weight` ({weight})")
    warnings.warn(f"`{name}` uses {what}: their samples get `missing_class_weight` = {weight} "
                  "(missing_class='ignore' silences this)", UserWarning, stacklevel=stacklevel)


def check_clean_classes(class_counts: torch.Tensor) -> None:
    """At least two classes in the clean set (FBR's row shift needs a runner-up; one sync)."""
    present = int((class_counts > 0).sum())
    if present < 2:
        raise ValueError(f"Expected `clean_labels` to cover at least 2 classes, but got "
                         f"{present}: FBR's row shift needs a runner-up class")


def check_batch_scope(value: Any) -> str:
    if value not in ("global", "local"):
        raise ValueError(f"Expected `batch_scope` to be 'global' or 'local', but got {value!r}")
    return str(value)


def check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected `{name}` to be an integer >= 1, but got {value!r}")
    return value


def check_nonneg_int(value: Any, name: str) -> int:
    """A non-negative integer (an epoch, a count of epochs or passes); NumPy integers too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative integer, but got {value!r}")
    return int(value)


def check_keywords_only(owner: object, method: str, args: tuple[Any, ...],
                        names: Sequence[str]) -> None:
    """Refuse positional batch inputs: with several arrays of the same shape family a positional
    call would bind them silently to the wrong names."""
    if args:
        example = ", ".join(f"{n}=..." for n in names)
        raise TypeError(f"{type(owner).__name__}.{method}() takes its inputs as keyword "
                        f"arguments only, e.g. `{method}({example})`, but got {len(args)} "
                        "positional argument(s)")


def check_module(model: Any) -> nn.Module:
    """A torch module; a ``DistributedDataParallel`` or ``DataParallel`` wrapper is unwrapped to
    its module (the replica's own: the wrapper's forward would synchronise)."""
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be a torch.nn.Module, but got "
                        f"{type(model).__name__}")
    return model


def check_loss_fn(loss_fn: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A callable loss; an ``nn`` loss module must have ``reduction='none'`` (per-sample)."""
    if not callable(loss_fn):
        raise TypeError(f"Expected `loss_fn` to be callable, but got {type(loss_fn).__name__}")
    reduction = getattr(loss_fn, "reduction", "none")
    if reduction != "none":
        raise ValueError("Expected `loss_fn` to return per-sample losses (reduction='none'), "
                         f"but got reduction={reduction!r}")
    return loss_fn  # type: ignore[no-any-return]


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
