"""How much do the correct labels a network fits and the wrong ones it memorises explain its
test accuracy? A map of every run in a folder of benchmark records.

For each label set, every run with a memorisation diagnosis is a point: *fit* (the share of the
correctly labelled pool images the final network predicts as their label) against *memorised*
(the share of the wrongly labelled ones it predicts as their wrong label), coloured by its
last-epoch test accuracy. A least-squares plane, accuracy = a + b fit - c memorised, is fitted
over the points and drawn as lines of equal accuracy: a change to the recipe gains only if it
moves its runs across them, that is if it lowers memorisation by more than b / c points for each
point of fit it gives up::

    python -m benchmarks.cifar_n.studies.fit_memorisation \\
        docs/results/recipe_selection/records --augment flip --out docs/results/recipe_selection

Runs whose test accuracy is under ``--min-acc`` (collapsed networks) are drawn but left out of
the fit.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.report import load_records

__all__ = ["Plane", "fit_plane", "load_points", "main", "plot"]


@dataclass(frozen=True)
class Plane:
    """accuracy = ``intercept`` + ``fit`` * fit + ``memorised`` * memorised (all in %), fitted
    over ``n`` runs with coefficient of determination ``r2`` and residual standard deviation
    ``resid_sd``."""

    intercept: float
    fit: float
    memorised: float
    r2: float
    resid_sd: float
    n: int

    def __call__(self, fit: np.ndarray, memorised: np.ndarray) -> np.ndarray:
        return self.intercept + self.fit * fit + self.memorised * memorised


def load_points(folder: Path, *, augment: str | None = None) -> list[dict[str, Any]]:
    """One point per record (:func:`~benchmarks.cifar_n.report.load_records`: the last of a run
    key) in the ``*.jsonl`` files of ``folder`` (``results.jsonl`` in its subfolders too) that
    has a memorisation diagnosis: its file, method, label set, seed, fit, memorised and last
    accuracy (%). ``augment`` keeps the runs trained with that augmentation
    (the preset's tell: ``flip`` for ``memorise``, ``crop_flip`` for ``cpu``)."""
    points = []
    for path in sorted(folder.rglob("*.jsonl")):
        for r in load_records(path):
            mem = r.get("memorisation") or {}
            if mem.get("fit_clean") is None or mem.get("memorised") is None:
                continue
            if augment is not None and r["spec"]["train"].get("augment") != augment:
                continue
            points.append({"file": path.name, "method": r["method"], "noise": r["noise"],
                           "seed": r["seed"], "fit": 100 * mem["fit_clean"],
                           "memorised": 100 * mem["memorised"], "acc": 100 * r["last_acc"]})
    return points


def fit_plane(points: Sequence[dict[str, Any]], *, min_acc: float = 30.0) -> Plane:
    """The least-squares plane through the points with accuracy at least ``min_acc``."""
    p = [q for q in points if q["acc"] >= min_acc]
    if len(p) < 4:
        raise ValueError(f"Expected at least 4 runs to fit a plane, but got {len(p)}")
    x = np.array([[1.0, q["fit"], q["memorised"]] for q in p])
    y = np.array([q["acc"] for q in p])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ coef
    r2 = 1.0 - float((resid ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return Plane(float(coef[0]), float(coef[1]), float(coef[2]), r2, float(resid.std()), len(p))


def plot(points: Sequence[dict[str, Any]], planes: dict[str, Plane], path: Path,
         marks: dict[str, str]) -> None:
    """One panel per label set: the runs, the plane's lines of equal accuracy, and the mean of
    each group named in ``marks`` (a record file's name, or ``name:method`` for one method of
    it -> label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(planes)
    fig, axes = plt.subplots(1, len(sets), figsize=(6.0 * len(sets), 5.0), squeeze=False)
    for ax, noise in zip(axes[0], sets, strict=True):
        pts = [q for q in points if q["noise"] == noise]
        fit = np.array([q["fit"] for q in pts])
        mem = np.array([q["memorised"] for q in pts])
        acc = np.array([q["acc"] for q in pts])
        plane = planes[noise]
        gx, gy = np.meshgrid(np.linspace(fit.min() - 3, fit.max() + 3, 50),
                             np.linspace(mem.min() - 3, mem.max() + 3, 50))
        lines = ax.contour(gx, gy, plane(gx, gy), levels=8, colors="grey", linewidths=0.7)
        ax.clabel(lines, fmt="%.0f", fontsize=8)
        sc = ax.scatter(fit, mem, c=acc, cmap="viridis", s=22, vmin=max(acc.min(), 30))
        fig.colorbar(sc, ax=ax, label="last-epoch test accuracy (%)")
        for file, label in marks.items():
            name, _, method = file.partition(":")
            group = [q for q in pts if q["file"] == name and method in ("", q["method"])]
            if group:
                mx = float(np.mean([q["fit"] for q in group]))
                my = float(np.mean([q["memorised"] for q in group]))
                ax.scatter([mx], [my], marker="*", s=180, c="red", edgecolors="black")
                left = mx > fit.max() - 5  # a label at the right edge goes to the left
                ax.annotate(label, (mx, my), xytext=(-6 if left else 6, 6),
                            textcoords="offset points", fontsize=9,
                            ha="right" if left else "left")
        ax.set_xlim(fit.min() - 3, fit.max() + 8)  # room for the marks' labels
        ax.set_xlabel("fit: correct labels predicted (%)")
        ax.set_ylabel("memorised: wrong labels predicted (%)")
        ax.set_title(f"{noise}: acc = {plane.intercept:.1f} + {plane.fit:.2f} fit "
                     f"- {-plane.memorised:.2f} mem (R² {plane.r2:.2f}, {plane.n} runs)",
                     fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a folder of benchmark records (*.jsonl)")
    ap.add_argument("--augment", default="flip", help="keep runs with this augmentation")
    ap.add_argument("--noise", nargs="+", default=["worst", "aggre"])
    ap.add_argument("--min-acc", type=float, default=30.0,
                    help="runs under this accuracy are left out of the fit")
    ap.add_argument("--mark", nargs="*", default=[], metavar="FILE=LABEL",
                    help="record files (or FILE:METHOD) whose mean to mark, e.g. "
                         "sel13_inb_worst.jsonl=default")
    ap.add_argument("--out", type=Path, default=None, help="folder for fit_memorisation.png")
    args = ap.parse_args(argv)
    points = [q for q in load_points(args.folder, augment=args.augment)
              if q["noise"] in args.noise]
    planes = {}
    for noise in args.noise:
        plane = fit_plane([q for q in points if q["noise"] == noise], min_acc=args.min_acc)
        planes[noise] = plane
        print(f"{noise}: accuracy = {plane.intercept:.1f} + {plane.fit:.3f} x fit "
              f"{plane.memorised:+.3f} x memorised  (R^2 {plane.r2:.3f}, residual sd "
              f"{plane.resid_sd:.2f}, {plane.n} runs): a point of fit is worth "
              f"{plane.fit / -plane.memorised:.2f} points of memorisation")
    if args.out is not None:
        marks = dict(m.split("=", 1) for m in args.mark)
        args.out.mkdir(parents=True, exist_ok=True)
        plot(points, planes, args.out / "fit_memorisation.png", marks)
        print(f"wrote {args.out / 'fit_memorisation.png'}")


if __name__ == "__main__":
    main()
