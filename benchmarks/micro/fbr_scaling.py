"""Section ``fbr_scaling``: FBR time vs M and vs B at one (D, C), for the plots."""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from benchmarks.micro.common import Sizes
from benchmarks.micro.fbr_sweep import fbr_case


def run_fbr_scaling(sizes: Sizes, device: torch.device, progress: bool,
                    measured: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Time vs M and vs B at one (D, C); cases already in ``measured`` (the sweep) are reused."""
    D, C = sizes.scale_D, sizes.scale_C
    cases = ([("M", B, M) for B in sizes.scale_M_at_B for M in sizes.scale_M]
             + [("B", B, M) for M in sizes.scale_B_at_M for B in sizes.scale_B])
    known = {(r["B"], r["D"], r["C"], r["M"]): r for r in measured or []}
    out: dict[str, list[dict[str, Any]]] = {"vs_M": [], "vs_B": []}
    for i, (axis, B, M) in enumerate(tqdm(cases, desc="fbr scaling", disable=not progress)):
        r = known.get((B, D, C, M))
        if r is None:
            r = fbr_case(B, D, C, M, device=device, sizes=sizes, repeats=sizes.scale_repeats,
                         seed=1000 + i, memory=False)
            known[(B, D, C, M)] = r
        out["vs_" + axis].append({k: v for k, v in r.items() if k != "timing"})
    return {"D": D, "C": C, **out}
