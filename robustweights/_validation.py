"""Input validation for the whole package: reweighters, functional forms, the phase monitor.

All messages have the form "Expected `<arg>` to be <requirement>, but got <value>" so the
argument at fault is named. Argument (configuration) checks and tensor checks are separate;
tensor checks run on every public call unless a reweighter is built with ``validate=False``.
Every batch a reweighter or a functional form takes goes through one path:
:func:`convert_batch` (any array to torch, on one device), then :func:`check_batch` (shapes)
and :func:`check_values` (finiteness and label range, one host synchronisation). Sample ids are
checked by one function, :func:`check_sample_ids`, everywhere.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from robustweights._backend import to_torch

__all__ = [
    "MAX_MAGNITUDE",
    "check_batch",
    "check_batch_scope",
    "check_clean_classes",
    "check_finite",
    "check_fraction",
    "check_keywords_only",
    "check_label_shape",
    "check_loss_fn",
    "check_mask",
    "check_matrix",
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
    "check_values",
    "check_vector",
    "check_weight_bounds",
    "check_weights",
    "convert_batch",
    "missing_classes",
    "prepare_batches",
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
MISSING_CLASS_MODES = ("error", "warn", "ignore")


def check_missing_class(value: Any) -> str:
    if value not in MISSING_CLASS_MODES:
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


def check_missing_classes(missing: Sequence[int], *, mode: str, weight: float,
                          name: str = "labels", stacklevel: int = 3) -> None:
    """A batch using classes without a clean sample is never silent: their samples have no FBR
    direction and get ``missing_class_weight``. ``mode`` ``"error"`` raises a ``ValueError``
    naming the classes, ``"warn"`` issues a ``UserWarning`` naming them, ``"ignore"`` says
    nothing."""
    if not missing or mode == "ignore":
        return
    what = (f"classes {list(missing)}, which have no sample in the clean set (their samples have "
            f"no FBR direction)")
    if mode == "error":
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
    :func:`check_values`, which needs a host sync."""
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"Expected `{name}` to be integer class indices, but got {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"Expected `{name}` to be 1-D, but got shape {tuple(y.shape)}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have {n} entries, but got {y.shape[0]}")
    if y.numel() == 0 and not allow_empty:
        raise ValueError(f"Expected `{name}` to hold at least one label, but got none")
    return y.long()


def _check_range(lo: int, hi: int, name: str, num_classes: int | None) -> None:
    if num_classes is None:  # the class count is unknown: only the lower end is checked
        if lo < 0:
            raise ValueError(f"Expected `{name}` to be non-negative class indices, but got "
                             f"values in [{lo}, {hi}]")
    elif lo < 0 or hi >= num_classes:
        raise ValueError(
            f"Expected `{name}` to lie in [0, {num_classes - 1}], but got values in [{lo}, {hi}]"
        )


def check_values(floats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                 num_classes: int | None) -> None:
    """Finiteness of every float tensor and the range of every label tensor (``[0, C)``, or
    non-negative when ``num_classes`` is None), with a single host synchronisation for all of
    them (tensors on one device, shapes already checked)."""
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


def convert_batch(raw: Mapping[str, Any], names: Sequence[str], *, prefix: str = "",
                  device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """The named inputs of one batch as torch tensors on one device (the first's, or ``device``).

    ``raw`` is keyed by the bare names (``"features"``); messages add ``prefix``
    (``"clean_"``). ``inputs``, a model's own input, must already be a torch tensor; every other
    input may be any array :func:`~robustweights._backend.to_torch` reads (zero-copy where it
    can).

    Raises:
        ValueError: for a missing (None) input.
        TypeError: for an input the library cannot read.
    """
    out: dict[str, torch.Tensor] = {}
    for name in names:
        value = raw.get(name)
        if value is None:
            raise ValueError(f"Expected `{prefix}{name}` to be given, but got None")
        if name == "inputs" and not isinstance(value, torch.Tensor):
            raise TypeError(f"Expected `{prefix}inputs` to be a torch.Tensor (the model's "
                            f"input), but got {type(value).__name__}")
        out[name] = to_torch(value, prefix + name)
    target = device if device is not None else out[names[0]].device
    return {name: t.to(target) for name, t in out.items()}


def check_batch(x: dict[str, torch.Tensor], *, prefix: str = "", num_classes: int | None = None,
                allow_empty: bool = False) -> tuple[dict[str, torch.Tensor],
                                                    dict[str, torch.Tensor]]:
    """Shapes of one converted batch (no host synchronisation): ``features`` and ``logits``
    floating matrices (``logits`` with ``num_classes`` columns when given), ``inputs`` with at
    least one row, all with the same number of rows, non-empty unless ``allow_empty``;
    ``labels`` integer class indices of that length, replaced in ``x`` by their int64 form.

    Returns:
        ``(floats, labels)``, keyed by prefixed names: what :func:`check_values` checks next.
    """
    n, first = None, ""
    floats: dict[str, torch.Tensor] = {}
    for name in ("inputs", "features", "logits"):
        if name not in x:
            continue
        t = x[name]
        if name == "inputs":
            if (t.ndim == 0 or t.shape[0] == 0) and not allow_empty:
                raise ValueError(f"Expected `{prefix}inputs` to hold at least one sample, but "
                                 f"got shape {tuple(t.shape)}")
        else:
            cols = num_classes if name == "logits" else None
            floats[prefix + name] = check_matrix(t, prefix + name, cols=cols,
                                                 allow_empty=allow_empty)
        rows = t.shape[0] if t.ndim else 0
        if n is not None and rows != n:
            raise ValueError(f"Expected `{prefix}{name}` to have as many rows as `{first}` ({n}), "
                             f"but got {rows}")
        n, first = rows, prefix + name
    labels: dict[str, torch.Tensor] = {}
    if "labels" in x:
        x["labels"] = check_label_shape(x["labels"], prefix + "labels", n,
                                        allow_empty=allow_empty)
        labels[prefix + "labels"] = x["labels"]
    return floats, labels


def prepare_batches(raws: Mapping[str, Mapping[str, Any]], names: Sequence[str], *,
                    num_classes: int | Literal["logits"] | None = None, validate: bool = True,
                    allow_empty: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The one input path of every reweighter and functional form: the batches of one call
    converted (:func:`convert_batch`, all to the first batch's device), then, with
    ``validate``, their shapes checked (:func:`check_batch`) and their values with one host
    synchronisation for all of them (:func:`check_values`).

    Args:
        raws: each batch's inputs keyed by bare name, keyed by the prefix its messages use
            (``{"": train, "clean_": clean}``).
        names: the inputs to take (others are dropped); a missing one is a ``ValueError``.
        num_classes: the class count labels must lie under (and logits' columns), ``None``
            (labels only non-negative), or ``"logits"``: the first batch's logits' columns.
        validate: ``False`` converts only (labels to int64): for a hot loop whose inputs are
            known good.
        allow_empty: batches may have 0 rows (a distributed rank's share of a clean set).

    Returns:
        The converted batches, keyed as ``raws``.
    """
    batches: dict[str, dict[str, torch.Tensor]] = {}
    device = None
    for prefix, raw in raws.items():
        batches[prefix] = convert_batch(raw, names, prefix=prefix, device=device)
        device = batches[prefix][names[0]].device
    if not validate:
        for batch in batches.values():
            if "labels" in batch:
                batch["labels"] = batch["labels"].long()
        return batches
    if num_classes == "logits":
        first = next(iter(batches))
        num_classes = check_matrix(batches[first]["logits"], f"{first}logits").shape[1]
    floats: dict[str, torch.Tensor] = {}
    labels: dict[str, torch.Tensor] = {}
    for prefix, batch in batches.items():
        f, y = check_batch(batch, prefix=prefix, num_classes=num_classes,
                           allow_empty=allow_empty)
        floats.update(f)
        labels.update(y)
    check_values(floats, labels, None if num_classes is None else max(num_classes, 2))
    return batches


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
