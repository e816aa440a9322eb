"""The fuzz benchmark (``python -m benchmarks.fuzz``) at smoke size: its counts add up, it is
deterministic, its classifiers tell named errors from failures, and the library has no failure
in the magnitude range it handles today, nor in random step sequences through the recipe and
the full-network L2RW."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fuzz, fuzz_steps  # noqa: E402
from robustweights import MetaReweighter, SurrogateReweighter  # noqa: E402

#: The whole fuzzed range must give no failure: magnitudes up to 1e30 in every float dtype
#: (scale-safe kernels; unnormalised float16 L2RW scores saturate at the dtype's largest value),
#: and each dtype alone, so a dtype's share of the smoke calls is not too small to catch it.
FULL_RANGE = (fuzz.Space(30, ("float16", "bfloat16", "float32", "float64")),
                 *(fuzz.Space(30, (dt,)) for dt in ("float16", "bfloat16", "float32", "float64")))


@pytest.fixture(scope="module")
def smoke() -> fuzz.Report:
    return fuzz.run(fuzz.SMOKE_CALLS, seed=0, progress=False)


def test_smoke_counts_are_consistent(smoke):
    r = smoke
    assert set(r.counts) <= set(fuzz.CATEGORIES), f"unknown categories: {set(r.counts)}"
    assert sum(r.counts.values()) == fuzz.SMOKE_CALLS, f"counts do not add up: {r.counts}"
    assert sum(r.failures.values()) == r.counts["failure"], "failure kinds do not add up"
    assert set(r.first) == set(r.failures), "a failure kind without a reproducer"
    # Both outcomes that are not failures occur often: the fuzzer is not vacuous.
    assert r.counts["valid weights"] > 0.4 * fuzz.SMOKE_CALLS, r.counts
    assert r.counts["named error"] > 0.15 * fuzz.SMOKE_CALLS, r.counts
    for kind, (k, _) in r.first.items():  # every reproducer replays to a failure
        assert 0 <= k < fuzz.SMOKE_CALLS
        assert fuzz.run_case(fuzz.make_case(0, k)).category == "failure", kind


@pytest.mark.parametrize("space", FULL_RANGE, ids=lambda s: "-".join(s.dtypes))
def test_no_failure_in_the_whole_range(space):
    r = fuzz.run(fuzz.SMOKE_CALLS, seed=0, space=space, progress=False)
    assert r.counts["failure"] == 0, fuzz.format_report(r, space)
    assert r.counts["valid weights"] > 0.4 * fuzz.SMOKE_CALLS, r.counts


def test_deterministic_per_seed():
    a = [fuzz.make_case(3, k).description for k in range(40)]
    assert a == [fuzz.make_case(3, k).description for k in range(40)]
    assert a != [fuzz.make_case(4, k).description for k in range(40)], "seed ignored"
    r1, r2 = (fuzz.run(60, seed=3, progress=False) for _ in range(2))
    assert (r1.counts, r1.failures, r1.first) == (r2.counts, r2.failures, r2.first)


def _fbr_call(**overrides: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    call = {"features": torch.randn(4, 3, generator=g), "labels": torch.tensor([0, 1, 2, 0]),
            "clean_features": torch.randn(6, 3, generator=g),
            "clean_labels": torch.arange(6) % 3}
    return {**call, **overrides}


def test_known_bad_inputs_are_named_errors():
    F = _fbr_call()["features"].clone()
    F[1, 2] = float("nan")
    nan_case = fuzz.Case(make=lambda: SurrogateReweighter(num_classes=3, alpha=0.5),
                         calls=[_fbr_call(features=F)], expect="error", bad_arg="features")
    out = fuzz.run_case(nan_case)
    assert out.category == "named error", out
    assert "`features`" in out.detail
    z = np.zeros((4, 3), dtype=np.float32)
    range_case = fuzz.Case(
        make=lambda: MetaReweighter(num_classes=3), method="l2rw_sum", framework="numpy",
        calls=[{"logits": z, "features": z, "labels": np.array([0, 1, 3, 0]),
                "clean_logits": z, "clean_features": z, "clean_labels": np.array([0, 1, 2, 0])}],
        expect="error", bad_arg="labels")
    assert fuzz.run_case(range_case).category == "named error"
    # The same error counts as a failure when it names another argument than the one at fault.
    wrong = fuzz.Case(make=nan_case.make, calls=nan_case.calls, expect="error",
                      bad_arg="clean_features")
    assert fuzz.run_case(wrong).category == "failure"


class _Fake:
    """A reweighter stand-in that returns or raises what it is told."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def weights(self, **_: Any) -> Any:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


@pytest.mark.parametrize(("method", "result", "kind"), [
    ("fbr", torch.tensor([0.0, float("nan"), 1.0, 1.0]), "non-finite weights"),
    ("fbr", torch.tensor([0.0, 1.5, 1.0, 1.0]), "weights above w_max"),
    ("fbr", torch.tensor([0.0, -0.1, 1.0, 1.0]), "negative weights"),
    ("fbr", torch.tensor([0.0, 1.0, 1.0]), "output shape"),
    ("fbr", torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64), "output dtype"),
    ("l2rw_sum", torch.tensor([0.25, 0.25, 0.25, 0.0]), "sum normalization"),
    ("l2rw_mean", torch.tensor([1.0, 1.0, 1.0, 0.0]), "mean normalization"),
    ("fbr", RuntimeError("boom"), "crash: RuntimeError"),
    ("fbr", ValueError("bad input"), "ValueError without a named argument"),
    ("fbr", ValueError("Expected `features` to be finite"), "valid input rejected"),
])
def test_classifier_flags_bad_outcomes(method, result, kind):
    case = fuzz.Case(make=lambda: _Fake(result), calls=[_fbr_call()], expect="weights",
                     method=method)
    out = fuzz.run_case(case)
    assert out.category == "failure" and out.kind.startswith(kind), out


def test_classifier_accepts_good_weights():
    for method, w in (("fbr", [0.0, 1.0, 1.0, 0.0]), ("l2rw_sum", [0.5, 0.5, 0.0, 0.0]),
                      ("l2rw_sum", [0.0] * 4), ("l2rw_mean", [2.0, 2.0, 0.0, 0.0])):
        case = fuzz.Case(make=lambda w=w: _Fake(torch.tensor(w)), calls=[_fbr_call()],
                         expect="weights", method=method)
        assert fuzz.run_case(case).category == "valid weights", (method, w)
    accepted = fuzz.Case(make=lambda: _Fake(torch.ones(4)), calls=[_fbr_call()], expect="error")
    assert fuzz.run_case(accepted).kind.startswith("invalid input accepted")


def test_cli(capsys):
    assert fuzz.main(["--smoke", "--no-progress", "--max-exponent", "15",
                      "--dtypes", "float32,float64"]) == 0
    out = capsys.readouterr().out
    assert f"fuzz: {fuzz.SMOKE_CALLS} calls, seed 0" in out
    for category in fuzz.CATEGORIES:
        assert category in out
    assert fuzz.main(["--replay", "5", "--seed", "1"]) in (0, 1)
    assert "call 5 of seed 1:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fuzz.main(["--dtypes", "float8"])


# --------------------------------------------------------------------------- stateful drivers
@pytest.fixture(scope="module", params=sorted(fuzz.STEP_DRIVERS))
def steps_smoke(request) -> fuzz_steps.StepReport:
    return fuzz_steps.run(request.param, fuzz.STEP_DRIVERS[request.param], fuzz.SMOKE_CALLS,
                          seed=0)


def test_step_drivers_smoke(steps_smoke):
    r = steps_smoke
    assert r.calls == fuzz.SMOKE_CALLS == sum(r.counts.values()), r.counts
    assert set(r.counts) <= set(fuzz_steps.CATEGORIES), r.counts
    assert r.counts["failure"] == 0, fuzz_steps.format_report(r)
    # Both outcomes that are not failures occur often: the driver is not vacuous.
    assert r.counts["valid output"] > 0.5 * r.calls, r.counts
    assert r.counts["named error"] > 0.1 * r.calls, r.counts
    assert r.sequences > 5, "too few sequences to vary the configuration"


@pytest.mark.parametrize("driver", sorted(fuzz.STEP_DRIVERS))
def test_step_drivers_deterministic_per_seed(driver):
    make = fuzz.STEP_DRIVERS[driver]

    def names(seed: int, index: int) -> list[str]:
        return [s.name for _, s, _ in fuzz_steps.run_sequence(driver, make, seed, index)]

    assert names(3, 1) == names(3, 1)
    assert [names(3, k) for k in range(3)] != [names(4, k) for k in range(3)], "seed ignored"


def test_step_classifier():
    def boom() -> None:
        raise RuntimeError("boom")

    def named() -> None:
        raise ValueError("Expected `labels` to lie in [0, 2]")

    def order() -> None:
        raise ValueError("Expected this epoch's prototypes before `weights()`")

    S = fuzz_steps.Step
    assert fuzz_steps.classify(S("x", boom, expect="error"))[0].kind == "crash: RuntimeError"
    assert fuzz_steps.classify(S("x", named, expect="error", bad_arg="labels"))[0].category \
        == "named error"
    assert fuzz_steps.classify(S("x", named, expect="ok"))[0].kind == "valid input rejected"
    assert fuzz_steps.classify(S("x", named, expect="error", bad_arg="features"))[0].kind \
        .startswith("error names ['labels'] instead of `features`")
    assert fuzz_steps.classify(S("x", order, expect="either"))[0].category == "named error"
    assert fuzz_steps.classify(S("x", lambda: 1, expect="error"))[0].kind \
        == "invalid input accepted"
    nan = S("x", lambda: torch.tensor([0.5, float("nan")]),
            check=lambda w: fuzz_steps.check_vector(w, 2, low=0.0, high=1.0))
    assert fuzz_steps.classify(nan)[0].kind == "non-finite output"
    wide = S("x", lambda: torch.ones(3), check=lambda w: fuzz_steps.check_vector(w, 2))
    assert fuzz_steps.classify(wide)[0].kind.startswith("output shape")
    assert fuzz_steps._names("got `weights(labels=..., inputs=...)` and `state_dict['x']`") \
        == ["weights", "state_dict"]


def test_cli_step_drivers(capsys):
    assert fuzz.main(["--drivers", "recipe,model_meta", "--calls", "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fuzz recipe: 40 calls" in out and "fuzz model_meta: 40 calls" in out
    assert "total: 80 calls, 0 failures" in out
    assert fuzz.main(["--drivers", "recipe", "--replay", "2"]) == 0
    assert "sequence 2 of seed 0 (recipe):" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fuzz.main(["--drivers", "bogus"])
    with pytest.raises(SystemExit):
        fuzz.main(["--drivers", "recipe,model_meta", "--replay", "2"])
