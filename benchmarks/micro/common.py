"""What every section of ``benchmarks.micro`` shares: the sizes, the synthetic FBR problem, the
benchmark net with its step variants, and small helpers for the timing stats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmarks.micro.refs import make_cnn
from robustweights import FeatureCapture, weighted_mean

CE = nn.CrossEntropyLoss(reduction="none")
EPOCH_IMAGES = 50_000  # CIFAR train set: the refresh cost is amortised over its batches


@dataclass
class Sizes:
    """Every size the run uses; ``full()`` is the default, ``smoke()`` the CI size."""

    sweep_B: tuple[int, ...] = (128, 512)
    sweep_D: tuple[int, ...] = (128, 512)
    sweep_C: tuple[int, ...] = (10, 100)
    sweep_M: tuple[int, ...] = (500, 2000, 20000)
    repeats: int = 15
    repeats_big_M: int = 9  # M >= big_M: fewer rounds (the reference takes 0.1-0.3 s per call)
    big_M: int = 20000
    min_sample_s: float = 0.02
    warmup: int = 2
    scale_D: int = 512
    scale_C: int = 100
    scale_M: tuple[int, ...] = (500, 1000, 2000, 5000, 10000, 20000, 50000)
    scale_M_at_B: tuple[int, ...] = (128, 512)
    scale_B: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    scale_B_at_M: tuple[int, ...] = (2000, 20000)
    scale_repeats: int = 7
    width: int = 32
    num_classes: int = 10
    step_B: int = 128
    step_M: int = 2000
    step_repeats: int = 11
    l2rw_B: int = 128
    l2rw_clean_B: int = 128
    l2rw_repeats: int = 11
    train_epochs: int = 3
    train_lr: float = 0.05
    clean_holdout: int = 1000
    eval_batches: int = 8
    synthetic_train: int = 4096
    check_sizes: tuple[tuple[int, int, int, int], ...] = ((64, 16, 3, 200), (96, 32, 10, 300),
                                                           (128, 64, 100, 1000))

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(sweep_B=(16,), sweep_D=(8,), sweep_C=(3,), sweep_M=(30, 60), repeats=3,
                   repeats_big_M=3, big_M=60, min_sample_s=0.0, warmup=1, scale_D=8, scale_C=3,
                   scale_M=(30, 60), scale_M_at_B=(16,), scale_B=(8, 16), scale_B_at_M=(60,),
                   scale_repeats=2, width=4, step_B=8, step_M=24, step_repeats=3, l2rw_B=8,
                   l2rw_clean_B=8, l2rw_repeats=3, train_epochs=1, clean_holdout=32,
                   eval_batches=2, synthetic_train=96,
                   check_sizes=((32, 8, 3, 40), (32, 8, 10, 60)))


def fbr_problem(B: int, D: int, C: int, M: int, *, device: torch.device, seed: int,
                dtype: torch.dtype = torch.float32, noise: float = 0.3
                ) -> tuple[torch.Tensor, ...]:
    """Class-structured features (class centre + unit noise), balanced clean labels, training
    labels with a fraction ``noise`` replaced by uniform random labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(C, D, generator=g, dtype=torch.float64)
    yc = torch.arange(M) % C
    y_true = torch.randint(0, C, (B,), generator=g)
    G = centres[yc] + torch.randn(M, D, generator=g, dtype=torch.float64)
    F = centres[y_true] + torch.randn(B, D, generator=g, dtype=torch.float64)
    flip = torch.rand(B, generator=g) < noise
    y = torch.where(flip, torch.randint(0, C, (B,), generator=g), y_true)
    return (F.to(device, dtype), y.to(device), G.to(device, dtype), yc.to(device))


def median_us(stats: dict[str, Any], name: str) -> float:
    return stats[name]["median_s"] * 1e6


def without_samples(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Timing stats without the raw samples (kept out of the JSON tables' rows)."""
    return {k: {kk: vv for kk, vv in v.items() if kk != "samples_s"} for k, v in stats.items()}


class Trainer:
    """A model, its SGD optimiser and the step variants every section times."""

    def __init__(self, sizes: Sizes, device: torch.device, seed: int = 0) -> None:
        torch.manual_seed(seed)
        model, self.model_source = make_cnn(sizes.num_classes, sizes.width)
        self.model = model.to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=5e-4)
        head = self.model.fc
        assert isinstance(head, torch.nn.Module)
        self.capture = FeatureCapture(head)
        self.device = device

    def plain_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Forward + backward + SGD step: the unit every cost is measured in."""
        self.opt.zero_grad(set_to_none=True)
        CE(self.model(x), y).mean().backward()
        self.opt.step()

    def weighted_step(self, x: torch.Tensor, y: torch.Tensor, w: Any) -> None:
        self.opt.zero_grad(set_to_none=True)
        weighted_mean(CE(self.model(x), y), w).backward()
        self.opt.step()


def images(n: int, device: torch.device, seed: int, C: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 32, 32, generator=g).to(device),
            torch.randint(0, C, (n,), generator=g).to(device))
