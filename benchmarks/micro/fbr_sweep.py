"""Section ``fbr_sweep``: FBR weights per batch, the library vs the literal Gram reference, over
B, D, C, M (and ``fbr_case``, one such comparison, which ``fbr_scaling`` reuses)."""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.micro.common import Sizes, fbr_problem, median_us, without_samples
from benchmarks.micro.harness import paired_ratio, peak_memory, side_by_side, sync
from benchmarks.micro.refs import GramFBR
from robustweights import SurrogateReweighter


def fbr_case(B: int, D: int, C: int, M: int, *, device: torch.device, sizes: Sizes,
             repeats: int, seed: int, memory: bool = True, per_call_clean: bool = True
             ) -> dict[str, Any]:
    """Time one (B, D, C, M): the library (cached clean statistics, validated and not; clean
    batch per call) vs the Gram reference. Also checks that the weights agree."""
    F, y, G, yc = fbr_problem(B, D, C, M, device=device, seed=seed)
    alpha = 1.0 / (C - 1)  # the reference schedule's early value: both terms of d matter
    ours = SurrogateReweighter(C, alpha=alpha)
    ours_nv = SurrogateReweighter(C, alpha=alpha, validate=False)
    t0 = time.perf_counter()
    ours.set_clean(features=G, labels=yc)
    sync(device)
    refresh_ours = time.perf_counter() - t0
    ours_nv.set_clean(features=G, labels=yc)
    t0 = time.perf_counter()
    ref = GramFBR(G, yc, C, alpha)
    sync(device)
    refresh_ref = time.perf_counter() - t0
    fns = {
        "ours": lambda: ours.weights(features=F, labels=y),
        "ours_novalidate": lambda: ours_nv.weights(features=F, labels=y),
        "reference": lambda: ref.weights(F, y),
    }
    if per_call_clean:
        fns["ours_clean_per_call"] = lambda: ours.weights(features=F, labels=y,
                                                          clean_features=G, clean_labels=yc)
    stats = side_by_side(fns, device=device, repeats=repeats, warmup=sizes.warmup,
                         min_sample_s=sizes.min_sample_s)
    w_ours, w_ref = ours.weights(features=F, labels=y), ref.weights(F, y)
    row: dict[str, Any] = {
        "B": B, "D": D, "C": C, "M": M,
        "ours_us": median_us(stats, "ours"),
        "ours_novalidate_us": median_us(stats, "ours_novalidate"),
        "reference_us": median_us(stats, "reference"),
        "speedup": paired_ratio(stats, "reference", "ours"),
        "speedup_novalidate": paired_ratio(stats, "reference", "ours_novalidate"),
        "refresh_ours_us": refresh_ours * 1e6, "refresh_reference_us": refresh_ref * 1e6,
        "max_abs_weight_diff": float((w_ours - w_ref).abs().max()),
        "weights_differing_1e-3": int(((w_ours - w_ref).abs() > 1e-3).sum()),
        "timing": without_samples(stats),
    }
    if per_call_clean:
        row["ours_clean_per_call_us"] = median_us(stats, "ours_clean_per_call")
    if memory:
        row["ours_peak_bytes"] = peak_memory(fns["ours"], device)["tensor_bytes"]
        row["reference_peak_bytes"] = peak_memory(fns["reference"], device)["tensor_bytes"]
    return row


def run_fbr_sweep(sizes: Sizes, device: torch.device, progress: bool) -> list[dict[str, Any]]:
    grid = [(B, D, C, M) for B in sizes.sweep_B for D in sizes.sweep_D for C in sizes.sweep_C
            for M in sizes.sweep_M]
    rows = []
    for i, (B, D, C, M) in enumerate(tqdm(grid, desc="fbr sweep", disable=not progress)):
        reps = sizes.repeats_big_M if M >= sizes.big_M else sizes.repeats
        rows.append(fbr_case(B, D, C, M, device=device, sizes=sizes, repeats=reps, seed=i))
    return rows
