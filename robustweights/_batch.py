"""The one input path of every reweighter and functional form (internal).

Every batch goes through :func:`prepare_batches`: :func:`convert_batch` (any array to torch, on
one device), then, unless ``validate=False``, :func:`check_batch` (shapes, no host
synchronisation) and :func:`check_values` (finiteness, magnitude and label range, one host
synchronisation for every batch of the call). Messages have the form "Expected `<arg>` to be
<requirement>, but got <value>"; argument (configuration) checks live in
:mod:`robustweights._validation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from robustweights._backend import to_torch

__all__ = ["FLOAT_DTYPES", "MAX_MAGNITUDE", "check_batch", "check_finite", "check_label_shape",
           "check_matrix", "check_values", "convert_batch", "prepare_batches"]

#: Dtypes the kernels accept for features and logits.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


#: Largest magnitude accepted in features and logits, about 3e144. Only float64 can exceed it
#: (float32 ends near 3.4e38). The kernels rescale by powers of two, but clean sums, squared
#: scales and the float64 step of distributed FBR need headroom below float64's 1.8e308.
MAX_MAGNITUDE = 2.0**480


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
