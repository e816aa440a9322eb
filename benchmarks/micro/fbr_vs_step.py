"""Section ``fbr_vs_step``: FBR weights vs one training step of the benchmark CPU net, and the
per-epoch clean refresh amortised over the epoch's steps."""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.micro.common import (
    CE,
    EPOCH_IMAGES,
    Sizes,
    Trainer,
    images,
    median_us,
    without_samples,
)
from benchmarks.micro.harness import paired_ratio, peak_memory, side_by_side
from robustweights import SurrogateReweighter, weighted_mean


def run_fbr_vs_step(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    tr = Trainer(sizes, device)
    C = sizes.num_classes
    x, y = images(sizes.step_B, device, 1, C)
    xc, yc = images(sizes.step_M, device, 2, C)
    yc = torch.arange(sizes.step_M, device=device) % C

    def clean_refresh() -> None:  # the per-epoch refresh: clean features (eval mode) + stats
        tr.model.eval()
        with torch.no_grad():
            for i in range(0, xc.shape[0], 500):
                tr.model(xc[i:i + 500])
                feats.append(tr.capture.features)
        tr.model.train()
        rw.set_clean(features=torch.cat(feats), labels=yc)
        feats.clear()

    feats: list[torch.Tensor] = []
    rw = SurrogateReweighter(C, alpha=1.0 / (C - 1))
    clean_refresh()
    tr.model(x)
    h = tr.capture.features  # the training batch's features, as the step's forward records them
    D = h.shape[1]

    def fbr_step() -> None:
        tr.opt.zero_grad(set_to_none=True)
        losses = CE(tr.model(x), y)
        w = rw.weights(features=tr.capture.features, labels=y)
        weighted_mean(losses, w).backward()
        tr.opt.step()

    fns = {"plain_step": lambda: tr.plain_step(x, y),
           "fbr_weights": lambda: rw.weights(features=h, labels=y),
           "fbr_weighted_step": fbr_step}
    stats = side_by_side(fns, device=device, repeats=sizes.step_repeats, warmup=sizes.warmup,
                         min_sample_s=sizes.min_sample_s)
    refresh = side_by_side({"refresh": clean_refresh}, device=device,
                           repeats=max(3, sizes.step_repeats // 3), warmup=1)["refresh"]
    steps_per_epoch = EPOCH_IMAGES // sizes.step_B
    step_s = stats["plain_step"]["median_s"]
    return {
        "model": tr.model_source, "B": sizes.step_B, "M": sizes.step_M, "D": D, "C": C,
        "plain_step_ms": step_s * 1e3,
        "fbr_weights_us": median_us(stats, "fbr_weights"),
        "fbr_weighted_step_ms": stats["fbr_weighted_step"]["median_s"] * 1e3,
        "fbr_fraction_of_step": paired_ratio(stats, "fbr_weights", "plain_step"),
        "fbr_step_over_plain": paired_ratio(stats, "fbr_weighted_step", "plain_step"),
        "refresh_ms": refresh["median_s"] * 1e3,
        "refresh_steps_per_epoch": steps_per_epoch,
        "refresh_amortised_fraction": refresh["median_s"] / steps_per_epoch / step_s,
        "target_fraction": 0.02,
        "peak_bytes": {
            "plain_step": peak_memory(fns["plain_step"], device)["tensor_bytes"],
            "fbr_weights": peak_memory(fns["fbr_weights"], device)["tensor_bytes"],
            "fbr_weighted_step": peak_memory(fbr_step, device)["tensor_bytes"],
        },
        "timing": without_samples(stats), "refresh_timing": {k: v for k, v in refresh.items()
                                                    if k != "samples_s"},
    }
