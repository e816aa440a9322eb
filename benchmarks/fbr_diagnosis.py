"""Why FBR does or does not beat CE in a run: its kept recall against the network's test accuracy.

FBR keeps a sample when its label-signed direction pushes its weight above w0. With alpha = 0
(the reference schedule after ``alpha_switch``) that is exactly "the label is the class of the
nearest centred clean prototype", a nearest-class-mean prediction from the network's own
features. A clean sample the filter drops is no longer trained on, so it comes back only when
the network classifies it correctly *without* training on it: after the switch the kept recall
is what the network already got right at the switch, plus what it generalises to. This script
plots recall and test accuracy per epoch with the alpha switch marked, and prints their gap
after the switch::

    python -m benchmarks.fbr_diagnosis results/cifar_n_cpu results/fbr_warmup12 \\
        --noise worst --seed 0 --out docs/figures/cifar_n_fbr_recall.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.report import load_records


def fbr_runs(result_dirs: Sequence[str], noise: str | None, seed: int | None = None,
             labels: Sequence[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """``(label, record)`` of every FBR run in the given result directories."""
    runs = []
    for i, d in enumerate(result_dirs):
        name = labels[i] if labels else Path(d).name
        for r in load_records(Path(d) / "results.jsonl"):
            if (r["method"] == "fbr" and noise in (None, r["noise"])
                    and seed in (None, r["seed"])):
                params = r["spec"]["method_params"]
                runs.append((f"{name}, {r['noise']} s{r['seed']}", r | {"_p": params}))
    return runs


def switch_gap(rec: dict[str, Any]) -> tuple[float, float]:
    """Mean and max |recall - test accuracy| (points) from the alpha switch to the end."""
    c = rec["curves"]
    start = int(rec["_p"].get("alpha_switch", 0))
    rec_, acc = np.asarray(c["recall"][start:]), np.asarray(c["test_acc"][start:])
    if rec_.size == 0:
        return float("nan"), float("nan")
    gap = 100 * (rec_ - acc)
    return float(gap.mean()), float(np.abs(gap).max())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fbr_diagnosis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dirs", nargs="+", help="output folders of benchmarks.cifar_n")
    p.add_argument("--noise", default=None, help="only this noise type")
    p.add_argument("--seed", type=int, default=None, help="only this seed")
    p.add_argument("--labels", nargs="+", default=None, help="a legend label per result dir")
    p.add_argument("--out", default=None, help="write the figure here (PNG)")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.result_dirs):
        raise SystemExit("--labels needs one label per result directory")
    runs = fbr_runs(args.result_dirs, args.noise, args.seed, args.labels)
    if not runs:
        raise SystemExit(f"no FBR runs in {args.result_dirs}")
    print("| run | warm-up | alpha switch | last acc | kept recall | kept precision | "
          "recall - acc after the switch (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in runs:
        mean_gap, _ = switch_gap(r)
        print(f"| {label} | {r['_p'].get('warmup')} | {r['_p'].get('alpha_switch')} | "
              f"{100 * r['last_acc']:.1f} | {100 * r['final']['recall']:.1f} | "
              f"{100 * r['final']['precision']:.1f} | "
              f"{'-' if np.isnan(mean_gap) else f'{mean_gap:+.1f}'} |")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for i, (label, r) in enumerate(runs):
            c, color = r["curves"], f"C{i % 10}"
            ep = np.arange(1, len(c["test_acc"]) + 1)
            axes[0].plot(ep, 100 * np.asarray(c["test_acc"]), color=color, label=label)
            axes[0].plot(ep, 100 * np.asarray(c["recall"]), color=color, ls=":")
            switch = r["_p"].get("alpha_switch")
            if switch is not None and switch < len(ep):
                axes[0].axvline(switch + 0.5, color=color, lw=0.8, alpha=0.5)
            axes[1].scatter(100 * np.asarray(c["test_acc"]), 100 * np.asarray(c["recall"]),
                            s=8, color=color)
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("%")
        axes[0].set_title("test accuracy (solid), kept recall (dotted); alpha switch (vertical)",
                          fontsize=9)
        axes[0].legend(fontsize=7)
        axes[1].plot([0, 100], [0, 100], color="k", lw=0.8, ls="--")
        axes[1].set_xlim(20, 70)
        axes[1].set_xlabel("test accuracy (%)")
        axes[1].set_title("kept recall vs test accuracy, every epoch", fontsize=9)
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
