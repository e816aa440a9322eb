"""Measure proposed library changes against the library as it is (not part of the default run).

``python -m benchmarks.micro_proposals [--threads 1] [--out results/micro]``

These are *proposals*, written here so that their effect is measured side by side with the
current code, on the same inputs, with the same harness; they reach into the library's documented
module-level kernels (``robustweights.surrogate``) and into ``torch.autograd.forward_ad``, which
the benchmark proper does not. Delete this file once the changes are applied or rejected.

1. ``fbr_lean``: FBR weights with (a) the prototypes computed once per clean refresh instead of
   on every call, (b) the finiteness check on the (B, C) similarity instead of the (B, D) features
   (exact: a NaN/inf entry in a feature row always makes that row of S = (F - mu) P^T non-finite
   when P is finite), (c) the ">= 2 clean classes" check once per refresh, (d) masks applied with
   ``torch.where`` instead of multiplying by bool tensors (no dtype-promotion copies). Checked to
   give the library's weights bit for bit.
2. ``l2rw_fused``: the JVP forward also records the reverse-mode graph of its primal (the
   parameters enter as dual numbers whose primal requires grad), so the weighted training step
   reuses that forward: one forward with tangents + one backward, instead of a JVP forward and a
   separate forward + backward. Checked to give the library's scores.
3. ``clean_batch``: the JVP path's total with a clean batch of B/4 instead of B, alone and with
   2.; and, for scale only, the fused step with a clean gradient reused from an earlier step
   (stale: *not* L2RW), i.e. the cost of the JVP forward + backward alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call

from benchmarks.micro import CE, Sizes, Trainer, _mean_one, fbr_problem, images
from benchmarks.micro_harness import machine_info, paired_ratio, side_by_side
from robustweights import MetaReweighter, SurrogateReweighter, weighted_mean
from robustweights.surrogate import fbr_prototypes


class LeanFBR:
    """FBR recompute mode with the proposed per-call path (validation kept, made cheaper)."""

    def __init__(self, num_classes: int, alpha: float, w_init: float = 0.5,
                 w_max: float = 1.0) -> None:
        self.C, self.alpha, self.w_init, self.w_max = num_classes, alpha, w_init, w_max

    def set_clean(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if not bool(torch.isfinite(features).all()):  # once per refresh
            raise ValueError("Expected `clean_features` to be finite")
        dt = torch.float64 if features.dtype == torch.float64 else torch.float32
        sums = torch.zeros(self.C, features.shape[1], dtype=dt, device=features.device)
        sums.index_add_(0, labels, features.to(dt))
        counts = torch.bincount(labels, minlength=self.C).to(dt)
        if int((counts > 0).sum()) < 2:  # once per refresh
            raise ValueError("Expected `clean_labels` to cover at least 2 classes")
        self.mu, self.protos, self.present = fbr_prototypes(sums, counts)  # cached

    def weights(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        lo_hi = torch.stack([labels.min(), labels.max()]).tolist()  # one sync for both
        if lo_hi[0] < 0 or lo_hi[1] >= self.C:
            raise ValueError("Expected `labels` in range")
        S = (features.to(self.mu.dtype) - self.mu) @ self.protos.T
        if not bool(torch.isfinite(S).all()):  # (B, C) instead of (B, D)
            raise ValueError("Expected `features` to be finite")
        present = self.present
        second = S.masked_fill(~present, float("-inf")).topk(2, dim=1).values[:, 1:2]
        shifted = torch.where(present, S - second, 0.0)
        own = shifted.gather(1, labels[:, None]).squeeze(1)
        valid = present[labels]
        d = torch.where(valid, own - self.alpha * (shifted.sum(1) - own), 0.0)
        neg = (d < 0) & valid
        eta = torch.where(neg, self.w_init / d.abs().clamp_min(torch.finfo(d.dtype).tiny),
                          0.0).max()
        w = (self.w_init + eta * d).clamp(0, self.w_max)
        w = torch.where(w <= self.w_init, 0.0, w)
        w = torch.where(neg.any(), w, self.w_max)
        return torch.where(valid, w, 0.0)


def fused_jvp_step(tr: Trainer, x: torch.Tensor, y: torch.Tensor,
                   g: dict[str, torch.Tensor]) -> torch.Tensor:
    """Scores u = <grad l_i, g> and the u-weighted training step from one forward."""
    params = dict(tr.model.named_parameters())
    with fwAD.dual_level():
        duals = {k: fwAD.make_dual(p, g[k]) for k, p in params.items()}
        losses, tangent = fwAD.unpack_dual(CE(functional_call(tr.model, duals, (x,)), y))
    u = tangent.detach()
    tr.opt.zero_grad(set_to_none=True)
    weighted_mean(losses, _mean_one(u)).backward()
    tr.opt.step()
    return u


def _fbr_case(B: int, D: int, C: int, M: int, repeats: int, dev: torch.device
              ) -> dict[str, Any]:
    F, y, G, yc = fbr_problem(B, D, C, M, device=dev, seed=3)
    lib = SurrogateReweighter(C, alpha=1.0 / (C - 1))
    lib.set_clean(features=G, labels=yc)
    lib_nv = SurrogateReweighter(C, alpha=1.0 / (C - 1), validate=False)
    lib_nv.set_clean(features=G, labels=yc)
    lean = LeanFBR(C, 1.0 / (C - 1))
    lean.set_clean(G, yc)
    same = bool(torch.equal(lib.weights(features=F, labels=y), lean.weights(F, y)))
    st = side_by_side({"library": lambda: lib.weights(features=F, labels=y),
                       "library_novalidate": lambda: lib_nv.weights(features=F, labels=y),
                       "proposed": lambda: lean.weights(F, y)},
                      device=dev, repeats=repeats, min_sample_s=0.02)
    return {"library_us": st["library"]["median_s"] * 1e6,
            "library_novalidate_us": st["library_novalidate"]["median_s"] * 1e6,
            "proposed_us": st["proposed"]["median_s"] * 1e6,
            "proposed_over_library": paired_ratio(st, "proposed", "library"),
            "proposed_over_library_novalidate": paired_ratio(st, "proposed",
                                                             "library_novalidate"),
            "identical_weights": same}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.micro_proposals")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=Path("results/micro"))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    sizes = Sizes()
    res: dict[str, Any] = {"machine": machine_info(dev)}

    # 1. FBR per-call path.
    fbr = {f"B{B}_D{D}_C{C}_M{M}": _fbr_case(B, D, C, M, args.repeats, dev)
           for B, D, C, M in ((128, 256, 10, 2000), (512, 512, 100, 2000))}
    res["fbr_lean"] = fbr

    # 2./3. L2RW: library JVP path vs the fused forward; clean batch B vs B/4.
    tr = Trainer(sizes, dev)
    x, y = images(sizes.l2rw_B, dev, 3, sizes.num_classes)
    xc, yc = images(sizes.l2rw_clean_B, dev, 4, sizes.num_classes)
    q = sizes.l2rw_clean_B // 4
    full = MetaReweighter.from_model(tr.model, CE, normalization="mean")
    full.weights_from_model(x, y, clean_inputs=xc, clean_labels=yc)
    u_lib = full.last_scores.clone()
    state = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.opt.zero_grad(set_to_none=True)
    CE(tr.model(xc), yc).mean().backward()  # g = grad of the mean clean loss
    g = {k: p.grad.detach().clone() for k, p in tr.model.named_parameters()}
    tr.opt.zero_grad(set_to_none=True)
    tr.model.load_state_dict(state)
    u_fused = fused_jvp_step(tr, x, y, g)
    tr.model.load_state_dict(state)
    rel = float((u_fused - u_lib).abs().max() / u_lib.abs().max())

    def library_path() -> None:
        w = full.weights_from_model(x, y, clean_inputs=xc, clean_labels=yc)
        tr.weighted_step(x, y, w)

    def fused_path() -> None:
        full.set_clean_inputs(xc, yc)  # the same clean backward as the library path
        fused_jvp_step(tr, x, y, g)

    def library_quarter_clean() -> None:
        w = full.weights_from_model(x, y, clean_inputs=xc[:q], clean_labels=yc[:q])
        tr.weighted_step(x, y, w)

    def fused_quarter_clean() -> None:
        full.set_clean_inputs(xc[:q], yc[:q])
        fused_jvp_step(tr, x, y, g)

    def fused_stale_clean() -> None:  # NOT exact L2RW: the clean gradient of an earlier step
        fused_jvp_step(tr, x, y, g)

    st = side_by_side({"plain_step": lambda: tr.plain_step(x, y), "library": library_path,
                       "fused": fused_path, "library_clean_quarter": library_quarter_clean,
                       "fused_clean_quarter": fused_quarter_clean,
                       "fused_stale_clean_gradient_not_exact": fused_stale_clean},
                      device=dev, repeats=max(3, args.repeats // 2), warmup=1)
    res["l2rw"] = {
        "fused_vs_library_scores_max_rel_diff": rel,
        "ms": {k: statistics.median(v["samples_s"]) * 1e3 for k, v in st.items()},
        "x_plain_step": {k: paired_ratio(st, k, "plain_step") for k in st},
        "clean_quarter_B": q,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proposals.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    return res


if __name__ == "__main__":
    main()
