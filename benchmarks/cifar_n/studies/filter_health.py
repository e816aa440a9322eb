"""Does the filter hold while the network memorises? Per-epoch diagnosis of FBR runs, and the
label-free health signal checked against the true labels.

For every FBR-family run (``fbr``, ``fbr_plus``) of the given result folders this draws, per
epoch: the kept precision and recall against the true labels (and the pool's share of correct
labels, the precision of keeping at random); the share of wrong labels the network predicts as
given (memorisation) and, from the recipe's health report, its agreement with the pool's labels;
where the wrongly labelled samples' features sit (the share nearest the prototype of their given
class, which the filter keeps, against the share nearest their true class); and the health signal
itself, the pool's kept share against the held-out trusted samples' (runs with
``--set fbr.health_holdout=K``), with the epoch it declared the filter collapsed. It prints, per
run, that epoch beside the first epoch the *true* labels call a collapse: the network predicts at
least half of the wrong labels as given (memorised) *and* the filter keeps at least half of the
wrongly labelled samples, i.e. it keeps them because they are fitted::

    python -m benchmarks.cifar_n.studies.filter_health results/diag_memorise results/diag_cpu \\
        --out docs/figures/filter_health.png

The feature shares and per-epoch memorisation need ``--diag-every 1`` on the benchmark run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.report import load_records

__all__ = ["collapse_epochs", "main"]

FBR_METHODS = ("fbr", "fbr_plus")


def _series(rec: dict[str, Any], key: str) -> np.ndarray:
    """A per-epoch curve of the record (the runner's curves, or the method's extras)."""
    c = rec["curves"]
    if key in c:
        vals = c[key]
    else:
        vals = [e.get(key) for e in c["extra"]]
    return np.array([np.nan if v is None else float(v) for v in vals])


def collapse_epochs(rec: dict[str, Any], share: float = 0.5) -> tuple[int | None, int | None]:
    """``(true, signal)``: the first epoch after the warm-up at which, by the true labels, the
    network has memorised at least ``share`` of the wrong labels and the filter keeps at least
    ``share`` of the wrongly labelled samples (memorisation is measured at the diagnosis epochs
    only), and the first epoch the health signal declared the filter collapsed (None when it
    never did, or was not measured)."""
    kept_noisy = _series(rec, "kept_frac_noisy")
    warm = _series(rec, "warmup")
    memorised = {d["epoch"]: d.get("memorised") for d in rec.get("diagnostics", [])}
    true = next((e for e, (k, w) in enumerate(zip(kept_noisy, warm, strict=True))
                 if w == 0 and math.isfinite(k) and k >= share
                 and (memorised.get(e) or 0.0) >= share), None)
    collapsed = _series(rec, "health_collapsed")
    signal = next((e for e, v in enumerate(collapsed) if v == 1.0), None)
    return true, signal


def _runs(dirs: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in dirs:
        for r in load_records(Path(d) / "results.jsonl"):
            if r["method"] in FBR_METHODS:
                out.append((f"{Path(d).name}: {r['key']}", r))
    return out


def _figure(runs: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 4, figsize=(17, 3.4 * len(runs)), squeeze=False)
    for row, (label, r) in zip(axes, runs, strict=True):
        ep = np.arange(len(r["curves"]["test_acc"]))
        pool_clean = 100 * (1 - float(r["pool_noise_rate"]))
        ax = row[0]
        ax.plot(ep, 100 * _series(r, "precision"), label="kept precision")
        ax.plot(ep, 100 * _series(r, "recall"), label="kept recall")
        ax.plot(ep, 100 * _series(r, "test_acc"), label="test accuracy", color="k", lw=0.8)
        ax.axhline(pool_clean, color="grey", ls="--", lw=0.8, label="pool's correct labels")
        ax.set_title(f"{label}\ntrue-label view", fontsize=8)
        diag = r.get("diagnostics", [])
        de = [d["epoch"] for d in diag]
        ax = row[1]
        ax.plot(de, [100 * (d.get("memorised") or np.nan) for d in diag], marker=".",
                label="wrong labels memorised (true labels)")
        ax.plot(ep, 100 * _series(r, "health_pool_agreement"),
                label="agreement with the pool's labels")
        ax.plot(ep, 100 * _series(r, "health_heldout_accuracy"),
                label="held-out trusted accuracy")
        ax.set_title("memorisation and its label-free proxy", fontsize=8)
        ax = row[2]
        for key, name in (("noisy_nearest_given", "wrong labels: nearest = given class"),
                          ("noisy_nearest_true", "wrong labels: nearest = true class"),
                          ("clean_nearest_given", "right labels: nearest = their class")):
            ax.plot(de, [100 * (d.get(key) if d.get(key) is not None else np.nan)
                         for d in diag], marker=".", label=name)
        ax.set_title("where the features sit (nearest centred prototype)", fontsize=8)
        ax = row[3]
        ax.plot(ep, 100 * _series(r, "health_pool_kept"), label="pool kept")
        ax.plot(ep, 100 * _series(r, "health_heldout_kept"), label="held-out trusted kept")
        true, signal = collapse_epochs(r)
        if signal is not None:
            ax.axvline(signal, color="C3", lw=1, label=f"signal: collapsed (epoch {signal})")
        if true is not None:
            ax.axvline(true, color="k", ls=":", lw=1, label=f"true labels: collapsed ({true})")
        ax.set_title("health signal (no true labels)", fontsize=8)
        for ax in row:
            ax.set_xlabel("epoch", fontsize=8)
            ax.set_ylabel("%", fontsize=8)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n.studies.filter_health",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dirs", nargs="+", help="output folders of benchmarks.cifar_n")
    p.add_argument("--share", type=float, default=0.5,
                   help="memorised and kept share of the wrong labels at which the true labels "
                        "call the filter collapsed (default 0.5)")
    p.add_argument("--out", default=None, help="write the figure here (PNG)")
    args = p.parse_args(argv)
    runs = _runs(args.result_dirs)
    if not runs:
        raise SystemExit(f"no FBR runs in {args.result_dirs}")
    print("| run | last acc | kept precision / recall (end) | wrong labels kept / memorised "
          "(end) | collapse by the true labels (epoch) | collapse by the signal (epoch) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in runs:
        true, signal = collapse_epochs(r, args.share)
        f = r["final"]
        mem = r.get("memorisation", {}).get("memorised")
        print(f"| {label} | {100 * r['last_acc']:.1f} | {100 * (f['precision'] or 0):.1f} / "
              f"{100 * (f['recall'] or 0):.1f} | {100 * (f['kept_frac_noisy'] or 0):.1f} / "
              f"{100 * (mem or 0):.1f} | {'never' if true is None else true} | "
              f"{'never' if signal is None else signal} |")
    if args.out:
        _figure(runs, Path(args.out))
        print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
