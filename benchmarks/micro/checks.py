"""Section ``checks``: the library's FBR weights and directions vs the Gram reference."""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.micro.common import Sizes, fbr_problem
from benchmarks.micro.refs import GramFBR
from robustweights import SurrogateReweighter


def run_checks(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """The library's FBR weights vs the Gram reference in float64 (must agree to rounding)."""
    worst_w = worst_d = 0.0
    cases = []
    for i, (B, D, C, M) in enumerate(sizes.check_sizes):
        for alpha in (0.0, 1.0 / (C - 1)):
            F, y, G, yc = fbr_problem(B, D, C, M, device=device, seed=500 + i,
                                      dtype=torch.float64)
            rw = SurrogateReweighter(C, alpha=alpha)
            w = rw.weights(features=F, labels=y, clean_features=G, clean_labels=yc)
            ref = GramFBR(G, yc, C, alpha)
            d_ref, w_ref = ref.directions(F, y), ref.weights(F, y)
            dw = float((w - w_ref).abs().max())
            assert rw.last_scores is not None
            dd = float((rw.last_scores - d_ref).abs().max() / d_ref.abs().max())
            worst_w, worst_d = max(worst_w, dw), max(worst_d, dd)
            cases.append({"B": B, "D": D, "C": C, "M": M, "alpha": alpha,
                          "max_abs_weight_diff": dw, "max_rel_direction_diff": dd,
                          "zero_weights": int((w_ref == 0).sum())})
    return {"fbr_float64": {"max_abs_weight_diff": worst_w, "max_rel_direction_diff": worst_d,
                            "agree": worst_w < 1e-9 and worst_d < 1e-9, "cases": cases}}
