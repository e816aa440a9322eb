"""Backbones for the benchmarks: a small fast CNN for CPU runs and the CIFAR ResNet-34.

Both end in a linear head named ``fc`` whose input is the penultimate feature, so
``robustweights.FeatureCapture(model.fc)`` records the features FBR, L2RW (last layer) and FINE
work with, during the normal forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResNet34", "SmallCNN", "build_model", "head"]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A 4-stage conv net: widths ``w, 2w, 4w, 8w``, each stage conv3x3-BN-ReLU, with 2x2 max
    pooling before stages 2-4 (resolutions 32, 16, 8, 4), global average pooling and a linear
    head ``fc`` on the ``8w``-dimensional feature.

    Args:
        num_classes: output classes.
        width: channels of the first stage; the cost grows with ``width**2``.
    """

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            _conv_bn(3, w),
            nn.MaxPool2d(2), _conv_bn(w, 2 * w),
            nn.MaxPool2d(2), _conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2), _conv_bn(4 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet34(nn.Module):
    """ResNet-34 in its CIFAR variant (He et al. 2016; the layout of the common CIFAR code bases
    used by the noisy-label literature): a 3x3 stride-1 stem without max pooling, basic blocks
    ``[3, 4, 6, 3]`` at widths ``64, 128, 256, 512`` (strides 1, 2, 2, 2), global average pooling
    and a linear head ``fc``.
    """

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = int(width)
        self.stem = _conv_bn(3, w)
        layers: list[nn.Module] = []
        cin = w
        for mult, blocks, stride in ((1, 3, 1), (2, 4, 2), (4, 6, 2), (8, 3, 2)):
            for i in range(blocks):
                layers.append(_BasicBlock(cin, w * mult, stride if i == 0 else 1))
                cin = w * mult
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))))


def build_model(arch: str, num_classes: int, width: int | None = None) -> nn.Module:
    """``"cnn"`` -> :class:`SmallCNN` (default width 16), ``"resnet34"`` -> :class:`ResNet34`."""
    if arch == "cnn":
        return SmallCNN(num_classes, width=16 if width is None else width)
    if arch == "resnet34":
        return ResNet34(num_classes, width=64 if width is None else width)
    raise ValueError(f"Expected `arch` to be 'cnn' or 'resnet34', but got {arch!r}")


def head(model: nn.Module) -> nn.Module:
    """The classifier head ``model.fc`` (its input is the penultimate feature)."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Module):
        raise TypeError(f"Expected the model to have a linear head `fc`, but "
                        f"{type(model).__name__} has none")
    return fc
