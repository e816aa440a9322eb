"""Which classes a filtering method keeps: per-class kept recall and precision at the last epoch.

A filter that keeps 68% of the correctly labelled images overall may keep 90% of the easy
classes and 45% of the hard ones; a network then trains on a class-skewed set. This script
answers that from a finished table, without training: it reads the last weight snapshot of every
run (``weights/<method>__<noise>__seed<s>.npz``), rebuilds the run's labels from its record
(same dataset, noise, seed and trusted-set draw as the run) and prints, per method, mean over
seeds::

    python -m benchmarks.cifar_n.studies.kept_by_class docs/results/cifar_n_cpu --noise worst

The snapshots are not committed with the records under ``docs/results``: rerun the folder's
command (in its ``results.md``; without ``--resume``, which skips recorded runs) to write them.
Runs without a snapshot are left out and counted.

* kept recall of class c: the share of the correctly labelled images of true class c that the
  method keeps;
* kept precision of class c: the share of the images kept *with label c* whose label is correct;
* kept share of class c against the pool share: how skewed the kept set is.

"Kept" means a weight above the method's floor: 0 for hard filters, ``dropped_weight`` for a
recipe that keeps dropped samples at a floor (FBR+). CE and clean-only keep everything and are
skipped.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.report import LABELS, load_records

__all__ = ["class_stats", "floor_of", "main"]

KEEPS_ALL = ("ce", "clean_only")
CIFAR10_CLASSES = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_stats(weights: np.ndarray, labels: np.ndarray, true: np.ndarray, num_classes: int,
                floor: float = 0.0) -> dict[str, np.ndarray]:
    """Per-class kept recall, kept precision, kept share and pool share of one snapshot.

    ``weights`` are the pool weights (NaN = not visited, counted as not kept), ``labels`` the
    noisy labels, ``true`` the true labels. A sample is kept when its weight exceeds ``floor``.
    Classes with nothing to divide by get NaN.
    """
    kept = np.nan_to_num(weights, nan=-np.inf) > floor
    correct = labels == true
    recall, precision, kept_share, pool_share = (np.full(num_classes, np.nan) for _ in range(4))
    for c in range(num_classes):
        truly_c = correct & (true == c)
        labelled_c = labels == c
        if truly_c.any():
            recall[c] = (kept & truly_c).sum() / truly_c.sum()
        if (kept & labelled_c).any():
            precision[c] = (kept & labelled_c & correct).sum() / (kept & labelled_c).sum()
        if kept.any():
            kept_share[c] = (kept & labelled_c).sum() / kept.sum()
        pool_share[c] = labelled_c.mean()
    return {"recall": recall, "precision": precision, "kept_share": kept_share,
            "pool_share": pool_share}


def floor_of(record: dict[str, Any]) -> float:
    """The weight above which a run's sample counts as kept (its ``dropped_weight``, else 0):
    from the parameters the run recorded, or for a record without them, the method's current
    defaults with the run's overrides."""
    from benchmarks.cifar_n.methods import METHODS

    params = record.get("params") or (METHODS[record["method"]].defaults()
                                      | record["spec"]["method_params"])
    return float(params.get("dropped_weight", 0.0))


def _labels_of(record: dict[str, Any], cache: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """The pool's noisy and true labels of a run, from the runner's own split."""
    from benchmarks.cifar_n.data import build_split, load_dataset

    spec = record["spec"]
    if spec["dataset"] not in cache:
        cache[spec["dataset"]] = load_dataset(spec["dataset"])
    split = build_split(cache[spec["dataset"]], record["noise"], record["seed"],
                        spec["clean_size"], stratified=spec.get("stratified", True))
    return split.pool_labels.numpy(), split.pool_true.numpy(), split.num_classes


def table(result_dir: str | Path, noise: str, methods: Sequence[str] | None = None) -> str:
    """The Markdown report for one results folder and noise type."""
    result_dir = Path(result_dir)
    records = [r for r in load_records(result_dir / "results.jsonl")
               if r["noise"] == noise and r["method"] not in KEEPS_ALL
               and (methods is None or r["method"] in methods)]
    cache: dict[str, Any] = {}  # dataset name -> the loaded dataset
    per_method: dict[str, list[dict[str, np.ndarray]]] = {}
    num_classes = 0
    missing = 0  # records without a (non-empty) snapshot
    for r in sorted(records, key=lambda r: (list(LABELS).index(r["method"])
                                            if r["method"] in LABELS else 99, r["seed"])):
        snap = result_dir / "weights" / f"{r['method']}__{noise}__seed{r['seed']}.npz"
        if not snap.exists():
            missing += 1
            continue
        with np.load(snap) as z:
            if len(z["epochs"]) == 0:
                missing += 1
                continue
            weights, is_clean = z["weights"][-1], z["is_clean"]
        labels, true, num_classes = _labels_of(r, cache)
        if labels.shape != weights.shape or not np.array_equal(labels == true, is_clean):
            raise ValueError(f"{snap}: the rebuilt labels do not match the run's snapshot "
                             "(different data files?)")
        per_method.setdefault(r["method"], []).append(
            class_stats(weights, labels, true, num_classes, floor_of(r)))
    if not per_method:
        return (f"No weight snapshots of filtering methods for noise {noise!r} in "
                f"{result_dir / 'weights'} ({missing} runs recorded). The run's command (in "
                "results.md) writes them, and they are not committed under docs/results: rerun "
                "it without --resume to write them.")
    names = (CIFAR10_CLASSES if num_classes == 10 and str(records[0]["spec"]["dataset"])
             .startswith("cifar10n") else tuple(str(c) for c in range(num_classes)))
    head = "| method | " + " | ".join(names) + " | min / max |"
    sep = "|---|" + "---|" * (num_classes + 1)
    out = [f"Kept samples per true class, {noise} labels, last epoch, mean over the seeds "
           "(their number in parentheses)."
           + (f" {missing} recorded runs have no weight snapshot and are left out."
              if missing else ""), ""]
    for key, title in (("recall", "kept recall (%)"), ("precision", "kept precision (%)"),
                       ("kept_share", "share of the kept set (%)")):
        out += [f"**{title}**", "", head, sep]
        for m, stats in per_method.items():
            with warnings.catch_warnings():  # a class no seed keeps: NaN, printed as such
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = 100 * np.nanmean([s[key] for s in stats], axis=0)
            cells = " | ".join(f"{v:.0f}" for v in mean)
            out.append(f"| {LABELS.get(m, m)} ({len(stats)}) | {cells} | "
                       f"{np.nanmin(mean):.0f} / {np.nanmax(mean):.0f} |")
        if key == "kept_share":
            pool = 100 * np.mean([s["pool_share"] for st in per_method.values() for s in st],
                                 axis=0)
            out.append("| *the pool* | " + " | ".join(f"{v:.0f}" for v in pool) +
                       f" | {pool.min():.0f} / {pool.max():.0f} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n.studies.kept_by_class",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result_dir", help="output folder of benchmarks.cifar_n (with its weights/ "
                   "snapshots)")
    p.add_argument("--noise", default="worst", help="noise type (default worst)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods")
    args = p.parse_args(argv)
    print(table(args.result_dir, args.noise, args.methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
