"""Cost against accuracy of recipe configurations: a table and a plot from benchmark records.

Each configuration is ``LABEL=FOLDER[:METHOD[:CANDIDATE]]``: the records of ``METHOD`` (and of
the selection ``CANDIDATE``, for the selection scripts' folders) in ``FOLDER/results.jsonl``, on
*worst* labels. Its accuracy is the mean ± std over seeds of the last epoch; its cost is the mean
CPU time per epoch over CE's **in the same folder** (the same runs, side by side), or over the
CE records of ``--ce`` when the folder has none (the table says which)::

    python -m benchmarks.cifar_n.studies.cost_accuracy \\
        "CE=results/fast_cpu:ce" "FBR+ fast=results/fast_cpu:fbr_plus" \\
        "FBR+=docs/results/fbr_plus_selection:fbr_plus:dropped_weight" \\
        --out docs/figures/cost_accuracy_cpu.png
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.report import load_records

__all__ = ["Point", "main", "measure", "parse_spec"]


@dataclass(frozen=True)
class Point:
    """One configuration: its last-epoch accuracies (%) per seed and its cost over CE."""

    label: str
    seeds: tuple[int, ...]
    accs: tuple[float, ...]
    cost: float
    ce_source: str

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        return float(np.std(self.accs, ddof=1)) if len(self.accs) > 1 else float("nan")


def parse_spec(spec: str) -> tuple[str, Path, str | None, str | None]:
    """``LABEL=FOLDER[:METHOD[:CANDIDATE]]`` -> (label, folder, method, candidate)."""
    if "=" not in spec:
        raise ValueError(f"Expected LABEL=FOLDER[:METHOD[:CANDIDATE]], but got {spec!r}")
    label, rest = spec.split("=", 1)
    folder, *sel = rest.split(":", 2)  # a candidate name may contain ":"
    method = sel[0] if sel else None
    candidate = sel[1] if len(sel) > 1 else None
    return label, Path(folder), method, candidate


def _select(recs: list[dict[str, Any]], method: str | None,
            candidate: str | None) -> list[dict[str, Any]]:
    return [r for r in recs if r["noise"] == "worst"
            and (method is None or r["method"] == method)
            and (candidate is None or r.get("candidate") == candidate)]


def _ce_time(recs: list[dict[str, Any]]) -> float | None:
    ce = [r["epoch_cpu_time_mean"] for r in recs if r["method"] == "ce" and r["noise"] == "worst"]
    return float(np.mean(ce)) if ce else None


def measure(spec: str, ce_fallback: Path | None = None) -> Point:
    """The configuration's point (see the module docstring)."""
    label, folder, method, candidate = parse_spec(spec)
    recs = load_records(folder / "results.jsonl", per_candidate=True)
    mine = sorted(_select(recs, method, candidate), key=lambda r: r["seed"])
    if not mine:
        raise ValueError(f"No worst-label records of {method!r} ({candidate!r}) in {folder}")
    ce, source = _ce_time(recs), "same runs"
    if ce is None and ce_fallback is not None:
        ce, source = (_ce_time(load_records(ce_fallback / "results.jsonl", per_candidate=True)),
                      f"CE of {ce_fallback}")
    if ce is None:
        raise ValueError(f"No CE records in {folder} to measure the cost against (give --ce)")
    cost = float(np.mean([r["epoch_cpu_time_mean"] for r in mine])) / ce
    return Point(label, tuple(r["seed"] for r in mine),
                 tuple(100 * r["last_acc"] for r in mine), cost, source)


def table(points: Sequence[Point]) -> str:
    rows = ["| configuration | last epoch, worst (mean ± std) | seeds | CPU time / epoch vs CE |"
            " CE measured in |", "|---|---|---|---|---|"]
    rows += [f"| {p.label} | {p.mean:.1f} ± {p.std:.1f} | {', '.join(map(str, p.seeds))} | "
             f"{p.cost:.2f}x | {p.ce_source} |" for p in points]
    return "\n".join(rows) + "\n"


def plot(points: Sequence[Point], out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p in points:
        ax.errorbar(p.cost, p.mean, yerr=0 if np.isnan(p.std) else p.std, fmt="o", capsize=3)
        ax.annotate(p.label, (p.cost, p.mean), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set_xlabel("CPU time per epoch / CE's (same runs)")
    ax.set_ylabel("test accuracy, last epoch (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n.studies.cost_accuracy",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", help="LABEL=FOLDER[:METHOD[:CANDIDATE]]")
    p.add_argument("--ce", type=Path, default=None, help="CE records for folders without CE")
    p.add_argument("--out", type=Path, default=None, help="the plot (PNG)")
    p.add_argument("--title", default="worst labels, mean ± std over seeds")
    args = p.parse_args(argv)
    points = [measure(spec, args.ce) for spec in args.configs]
    print(table(points))
    if args.out is not None:
        plot(points, args.out, args.title)
        print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
