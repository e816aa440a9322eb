"""The command line of ``python -m benchmarks.micro``: parse the options, run the chosen sections,
write ``micro.json``, ``micro.md`` and the plots."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.micro.checks import run_checks
from benchmarks.micro.common import Sizes
from benchmarks.micro.fbr_scaling import run_fbr_scaling
from benchmarks.micro.fbr_sweep import run_fbr_sweep
from benchmarks.micro.fbr_vs_step import run_fbr_vs_step
from benchmarks.micro.harness import machine_info
from benchmarks.micro.l2rw import run_l2rw
from benchmarks.micro.plots import plots
from benchmarks.micro.profiles import run_profiles
from benchmarks.micro.report import markdown, targets
from benchmarks.micro.spearman import run_spearman

SECTIONS = ("checks", "fbr_sweep", "fbr_scaling", "fbr_vs_step", "l2rw", "spearman",
            "profiles")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import benchmarks.micro  # the package's docstring is the --help text

    p = argparse.ArgumentParser(prog="python -m benchmarks.micro",
                                description=benchmarks.micro.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for CI")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--out", type=Path, default=Path("results/micro"),
                   help="directory for micro.json and micro.md (default results/micro)")
    p.add_argument("--figures", type=Path, default=None,
                   help="directory for micro_*.png (default docs/figures; <out>/figures with "
                        "--smoke)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's default)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--data", type=Path, default=None,
                   help="directory with cifar10n_subset.npz and CIFAR-10_human.pt for the "
                        "Spearman section (default: benchmarks.cifar_n.data's search path; "
                        "synthetic data if absent; always synthetic with --smoke)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"Expected a CUDA device for --device {args.device}, but CUDA is "
                         "not available")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"Expected --sections from {SECTIONS}, but got {sorted(unknown)}")
    sizes = Sizes.smoke() if args.smoke else Sizes()
    progress = not args.no_progress
    torch.manual_seed(0)
    t_start = time.perf_counter()
    res: dict[str, Any] = {"meta": {
        "command": "python -m benchmarks.micro" + "".join(" " + shlex.quote(a) for a in argv),
        "machine": machine_info(device), "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "sizes": asdict(sizes),
    }}
    data_dir = args.data
    runners = {
        "checks": lambda: run_checks(sizes, device),
        "fbr_sweep": lambda: run_fbr_sweep(sizes, device, progress),
        "fbr_scaling": lambda: run_fbr_scaling(sizes, device, progress, res.get("fbr_sweep")),
        "fbr_vs_step": lambda: run_fbr_vs_step(sizes, device),
        "l2rw": lambda: run_l2rw(sizes, device),
        "spearman": lambda: run_spearman(sizes, device, data_dir, progress, args.smoke),
        "profiles": lambda: run_profiles(sizes, device, args.out),
    }
    section_s = {}
    for name in SECTIONS:
        if name in sections:
            t0 = time.perf_counter()
            if progress:
                print(f"[micro] {name} ...", file=sys.stderr, flush=True)
            res[name] = runners[name]()
            section_s[name] = time.perf_counter() - t0
    res["meta"]["section_s"] = section_s
    res["meta"]["wall_s"] = time.perf_counter() - t_start
    res["meta"]["load_avg_1m_at_end"] = _loadavg()
    res["targets"] = targets(res)
    fig_dir = args.figures or (args.out / "figures" if args.smoke else Path("docs/figures"))
    if not args.no_plots:
        res["meta"]["figures"] = plots(res, fig_dir)
    md = markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "micro.json").write_text(json.dumps(res, indent=1, default=float))
    (args.out / "micro.md").write_text(md + "\n")
    print(md)
    print(f"[micro] wrote {args.out / 'micro.json'} and {args.out / 'micro.md'}",
          file=sys.stderr)
    return res


def _loadavg() -> float | None:
    try:
        import os

        return os.getloadavg()[0]
    except OSError:
        return None
