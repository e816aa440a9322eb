"""Choose the memorising CPU preset on held-out seeds, from CE, CE on the true labels and
Co-teaching alone (no FBR number enters the choice).

Every candidate is the ``cpu`` preset (width-16 CNN, 80 epochs, SGD lr 0.02 x0.1 at 40 / 60,
250 trusted images) with some of its knobs changed: augmentation, width, weight decay. For each
it trains, on *worst* labels and seeds 10-12 (never the table's seeds 0-2):

- ``ce``: CE on the noisy labels (last / best epoch, share of the wrong labels memorised);
- ``coteaching``: Co-teaching with the nominal noise rate (the field's basic ordering);
- ``ce`` on the true labels: the ceiling.

The rule, fixed before the runs (issue 16):

1. keep a candidate if, as means over seeds 10-12, CE memorises >= 80% of the wrong labels by
   the last epoch and Co-teaching's last epoch beats CE's by >= 5 points;
2. and if its full table (7 methods x 4 label sets x 3 seeds + 3 ceiling runs), priced with the
   CPU-time ratios of the ``cpu`` table, fits in ``--budget-hours`` (6) on 2 single-threaded jobs;
3. among those, the highest mean ceiling (CE on the true labels, last epoch) wins.

Run::

    python -m benchmarks.cifar_n.studies.preset_search --out results/preset_search --resume

Each candidate's runs go to ``<out>/<candidate>/`` (the benchmark's own records); the table to
``<out>/search.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n import cli as cifar_n
from benchmarks.cifar_n.report import load_records

__all__ = ["CANDIDATES", "Candidate", "main", "summarise"]

SEEDS = (10, 11, 12)

#: CPU time per epoch relative to CE of each method of the table, from the ``cpu`` table
#: (docs/results/cifar_n_cpu): used to price a candidate's full table from its CE runs.
COST_RATIOS = {"ce": 1.0, "clean_only": 0.98, "coteaching": 2.05, "fine": 0.80, "l2rw": 3.27,
               "fbr": 2.64, "fbr_plus": 2.68}
TABLE_NOISES = 4
TABLE_SEEDS = 3


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a name and the ``benchmarks.cifar_n`` flags that make it."""

    name: str
    flags: tuple[str, ...]
    note: str


CANDIDATES = (
    Candidate("flip_w16", ("--augment", "flip"), "horizontal flip only, width 16"),
    Candidate("none_w16", ("--augment", "none"), "no augmentation, width 16"),
    Candidate("flip_w16_wd1e-3", ("--augment", "flip", "--weight-decay", "1e-3"),
              "flip only, width 16, the authors' weight decay 1e-3"),
    Candidate("flip_w24", ("--augment", "flip", "--width", "24"), "flip only, width 24"),
)


def _runs(c: Candidate, out: Path, resume: bool, jobs: int, quiet: bool) -> list[str]:
    base = ["--preset", "cpu", *c.flags, "--seeds", *map(str, SEEDS), "--jobs", str(jobs),
            "--threads", "1", "--no-plots", *(["--quiet"] if quiet else [])]
    first = [*base, "--noise", "worst", "--methods", "ce", "coteaching", "--ceiling",
             "--out", str(out / c.name), *(["--resume"] if resume else [])]
    return first


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _std(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else float("nan")


def summarise(out: Path, *, budget_hours: float = 6.0) -> tuple[str, str | None]:
    """The search table (Markdown) and the winner's name under the rule (None if none passes)."""
    rows, passing = [], []
    for c in CANDIDATES:
        path = out / c.name / "results.jsonl"
        recs = load_records(path) if path.exists() else []
        by: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in recs:
            by.setdefault((r["method"], r["noise"]), []).append(r)
        ce, co, ceil = (by.get(k, []) for k in (("ce", "worst"), ("coteaching", "worst"),
                                                 ("ce", "clean")))
        n = min(len(ce), len(co), len(ceil))
        mem = [100 * r["memorisation"]["memorised"] for r in ce]
        ce_last = [100 * r["last_acc"] for r in ce]
        co_last = [100 * r["last_acc"] for r in co]
        ceil_last = [100 * r["last_acc"] for r in ceil]
        ce_cpu = _mean([r["epoch_cpu_time_mean"] for r in ce + ceil])
        epochs = ce[0]["spec"]["train"]["epochs"] if ce else 80
        runs_ce = sum(COST_RATIOS.values()) * TABLE_NOISES * TABLE_SEEDS + TABLE_SEEDS
        hours = ce_cpu * epochs * runs_ce / 2 / 3600
        gap = _mean(co_last) - _mean(ce_last)
        complete = n == len(SEEDS)
        ok = complete and _mean(mem) >= 80 and gap >= 5 and hours <= budget_hours
        if ok:
            passing.append((_mean(ceil_last), c.name))

        def cell(xs: list[float], best: list[float] | None = None) -> str:
            if not xs:
                return "-"
            s = f"{_mean(xs):.1f} ± {_std(xs):.1f}"
            return s + (f" / {_mean(best):.1f}" if best else "")

        rows.append(
            f"| `{c.name}` | {c.note} | {cell(ce_last, [100 * r['best_acc'] for r in ce])} | "
            f"{cell(mem)} | {cell(co_last, [100 * r['best_acc'] for r in co])} | "
            f"{gap:+.1f} | {cell(ceil_last, [100 * r['best_acc'] for r in ceil])} | "
            f"{ce_cpu:.2f} s | {hours:.1f} h | "
            f"{('yes' if ok else 'no') if complete else f'incomplete ({n}/3 seeds)'} |")
    winner = max(passing)[1] if passing else None
    head = [
        "| candidate | what | CE last / best | CE memorised (%) | Co-teaching last / best | "
        "Co-teaching - CE (last) | ceiling last / best | CE CPU s/epoch | table (h, 2 jobs) | "
        "passes 1-2 |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n", winner


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n.studies.preset_search",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", default="results/preset_search")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--budget-hours", type=float, default=6.0)
    p.add_argument("--only", nargs="*", default=None, help="candidate names to run")
    p.add_argument("--summarise-only", action="store_true", help="no training, just the table")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.summarise_only:
        for c in CANDIDATES:
            if args.only is not None and c.name not in args.only:
                continue
            run = _runs(c, out, args.resume, args.jobs, args.quiet)
            print("python -m benchmarks.cifar_n " + shlex.join(run), flush=True)
            cifar_n.main(run)
    table, winner = summarise(out, budget_hours=args.budget_hours)
    rule = ("Rule (fixed before the runs): CE memorises >= 80% of the wrong *worst* labels and "
            "Co-teaching beats CE by >= 5 points (last epoch), means over seeds "
            f"{', '.join(map(str, SEEDS))}; the full table fits in {args.budget_hours:g} h on 2 "
            "jobs; then the highest ceiling wins.")
    md = (f"# Memorising preset search\n\n{rule}\n\n{table}\nWinner: "
          f"{f'`{winner}`' if winner else 'none yet'}.\n")
    (out / "search.md").write_text(md)
    (out / "search.json").write_text(json.dumps({"winner": winner}) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
