"""Checkpoint contract, for every stateful class (``tests/state_cases.py``), in the spirit of
torchmetrics' shared tester: run some steps, save (``state_dict`` through ``torch.save``, and the
whole object through ``pickle`` and ``torch.save``), restore into a fresh object *in a fresh
Python process*, continue, and the following outputs are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from state_cases import CASES, N_STEPS, SPLIT

from robustweights import MetaReweighter, ModelMetaReweighter, PhaseMonitor, SurrogateReweighter
from robustweights._state import STATE_VERSION

ROOT = Path(__file__).resolve().parents[1]
HOW = ("state_dict", "pickle", "torch_save")

# Runs in a fresh interpreter: nothing of the saving process survives but the files.
RESTORE = """
import pickle, sys, torch
sys.path[:0] = [{root!r}, {tests!r}]
from state_cases import CASES, N_STEPS, SPLIT
tmp = {tmp!r}
out = {{}}
for name, case in CASES.items():
    fresh = case.make()
    fresh.load_state_dict(torch.load(f"{{tmp}}/{{name}}.state.pt"))  # weights_only: plain data
    with open(f"{{tmp}}/{{name}}.pkl", "rb") as f:
        unpickled = pickle.load(f)
    saved = torch.load(f"{{tmp}}/{{name}}.obj.pt", weights_only=False)
    for how, obj in (("state_dict", fresh), ("pickle", unpickled), ("torch_save", saved)):
        out[name, how] = [case.step(obj, t) for t in range(SPLIT, N_STEPS)]
torch.save(out, f"{{tmp}}/restored.pt")
"""


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("state")
    reference = {}
    for name, case in CASES.items():
        obj = case.make()
        for t in range(SPLIT):
            case.step(obj, t)
        torch.save(obj.state_dict(), tmp / f"{name}.state.pt")
        with open(tmp / f"{name}.pkl", "wb") as f:
            pickle.dump(obj, f)
        torch.save(obj, tmp / f"{name}.obj.pt")
        reference[name] = [case.step(obj, t) for t in range(SPLIT, N_STEPS)]  # uninterrupted
    script = RESTORE.format(root=str(ROOT), tests=str(ROOT / "tests"), tmp=str(tmp))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"restoring in a fresh process failed:\n{proc.stderr}"
    return reference, torch.load(tmp / "restored.pt")


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", CASES)
def test_resumed_run_is_bit_identical(resumed, name, how):
    reference, restored = resumed
    for t, (want, got) in enumerate(zip(reference[name], restored[name, how], strict=True)):
        assert got.dtype == want.dtype and torch.equal(got, want), (
            f"{name}: step {SPLIT + t} after restoring via {how} differs from the "
            f"uninterrupted run:\n{got}\nvs\n{want}")


@pytest.mark.parametrize("name", CASES)
def test_state_matters(name):
    # The contract test can fail: without the restored state the continuation differs (or
    # cannot run at all, e.g. without the clean statistics).
    case = CASES[name]
    obj = case.make()
    ref = [case.step(obj, t) for t in range(N_STEPS)][SPLIT:]
    blank = case.make()
    try:
        got = [case.step(blank, t) for t in range(SPLIT, N_STEPS)]
    except ValueError:
        return
    assert any(not torch.equal(a, b) for a, b in zip(got, ref, strict=True)), (
        f"{name}: a fresh object continues exactly like the restored one: weak case")


@pytest.mark.parametrize("name", CASES)
def test_state_dict_is_plain_cpu_data(name, tmp_path):
    case = CASES[name]
    obj = case.make()
    for t in range(SPLIT):
        case.step(obj, t)
    state = case.own(obj).state_dict()
    assert state["_version"] == STATE_VERSION

    def walk(v, where):
        if isinstance(v, torch.Tensor):
            assert v.device.type == "cpu", f"{name}: {where} is on {v.device}"
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}[{k!r}]")
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        else:
            assert v is None or isinstance(v, (bool, int, float, str)), f"{name}: {where} {v!r}"

    walk(state, "state")
    torch.save(state, tmp_path / "s.pt")
    torch.load(tmp_path / "s.pt", weights_only=True)  # loads without unpickling code


def test_default_reweighter_pickles():
    rw = SurrogateReweighter(10)
    clone = pickle.loads(pickle.dumps(rw))
    assert clone.alpha == rw.alpha and clone.current_alpha() == pytest.approx(1 / 9)


@pytest.mark.parametrize("make, key, other", [
    (lambda: SurrogateReweighter(4), "num_classes", lambda: SurrogateReweighter(5)),
    (lambda: SurrogateReweighter(4), "mode", lambda: SurrogateReweighter(4, mode="incremental")),
    (lambda: MetaReweighter(4), "num_classes", lambda: MetaReweighter(3)),
    (lambda: PhaseMonitor(), "patience", lambda: PhaseMonitor(patience=2)),
    (lambda: PhaseMonitor(), "freeze", lambda: PhaseMonitor(freeze=True)),
])
def test_configuration_mismatch_names_the_key(make, key, other):
    state = make().state_dict()
    for strict in (True, False):
        with pytest.raises(ValueError, match=rf"Expected `state_dict\['{key}'\]` to be"):
            other().load_state_dict(state, strict=strict)


@pytest.mark.parametrize("make", [lambda: SurrogateReweighter(4), lambda: MetaReweighter(4),
                                  lambda: PhaseMonitor()])
def test_unexpected_missing_and_newer_keys(make):
    state = make().state_dict()
    with pytest.raises(ValueError, match=r"Expected the keys of `state_dict` to be those of \w+, "
                                         r"but got unexpected keys \['bogus'\], missing keys \[\]"):
        make().load_state_dict({**state, "bogus": 1})
    make().load_state_dict({**state, "bogus": 1}, strict=False)
    partial = {k: v for k, v in state.items() if k != "clean" and k != "history"}
    with pytest.raises(ValueError, match=r"missing keys \['(clean|history)'\]"):
        make().load_state_dict(partial)
    with pytest.raises(ValueError, match=r"`state_dict\['_version'\]` to be at most"):
        make().load_state_dict({**state, "_version": STATE_VERSION + 1})
    with pytest.raises(TypeError, match="`state_dict` to be a mapping"):
        make().load_state_dict([1, 2])  # type: ignore[arg-type]


def test_clean_statistics_load_lazily_on_the_batch_device():
    rw = SurrogateReweighter(3, alpha=0.5)
    rw.set_clean(features=torch.eye(3), labels=torch.arange(3))
    clone = SurrogateReweighter(3, alpha=0.5)
    clone.load_state_dict(rw.state_dict())
    f, y = torch.eye(3) * 2, torch.tensor([0, 1, 0])
    assert torch.equal(clone.weights(features=f, labels=y), rw.weights(features=f, labels=y))


def test_model_gradient_must_match_the_model():
    from torch import nn

    ce = nn.CrossEntropyLoss(reduction="none")
    rw = ModelMetaReweighter(nn.Linear(3, 2), ce)
    rw.set_clean(inputs=torch.randn(4, 3), labels=torch.tensor([0, 1, 0, 1]))
    other = ModelMetaReweighter(nn.Sequential(nn.Linear(3, 2)), ce)  # names "0.weight", ...
    with pytest.raises(ValueError, match=r"one tensor per trainable parameter of the model"):
        other.load_state_dict(rw.state_dict())


# ------------------------------------------------------------------ a refused load changes nothing
# The recipe cases hold a model and an optimizer beside the recipe; SurrogateRecipe's own
# atomic load is tested in tests/test_recipe.py (test_rejected_load_leaves_the_recipe_untouched).
ATOMIC = [name for name in CASES
          if name not in ("fbr_recipe", "fbr_recipe_targets", "lightning_recipe_callback")]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", ATOMIC)
def test_refused_load_changes_nothing(name):
    # A valid state of a run, with one key at a time made unreadable, loaded into a fresh
    # object: every key is checked before any is assigned, so its state is unchanged.
    case = CASES[name]
    obj = case.make()
    before = obj.state_dict()
    further = case.make()
    for t in range(N_STEPS):
        case.step(further, t)
    good = further.state_dict()
    assert not _same(good, before), f"{name}: the loads below would change nothing: weak case"
    for key in good:
        if key == "_version":
            continue
        with pytest.raises((ValueError, TypeError), match=rf"Expected `state_dict\['{key}'\]`"):
            obj.load_state_dict({**good, key: object()})
        assert _same(obj.state_dict(), before), f"{name}: a load refused at `{key}` changed state"
    obj.load_state_dict(good)
    assert _same(obj.state_dict(), good)


def test_model_gradient_of_other_shapes_is_refused():
    from torch import nn

    ce = nn.CrossEntropyLoss(reduction="none")
    rw = ModelMetaReweighter(nn.Linear(3, 2), ce)
    rw.set_clean(inputs=torch.randn(4, 3), labels=torch.tensor([0, 1, 0, 1]))
    other = ModelMetaReweighter(nn.Linear(4, 2), ce)  # the same names, other shapes
    with pytest.raises(ValueError, match=r"Expected `state_dict\['clean'\]` statistic `weight` "
                                         r"to have shape \(2, 4\), but got \(2, 3\)"):
        other.load_state_dict(rw.state_dict())
    assert other.clean.empty


@pytest.mark.parametrize("make, stat", [
    (lambda c: SurrogateReweighter(c), "class_sums"),
    (lambda c: MetaReweighter(c), "resid_feat_sum"),
])
def test_clean_statistics_of_another_class_count_are_refused(make, stat):
    rw = make(4)
    f, y = torch.randn(8, 3, dtype=torch.float64), torch.arange(8) % 4
    rw.set_clean(features=f, labels=y, logits=torch.randn(8, 4, dtype=torch.float64))
    state = {k: v for k, v in rw.state_dict().items() if k != "num_classes"}
    with pytest.raises(ValueError, match=rf"Expected `state_dict\['clean'\]` statistic `{stat}` "
                                         r"to have shape \(5, D\), but got \(4, 3\)"):
        make(5).load_state_dict(state, strict=False)


def test_clean_statistics_parts_must_agree():
    from robustweights._clean_stats import CleanStatistics

    stats = CleanStatistics()
    stats.add(count=torch.ones(2))
    with pytest.raises(ValueError, match=r"Expected the reduced and pending clean statistics to "
                                         r"have the same names and shapes"):
        stats.load_state_dict({"reduced": {"count": torch.ones(3)},
                               "pending": {"count": torch.ones(2)}})
    with pytest.raises(ValueError, match=r"Expected `state_dict\['clean'\]\['pending'\]` to be "
                                         r"a mapping of tensors"):
        stats.load_state_dict({"reduced": {}, "pending": [1]})
    assert stats.pending and stats.shapes() == {"count": (2,)}


@pytest.mark.parametrize("field, value, message", [
    ("loss_peak", "high", r"Expected `state_dict\['rule'\]\['loss_peak'\]` to be a number, but "
                          r"got 'high'"),
    ("filter_run", None, r"Expected `state_dict\['rule'\]\['filter_run'\]` to be an integer, "
                         r"but got None"),
    ("filtering", 1.5, r"Expected `state_dict\['rule'\]\['filtering'\]` to be an integer or "
                       r"None, but got 1.5"),
    ("bogus", 1, r"Expected `state_dict\['rule'\]` to hold some of \['loss_peak'"),
])
def test_phase_monitor_rule_state_is_checked(field, value, message):
    mon = PhaseMonitor()
    state = mon.state_dict()
    state["rule"] = {**state["rule"], field: value}
    with pytest.raises(ValueError, match=message):
        PhaseMonitor().load_state_dict(state)
