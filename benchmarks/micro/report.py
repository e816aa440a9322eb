"""The Markdown report of a ``benchmarks.micro`` run and the targets of issue 4 it checks."""

from __future__ import annotations

from typing import Any

import numpy as np


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(b) < 1024 or unit == "GiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} GiB"


def _fmt_t(us: float) -> str:
    if us < 1000:
        return f"{us:.0f} µs"
    if us < 1e6:
        return f"{us / 1e3:.1f} ms"
    return f"{us / 1e6:.2f} s"


def markdown(res: dict[str, Any]) -> str:
    m = res["meta"]
    mc = m["machine"]
    out = [f"Command: `{m['command']}`  ",
           f"Machine: {mc['cpu_model']}, {mc['logical_cpus']} logical CPUs, torch "
           f"{mc['torch']}, {mc['torch_threads']} intra-op thread(s), device `{mc['device']}`"
           + (f" ({mc['gpu']})" if "gpu" in mc else "")
           + f"; load average at start {mc.get('load_avg_1m_at_start', float('nan')):.1f}; "
           f"{m['date']}; total {m['wall_s']:.0f} s.", ""]
    if "fbr_sweep" in res:
        out += ["**FBR weights per batch** (median of interleaved rounds; ours = "
                "`SurrogateReweighter.weights` with clean statistics cached by `set_clean`; "
                "reference = B x M Gram matrix of centred features, then class means):", "",
                "| B | D | C | M | ours | ours, validate=False | ours, clean batch per call "
                "| reference (Gram) | speed-up | peak mem ours / ref |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["fbr_sweep"]:
            out.append(
                f"| {r['B']} | {r['D']} | {r['C']} | {r['M']} | {_fmt_t(r['ours_us'])} | "
                f"{_fmt_t(r['ours_novalidate_us'])} | {_fmt_t(r['ours_clean_per_call_us'])} | "
                f"{_fmt_t(r['reference_us'])} | {r['speedup']:.1f}x | "
                f"{_fmt_bytes(r['ours_peak_bytes'])} / {_fmt_bytes(r['reference_peak_bytes'])} |")
        out.append("")
    if "fbr_vs_step" in res:
        s = res["fbr_vs_step"]
        out += [f"**FBR vs one training step** ({s['model']}, B = {s['B']}, D = {s['D']}, "
                f"C = {s['C']}, M = {s['M']}):", "",
                "| | time | of a plain step | peak mem |", "|---|---:|---:|---:|",
                f"| plain step (fwd + bwd + SGD) | {s['plain_step_ms']:.0f} ms | 1 | "
                f"{_fmt_bytes(s['peak_bytes']['plain_step'])} |",
                f"| FBR weights (per batch) | {_fmt_t(s['fbr_weights_us'])} | "
                f"{100 * s['fbr_fraction_of_step']:.3f}% (target <= 2%) | "
                f"{_fmt_bytes(s['peak_bytes']['fbr_weights'])} |",
                f"| FBR-weighted step (capture + weights + weighted loss) | "
                f"{s['fbr_weighted_step_ms']:.0f} ms | {s['fbr_step_over_plain']:.3f}x | "
                f"{_fmt_bytes(s['peak_bytes']['fbr_weighted_step'])} |",
                f"| clean refresh (M features in eval mode + `set_clean`), once per epoch | "
                f"{s['refresh_ms']:.0f} ms | {100 * s['refresh_amortised_fraction']:.2f}% "
                f"amortised over {s['refresh_steps_per_epoch']} steps | |", ""]
    if "l2rw" in res:
        s = res["l2rw"]
        x, ms, mem = s["x_plain_step"], s["ms"], s["peak_bytes"]
        out += [f"**Exact L2RW** ({s['model']}, {s['params']:,} parameters, B = {s['B']}, clean "
                f"batch {s['clean_B']}; JVP scores match the lookahead's to "
                f"{s['jvp_vs_classic_max_rel_diff']:.1e} relative):", "",
                "| | time | x plain step | peak mem |", "|---|---:|---:|---:|",
                f"| plain step | {ms['plain_step']:.0f} ms | 1 | "
                f"{_fmt_bytes(mem['plain_step'])} |",
                f"| clean backward (`set_clean`) | {ms['clean_grad']:.0f} ms | "
                f"{x['clean_grad']:.2f} | {_fmt_bytes(mem['clean_grad'])} |",
                f"| JVP scores (`weights`, cached clean gradient) | {ms['jvp']:.0f} ms "
                f"| {x['jvp']:.2f} | |",
                f"| **full-network weights** (clean backward + JVP) | {ms['jvp_weights']:.0f} ms "
                f"| {x['jvp_weights']:.2f} | {_fmt_bytes(mem['jvp_weights'])} |",
                f"| weighted training step | {ms['weighted_step']:.0f} ms | "
                f"{x['weighted_step']:.2f} | {_fmt_bytes(mem['weighted_step'])} |",
                f"| **JVP-path total** (weights + weighted step) | {ms['jvp_total']:.0f} ms | "
                f"{x['jvp_total']:.2f} (target <= 1.7) | |",
                f"| **fused total** (clean backward + `weights_and_losses` + backward of the "
                f"step) | {ms['fused_total']:.0f} ms | {x['fused_total']:.2f} (target <= 1.7) | |",
                f"| classic lookahead weights (virtual step + 2nd-order backward) | "
                f"{ms['classic_weights']:.0f} ms | {x['classic_weights']:.2f} | "
                f"{_fmt_bytes(mem['classic_weights'])} |",
                f"| **classic total** (lookahead + weighted step) | {ms['classic_total']:.0f} ms"
                f" | {x['classic_total']:.2f} | |",
                f"| last-layer closed form (given both batches' logits and features) | "
                f"{_fmt_t(ms['last_layer_weights'] * 1e3)} | {x['last_layer_weights']:.4f} | "
                f"{_fmt_bytes(mem['last_layer_weights'])} |",
                f"| last-layer incl. the clean batch's forward | "
                f"{ms['last_layer_with_clean_forward']:.0f} ms | "
                f"{x['last_layer_with_clean_forward']:.2f} | "
                f"{_fmt_bytes(mem['last_layer_with_clean_forward'])} |", "",
                f"Classic / JVP: {s['classic_over_jvp_total']:.2f}x (totals), "
                f"{s['classic_over_jvp_weights']:.2f}x (weights only). Full network / last "
                f"layer: {s['full_over_last_layer']:.0f}x (closed-form kernel), "
                f"{s['full_over_last_layer_with_clean_forward']:.1f}x (incl. clean forward).",
                ""]
    if "spearman" in res:
        s = res["spearman"]
        out += [f"**Last-layer vs full-network L2RW scores** on a trained model ({s['model']}, "
                f"{s['epochs']} epochs on {s['train_images']} images, {s['data']}; test "
                f"accuracy {100 * s['test_accuracy']:.1f}%): Spearman rho of the raw scores "
                f"u, median over {s['batches']} batches of {s['B']} (clean batches of "
                f"{s['clean_B']}): **{s['spearman_scores_median']:.3f}** (per batch: "
                + ", ".join(f"{r:.2f}" for r in s["spearman_scores"]) + "); of the clipped "
                f"weights max(u, 0): {s['spearman_clipped_weights_median']:.3f}; sign agreement "
                f"{100 * s['sign_agreement_median']:.0f}%. Noisy-label rate among "
                f"positive-weight samples: last layer "
                f"{100 * s['noisy_label_rate_among_positive']['last']:.0f}%, full network "
                f"{100 * s['noisy_label_rate_among_positive']['full']:.0f}% (batches: "
                f"{100 * s['noisy_label_rate_in_batches']:.0f}%).", ""]
    if "checks" in res:
        c = res["checks"]["fbr_float64"]
        out += [f"Check: library FBR vs Gram reference in float64: max |w - w_ref| = "
                f"{c['max_abs_weight_diff']:.1e}, max relative direction error "
                f"{c['max_rel_direction_diff']:.1e} ({'agree' if c['agree'] else 'DISAGREE'})."
                , ""]
    return "\n".join(out)


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 4: measured value, target, met or not."""
    t: dict[str, Any] = {}
    if "fbr_vs_step" in res:
        f = res["fbr_vs_step"]["fbr_fraction_of_step"]
        t["fbr_weights_le_2pct_of_step"] = {"measured": f, "target": 0.02, "met": f <= 0.02}
    if "l2rw" in res:
        x = res["l2rw"]["x_plain_step"]
        t["l2rw_jvp_total_le_1.7x_step"] = {"measured": x["jvp_total"], "target": 1.7,
                                            "met": x["jvp_total"] <= 1.7,
                                            "classic_total": x["classic_total"]}
        t["l2rw_fused_total_le_1.7x_step"] = {"measured": x["fused_total"], "target": 1.7,
                                              "met": x["fused_total"] <= 1.7}
    if "fbr_sweep" in res:
        # Log-log slope of time vs M per (B, D, C): 0 = flat, 1 = linear.
        groups: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
        for r in res["fbr_sweep"]:
            groups.setdefault((r["B"], r["D"], r["C"]), []).append(r)
        slopes: dict[str, list[float]] = {"ours": [], "reference": []}
        for rows in groups.values():
            if len({r["M"] for r in rows}) < 2:
                continue
            lm = np.log([r["M"] for r in rows])
            for key in slopes:
                lt = np.log([r[key + "_us"] for r in rows])
                slopes[key].append(float(np.polyfit(lm, lt, 1)[0]))
        if slopes["ours"]:
            t["fbr_time_vs_M_loglog_slope"] = {
                "ours_median": float(np.median(slopes["ours"])),
                "ours_max": max(slopes["ours"]),
                "reference_median": float(np.median(slopes["reference"])),
                "reference_min": min(slopes["reference"]),
                "expected": "ours ~0 (flat in M), reference -> 1 (linear in M) as M grows"}
    return t
