"""The README's demo: the recommended FBR recipe against CE, CE + mixup and Co-teaching on real
CIFAR-10N images with their worst human labels.

``python -m benchmarks.demo`` trains the small CPU network four times on the real CIFAR-10N
subset (4,920 noisy-pool images with CIFAR-N's *worst* labels, 40% wrong; 250 trusted clean
images; 508 test images) in the benchmark's ``memorise`` preset (flip-only augmentation, weight
decay 1e-3) and prints test accuracy, the share of wrong labels each network fitted and the
precision / recall of the samples each method keeps, and the recipe's health report. It is a
shortened run of the benchmark suite (:mod:`benchmarks.cifar_n`): 50 epochs, the preset's 80
scaled down to about 5 minutes on 2 CPU cores. The length was chosen on seed 1 (the demo runs
seed 0): CE fitted 40% of the wrong labels in 40 epochs, 54% in 50 and 82% in the full 80, and
four methods of 60 epochs do not fit 6 minutes. So CE has memorised about half of the wrong labels
by the demo's end, the gaps are smaller than in the full tables, and the first line says so;
``--epochs 80`` runs the full schedule.

Data resolution, first hit wins: ``--data-dir``, the ``ROBUSTWEIGHTS_DATA`` environment
variable, ``../shared/data`` beside the repository, the download cache
(``~/.cache/robustweights``). Without the subset, the demo downloads the official CIFAR-10
archive and CIFAR-N label file into the cache (``--no-download`` forbids it), verifies their
sha256 before parsing anything, and trains on the first 5,170 images of the official training
set. Offline and without data it prints what to do and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.cifar_n import cli as cifar_n
from benchmarks.cifar_n.data import data_dirs, find_file, load_dataset
from benchmarks.cifar_n.report import load_records

#: Epochs per method: the preset's schedule (80 epochs) scaled down (both LR drops happen) to
#: about 5 minutes on 2 cores; CE fits about half of the wrong labels by then (seed 1: 54%).
DEMO_EPOCHS = 50
#: The preset's schedule, by whose end CE has fitted most of the wrong labels.
MEMORISE_EPOCHS = 80
#: Sizes of the shared subset; the download fallback takes the same numbers of official images.
SUBSET_TRAIN, SUBSET_TEST = 5170, 508

HOW_TO_GET_DATA = """\
No data for the demo. Looked for `cifar10n_subset.npz` and `CIFAR-10_human.pt` in:
{dirs}
Do one of:
  * point at a folder that has them:  python -m benchmarks.demo --data-dir /path/to/data
    (or export ROBUSTWEIGHTS_DATA=/path/to/data)
  * connect to the internet and run `python -m benchmarks.demo` again: it fetches the official
    CIFAR-10 archive (163 MiB) and the CIFAR-N labels, verifies their sha256 before parsing
    anything, and caches them in ~/.cache/robustweights
  * or copy those two official files (cifar-10-python.tar.gz, CIFAR-10_human.pt) into one of
    the folders above
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the data files")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="fetch the official files if the subset is not found (default: yes)")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/demo")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def benchmark_argv(args: argparse.Namespace) -> list[str] | None:
    """The benchmark command line the demo runs, or None when no data can be had."""
    # The costly runs first, so that the two parallel jobs finish together.
    argv = ["--preset", "memorise", "--methods", "fbr_plus", "coteaching", "ce_mixup", "ce",
            "--noise", "worst",
            "--seeds", str(args.seed), "--epochs", str(args.epochs), "--out", args.out,
            "--jobs", "2", "--threads", "1", "--no-ceiling"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.quiet:
        argv.append("--quiet")
    if find_file("cifar10n_subset.npz", args.data_dir) and find_file("CIFAR-10_human.pt",
                                                                     args.data_dir):
        return argv
    if args.download:
        return [*argv, "--dataset", "cifar10n", "--download", "--limit-train", str(SUBSET_TRAIN),
                "--limit-test", str(SUBSET_TEST)]
    return None


def fetch_official(data_dir: str | None) -> str | None:
    """Download and verify the official files (or find them cached); the error text if offline."""
    try:
        load_dataset("cifar10n", data_dir, download=True, limit_train=1, limit_test=1)
    except OSError as err:  # URLError, timeouts, DNS failures and missing files are all OSError
        return f"{type(err).__name__}: {err}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench = benchmark_argv(args)
    if bench is None:
        dirs = "\n".join(f"  - {d}" for d in data_dirs(args.data_dir))
        print(HOW_TO_GET_DATA.format(dirs=dirs), file=sys.stderr)
        return 2
    if "--download" in bench:
        print("The CIFAR-10N subset was not found; fetching the official CIFAR-10 + CIFAR-N files "
              "(sha256-verified) ...", flush=True)
        error = fetch_official(args.data_dir)
        if error is not None:
            dirs = "\n".join(f"  - {d}" for d in data_dirs(args.data_dir))
            print(f"Download failed ({error}).\n" + HOW_TO_GET_DATA.format(dirs=dirs),
                  file=sys.stderr)
            return 2
    short = args.epochs < MEMORISE_EPOCHS
    print(("A shortened run: " if short else "") +
          f"{args.epochs} epochs each" + (f" instead of the benchmark's {MEMORISE_EPOCHS}, so CE "
          "memorises fewer of the wrong labels than in the full tables and the gaps are smaller "
          "(the full tables: docs/benchmarks.md). " if short else ". ") +
          "robustweights demo: the recommended FBR recipe (FBR+) vs CE, CE + mixup and "
          "Co-teaching on CIFAR-10N (worst labels).\nEquivalent benchmark command: "
          f"python -m benchmarks.cifar_n {' '.join(bench)}\n", flush=True)
    code = cifar_n.main(bench)
    if code == 0:
        print(verdict(Path(args.out) / "results.jsonl"))
    return code


def verdict(results: Path) -> str:
    """One honest sentence on the demo's outcome, from the records it just wrote."""
    recs = {r["method"]: r for r in load_records(results)}
    last = {m: 100 * r["last_acc"] for m, r in recs.items()}
    if "fbr_plus" not in last or "ce" not in last:
        return ""

    def vs(other: str, name: str) -> str:
        beats = last["fbr_plus"] > last[other]
        return f"{'beats' if beats else 'does not beat'} {name} ({last[other]:.1f})"

    rivals = [vs(m, n) for m, n in (("ce", "CE"), ("ce_mixup", "CE + mixup"),
                                    ("coteaching", "Co-teaching")) if m in last]
    memorised = recs["ce"].get("memorisation", {}).get("memorised")
    fitted = ("" if memorised is None else
              f" CE fitted {100 * memorised:.0f}% of the wrong labels in this run.")
    return (f"\nLast epoch: FBR+ {last['fbr_plus']:.1f}: FBR+ {', '.join(rivals)}."
            f"{fitted}{health(recs['fbr_plus'])} The full comparison (80 epochs, four label sets, "
            "three seeds, every baseline): docs/benchmarks.md.")


def health(record: dict) -> str:
    """FBR+'s filter-health report of the last epoch (``SurrogateRecipe.end_epoch()``)."""
    extra = record.get("curves", {}).get("extra") or [{}]
    h = {k.removeprefix("health_"): v for k, v in extra[-1].items() if k.startswith("health_")}
    if h.get("pool_kept") is None:
        return ""
    held = ("" if h.get("heldout_kept") is None else
            f", {100 * h['heldout_kept']:.0f}% of the held-out trusted images")
    agree = ("" if h.get("pool_agreement") is None else
             f"; the network predicts the given label of {100 * h['pool_agreement']:.0f}% of "
             "the pool")
    collapsed = "collapsed" if h.get("collapsed") else "not collapsed"
    return (f" FBR+'s health report: its filter keeps {100 * h['pool_kept']:.0f}% of the pool"
            f"{held}{agree}; {collapsed}.")


if __name__ == "__main__":
    raise SystemExit(main())
