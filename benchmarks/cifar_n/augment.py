"""CIFAR training augmentation in plain torch, on batched tensors that stay on their device.

The standard CIFAR recipe (random crop of a zero-padded image, then a horizontal flip with
probability 1/2), vectorised over the batch: no per-image Python loop, no torchvision, no host
round trip. Randomness comes from an explicit :class:`torch.Generator` so runs are reproducible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "crop_flip", "normalize"]

#: Per-channel mean and standard deviation of the CIFAR-10 training images (RGB, in [0, 1]).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def normalize(images: torch.Tensor, mean: tuple[float, ...] = CIFAR_MEAN,
              std: tuple[float, ...] = CIFAR_STD) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW, scaled to [0, 1] and standardised per channel."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def crop_flip(x: torch.Tensor, *, padding: int = 4, flip: bool = True,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a batch (N, C, H, W).

    Each image gets its own offset in ``[0, 2 * padding]`` along both axes (the crop of the
    padded image that starts there) and is mirrored with probability 1/2. The crop picks one
    window per image out of the ``unfold`` view of all windows, a single indexing op.

    Args:
        x: images (N, C, H, W), any float dtype, on any device.
        padding: zero padding on each side before cropping back to (H, W); 0 disables the crop.
        flip: whether to apply the random horizontal flip.
        generator: the random source (CPU generator; draws are moved to ``x``'s device).

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    n, _, h, w = x.shape
    if n == 0:
        return x.clone()
    out = x
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (N, C, 2p+1, 2p+1, H, W), a view
        out = windows[torch.arange(n, device=x.device), :, dy, dx]  # (N, C, H, W)
    if flip:
        mask = torch.rand(n, generator=generator).to(x.device) < 0.5
        out = torch.where(mask.view(n, 1, 1, 1), out.flip(3), out)
    return out
