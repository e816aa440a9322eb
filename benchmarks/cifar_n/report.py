"""Tables and plots from the JSON-lines records of :mod:`benchmarks.cifar_n.runner`.

* :func:`markdown_report`: one table per noise type (mean +- std over seeds of the best and last
  test accuracy, the kept-sample precision / recall, the share of noisy labels memorised, the
  time per epoch and its ratio to CE) and a compact method x noise summary.
* :func:`make_plots`: the summary as a bar chart (last epoch per noise and method, best epoch
  marked, the true-label ceiling as a line), accuracy curves per method, clean-vs-noisy weight
  histograms for FBR and L2RW, and the kept fraction over epochs (clean and noisy samples) for
  FBR and L2RW.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.methods.base import TrainConfig

__all__ = ["aggregate", "load_records", "make_plots", "markdown_report"]

LABELS = {"ce": "CE", "ce_mixup": "CE + mixup", "ce_elr": "CE + ELR",
          "ce_mixup_elr": "CE + mixup + ELR", "clean_only": "Clean only",
          "coteaching": "Co-teaching", "coteaching_mixup": "Co-teaching + mixup",
          "coteaching_plus": "Co-teaching+", "fine": "FINE", "l2rw": "L2RW", "mwnet": "MW-Net",
          "fbr": "FBR (authors' recipe)", "fbr_plus": "FBR+ (ours)"}


AUGMENT_LABELS = {"none": "none", "flip": "horizontal flip", "crop_flip": "random crop + flip"}

NOISE_ORDER = ["worst", "aggre", "rand1", "asym0.4", "rand2", "rand3", "clean", "noisy100"]


def load_records(path: str | Path, *, per_candidate: bool = False) -> list[dict[str, Any]]:
    """All records of a results.jsonl file (later duplicates of a run key win). With
    ``per_candidate`` the key is (run key, ``candidate``): the selection scripts' folders hold
    one run key per candidate."""
    out: dict[Any, dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                out[(rec["key"], rec.get("candidate")) if per_candidate else rec["key"]] = rec
    return list(out.values())


def _ms(values: Sequence[float | None], scale: float = 1.0, digits: int = 1) -> str:
    vals = [v * scale for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def _epochs(values: Sequence[int | None]) -> str:
    return ", ".join("-" if v is None else str(v + 1) for v in values)


def aggregate(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Records grouped by (noise, method)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["noise"], r["method"])].append(r)
    return groups


def _order(items: Iterable[str], reference: Sequence[str]) -> list[str]:
    items = list(dict.fromkeys(items))
    return sorted(items, key=lambda m: (reference.index(m) if m in reference else len(reference),
                                        m))


def wrap_command(command: str, width: int = 88) -> list[str]:
    """A shell command as lines of at most ``width`` characters (a word longer than that stays
    whole), joined by backslash continuations, so that a documentation column shows it whole."""
    lines: list[str] = []
    current = ""
    for word in command.split(" "):
        candidate = f"{current} {word}" if current else word
        if len(candidate) + 2 > width and current:
            lines.append(current + " \\")
            current = "    " + word
        else:
            current = candidate
    return [*lines, current]


def markdown_report(records: list[dict[str, Any]], *, command: str = "", machine: str = "",
                    title: str = "CIFAR-N benchmark") -> str:
    """The Markdown tables (mean ± std over seeds)."""
    groups = aggregate(records)
    methods = _order((r["method"] for r in records), list(LABELS))
    noises = _order((r["noise"] for r in records), NOISE_ORDER)
    lines = [f"# {title}", ""]
    if command:
        lines += ["Reproduce with:", "", "```", *wrap_command(command), "```", ""]
    if machine:
        lines += [f"Machine: {machine}", ""]
    recorded = _order((r["machine"] for r in records if "machine" in r), [])
    unknown = sum("machine" not in r for r in records)
    if len(recorded) + bool(unknown) > 1:
        # A seed's accuracy moves ~2 points between CPUs: a mixed table must say so.
        counts = [f"{m} ({sum(r.get('machine') == m for r in records)} runs)" for m in recorded]
        lines += ["Records come from more than one machine: " + "; ".join(counts)
                  + (f"; {unknown} runs without a recorded machine" if unknown else "") + ".", ""]
    any_rec = records[0] if records else None
    if any_rec is not None:
        spec = any_rec["spec"]
        tr = spec["train"]
        lines += [f"Data: {spec['dataset']}, {any_rec['n_pool']} noisy pool + "
                  f"{any_rec['n_clean']} clean (trusted, true labels) training images, "
                  f"{any_rec['n_test']} test images. Backbone: {tr['arch']} width {tr['width']}, "
                  f"{tr['epochs']} epochs, SGD lr {tr['lr']} (x{tr['gamma']} at "
                  f"{tr['milestones']}), momentum {tr['momentum']}, weight decay "
                  f"{tr['weight_decay']}, batch {tr['batch_size']}, augmentation "
                  f"{AUGMENT_LABELS[TrainConfig(augment=tr['augment']).augment]}.", ""]
    lines += ["## Summary: test accuracy (%), last epoch / best epoch, mean ± std over seeds", ""]
    lines.append("| method | " + " | ".join(noises) + " |")
    lines.append("|---|" + "---|" * len(noises))
    for m in methods:
        cells = []
        for nz in noises:
            g = groups.get((nz, m), [])
            cells.append(f"{_ms([r['last_acc'] for r in g], 100)} / "
                         f"{_ms([r['best_acc'] for r in g], 100)}" if g else "")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    lines.append("")
    # Cost ratios use CPU time (process time): runs share the cores, so wall time depends on
    # what else runs beside them, CPU time much less.
    ce_time = {nz: np.mean([r["epoch_cpu_time_mean"] for r in groups.get((nz, "ce"), [])])
               if groups.get((nz, "ce")) else None for nz in noises}
    for nz in noises:
        recs = [r for m in methods for r in groups.get((nz, m), [])]
        if not recs:
            continue
        rate = np.mean([r["pool_noise_rate"] for r in recs])
        seeds = sorted({r["seed"] for r in recs})
        lines += [f"## {nz} (pool noise rate {100 * rate:.1f}%, seeds {seeds})", "",
                  "| method | last acc | best acc (epoch) | kept precision | kept recall | "
                  "noisy labels memorised | s / epoch | × CE |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in methods:
            g = groups.get((nz, m), [])
            if not g:
                continue
            sel = g[0]["selects"] or m == "mwnet"
            prec = [r["final"]["precision" if g[0]["selects"] else "weighted_precision"]
                    for r in g] if sel else []
            rec = [r["final"]["recall"] for r in g] if g[0]["selects"] else []
            t = [r["epoch_time_mean"] for r in g]
            ratio = (_ms([r["epoch_cpu_time_mean"] / ce_time[nz] for r in g], 1, 2)
                     if ce_time.get(nz) else "-")
            best_ep = _ms([r["best_epoch"] + 1 for r in g], 1, 0)
            mem = [r["memorisation"].get("memorised") for r in g]
            lines.append(
                f"| {LABELS.get(m, m)} | {_ms([r['last_acc'] for r in g], 100)} | "
                f"{_ms([r['best_acc'] for r in g], 100)} ({best_ep}) | "
                f"{_ms(prec, 100)}{'ʷ' if m == 'mwnet' else ''} | {_ms(rec, 100)} | "
                f"{_ms(mem, 100)} | {_ms(t, 1, 2)} | {ratio} |")
        lines.append("")
        for m in methods:
            ph: list[dict[str, Any]] = [r["phases"] for r in groups.get((nz, m), [])
                                        if r.get("phases")]
            if ph:
                lines.append(f"Phases of {LABELS.get(m, m)} (epochs, per seed; - = not reached): "
                             f"filtering from {_epochs([p['filtering'] for p in ph])}, "
                             f"post-filtering from {_epochs([p['post_filtering'] for p in ph])}.")
        for m in methods:
            ps = [r["final"] for r in groups.get((nz, m), []) if "pseudo_coverage" in r["final"]]
            if ps:
                lines.append(f"Pseudo-labels of {LABELS.get(m, m)} at the last epoch: "
                             f"{_ms([p['pseudo_coverage'] for p in ps], 100)}% of the pool, "
                             f"{_ms([p['pseudo_precision'] for p in ps], 100)}% of them right.")
        if any(r.get("phases") or "pseudo_coverage" in r["final"] for r in recs):
            lines.append("")
    lines += [
        "Columns: *last acc* at the final epoch; *best acc* at the best epoch (selected on the "
        "test set: the early-stopping upper bound, reported for every method); *kept "
        "precision / recall*: of the pool samples a method kept in its last epoch (weight > 0, "
        "or above the floor for a recipe that gives dropped samples one), the share whose label "
        "is correct, and the share of correctly labelled pool samples it "
        "kept (ʷ MW-Net never drops a sample: weight-averaged precision instead); *noisy labels "
        "memorised*: share of mislabelled pool samples the final network predicts as their "
        "wrong label (eval mode, no augmentation); *s / epoch*: training time of one epoch "
        "(evaluation excluded, wall clock); *× CE*: CPU time per epoch relative to CE's in the "
        "same run (CPU time, because runs share the cores). Phases: "
        "the library's `detect_phases` rule on per-epoch kept fraction, clean-subset loss and "
        "coupling magnitude (mean |u| for L2RW, mean |d| for FBR).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def _curve_stats(recs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.array([[np.nan if v is None else v for v in r["curves"][key]] for r in recs],
                   dtype=float)
    with np.errstate(all="ignore"):
        return np.nanmean(arr, 0), (np.nanstd(arr, 0) if len(recs) > 1 else np.zeros(arr.shape[1]))


def make_plots(records: list[dict[str, Any]], out_dir: str | Path,
               weights_dir: str | Path | None = None) -> list[Path]:
    """Write the PNG plots into ``out_dir``; returns their paths.

    The weight histograms need the runs' snapshots in ``weights_dir`` (``weights/*.npz`` of the
    run's folder, not committed with the records): they use whichever are there, and are not
    written when there are none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = aggregate(records)
    methods = _order((r["method"] for r in records), list(LABELS))
    noises = _order((r["noise"] for r in records), NOISE_ORDER)
    paths: list[Path] = []

    # The table as a picture: last epoch per (noise, method), mean and std over seeds, with the
    # best epoch as a tick above each bar (the early-stopping upper bound) and, when the records
    # hold CE on the true labels, the ceiling as a line.
    bar_noises = [nz for nz in noises if nz != "clean"]
    if bar_noises:
        fig, ax = plt.subplots(figsize=(4.0 + 2.2 * len(bar_noises), 4.2))
        width = 0.8 / max(1, len(methods))
        for i, m in enumerate(methods):
            xs, last, last_sd, best = [], [], [], []
            for j, nz in enumerate(bar_noises):
                g = groups.get((nz, m))
                if not g:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                last.append(100 * np.mean([r["last_acc"] for r in g]))
                last_sd.append(100 * np.std([r["last_acc"] for r in g], ddof=1)
                               if len(g) > 1 else 0.0)
                best.append(100 * np.mean([r["best_acc"] for r in g]))
            if not xs:
                continue
            bars = ax.bar(xs, last, width, yerr=last_sd, capsize=2, label=LABELS.get(m, m))
            ax.scatter(xs, best, marker="_", s=60, color=bars.patches[0].get_facecolor(),
                       zorder=3)
        ceiling = groups.get(("clean", "ce"))
        if ceiling:
            ax.axhline(100 * np.mean([r["last_acc"] for r in ceiling]), color="black", ls="--",
                       lw=1, label="CE on the true labels (last epoch)")
        ax.set_xticks(range(len(bar_noises)), bar_noises)
        lows = [100 * r["last_acc"] for r in records if r["noise"] in bar_noises]
        ax.set_ylim(max(0.0, min(lows) - 5) if lows else 0.0, None)
        ax.set_ylabel("test accuracy, last epoch (%)")
        ax.set_title("Last epoch, mean ± std over seeds; tick: best epoch")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        paths.append(out_dir / "summary.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # Accuracy curves per method, one panel per noise type.
    fig, axes = plt.subplots(1, len(noises), figsize=(5 * len(noises), 3.8), squeeze=False)
    for ax, nz in zip(axes[0], noises, strict=True):
        for m in methods:
            g = groups.get((nz, m))
            if not g:
                continue
            mean, std = _curve_stats(g, "test_acc")
            ep = np.arange(1, len(mean) + 1)
            ax.plot(ep, 100 * mean, label=LABELS.get(m, m))
            ax.fill_between(ep, 100 * (mean - std), 100 * (mean + std), alpha=0.15)
        ax.set_title(f"{nz}: test accuracy")
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
    max(axes[0], key=lambda ax: len(ax.get_lines())).legend(fontsize=8)  # the fullest panel
    fig.tight_layout()
    paths.append(out_dir / "accuracy_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    weighting = [m for m in ("fbr", "fbr_plus", "l2rw") if any(k[1] == m for k in groups)]
    if weighting:
        # Kept fraction over epochs, clean vs noisy pool samples.
        fig, axes = plt.subplots(len(weighting), len(noises),
                                 figsize=(5 * len(noises), 3.4 * len(weighting)), squeeze=False)
        for i, m in enumerate(weighting):
            for ax, nz in zip(axes[i], noises, strict=True):
                g = groups.get((nz, m))
                if not g:
                    ax.set_visible(False)
                    continue
                for key, lab in (("kept_frac_clean", "clean labels"),
                                 ("kept_frac_noisy", "noisy labels")):
                    mean, std = _curve_stats(g, key)
                    ep = np.arange(1, len(mean) + 1)
                    ax.plot(ep, mean, label=lab)
                    ax.fill_between(ep, mean - std, mean + std, alpha=0.15)
                ph = [r["phases"] for r in g if r.get("phases")]
                for key, style in (("filtering", "--"), ("post_filtering", ":")):
                    starts = [p[key] for p in ph if p[key] is not None]
                    if starts:
                        ax.axvline(float(np.median(starts)) + 1, color="gray", ls=style,
                                   label=f"{key.replace('_', '-')} (median)")
                ax.set_ylim(-0.02, 1.02)
                ax.set_title(f"{LABELS[m]} / {nz}: kept fraction")
                ax.set_xlabel("epoch")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "kept_fraction.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # Weight histograms, clean vs noisy, at the last snapshot of every seed found. The
    # snapshots are not committed with the records: a folder may hold some runs' or none (the
    # figure is then not written), and only methods with snapshots get a row.
    snapshots = Path(weights_dir) if weights_dir is not None else None
    if snapshots is None or not snapshots.is_dir():
        weighting = []
    else:
        weighting = [m for m in weighting if any(snapshots.glob(f"{m}__*__seed*.npz"))]
    if weighting and snapshots is not None:
        fig, axes = plt.subplots(len(weighting), len(noises),
                                 figsize=(5 * len(noises), 3.4 * len(weighting)), squeeze=False)
        drawn = 0
        for i, m in enumerate(weighting):
            for ax, nz in zip(axes[i], noises, strict=True):
                files = sorted(snapshots.glob(f"{m}__{nz}__seed*.npz"))
                if not files:
                    ax.set_visible(False)
                    continue
                w_all, c_all, snap_ep = [], [], None
                for f in files:
                    with np.load(f) as z:
                        if len(z["epochs"]) == 0:
                            continue
                        w_all.append(z["weights"][-1])
                        c_all.append(z["is_clean"])
                        snap_ep = int(z["epochs"][-1])
                if not w_all:
                    ax.set_visible(False)
                    continue
                w, clean = np.concatenate(w_all), np.concatenate(c_all)
                ok = ~np.isnan(w)
                if not ok.any():  # no sample visited
                    ax.set_visible(False)
                    continue
                hi = max(float(np.max(w[ok])), 1e-6)
                bins = np.linspace(0, hi, 41)
                ax.hist(w[ok & clean], bins=bins, histtype="step", lw=1.8, label="clean labels")
                ax.hist(w[ok & ~clean], bins=bins, histtype="step", lw=1.8, label="noisy labels")
                ax.set_yscale("log")
                scale = " (× batch size)" if m == "l2rw" else ""
                ax.set_title(f"{LABELS[m]} / {nz}: weights{scale}, epoch {(snap_ep or 0) + 1}")
                ax.legend(fontsize=8, title=f"{len(w_all)} seed{'s' * (len(w_all) > 1)}",
                          title_fontsize=8)
                drawn += 1
        if drawn:
            fig.tight_layout()
            paths.append(out_dir / "weight_histograms.png")
            fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
