"""benchmarks.cifar_n.augment: every output image is a flipped-or-not crop of the padded input."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.cifar_n.augment import crop_flip, normalize  # noqa: E402


def _candidates(img: torch.Tensor, padding: int) -> list[torch.Tensor]:
    _, h, w = img.shape
    p = F.pad(img, (padding,) * 4)
    out = []
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = p[:, dy:dy + h, dx:dx + w]
            out += [crop, crop.flip(2)]
    return out


def test_each_output_is_a_crop_of_the_padded_image_possibly_flipped() -> None:
    x = torch.randn(16, 3, 8, 8)
    out = crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(len(x)):
        assert any(torch.equal(out[i], c) for c in _candidates(x[i], 2)), f"image {i}"


def test_offsets_and_flips_vary_and_are_seeded() -> None:
    x = torch.randn(256, 1, 6, 6)
    a = crop_flip(x, padding=3, generator=torch.Generator().manual_seed(5))
    b = crop_flip(x, padding=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b), "same generator seed, same augmentation"
    flipped_only = crop_flip(x, padding=0, generator=torch.Generator().manual_seed(1))
    n_flipped = sum(int(torch.equal(flipped_only[i], x[i].flip(2))) for i in range(256))
    assert 80 < n_flipped < 176, f"flip probability 1/2, got {n_flipped}/256"


def test_no_padding_no_flip_is_identity() -> None:
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(crop_flip(x, padding=0, flip=False), x)


def test_normalize_layout_and_scale() -> None:
    img = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    out = normalize(img, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.shape == (2, 3, 4, 4) and torch.allclose(out, torch.ones_like(out))
