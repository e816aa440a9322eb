"""The references ``benchmarks.micro`` compares the library with, written here, not imported.

* :class:`GramFBR`: FBR "as the reference code does it": per training batch, the B x M Gram
  matrix of centred training and clean features, then per-class means of its columns, then the
  row shift, label-signed modulation and recompute-mode weights (``docs/method.md`` steps 1-5).
  Everything that does not depend on the training batch (the balanced centre, the centred
  clean features, the class-averaging matrix) is prepared once per clean refresh, so only the
  literal per-batch work is timed.
* :func:`classic_l2rw_scores`: Ren et al.'s lookahead: a virtual SGD step on the
  eps-weighted training loss with ``create_graph=True``, the clean loss at the stepped
  parameters, and its gradient w.r.t. eps (a second-order backward).
* :func:`make_cnn`: the benchmark CPU net (``benchmarks.cifar_n.models.SmallCNN`` when present).
* :func:`load_cifar10n`: the CIFAR-10N subset with its human "worse" labels, if available.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["GramFBR", "classic_l2rw_scores", "load_cifar10n", "make_cnn"]


class GramFBR:
    """Literal FBR, recompute mode, with the B x M Gram matrix per batch.

    Args:
        clean_features: (M, D) clean features.
        clean_labels: (M,) their labels.
        num_classes: C.
        alpha: the modulation.
        class_means: ``"onehot"`` (a (B, M) x (M, C) matmul with a class-averaging matrix) or
            ``"index_add"`` (sum the Gram's columns per class, divide by the counts).
    """

    def __init__(self, clean_features: torch.Tensor, clean_labels: torch.Tensor,
                 num_classes: int, alpha: float, *, w_init: float = 0.5, w_max: float = 1.0,
                 class_means: str = "onehot") -> None:
        G = clean_features
        dt = torch.float64 if G.dtype == torch.float64 else torch.float32
        G = G.to(dt)
        counts = torch.bincount(clean_labels, minlength=num_classes).to(dt)
        self.present = counts > 0
        sums = torch.zeros(num_classes, G.shape[1], dtype=dt, device=G.device)
        sums.index_add_(0, clean_labels, G)
        means = sums[self.present] / counts[self.present, None]
        self.mu = means.mean(0)  # balanced centre: mean of the present classes' means
        self.Gh = (G - self.mu).contiguous()  # centred clean features (M, D)
        self.labels = clean_labels
        self.counts = counts
        self.avg = (F.one_hot(clean_labels, num_classes).to(dt)
                    / counts.clamp_min(1)).contiguous()  # (M, C): column j -> mean over class
        self.num_classes, self.alpha = num_classes, alpha
        self.w_init, self.w_max = w_init, w_max
        self.class_means = class_means

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """S (B, C): class means of the B x M Gram matrix of centred features."""
        gram = (features.to(self.mu.dtype) - self.mu) @ self.Gh.T  # (B, M): the literal object
        if self.class_means == "onehot":
            return gram @ self.avg
        S = torch.zeros(self.num_classes, gram.shape[0], dtype=gram.dtype, device=gram.device)
        S.index_add_(0, self.labels, gram.T)
        return (S / self.counts.clamp_min(1)[:, None]).T

    def directions(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """d (B,): row shift by the second-largest similarity, then label-signed modulation."""
        S = self.similarity(features)
        S = S.masked_fill(~self.present, float("-inf"))
        second = S.topk(2, dim=1).values[:, 1:2]
        Sp = torch.where(self.present, S - second, torch.zeros_like(S))
        own = Sp.gather(1, labels[:, None]).squeeze(1)
        return own - self.alpha * (Sp.sum(1) - own)

    def weights(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """w (B,): start at w0, step eta = max over d_i < 0 of w0/|d_i|, clip, zero w <= w0."""
        d = self.directions(features, labels)
        neg = d < 0
        if not bool(neg.any()):
            return torch.full_like(d, self.w_max)
        eta = (self.w_init / d[neg].abs()).max()
        w = (self.w_init + eta * d).clamp(0, self.w_max)
        w[w <= self.w_init] = 0
        return w


def classic_l2rw_scores(model: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor,
                        xc: torch.Tensor, yc: torch.Tensor, lr: float = 1.0) -> torch.Tensor:
    """u_i = -dL_clean(theta - lr * grad sum_i eps_i l_i(theta)) / d eps_i at eps = 0.

    Ren et al.'s lookahead with autograd: one forward and a ``create_graph=True`` backward on the
    training batch, a forward of the clean batch at the stepped parameters, and a second-order
    backward to eps. Buffers are cloned (BatchNorm statistics untouched), parameters are read
    through ``functional_call`` rather than a deep copy of the model (the cheaper variant).
    """
    params = {k: p.detach().requires_grad_(True) for k, p in model.named_parameters()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    eps = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32, requires_grad=True)
    losses = loss_fn(functional_call(model, (params, buffers), (x,)), y)
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    stepped = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    clean = loss_fn(functional_call(model, (stepped, buffers), (xc,)), yc).mean()
    (d_eps,) = torch.autograd.grad(clean, eps)
    return -d_eps.detach()


def _local_cnn(num_classes: int, width: int) -> nn.Module:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    w = width
    net = nn.Sequential()
    net.features = nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2),
                                 block(2 * w, 4 * w), nn.MaxPool2d(2), block(4 * w, 8 * w),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.fc = nn.Linear(8 * w, num_classes)
    return net


def make_cnn(num_classes: int = 10, width: int = 32) -> tuple[nn.Module, str]:
    """The benchmark CPU net and where it came from (``benchmarks.cifar_n.models.SmallCNN`` if
    present, else the same architecture defined here). Its head is ``.fc``; the feature is
    ``8 * width``."""
    try:
        from benchmarks.cifar_n.models import SmallCNN
    except ImportError:
        return _local_cnn(num_classes, width), f"local SmallCNN-equivalent(width={width})"
    return SmallCNN(num_classes, width=width), f"benchmarks.cifar_n.models.SmallCNN(width={width})"


def load_cifar10n(data_dir: Path | None = None) -> dict[str, np.ndarray] | None:
    """The CIFAR-10N subset (found as :func:`benchmarks.cifar_n.data.find_file` does) with
    ``noisy_labels``, its human "worse" labels; ``None`` when the subset or labels are absent."""
    from benchmarks.cifar_n.data import load_dataset, noisy_labels

    try:
        ds = load_dataset("cifar10n-subset", data_dir)
    except FileNotFoundError:
        return None
    return {"train_images": ds.train_images, "train_labels": ds.train_labels,
            "test_images": ds.test_images, "test_labels": ds.test_labels,
            "noisy_labels": noisy_labels(ds, "worst")}
