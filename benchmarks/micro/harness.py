"""Timing, peak-memory and machine-description helpers for ``benchmarks.micro``.

The timing discipline, for a shared and noisy machine:

* every function of a comparison is warmed up, then timed in *interleaved rounds* (each round
  runs every function once, in a rotated order), so that load from other processes hits all
  of them alike; the result is the median over rounds, and ratios are the median of the
  per-round ratios (paired), not a ratio of medians;
* a sample of a fast function repeats it ``inner`` times (calibrated so that one sample lasts at
  least ``min_sample_s``) and reports the time per call;
* on CUDA every sample is bracketed by ``torch.cuda.synchronize``.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the allocation at entry. On CPU,
``tracemalloc`` does not see torch's CPU allocator (a 41 MB matmul shows as 0 bytes), so the
peak is read from the allocation trace of ``torch.profiler`` (``profile_memory=True``): the
largest "Total Allocated" of the allocator over the call, i.e. the peak of tensor memory
allocated during the call and not freed before that point. ``tracemalloc`` is reported beside it
for the Python-side allocations.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "machine_info",
    "paired_ratio",
    "peak_memory",
    "quiet_native_stderr",
    "rankdata",
    "side_by_side",
    "spearman",
    "sync",
]


def sync(device: torch.device) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_sample(fn: Callable[[], Any], inner: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / inner


def side_by_side(fns: dict[str, Callable[[], Any]], *, device: torch.device, repeats: int,
                 warmup: int = 2, min_sample_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """Time every function of ``fns`` in interleaved rounds.

    Returns, per name: ``median_s``, ``q1_s``, ``q3_s``, ``min_s`` (seconds per call), ``inner``
    (calls per sample), ``repeats`` and the raw per-round ``samples_s`` (used for paired ratios,
    see :func:`paired_ratio`).
    """
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(max(warmup, 1)):
            t = _time_sample(fn, 1, device)
        inner[name] = max(1, math.ceil(min_sample_s / max(t, 1e-9))) if min_sample_s else 1
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            samples[name].append(_time_sample(fns[name], inner[name], device))
    out = {}
    for name, xs in samples.items():
        q = np.quantile(xs, [0.25, 0.75]) if len(xs) > 1 else (xs[0], xs[0])
        out[name] = {"median_s": statistics.median(xs), "q1_s": float(q[0]), "q3_s": float(q[1]),
                     "min_s": min(xs), "inner": inner[name], "repeats": len(xs),
                     "samples_s": xs}
    return out


def paired_ratio(stats: dict[str, dict[str, Any]], num: str, den: str) -> float:
    """Median over rounds of ``time(num) / time(den)`` measured in the same round."""
    a, b = stats[num]["samples_s"], stats[den]["samples_s"]
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C-level stderr (the profiler's per-session "USDT: profiler_start" lines)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _profiler_peak(fn: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU],
                                        profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as fh:
            trace = json.load(fh)
    finally:
        os.unlink(path)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = [e["args"].get("Total Allocated", 0) for e in events
              if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0]
    return int(max(totals, default=0))


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, int]:
    """Peak bytes allocated by one call of ``fn`` beyond what was allocated before it.

    Returns ``{"tensor_bytes": ..., "tracemalloc_bytes": ...}``: tensor memory from
    ``torch.cuda.max_memory_allocated`` (CUDA) or the profiler's allocator trace (CPU), and
    Python-heap memory from ``tracemalloc``.
    """
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        tensor = torch.cuda.max_memory_allocated(device) - base
    else:
        tensor = _profiler_peak(fn)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base_py = tracemalloc.get_traced_memory()[0]
    fn()
    sync(device)
    py = tracemalloc.get_traced_memory()[1] - base_py
    if not was_tracing:
        tracemalloc.stop()
    return {"tensor_bytes": int(tensor), "tracemalloc_bytes": int(py)}


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x).ravel()
    sorter = np.argsort(x, kind="mergesort")
    inv = np.empty(sorter.size, dtype=np.intp)
    inv[sorter] = np.arange(sorter.size)
    xs = x[sorter]
    obs = np.r_[True, xs[1:] != xs[:-1]]
    dense = np.cumsum(obs)[inv]
    count = np.r_[np.nonzero(obs)[0], len(obs)]
    return 0.5 * (count[dense] + count[dense - 1] + 1)


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN if one is constant."""
    ra = rankdata(np.asarray(a, dtype=np.float64))
    rb = rankdata(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    try:
        info["load_avg_1m_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
