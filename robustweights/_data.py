"""The trusted clean set as the recipe and the integrations iterate it (a pair of tensors or
any re-iterable of batches; shuffled passes, un-shuffled chunks), and :func:`eval_mode`, the one
eval-mode context that restores every submodule's own mode. Internal: names may change."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn

from robustweights._batch import check_label_shape

__all__ = ["Batch", "CleanData", "batches_per_pass", "check_class_labels", "check_data",
           "eval_mode", "is_pair", "iterate"]

Batch = tuple[torch.Tensor, torch.Tensor]
#: An ``(inputs, labels)`` pair of tensors, or a re-iterable of such batches (a DataLoader).
CleanData = Batch | Iterable[Batch]


def is_pair(data: Any) -> bool:
    """Whether ``data`` is one ``(inputs, labels)`` pair of tensors."""
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def check_data(data: Any, name: str) -> CleanData:
    """A pair of tensors with one label per input row (labels as int64), or a re-iterable of
    batches; a one-shot iterator is refused (every epoch iterates the data again)."""
    if is_pair(data):
        x, y = data
        if y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(f"Expected `{name}` labels of shape ({x.shape[0]},), but got "
                             f"{tuple(y.shape)}")
        if y.shape[0] == 0:
            raise ValueError(f"Expected `{name}` to hold at least one sample, but got 0")
        return (x, y.long())
    if isinstance(data, Iterator) or not isinstance(data, Iterable):
        raise TypeError(f"Expected `{name}` to be an (inputs, labels) pair of tensors or a "
                        f"re-iterable of such batches (e.g. a DataLoader), but got "
                        f"{type(data).__name__}")
    return data


def check_batch_logits(logits: Any, n: int, num_classes: int, name: str = "logits"
                       ) -> torch.Tensor:
    """A batch's logits: a ``(n, C)`` tensor; a ``TypeError`` or ``ValueError`` naming
    ``name`` otherwise (no host synchronisation)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, but got "
                        f"{type(logits).__name__}")
    if tuple(logits.shape) != (n, num_classes):
        raise ValueError(f"Expected `{name}` to have shape ({n}, {num_classes}), but got "
                         f"{tuple(logits.shape)}")
    return logits


def check_class_labels(labels: Any, num_classes: int) -> torch.Tensor:
    """A batch's labels: a 1-D integer tensor (possibly empty) with values in ``[0, C)``, as
    int64; a ``TypeError`` or ``ValueError`` naming ``labels`` otherwise."""
    if labels is None:
        raise TypeError("Expected `labels` to be given, but got None")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"Expected `labels` to be a torch.Tensor, but got "
                        f"{type(labels).__name__}")
    labels = check_label_shape(labels, "labels", allow_empty=True)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"Expected `labels` to lie in [0, {num_classes - 1}], but got values "
                         f"in [{int(labels.min())}, {int(labels.max())}]")
    return labels


def iterate(data: CleanData, *, shuffle: bool, batch_size: int,
            generator: torch.Generator | None, chunk: int | None = None,
            device: torch.device | None = None) -> Iterator[Batch]:
    """One pass over ``data``. A pair: shuffled by ``generator`` into batches of ``batch_size``
    (``shuffle``) or split in order into chunks of ``chunk`` (all at once if None). An
    iterable: its own batches and order, moved to ``device`` with int64 labels."""
    if is_pair(data):
        x, y = cast(Batch, data)
        n = y.shape[0]
        if shuffle:
            order = torch.randperm(n, generator=generator).to(y.device)
            for idx in order.split(batch_size):
                yield x[idx], y[idx]
        else:
            yield from zip(x.split(chunk or n), y.split(chunk or n), strict=True)
        return
    for batch in cast(Iterable[Any], data):
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("Expected the clean data to yield (inputs, labels) batches, but "
                            f"got {type(batch).__name__}")
        yield batch[0].to(device), batch[1].to(device).long()


def batches_per_pass(data: CleanData, batch_size: int) -> int | None:
    """Batches of one shuffled pass (None for an iterable without ``len``)."""
    if is_pair(data):
        return -(-cast(Batch, data)[1].shape[0] // batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode; every submodule's own train/eval flag restored afterwards (also on
    error), so a submodule the caller froze in eval mode stays so."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
