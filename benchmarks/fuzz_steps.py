"""Fuzzing stateful objects: random sequences of steps, each library call classified.

The drivers (:mod:`benchmarks.fuzz_recipe`, :mod:`benchmarks.fuzz_model_meta`) build one object
on a small random network and yield :class:`Step` s drawn from the state the previous steps
left; the caller's part of the loop (forwards, ``backward``, SGD steps, ``train()``/``eval()``)
runs between them. ``python -m benchmarks.fuzz --drivers recipe,model_meta`` runs them (see
:mod:`benchmarks.fuzz`). Sequence ``K`` of seed ``s`` depends only on ``(driver, s, K)``; every
library call in it is one fuzz call.

The contract is :mod:`benchmarks.fuzz`'s: every call returns finite, in-range outputs of the
right shape, or raises a ``ValueError``/``TypeError`` whose message names the argument at fault
in backticks (where several are at fault, e.g. a bad input and a wrong order, any of them).
Anything else is a failure: another exception type, NaN, a wrong shape, a bad input accepted,
a valid one refused. A sequence stops at its first failure (the driver's model of the state is
then unreliable).
"""

from __future__ import annotations

import math
import re
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

CATEGORIES = ("valid output", "named error", "failure")
_NAMED = re.compile(r"`([^`]+)`")


@dataclass
class Step:
    """One library call: what it does, what a correct library does with it, and how the
    driver's model of the object's state changes when it returns."""

    name: str
    call: Callable[[], Any]
    expect: str = "ok"  # "ok", "error" or "either"
    bad_arg: str | None = None  # the argument an error must name (None: any)
    check: Callable[[Any], str | None] | None = None  # what is wrong with a result
    after: Callable[[Any], None] | None = None  # on success
    after_error: Callable[[], None] | None = None  # on a named error


@dataclass
class StepOutcome:
    category: str  # one of CATEGORIES
    kind: str = ""
    detail: str = ""


@dataclass
class StepReport:
    driver: str
    seed: int
    calls: int = 0
    sequences: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    first: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # kind -> (K, step, ..)
    wall_s: float = 0.0


def _names(message: str) -> list[str]:
    """The names in backticks, without a call's parentheses or a keyword's ``=``
    (```weights()``` names ``weights``, ```state_dict['epoch']``` names ``state_dict``)."""
    return [re.split(r"[(=\[ ]", n, maxsplit=1)[0] for n in _NAMED.findall(message)]


def classify(step: Step) -> tuple[StepOutcome, Any]:
    """Run ``step`` and classify what happened, with its result (None on an error)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = step.call()
    except (ValueError, TypeError) as e:
        msg = f"{type(e).__name__}: {e}"
        names = _names(str(e))
        if not names:
            return StepOutcome("failure", f"{type(e).__name__} without a named argument",
                               msg), None
        if step.expect == "ok":
            return StepOutcome("failure", "valid input rejected", msg), None
        if step.bad_arg is not None and step.bad_arg not in names:
            return StepOutcome("failure", f"error names {names} instead of `{step.bad_arg}`",
                               msg), None
        return StepOutcome("named error", detail=msg), None
    except Exception as e:  # any other exception is a failure
        return StepOutcome("failure", f"crash: {type(e).__name__}",
                           "".join(traceback.format_exception(e))), None
    if step.expect == "error":
        return StepOutcome("failure", "invalid input accepted"), None
    problem = step.check(out) if step.check is not None else None
    if problem is not None:
        return StepOutcome("failure", problem, "result: " + " ".join(repr(out).split())[:300]), None
    return StepOutcome("valid output"), out


# --------------------------------------------------------------------------- output checks
def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach().float()).all())


def check_vector(out: Any, n: int, *, low: float | None = None, high: float | None = None,
                 what: str = "output") -> str | None:
    """What is wrong with ``out`` as ``n`` finite values in ``[low, high]``, or None."""
    if not isinstance(out, torch.Tensor):
        return f"{what} kind: expected a torch.Tensor, got {type(out).__name__}"
    if tuple(out.shape) != (n,):
        return f"{what} shape: expected ({n},), got {tuple(out.shape)}"
    if not out.dtype.is_floating_point:
        return f"{what} dtype: expected a float dtype, got {out.dtype}"
    if not _finite(out):
        return f"non-finite {what}"
    w = out.detach().double()
    if low is not None and bool((w < low).any()):
        return f"{what} below {low}"
    if high is not None and bool((w > high * (1 + 1e-6)).any()):
        return f"{what} above {high}"
    return None


def check_scalar(out: Any, what: str = "loss") -> str | None:
    if not isinstance(out, torch.Tensor) or out.ndim != 0:
        return f"{what}: expected a 0-dim tensor, got {getattr(out, 'shape', type(out))}"
    return None if _finite(out) else f"non-finite {what}"


def check_normalized(w: torch.Tensor, normalization: str, low_precision: bool) -> str | None:
    n = w.shape[0]
    eps = 8e-3 if low_precision or w.dtype in (torch.float16, torch.bfloat16) else float(
        torch.finfo(w.dtype).eps)
    tol = 4 * max(n, 1) * eps + 1e-12
    total = float(w.double().sum())
    if normalization == "sum" and total != 0 and abs(total - 1) > tol:
        return "sum normalization: weights sum neither to 1 nor to 0"
    if normalization == "mean" and total != 0 and abs(total / n - 1) > tol:
        return "mean normalization: weights sum neither to B nor to 0"
    return None


def same_state(a: Any, b: Any) -> bool:
    """Whether two state dicts hold equal values (tensors compared exactly, NaN = NaN)."""
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same_state(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(same_state(x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool(torch.equal(a.nan_to_num(), b.nan_to_num())))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def round_trip(obj: Any) -> str | None:
    """Load an object's own state dict back: nothing may change."""
    before = obj.state_dict()
    obj.load_state_dict(before)
    return None if same_state(before, obj.state_dict()) else "state changed by a round trip"


# --------------------------------------------------------------------------- bad labels
BAD_LABELS = ("float", "column", "range_high", "range_low", "numpy", "list", "none")


def bad_labels(rng: np.random.Generator, y: torch.Tensor, C: int, kind: str, *,
               high: bool = True) -> Any:
    """``y`` made invalid as ``kind`` says (``high=False``: no label above ``C - 1``)."""
    if kind == "float":
        return y.float() + (0.5 if rng.random() < 0.5 else 0.0)
    if kind == "column":
        return y[:, None]
    if kind in ("range_high", "range_low"):
        y = y.clone()
        if y.numel():
            y[int(rng.integers(0, y.numel()))] = C if kind == "range_high" and high else -1
        return y
    if kind == "numpy":
        return y.numpy()
    if kind == "list":
        return y.tolist()
    return None


# --------------------------------------------------------------------------- running
class Driver(Protocol):
    """What a driver is: built from a random generator, it describes itself, yields steps and
    releases what it holds (e.g. a hook) in :meth:`close`."""

    description: str

    def __init__(self, rng: np.random.Generator) -> None: ...

    def steps(self) -> Iterator[Step]: ...

    def close(self) -> None: ...


def make_driver(driver: str, make: type[Driver], seed: int, index: int) -> Driver:
    """Sequence ``index`` of ``seed``: a function of the three only."""
    key = sum(ord(c) for c in driver)
    rng = np.random.default_rng([key, seed, index])
    torch.manual_seed(int(rng.integers(0, 2**31)))
    return make(rng)


def run_sequence(driver: str, make: type[Driver], seed: int, index: int, *,
                 budget: int | None = None,
                 log: Callable[[str], None] | None = None
                 ) -> list[tuple[int, Step, StepOutcome]]:
    """Run sequence ``index``: every step with its outcome, up to ``budget`` calls and up to
    the first failure (the driver's model of the state is then unreliable)."""
    d = make_driver(driver, make, seed, index)
    if log:
        log(d.description)
    out: list[tuple[int, Step, StepOutcome]] = []
    try:
        for k, step in enumerate(d.steps()):
            if budget is not None and k >= budget:
                break
            outcome, result = classify(step)
            out.append((k, step, outcome))
            if log:
                log(f"  step {k}: {step.name} (expect {step.expect}) -> {outcome.category}"
                    + (f" ({outcome.kind})" if outcome.kind else ""))
            if outcome.category == "failure":
                break
            if outcome.category == "valid output" and step.after is not None:
                step.after(result)
            elif outcome.category == "named error" and step.after_error is not None:
                step.after_error()
    finally:
        d.close()
    return out


def run(driver: str, make: type[Driver], calls: int, seed: int = 0) -> StepReport:
    """Sequences ``0, 1, ...`` of ``driver`` and ``seed`` until ``calls`` library calls ran."""
    report = StepReport(driver=driver, seed=seed)
    t0 = time.perf_counter()
    index = 0
    while report.calls < calls:
        for k, step, outcome in run_sequence(driver, make, seed, index,
                                             budget=calls - report.calls):
            report.calls += 1
            report.counts[outcome.category] += 1
            if outcome.category == "failure":
                kind = f"{driver} {step.name.split('(')[0]}: {outcome.kind}"
                report.failures[kind] += 1
                report.first.setdefault(kind, (index, k, outcome.detail.splitlines()[-1][:200]
                                               if outcome.detail else ""))
        report.sequences += 1
        index += 1
    report.wall_s = time.perf_counter() - t0
    return report


def format_report(report: StepReport) -> str:
    lines = [f"fuzz {report.driver}: {report.calls} calls in {report.sequences} sequences, "
             f"seed {report.seed}, {report.wall_s:.1f} s"]
    lines += [f"  {c:<14} {report.counts[c]}" for c in CATEGORIES]
    if report.failures:
        lines.append("failures by kind (count, first reproducer):")
        for kind, count in report.failures.most_common():
            k, step, detail = report.first[kind]
            lines.append(f"  {count:>5}  {kind}\n"
                         f"         python -m benchmarks.fuzz --drivers {report.driver} --seed "
                         f"{report.seed} --replay {k}   (step {step})"
                         + (f"\n         {detail}" if detail else ""))
    return "\n".join(lines)


def replay(driver: str, make: type[Driver], seed: int, index: int) -> int:
    """Re-run sequence ``index`` step by step, with the failing step's traceback."""
    print(f"sequence {index} of seed {seed} ({driver}):")
    steps = run_sequence(driver, make, seed, index, log=print)
    failed = [o for _, _, o in steps if o.category == "failure"]
    for o in failed:
        print(o.detail)
    return 1 if failed else 0
