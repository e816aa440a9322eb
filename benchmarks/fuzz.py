"""Fuzz benchmark: random calls through the public API, each classified by what came back.

``python -m benchmarks.fuzz [--drivers reweighters,recipe,model_meta] [--calls 10000] [--seed 0]
[--smoke] [--replay K]``

Three drivers, each run for ``--calls`` library calls: ``reweighters`` (below), and
``recipe`` and ``model_meta``, random sequences of steps through ``SurrogateRecipe`` and
``ModelMetaReweighter`` with bad inputs and steps in the wrong order, under the same contract
(:mod:`benchmarks.fuzz_steps`, :mod:`benchmarks.fuzz_recipe`,
:mod:`benchmarks.fuzz_model_meta`). In ``reweighters``, every call builds one reweighter and
calls it, with keywords only, on random inputs:

* methods: ``SurrogateReweighter`` (FBR) in ``"recompute"`` and ``"incremental"`` mode, each with
  and without ``ratio``; ``MetaReweighter`` in its last-layer form (``weights(logits=...,
  features=..., labels=..., clean_logits=..., clean_features=..., clean_labels=...)``) with each
  ``normalization``. The clean set is passed per call or cached with ``set_clean``;
* sizes ``B``, ``M``, ``C``, ``D`` small; NumPy or torch; float16, bfloat16 (torch only), float32
  or float64 (sometimes different for the training and the clean batch); magnitudes
  ``10**e * N(0, 1)`` with ``e`` from ``-30`` to ``30`` (``--max-exponent``; capped where the
  dtype would overflow), per tensor;
* patterns: class-structured, ties (small integers), identical rows, all zeros, a clean set of
  one class or with missing classes, one sample;
* a share of deliberately invalid inputs: NaN, inf, wrong shapes, rows or columns, out-of-range
  or float labels, empty batches, missing inputs, non-arrays, missing ``sample_ids``, bad
  constructor arguments.

Each call is one of

* **valid weights**: returned for a valid input, of the input's kind, dtype and length, all
  finite, in ``[0, w_max]`` (FBR), ``>= 0`` and summing to 1 or all 0 (L2RW ``"sum"``), to ``B``
  or all 0 (``"mean"``), ``>= 0`` (``"none"``);
* **named error**: a ``ValueError``/``TypeError`` whose message names an argument in backticks,
  for an invalid input (for NaN, inf and out-of-range labels: naming the argument at fault);
* **failure**: anything else: weights that break the rules above, another exception type, an
  error that names no argument or another one, a valid input rejected, an invalid one accepted.

It prints the three counts per driver and, per kind of failure, the count and one reproducer;
``--replay K`` re-runs call ``K`` of ``--seed`` alone (sequence ``K`` for ``recipe`` and
``model_meta``, given as the only driver), describes it and prints its traceback. Call ``K``
of seed ``s`` depends only on ``(s, K)``. The exit status is 1 if any call failed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import robustweights
from benchmarks import fuzz_steps
from benchmarks.fuzz_model_meta import ModelMetaDriver
from benchmarks.fuzz_recipe import RecipeDriver

METHODS = ("fbr", "fbr_ratio", "fbr_incremental", "fbr_incremental_ratio", "l2rw_sum",
           "l2rw_mean", "l2rw_none")
DTYPES = ("float16", "bfloat16", "float32", "float64")
PATTERNS = ("structured", "structured", "structured", "ties", "identical_rows", "zeros",
            "one_class", "missing_classes", "one_sample")
INVALID = ("nan", "inf", "wrong_rows", "wrong_dim", "wrong_ndim", "logit_columns",
           "label_range", "float_labels", "empty", "missing_input", "bad_type",
           "no_sample_ids", "bad_config")
#: Share of calls given a deliberately invalid input.
INVALID_SHARE = 0.25
#: Largest decimal exponent of the magnitude per dtype, so that 10**e * N(0, 1) stays finite.
MAX_EXPONENT = {"float16": 3, "bfloat16": 36, "float32": 36, "float64": 300}
CATEGORIES = ("valid weights", "named error", "failure")
SMOKE_CALLS = 300
#: The drivers of stateful objects (:mod:`benchmarks.fuzz_steps`), by name.
STEP_DRIVERS: dict[str, type[fuzz_steps.Driver]] = {"recipe": RecipeDriver,
                                                    "model_meta": ModelMetaDriver}
DRIVERS = ("reweighters", *STEP_DRIVERS)
_NAMED = re.compile(r"`([^`]+)`")


@dataclass
class Case:
    """One fuzz call: how to build the reweighter, an optional ``set_clean``, the ``weights``
    calls (keyword arguments), and what a correct library does with them."""

    make: Callable[[], Any]
    calls: list[dict[str, Any]]
    expect: str  # "weights" or "error"
    method: str = "fbr"
    framework: str = "torch"
    dtype: str = "float32"
    set_clean: dict[str, Any] | None = None
    bad_arg: str | None = None  # the argument an error must name (NaN, inf, label range)
    invalid: str | None = None  # what was made invalid, if anything
    w_max: float = 1.0
    description: str = ""


@dataclass
class Outcome:
    category: str  # one of CATEGORIES
    kind: str = ""  # for failures: what went wrong
    detail: str = ""


@dataclass
class Report:
    seed: int
    calls: int
    counts: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # kind -> count
    first: dict[str, tuple[int, str]] = field(default_factory=dict)  # kind -> (index, detail)
    wall_s: float = 0.0


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Space:
    """What calls are drawn from: magnitudes ``1e-max_exponent .. 1e+max_exponent`` (capped per
    dtype by :data:`MAX_EXPONENT`) and the float dtypes."""

    max_exponent: int = 30
    dtypes: tuple[str, ...] = DTYPES

    def exponent(self, rng: np.random.Generator, dtype: str) -> int:
        return int(rng.integers(-self.max_exponent, self.cap(dtype) + 1))

    def cap(self, dtype: str) -> int:
        return min(self.max_exponent, MAX_EXPONENT[dtype])

    def options(self) -> str:
        """The command-line options that select this space."""
        out = f" --max-exponent {self.max_exponent}" if self.max_exponent != 30 else ""
        return out + (f" --dtypes {','.join(self.dtypes)}" if self.dtypes != DTYPES else "")


def _convert(x: np.ndarray, framework: str, dtype: str) -> Any:
    """A float64 or integer NumPy array as the call's framework and dtype."""
    if x.dtype.kind in "iu":
        return torch.from_numpy(x) if framework == "torch" else x
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if framework == "numpy":
            return x.astype(dtype)
        return torch.from_numpy(x).to(getattr(torch, dtype))


def _finite(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.isfinite(x.astype(np.float64)).all()) if x.dtype.kind == "f" else True
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all()) if x.dtype.is_floating_point else True
    return True


def _features(rng: np.random.Generator, pattern: str, labels: np.ndarray,
              centres: np.ndarray) -> np.ndarray:
    n, d = labels.shape[0], centres.shape[1]
    if pattern == "ties":
        return rng.integers(-1, 2, (n, d)).astype(np.float64)
    if pattern == "identical_rows":
        return np.repeat(rng.standard_normal((1, d)), n, axis=0)
    if pattern == "zeros" and rng.random() < 0.5:
        return np.zeros((n, d))
    return centres[labels] + rng.standard_normal((n, d))


def _arrays(rng: np.random.Generator, space: Space, pattern: str, dtypes: tuple[str, str],
            sizes: tuple[int, int, int, int]) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
    """Labels, features and logits of the training (``y``, ``F``, ``Z``) and clean batch
    (``yc``, ``G``, ``Zc``), in float64 / integers, and the decimal exponents they are scaled by
    (per tensor, capped by the dtype each is cast to)."""
    B, M, C, D = sizes
    dtype, clean_dtype = dtypes
    y = rng.integers(0, C, B)
    if pattern == "one_class":
        yc = np.full(M, int(rng.integers(0, C)))
    elif pattern == "missing_classes":
        yc = rng.choice(rng.choice(C, int(rng.integers(1, C)), replace=False), M)
    else:
        yc = rng.integers(0, C, M)
    centres = 1.5 * rng.standard_normal((C, D))
    F = _features(rng, pattern, y, centres)
    G = _features(rng, pattern, yc, centres)
    Z = rng.standard_normal((B, C)) if pattern != "ties" else rng.integers(-2, 3, (B, C)) * 1.0
    Zc = rng.standard_normal((M, C))
    if pattern == "identical_rows":
        Zc = np.repeat(Zc[:1], M, axis=0)
    e_train = space.exponent(rng, dtype)
    e_clean = (min(e_train, space.cap(clean_dtype)) if rng.random() < 0.7
               else space.exponent(rng, clean_dtype))
    e_logits = space.exponent(rng, dtype)
    e_clean_logits = (min(e_logits, space.cap(clean_dtype)) if rng.random() < 0.7
                      else space.exponent(rng, clean_dtype))
    label_dtype = np.int64 if rng.random() < 0.8 else np.int32
    arrays = {"y": y.astype(label_dtype), "yc": yc.astype(label_dtype),
              "F": F * 10.0 ** e_train, "G": G * 10.0 ** e_clean,
              "Z": Z * 10.0 ** e_logits, "Zc": Zc * 10.0 ** e_clean_logits}
    return arrays, (e_train, e_clean, e_logits, e_clean_logits)


def _config(rng: np.random.Generator, method: str, C: int) -> tuple[Any, dict[str, Any], float]:
    """The reweighter class, its keyword arguments and its ``w_max``."""
    kwargs: dict[str, Any] = {"num_classes": C}
    if not method.startswith("fbr"):
        kwargs["normalization"] = method.split("_")[1]
        kwargs["lr"] = float(rng.choice((1.0, 0.1, 10.0)))
        kwargs["bias"] = bool(rng.random() < 0.8)
        return robustweights.MetaReweighter, kwargs, 1.0
    w_max = 1.0
    # the "missing_classes" pattern fuzzes the weights of classes without a clean sample
    # (missing_class="error", the default, is tested in tests/test_surrogate.py)
    kwargs["missing_class"] = "ignore"
    kwargs["alpha"] = [None, 0.0, 1.0 / (C - 1), 1.0, float(rng.uniform(0, 2))][
        int(rng.integers(0, 5))]
    if "ratio" in method:
        kwargs["ratio"] = float(rng.choice((0.1, 0.3, 0.5, 1.0)))
    if "incremental" in method:
        kwargs["mode"] = "incremental"
        kwargs["eta"] = float(rng.choice((0.01, 0.1, 1.0)))
    if rng.random() < 0.2:
        w_max = kwargs["w_max"] = float(rng.choice((2.0, 10.0)))
        kwargs["missing_class_weight"] = float(rng.choice((0.0, 0.5, w_max)))
    return robustweights.SurrogateReweighter, kwargs, w_max


#: Invalid constructor arguments, by name.
BAD_CONFIG: dict[str, tuple[Any, ...]] = {
    "num_classes": (1, 0, 2.5, True), "lr": (0.0, -1.0, float("inf")),
    "normalization": ("bogus", "softmax"), "alpha": (-1.0, float("nan")),
    "ratio": (0.0, 1.5, -0.1, float("nan")), "mode": ("bogus",), "eta": (0.0, -0.1),
    "w_init": ("w_max", -0.5)}


def _corrupt(rng: np.random.Generator, invalid: str, train: dict[str, Any],
             clean: dict[str, Any], kwargs: dict[str, Any], *, fbr: bool, cached: bool,
             incremental: bool, w_max: float) -> tuple[str, str | None]:
    """Make the inputs (in place) invalid as ``invalid`` says. Returns what was done (a kind
    that does not apply to the method is replaced) and the argument an error must name, if
    one is unambiguous. ``no_sample_ids`` is left to the caller."""
    C = kwargs["num_classes"]
    bad_arg = None
    if invalid in ("nan", "inf"):
        where = str(rng.choice([k for k in ("features", "logits") if k in train]))
        target = train if rng.random() < 0.5 else clean
        arr = target[where].copy()
        arr.flat[int(rng.integers(0, arr.size))] = np.nan if invalid == "nan" else (
            np.inf if rng.random() < 0.5 else -np.inf)
        target[where] = arr
        bad_arg = where if target is train or cached else "clean_" + where
    elif invalid == "wrong_rows":
        target = train if rng.random() < 0.5 else clean
        key = str(rng.choice(list(target)))
        target[key] = np.concatenate([target[key], target[key][:1]])
    elif invalid == "wrong_dim":
        clean["features"] = np.concatenate([clean["features"], clean["features"][:, :1]], 1)
    elif invalid == "wrong_ndim":
        target = train if rng.random() < 0.5 else clean
        key = str(rng.choice(list(target)))
        if key == "labels":
            target[key] = target[key][:, None] if rng.random() < 0.5 else target[key][None]
        else:
            target[key] = target[key][None] if rng.random() < 0.5 else target[key].reshape(-1)
    elif invalid == "logit_columns":
        if fbr:
            invalid = "label_range"
        else:
            target = train if rng.random() < 0.5 else clean
            rows = target["logits"].shape[0]
            target["logits"] = np.ones((rows, C + 1 if rng.random() < 0.5 else 1))
    elif invalid == "float_labels":
        target = train if rng.random() < 0.5 else clean
        target["labels"] = target["labels"].astype(np.float64)
    elif invalid == "empty":
        target = train if rng.random() < 0.5 else clean
        for key in target:
            target[key] = target[key][:0]
    elif invalid == "missing_input":
        target = train if rng.random() < 0.5 else clean
        del target[str(rng.choice(list(target)))]
    elif invalid == "no_sample_ids" and not incremental:
        invalid = "label_range"
    elif invalid == "bad_config":
        allowed = ["num_classes"] + (["alpha", "ratio", "mode", "eta", "w_init"] if fbr
                                     else ["lr", "normalization"])
        bad_arg = str(rng.choice(allowed))
        choices = BAD_CONFIG[bad_arg]
        value = choices[int(rng.integers(0, len(choices)))]
        kwargs[bad_arg] = w_max if value == "w_max" else value
    if invalid == "label_range":
        target = train if rng.random() < 0.5 else clean
        lab = target["labels"].copy()
        lab[int(rng.integers(0, lab.shape[0]))] = C if rng.random() < 0.5 else -1
        target["labels"] = lab
        bad_arg = "labels" if target is train or cached else "clean_labels"
    return invalid, bad_arg


def make_case(seed: int, index: int, space: Space = Space()) -> Case:
    """Call ``index`` of ``seed``: a function of the two numbers (and ``space``) only."""
    rng = np.random.default_rng([seed, index])
    method = str(rng.choice(METHODS))
    fbr, incremental = method.startswith("fbr"), "incremental" in method
    framework = str(rng.choice(("numpy", "torch")))
    dtypes = tuple(d for d in space.dtypes if framework == "torch" or d != "bfloat16")
    if not dtypes:  # bfloat16 alone: torch only
        framework, dtypes = "torch", space.dtypes
    dtype = str(rng.choice(dtypes))
    clean_dtype = dtype if rng.random() < 0.85 else str(rng.choice(dtypes))
    pattern = str(rng.choice(PATTERNS))
    invalid = str(rng.choice(INVALID)) if rng.random() < INVALID_SHARE else None
    C = int(rng.integers(2, 7))
    D = int(rng.integers(1, 9))
    B = 1 if pattern == "one_sample" else int(rng.integers(1, 17))
    M = int(rng.integers(1, 25))
    a, exps = _arrays(rng, space, pattern, (dtype, clean_dtype), (B, M, C, D))
    cls, kwargs, w_max = _config(rng, method, C)
    train: dict[str, Any] = {"features": a["F"], "labels": a["y"]}
    clean: dict[str, Any] = {"features": a["G"], "labels": a["yc"]}
    if not fbr:
        train["logits"], clean["logits"] = a["Z"], a["Zc"]
    cached = bool(rng.random() < 0.4)
    ids = [rng.permutation(2 * B)[:B] for _ in range(2)] if incremental else []
    bad_arg = None
    if invalid is not None:
        invalid, bad_arg = _corrupt(rng, invalid, train, clean, kwargs, fbr=fbr, cached=cached,
                                    incremental=incremental, w_max=w_max)
        if invalid == "no_sample_ids":
            ids = []

    def conv(d: dict[str, Any], dt: str) -> dict[str, Any]:
        out = {k: _convert(v, framework, dt) for k, v in d.items()}
        if invalid == "bad_type" and d is train:  # not an array: a string, a dict, complex
            out["features"] = [str(d["features"]), {"features": 1},
                               d["features"].astype(np.complex128)][int(rng.integers(0, 3))]
        return out

    train_in, clean_in = conv(train, dtype), conv(clean, clean_dtype)
    # What a correct library does: reject every invalid input, and a valid one whose values
    # did not survive the cast to its dtype (they are then non-finite), or FBR on a clean set of
    # one class (documented: the row shift needs a runner-up class); weigh everything else.
    degenerate = fbr and len(np.unique(clean.get("labels", a["yc"]))) < 2
    nonfinite = not all(_finite(v) for v in [*train_in.values(), *clean_in.values()])
    expect = "error" if invalid is not None or nonfinite or degenerate else "weights"
    if nonfinite:  # then an error may name the non-finite input first
        bad_arg = None
    call = dict(train_in, **({} if cached else {"clean_" + k: v for k, v in clean_in.items()}))
    # Incremental: two calls, so that the per-sample state carries over.
    calls = [dict(call, sample_ids=_convert(i.astype(np.int64), framework, dtype))
             for i in ids] or [call]
    config = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    desc = (f"call {index} of seed {seed}: {cls.__name__}({config}), {framework} {dtype} "
            f"(clean {clean_dtype}), B={B} M={M} C={C} D={D}, pattern {pattern}, exponents "
            f"train {exps[0]} clean {exps[1]} logits {exps[2]}/{exps[3]}, clean "
            f"{'cached by set_clean' if cached else 'per call'}, invalid: {invalid}, "
            f"expect {expect}")
    return Case(make=lambda: cls(**kwargs), calls=calls, expect=expect, method=method,
                framework=framework, dtype=dtype, set_clean=clean_in if cached else None,
                bad_arg=bad_arg, invalid=invalid, w_max=w_max, description=desc)


# --------------------------------------------------------------------------- classification
def check_weights(case: Case, out: Any, n: int) -> str | None:
    """What is wrong with weights ``out`` of a call with ``n`` samples, or None."""
    if case.framework == "numpy":
        if not isinstance(out, np.ndarray):
            return f"output kind: expected a NumPy array, got {type(out).__name__}"
        if str(out.dtype) != case.dtype:
            return f"output dtype: expected {case.dtype}, got {out.dtype}"
        w = out.astype(np.float64)
    else:
        if not isinstance(out, torch.Tensor):
            return f"output kind: expected a torch.Tensor, got {type(out).__name__}"
        if out.dtype != getattr(torch, case.dtype):
            return f"output dtype: expected {case.dtype}, got {out.dtype}"
        w = out.detach().to(torch.float64).numpy()
    if w.shape != (n,):
        return f"output shape: expected ({n},), got {w.shape}"
    if not np.isfinite(w).all():
        return "non-finite weights"
    if (w < 0).any():
        return "negative weights"
    if case.method.startswith("fbr"):
        return None if (w <= case.w_max).all() else "weights above w_max"
    eps = 8e-3 if case.dtype in ("float16", "bfloat16") else float(np.finfo(case.dtype).eps)
    tol = 4 * n * eps + 1e-12
    total = float(w.sum())
    if case.method == "l2rw_sum" and total != 0 and abs(total - 1) > tol:
        return "sum normalization: weights sum neither to 1 nor to 0"
    if case.method == "l2rw_mean" and total != 0 and abs(total / n - 1) > tol:
        return "mean normalization: weights sum neither to B nor to 0"
    return None


def run_case(case: Case) -> Outcome:
    """Call the library as ``case`` says and classify what happens."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rw = case.make()
            if case.set_clean is not None:
                rw.set_clean(**case.set_clean)
            outs = [rw.weights(**kw) for kw in case.calls]
    except (ValueError, TypeError) as e:
        msg = f"{type(e).__name__}: {e}"
        names = _NAMED.findall(str(e))
        if not names:
            return Outcome("failure", f"{type(e).__name__} without a named argument", msg)
        if case.expect == "weights":
            return Outcome("failure", "valid input rejected", msg)
        if case.bad_arg is not None and case.bad_arg not in names:
            return Outcome("failure", f"error names {names} instead of `{case.bad_arg}`", msg)
        return Outcome("named error", detail=msg)
    except Exception as e:  # any other exception is a failure
        return Outcome("failure", f"crash: {type(e).__name__}",
                       "".join(traceback.format_exception(e)))
    if case.expect == "error":
        what = case.invalid or "values non-finite in their dtype or a one-class clean set"
        return Outcome("failure", f"invalid input accepted ({what})")
    for out, kw in zip(outs, case.calls, strict=True):
        ref = kw.get("features", kw.get("logits"))
        n = len(ref) if ref is not None else -1
        problem = check_weights(case, out, n)
        if problem is not None:
            return Outcome("failure", problem, "weights: " + " ".join(repr(out).split()))
    return Outcome("valid weights")


def run(calls: int, seed: int = 0, space: Space = Space(), progress: bool = True) -> Report:
    """Make and classify calls ``0 .. calls - 1`` of ``seed``."""
    report = Report(seed=seed, calls=calls)
    t0 = time.perf_counter()
    for k in tqdm(range(calls), desc="fuzz", disable=not progress, mininterval=0.5):
        case = make_case(seed, k, space)
        outcome = run_case(case)
        report.counts[outcome.category] += 1
        if outcome.category == "failure":
            kind = f"{case.method} {case.dtype}: {outcome.kind}"
            report.failures[kind] += 1
            report.first.setdefault(kind, (k, outcome.detail.splitlines()[-1][:200]
                                           if outcome.detail else ""))
    report.wall_s = time.perf_counter() - t0
    return report


def format_report(report: Report, space: Space = Space()) -> str:
    lines = [f"fuzz: {report.calls} calls, seed {report.seed}, magnitudes 1e-{space.max_exponent}"
             f" to 1e{space.max_exponent}, dtypes {','.join(space.dtypes)}, "
             f"{report.wall_s:.1f} s"]
    lines += [f"  {c:<14} {report.counts[c]}" for c in CATEGORIES]
    if report.failures:
        lines.append("failures by kind (count, first reproducer):")
        for kind, count in report.failures.most_common():
            k, detail = report.first[kind]
            lines.append(f"  {count:>5}  {kind}\n"
                         f"         python -m benchmarks.fuzz --seed {report.seed} --replay {k}"
                         f"{space.options()}" + (f"\n         {detail}" if detail else ""))
    return "\n".join(lines)


def replay(seed: int, index: int, space: Space = Space()) -> int:
    case = make_case(seed, index, space)
    print(case.description)
    outcome = run_case(case)
    print(f"-> {outcome.category}" + (f" ({outcome.kind})" if outcome.kind else ""))
    if outcome.detail:
        print(outcome.detail)
    return 1 if outcome.category == "failure" else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drivers", default=None,
                   help=f"comma-separated subset of {','.join(DRIVERS)} (default: all; "
                        "reweighters with --replay)")
    p.add_argument("--calls", type=int, default=None,
                   help=f"number of calls per driver (default 10000; {SMOKE_CALLS} with "
                        "--smoke)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_CALLS} calls, for CI")
    p.add_argument("--max-exponent", type=int, default=30,
                   help="magnitudes from 1e-N to 1eN (default 30)")
    p.add_argument("--dtypes", default=",".join(DTYPES),
                   help=f"comma-separated subset of {','.join(DTYPES)} (default: all)")
    p.add_argument("--replay", type=int, default=None, metavar="K",
                   help="re-run call K of --seed alone, with its description and traceback")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dtypes = tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    if not dtypes or set(dtypes) - set(DTYPES):
        raise SystemExit(f"Expected --dtypes from {DTYPES}, but got {args.dtypes!r}")
    if args.max_exponent < 0:
        raise SystemExit(f"Expected --max-exponent >= 0, but got {args.max_exponent}")
    space = Space(args.max_exponent, dtypes)
    default = ("reweighters",) if args.replay is not None else DRIVERS
    drivers = (default if args.drivers is None
               else tuple(d.strip() for d in args.drivers.split(",") if d.strip()))
    if not drivers or set(drivers) - set(DRIVERS):
        raise SystemExit(f"Expected --drivers from {DRIVERS}, but got {args.drivers!r}")
    if args.replay is not None:
        if len(drivers) != 1:
            raise SystemExit(f"Expected one driver with --replay, but got {drivers}")
        if drivers[0] != "reweighters":
            return fuzz_steps.replay(drivers[0], STEP_DRIVERS[drivers[0]], args.seed,
                                     args.replay)
        return replay(args.seed, args.replay, space)
    calls = args.calls if args.calls is not None else (SMOKE_CALLS if args.smoke else 10_000)
    total = failed = 0
    for driver in drivers:
        if driver == "reweighters":
            report = run(calls, args.seed, space, progress=not args.no_progress)
            print(format_report(report, space))
            total, failed = total + report.calls, failed + report.counts["failure"]
        else:
            steps = fuzz_steps.run(driver, STEP_DRIVERS[driver], calls, args.seed)
            print(fuzz_steps.format_report(steps))
            total, failed = total + steps.calls, failed + steps.counts["failure"]
    if len(drivers) > 1:
        print(f"total: {total} calls, {failed} failures ({', '.join(drivers)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
