"""Choose the FBR recipe that holds in the memorising regime, on held-out seeds, stage by stage.

Every candidate is the benchmark's ``fbr`` method (the public ``SurrogateRecipe``) with some
options set; each runs on *worst* labels with seeds 10-12 (never the table's seeds 0-2), in the
preset the search chose (``--preset-flags``). The rule, fixed before the runs (issue 16): within a
stage the candidate with the best mean last-epoch accuracy wins, and the next stage's candidates
add one change each to that winner (the winner itself stays a candidate):

1. **the rule**: the authors' recipe; the strict threshold from epoch 0 (no warm-up, alpha 0);
   the rate rule from epoch 0 (the nominal noise rate, as Co-teaching is given, ramped over 10
   epochs); the rate rule, class-balanced;
2. **the feature source**: the stage-1 winner with an EMA teacher's features (decay 0.999), and
   with a peer network's (a two-network exchange, twice the cost);
3. **the cost**: the stage-2 winner with 3 clean passes instead of 30 and the training forward's
   features (no separate eval-mode forward);
4. **the loss's scale**: the stage-3 winner with the weighted pool loss divided by the batch's
   sum of weights instead of its size (as Co-teaching averages over the samples it keeps);
5. **the dropped samples and the class mix**: the stage-4 winner whose dropped samples also train
   towards the scoring network's sharpened prediction (with a peer, the *peer's*: co-training
   pseudo-labels), and the stage-4 winner with the class-balanced rate rule at the nominal noise
   rate (Co-teaching's information).

Run::

    python -m benchmarks.cifar_n.studies.fbr_selection --out results/fbr_selection --resume \\
        --preset-flags="--augment flip"

Each candidate's runs go to ``<out>/<stage>_<candidate>/``; the tables to ``<out>/selection.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.cifar_n import cli
from benchmarks.cifar_n.report import load_records

__all__ = ["STAGES", "Candidate", "main", "stage_table"]

SEEDS = (10, 11, 12)
STRICT = ("fbr.warmup=0", "fbr.alpha_switch=0")


@dataclass(frozen=True)
class Candidate:
    """A name and the ``--set`` overrides it adds to the previous stage's winner."""

    name: str
    sets: tuple[str, ...]
    note: str


STAGES: tuple[tuple[str, tuple[Candidate, ...]], ...] = (
    ("rule", (
        Candidate("authors", (), "the authors' recipe (warm-up 5, alpha switch 40)"),
        Candidate("strict", STRICT, "threshold rule from epoch 0: no warm-up, alpha 0"),
        Candidate("rate", (*STRICT, "fbr.drop_rate=nominal"),
                  "rate rule from epoch 0, nominal rate, 10-epoch ramp"),
        Candidate("rate_cb", (*STRICT, "fbr.drop_rate=nominal", "fbr.class_balanced=true"),
                  "rate rule, class-balanced"),
    )),
    ("features", (
        Candidate("self", (), "the stage-1 winner: the trained network's features"),
        Candidate("ema", ("fbr.features=ema",), "an EMA teacher's features (decay 0.999)"),
        Candidate("peer", ("fbr.features=peer",), "a peer network's features (exchange)"),
    )),
    ("cost", (
        Candidate("full", (), "the stage-2 winner"),
        Candidate("fast", ("fbr.clean_passes=3", "fbr.eval_features=false"),
                  "3 clean passes, the training forward's features"),
    )),
    ("loss", (
        Candidate("batch_mean", (), "the stage-3 winner: sum of w l over the batch size"),
        Candidate("weight_mean", ("fbr.loss_norm=weights",),
                  "sum of w l over the sum of the weights"),
    )),
    ("dropped", (
        Candidate("filter", (), "the stage-4 winner"),
        Candidate("rate_cb", ("fbr.drop_rate=nominal", "fbr.class_balanced=true"),
                  "class-balanced rate rule, the nominal noise rate"),
    )),
)


def _last(out: Path) -> list[float]:
    path = out / "results.jsonl"
    recs = load_records(path) if path.exists() else []
    return [100 * r["last_acc"] for r in recs if r["noise"] == "worst"]


def _run(out: Path, preset_flags: Sequence[str], sets: Sequence[str], resume: bool,
         jobs: int, quiet: bool) -> None:
    argv = ["--preset", "cpu", *preset_flags, "--noise", "worst", "--seeds", *map(str, SEEDS),
            "--methods", "fbr", "--no-ceiling", "--jobs", str(jobs), "--threads", "1",
            "--no-plots", "--out", str(out), *(["--resume"] if resume else []),
            *(["--quiet"] if quiet else []), *(["--set", *sets] if sets else [])]
    print("python -m benchmarks.cifar_n " + shlex.join(argv), flush=True)
    cli.main(argv)


def stage_table(out: Path, stage: str, candidates: Sequence[Candidate], base: tuple[str, ...],
                base_dir: Path | None = None) -> tuple[str, tuple[str, ...] | None, Path | None]:
    """The stage's Markdown table, its winner's full ``--set`` list and its runs' folder (None,
    None until every candidate has all seeds). A candidate that adds nothing is the previous
    winner itself, whose runs (``base_dir``) are reused."""
    rows, scores = [], []
    for c in candidates:
        folder = _folder(out, stage, c, base_dir)
        accs = _last(folder)
        done = len(accs) == len(SEEDS)
        mean = float(np.mean(accs)) if accs else float("nan")
        std = float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan")
        if done:
            scores.append((mean, c, folder))
        rows.append(f"| `{c.name}` | {c.note} | `{' '.join((*base, *c.sets)) or '-'}` | "
                    f"{mean:.1f} ± {std:.1f} | {len(accs)}/{len(SEEDS)} |")
    head = ["| candidate | what | --set | last epoch (mean ± std, seeds 10-12) | seeds |",
            "|---|---|---|---|---|"]
    if len(scores) < len(candidates):
        return "\n".join(head + rows) + "\n", None, None
    _, best, folder = max(scores, key=lambda t: t[0])
    rows.append(f"\nWinner: `{best.name}`.")
    return "\n".join(head + rows) + "\n", (*base, *best.sets), folder


def _folder(out: Path, stage: str, c: Candidate, base_dir: Path | None) -> Path:
    return base_dir if not c.sets and base_dir is not None else out / f"{stage}_{c.name}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n.studies.fbr_selection",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/fbr_selection")
    p.add_argument("--preset-flags", default="", help="the chosen preset's benchmark flags")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--summarise-only", action="store_true", help="no training, just the tables")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    flags = shlex.split(args.preset_flags)
    base: tuple[str, ...] | None = ()
    base_dir: Path | None = None
    md = [f"# FBR selection, memorising regime (`{args.preset_flags}`)", "",
          "Rule (fixed before the runs): per stage, the best mean last epoch on seeds 10-12 "
          "(worst labels) wins; the next stage adds one change to it.", ""]
    for stage, candidates in STAGES:
        if base is None:
            break
        if stage == "cost" and any(s.startswith("fbr.features=") for s in base):
            # the training forward is the trained network's own: with another network's
            # features, "fast" keeps the separate eval forward and cuts the passes only
            candidates = tuple(Candidate(c.name, tuple(x for x in c.sets
                                                       if not x.startswith("fbr.eval_features")),
                                         c.note) for c in candidates)
        if not args.summarise_only:
            for c in candidates:
                if c.sets or base_dir is None:  # (the previous winner's runs are reused)
                    _run(_folder(out, stage, c, base_dir), flags, (*base, *c.sets),
                         args.resume, args.jobs, args.quiet)
        table, base, base_dir = stage_table(out, stage, candidates, base, base_dir)
        md += [f"## Stage `{stage}`", "", table]
    (out / "selection.md").write_text("\n".join(md))
    (out / "selection.json").write_text(json.dumps({"winner": base}) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
