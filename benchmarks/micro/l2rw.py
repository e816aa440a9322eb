"""Section ``l2rw``: exact full-network L2RW (clean backward + forward-mode JVP, and the fused
``weights_and_losses``) and the last-layer closed form vs a plain step and vs Ren et al.'s
lookahead, on the same model and batch."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from benchmarks.micro.common import CE, Sizes, Trainer, images, without_samples
from benchmarks.micro.harness import peak_memory, side_by_side
from benchmarks.micro.refs import classic_l2rw_scores
from robustweights import MetaReweighter, ModelMetaReweighter, weighted_mean


def _mean_one(u: torch.Tensor) -> torch.Tensor:
    pos = u.clamp_min(0)
    return pos * (len(u) / pos.sum()) if float(pos.sum()) > 0 else torch.zeros_like(u)


def run_l2rw(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    tr = Trainer(sizes, device)
    C = sizes.num_classes
    x, y = images(sizes.l2rw_B, device, 3, C)
    xc, yc = images(sizes.l2rw_clean_B, device, 4, C)
    full = ModelMetaReweighter(tr.model, CE, normalization="mean")
    last = MetaReweighter(C, normalization="mean")

    # Correctness first, at one set of parameters: JVP scores vs the lookahead's.
    u_classic = classic_l2rw_scores(tr.model, CE, x, y, xc, yc)
    full.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    u_jvp = full.last_scores
    assert u_jvp is not None
    rel = float((u_jvp - u_classic).abs().max() / u_classic.abs().max())

    logits = tr.model(x).detach()
    h = tr.capture.features

    def clean_grad() -> None:
        full.set_clean(inputs=xc, labels=yc)

    def jvp() -> torch.Tensor:  # uses the clean gradient cached by the latest clean_grad()
        return full.weights(inputs=x, labels=y)

    def fused_step() -> None:  # weights_and_losses: the scoring forward is the step's forward
        w, losses = full.weights_and_losses(inputs=x, labels=y)
        tr.opt.zero_grad(set_to_none=True)
        weighted_mean(losses, w).backward()
        tr.opt.step()

    def classic() -> torch.Tensor:
        return _mean_one(classic_l2rw_scores(tr.model, CE, x, y, xc, yc))

    def last_kernel(zc: torch.Tensor | None = None, hc: torch.Tensor | None = None) -> Any:
        return last.weights(logits=logits, features=h, labels=y,
                            clean_logits=zc if zc is not None else zc_fixed,
                            clean_features=hc if hc is not None else hc_fixed, clean_labels=yc)

    def last_with_clean_forward() -> Any:
        with torch.no_grad():
            zc = tr.model(xc)
        return last_kernel(zc, tr.capture.features)

    with torch.no_grad():
        zc_fixed = tr.model(xc)
    hc_fixed = tr.capture.features
    w_fixed = full.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc)
    clean_grad()
    fns = {
        "plain_step": lambda: tr.plain_step(x, y),
        "weighted_step": lambda: tr.weighted_step(x, y, w_fixed),
        "clean_grad": clean_grad,
        "jvp": jvp,
        "fused_step": fused_step,
        "classic_weights": classic,
        "last_layer_weights": last_kernel,
        "last_layer_with_clean_forward": last_with_clean_forward,
    }
    stats = side_by_side(fns, device=device, repeats=sizes.l2rw_repeats, warmup=1,
                         min_sample_s=sizes.min_sample_s)
    s = {k: v["samples_s"] for k, v in stats.items()}
    rounds = range(len(s["plain_step"]))
    # Totals per round (paired): the JVP path and the classic path each end with the weighted
    # training step; ratios are medians of per-round ratios to the plain step of that round.
    jvp_w = [s["clean_grad"][r] + s["jvp"][r] for r in rounds]
    jvp_total = [jvp_w[r] + s["weighted_step"][r] for r in rounds]
    fused_total = [s["clean_grad"][r] + s["fused_step"][r] for r in rounds]
    classic_total = [s["classic_weights"][r] + s["weighted_step"][r] for r in rounds]
    plain = s["plain_step"]

    def med_ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(p / q for p, q in zip(a, b, strict=True))

    mem = {name: peak_memory(fn, device)["tensor_bytes"] for name, fn in fns.items()
           if name not in ("jvp", "fused_step")}
    mem["jvp_weights"] = peak_memory(
        lambda: full.weights(inputs=x, labels=y, clean_inputs=xc, clean_labels=yc),
        device)["tensor_bytes"]
    return {
        "model": tr.model_source, "B": sizes.l2rw_B, "clean_B": sizes.l2rw_clean_B, "C": C,
        "D": h.shape[1], "params": sum(p.numel() for p in tr.model.parameters()),
        "ms": {
            "plain_step": statistics.median(plain) * 1e3,
            "weighted_step": statistics.median(s["weighted_step"]) * 1e3,
            "clean_grad": statistics.median(s["clean_grad"]) * 1e3,
            "jvp": statistics.median(s["jvp"]) * 1e3,
            "jvp_weights": statistics.median(jvp_w) * 1e3,
            "jvp_total": statistics.median(jvp_total) * 1e3,
            "fused_total": statistics.median(fused_total) * 1e3,
            "classic_weights": statistics.median(s["classic_weights"]) * 1e3,
            "classic_total": statistics.median(classic_total) * 1e3,
            "last_layer_weights": statistics.median(s["last_layer_weights"]) * 1e3,
            "last_layer_with_clean_forward":
                statistics.median(s["last_layer_with_clean_forward"]) * 1e3,
        },
        "x_plain_step": {
            "clean_grad": med_ratio(s["clean_grad"], plain),
            "jvp": med_ratio(s["jvp"], plain),
            "jvp_weights": med_ratio(jvp_w, plain),
            "jvp_total": med_ratio(jvp_total, plain),
            "fused_total": med_ratio(fused_total, plain),
            "classic_weights": med_ratio(s["classic_weights"], plain),
            "classic_total": med_ratio(classic_total, plain),
            "weighted_step": med_ratio(s["weighted_step"], plain),
            "last_layer_weights": med_ratio(s["last_layer_weights"], plain),
            "last_layer_with_clean_forward": med_ratio(s["last_layer_with_clean_forward"],
                                                       plain),
        },
        "classic_over_jvp_total": med_ratio(classic_total, jvp_total),
        "classic_over_jvp_weights": med_ratio(s["classic_weights"], jvp_w),
        "full_over_last_layer": med_ratio(jvp_w, s["last_layer_weights"]),
        "full_over_last_layer_with_clean_forward": med_ratio(
            jvp_w, s["last_layer_with_clean_forward"]),
        "jvp_vs_classic_max_rel_diff": rel,
        "target_total_x_plain": 1.7,
        "peak_bytes": mem,
        "timing": without_samples(stats),
    }
