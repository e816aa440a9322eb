"""Section ``profiles``: torch-profiler op tables (and cProfile for FBR's Python path) of the
workloads behind the targets, written to ``<out>/profile_*.txt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.micro.common import CE, Sizes, Trainer, fbr_problem, images
from benchmarks.micro.harness import quiet_native_stderr
from benchmarks.micro.refs import classic_l2rw_scores
from robustweights import ModelMetaReweighter, SurrogateReweighter


def _op_table(fn: Any, calls: int) -> tuple[str, list[dict[str, Any]]]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available()
                                     else [])
    with quiet_native_stderr(), profile(activities=acts) as prof:
        for _ in range(calls):
            fn()
    avg = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in avg) or 1.0
    rows = sorted(avg, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    top = [{"op": e.key, "self_cpu_ms_per_call": e.self_cpu_time_total / 1e3 / calls,
            "share": e.self_cpu_time_total / total, "count_per_call": e.count / calls}
           for e in rows]
    return avg.table(sort_by="self_cpu_time_total", row_limit=20), top


def _py_profile(fn: Any, calls: int) -> tuple[str, list[dict[str, Any]]]:
    """cProfile of ``fn``: cumulative time per robustweights function, as a share of the call."""
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(calls):
        fn()
    pr.disable()
    st = pstats.Stats(pr)
    total = max(v[3] for v in st.stats.values())  # type: ignore[attr-defined]
    rows = [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "cum_us_per_call":
             v[3] / calls * 1e6, "share": v[3] / total}
            for k, v in st.stats.items() if "robustweights" in k[0]]  # type: ignore[attr-defined]
    rows.sort(key=lambda r: r["share"], reverse=True)
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(25)
    return buf.getvalue(), rows[:12]


def run_profiles(sizes: Sizes, device: torch.device, out_dir: Path) -> dict[str, Any]:
    """Where the time goes: torch-profiler op tables (and cProfile for FBR's Python path) of the
    workloads behind the targets, written to ``<out>/profile_*.txt``."""
    C = sizes.num_classes
    F, y, G, yc = fbr_problem(sizes.step_B, 8 * sizes.width, C, sizes.step_M, device=device,
                              seed=77)
    rw = SurrogateReweighter(C, alpha=1.0 / (C - 1))
    rw.set_clean(features=G, labels=yc)
    rw_nv = SurrogateReweighter(C, alpha=1.0 / (C - 1), validate=False)
    rw_nv.set_clean(features=G, labels=yc)
    tr = Trainer(sizes, device)
    x, yy = images(sizes.l2rw_B, device, 3, C)
    xc, yyc = images(sizes.l2rw_clean_B, device, 4, C)
    full = ModelMetaReweighter(tr.model, CE, normalization="mean")
    full.set_clean(inputs=xc, labels=yyc)
    work = {
        "fbr_weights": (lambda: rw.weights(features=F, labels=y), 200),
        "fbr_weights_novalidate": (lambda: rw_nv.weights(features=F, labels=y), 200),
        "plain_step": (lambda: tr.plain_step(x, yy), 2),
        "clean_grad": (lambda: full.set_clean(inputs=xc, labels=yyc), 2),
        "jvp": (lambda: full.weights(inputs=x, labels=yy), 2),
        "classic_weights": (lambda: classic_l2rw_scores(tr.model, CE, x, yy, xc, yyc), 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"fbr_B": sizes.step_B, "fbr_D": 8 * sizes.width,
                           "fbr_M": sizes.step_M, "C": C}
    for name, (fn, calls) in work.items():
        fn()  # warm
        table, top = _op_table(fn, calls)
        text = f"# {name}: torch.profiler, {calls} call(s)\n{table}\n"
        entry: dict[str, Any] = {"top_ops": top}
        if name.startswith("fbr"):
            ptext, prow = _py_profile(fn, 4 * calls)
            text += f"\n# {name}: cProfile, {4 * calls} calls\n{ptext}"
            entry["python"] = prow
        (out_dir / f"profile_{name}.txt").write_text(text)
        res[name] = entry
    return res
