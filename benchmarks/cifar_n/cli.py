"""The CIFAR-N benchmark command.

Examples::

    # the CPU table (worst / aggre / rand1, 3 seeds, the preset's methods)
    python -m benchmarks.cifar_n --preset cpu --out results/cifar_n_cpu
    # every method, one noise type, one seed
    python -m benchmarks.cifar_n --preset cpu --methods all --noise worst --seeds 0
    # the paper's setting on a GPU (full CIFAR-10N; --download fetches and verifies it)
    python -m benchmarks.cifar_n --preset paper --download --out results/cifar_n_paper
    # the CI smoke run (a few hundred images, 2 epochs, every method)
    python -m benchmarks.cifar_n --preset smoke --out results/smoke

Writes into ``--out``: ``results.jsonl`` (one JSON record per run, appended as runs finish;
``--resume`` skips runs already there), ``weights/*.npz`` (pool weight snapshots for the
histograms and ``studies.kept_by_class``; generated, not committed under ``docs/results``:
rerun the command without ``--resume`` to write them), ``results.md`` (the tables, with the
exact command that reproduces them) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cifar_n.data import LabeledImages, load_dataset
from benchmarks.cifar_n.methods import AUGMENTATIONS, METHODS
from benchmarks.cifar_n.presets import PRESETS, Preset, get_preset
from benchmarks.cifar_n.report import load_records, make_plots, markdown_report
from benchmarks.cifar_n.runner import RunResult, RunSpec, run_one

__all__ = ["main", "parse_args", "plan_runs"]

#: Method parameters given in epochs, scaled with ``--epochs`` like the LR milestones.
SCHEDULE_KEYS = frozenset({"warmup", "alpha_switch", "init_epoch", "dropped_doubt_until"})


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cifar_n",
                                description="CIFAR-N label-noise benchmark (robustweights).")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--noise", nargs="+", default=None,
                   help="clean aggre worst rand1 rand2 rand3 noisy100, or sym<rate> / "
                        "asym<rate> (e.g. sym0.4); oracle-<set> (e.g. oracle-worst) is that "
                        "set with its wrongly labelled pool images removed (a perfect filter)")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"any of {list(METHODS)}, or 'all'")
    p.add_argument("--out", default=None,
                   help="output directory (default results/cifar_n_<preset>)")
    p.add_argument("--dataset", default=None, choices=["cifar10n-subset", "cifar10n", "cifar100n"])
    p.add_argument("--data-dir", default=None, help="where the data files are (see data.py)")
    p.add_argument("--download", action="store_true",
                   help="fetch missing official files (sha256-verified before parsing)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only the first N training images (e.g. a quick run on the full set)")
    p.add_argument("--limit-test", type=int, default=None,
                   help="use only the first N test images")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="training-batch augmentation: none, a random horizontal flip, or the "
                        "random crop (4-pixel padding) + flip (preset default if omitted)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                   help="same as --augment none")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--clean-size", type=float, default=None,
                   help="trusted clean subset: a count (>= 1) or a fraction (< 1)")
    p.add_argument("--diag-every", type=int, default=None,
                   help="memorisation (and FBR's feature shares) every N epochs and at the end")
    p.add_argument("--jobs", type=int, default=None, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--device", default=None)
    p.add_argument("--set", nargs="*", default=[], metavar="METHOD.PARAM=VALUE",
                   help="override a method parameter, e.g. fbr.clean_passes=5")
    p.add_argument("--resume", action="store_true", help="skip runs already in results.jsonl")
    p.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=None,
                   help="also run CE on the true labels per seed (preset default if omitted)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def build_preset(args: argparse.Namespace) -> Preset:
    """The preset with the command-line overrides applied."""
    base = PRESETS[args.preset]
    train = base.train
    if any(v is not None for v in (args.epochs, args.width, args.augment, args.weight_decay)):
        train = replace(train, epochs=args.epochs or train.epochs,
                        width=args.width if args.width is not None else train.width,
                        augment=train.augment if args.augment is None else args.augment,
                        weight_decay=(train.weight_decay if args.weight_decay is None
                                      else args.weight_decay))
        if args.epochs is not None and args.epochs != base.train.epochs:
            f = args.epochs / base.train.epochs
            train = replace(train, milestones=tuple(round(m * f)
                                                    for m in base.train.milestones))
    params = {m: dict(v) for m, v in base.method_params.items()}
    if train.epochs != base.train.epochs:
        # Method schedules are tied to the run length (FBR's alpha switch and the doubt gate's
        # end to the first LR drop, warm-ups): scale them with it, as the milestones are.
        f = train.epochs / base.train.epochs
        for v in params.values():
            for k in SCHEDULE_KEYS & v.keys():
                v[k] = round(v[k] * f)
    for item in args.set:
        lhs, _, rhs = item.partition("=")
        method, _, key = lhs.partition(".")
        if not key or method not in METHODS:
            raise SystemExit(f"--set expects METHOD.PARAM=VALUE with METHOD in {list(METHODS)}, "
                             f"got {item!r}")
        params.setdefault(method, {})[key] = parse_value(rhs)
    methods = args.methods
    if methods and "all" in methods:
        methods = list(METHODS)
    for m in methods or []:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {list(METHODS)} or 'all'")
    clean = args.clean_size
    if clean is not None and clean >= 1:
        clean = int(clean)
    return get_preset(
        args.preset, train=train, method_params=params, dataset=args.dataset,
        methods=tuple(methods) if methods else None,
        noises=tuple(args.noise) if args.noise else None,
        seeds=tuple(args.seeds) if args.seeds else None, clean_size=clean, jobs=args.jobs,
        threads=args.threads, device=args.device, limit_train=args.limit_train,
        diag_every=args.diag_every,
        limit_test=args.limit_test, ceiling=args.ceiling)


def plan_runs(preset: Preset) -> list[RunSpec]:
    """One spec per (noise, seed, method), grouped so that the cheap runs of a seed come first;
    with ``preset.ceiling``, CE on the true labels per seed at the end."""
    cells = [(m, nz, s) for nz in preset.noises for s in preset.seeds for m in preset.methods]
    if preset.ceiling and "clean" not in preset.noises:
        cells += [("ce", "clean", s) for s in preset.seeds]
    return [RunSpec(method=m, noise=nz, seed=s, train=preset.train,
                    method_params=dict(preset.method_params.get(m, {})),
                    dataset=preset.dataset, clean_size=preset.clean_size,
                    diag_every=preset.diag_every, device=preset.device)
            for m, nz, s in cells]


@lru_cache(maxsize=4)
def _dataset(name: str, data_dir: str | None, download: bool, limit_train: int | None,
             limit_test: int | None) -> LabeledImages:
    return load_dataset(name, data_dir, download=download, limit_train=limit_train,
                        limit_test=limit_test)


def _worker(spec: RunSpec, data: tuple[Any, ...], threads: int | None, queue: Any) -> RunResult:
    import torch

    if threads:
        torch.set_num_threads(threads)
    ds = _dataset(*data)
    return run_one(spec, ds, queue.put if queue is not None else None)


def _save(result: RunResult, out: Path) -> None:
    # The machine per record: a table resumed on another CPU mixes machines (and one seed's
    # accuracy moves ~2 points between CPUs), so the report must be able to say so.
    result.record.setdefault("machine", machine_description())
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(result.record) + "\n")
    wdir = out / "weights"
    wdir.mkdir(exist_ok=True)
    r = result.record
    np.savez_compressed(wdir / f"{r['method']}__{r['noise']}__seed{r['seed']}.npz",
                        epochs=np.asarray(result.snapshot_epochs, dtype=np.int64),
                        weights=result.snapshots, is_clean=result.is_clean)


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    return (f"{os.cpu_count()} CPU cores ({cpu}){gpu}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {platform.system()} {platform.release()}")


def _command(argv: Sequence[str]) -> str:
    return "python -m benchmarks.cifar_n " + " ".join(shlex.quote(a) for a in argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    preset = build_preset(args)
    out = Path(args.out or f"results/cifar_n_{preset.name}")
    out.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(preset)
    done: set[str] = set()
    if args.resume and (out / "results.jsonl").exists():
        done = {r["key"] for r in load_records(out / "results.jsonl")}
    elif (out / "results.jsonl").exists():
        (out / "results.jsonl").unlink()
    todo = [s for s in specs if s.key not in done]
    data = (preset.dataset, args.data_dir, args.download, preset.limit_train, preset.limit_test)
    _dataset(*data)  # fail fast (missing files, bad checksums) before starting workers
    command = _command(argv)
    print(f"{len(todo)} runs ({len(done)} already done) -> {out}", flush=True)

    from tqdm import tqdm

    total = sum(s.train.epochs for s in todo)
    bar = tqdm(total=total, unit="ep", disable=args.quiet, dynamic_ncols=True)

    def progress(d: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_description(d["key"], refresh=False)
        bar.set_postfix_str(f"ep {d['epoch']}/{d['epochs']} loss {d['loss']:.3f} "
                            f"acc {100 * d['acc']:.1f} best {100 * d['best']:.1f} "
                            f"{d['epoch_time']:.1f}s/ep")

    start = time.perf_counter()
    jobs = max(1, preset.jobs)
    if jobs == 1:
        if preset.threads:
            import torch

            torch.set_num_threads(preset.threads)
        for spec in todo:
            _save(run_one(spec, _dataset(*data), progress), out)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            queue = manager.Queue()
            pending: set[Future[RunResult]] = {
                pool.submit(_worker, s, data, preset.threads, queue) for s in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    progress(queue.get())
                for fut in finished:
                    _save(fut.result(), out)
            while not queue.empty():
                progress(queue.get())
    bar.close()
    elapsed = time.perf_counter() - start

    records = load_records(out / "results.jsonl")
    machine = machine_description()
    md = markdown_report(records, command=command, machine=machine,
                         title=f"CIFAR-N benchmark, preset `{preset.name}`")
    md += f"\nWall time of this invocation: {elapsed / 60:.1f} min ({len(todo)} runs).\n"
    (out / "results.md").write_text(md)
    if not args.no_plots and records:
        for path in make_plots(records, out, out / "weights"):
            print(f"plot: {path}")
    print()
    print(md)
    print(f"Results: {out / 'results.md'} and {out / 'results.jsonl'}")
    print(f"Reproduce: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
