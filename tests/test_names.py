"""Every API name the README and the documentation pages mention exists in the public API.

A renamed or removed class, method or keyword must not linger in the prose: this collects the
code names the pages write in backticks (and import in their code blocks) that look like API
names, and resolves each through ``getattr`` from ``robustweights`` or one of its public
modules:

- a dotted path from the package, ``robustweights.functional.surrogate_weights``;
- a capitalised name, possibly with attributes, ``SurrogateRecipe``, ``RecipeConfig.authors``;
- a method of an object the pages name by convention (``recipe.`` a ``SurrogateRecipe``,
  ``rw.`` a reweighter, ``meta.`` a ``ModelMetaReweighter``, ``monitor.`` a ``PhaseMonitor``,
  ``report.`` a phase or health report), ``recipe.end_epoch()``;
- the keywords of a call of a resolved name, ``RecipeConfig(dropped_weight=0.3)``.

Names of other libraries resolve in their own modules (torch, builtins) or are listed in
``NOT_OURS``; benchmark modules, CLI flags and file names are not API names and are skipped.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The modules a documented name may live in, in the order they are searched.
PUBLIC_MODULES = ("robustweights", "robustweights.functional", "robustweights.phases",
                  "robustweights.integrations", "robustweights.integrations.lightning",
                  "robustweights.recipe")
#: Modules of other libraries whose names the pages use (``DataLoader``, ``ValueError``).
OTHER_MODULES = ("builtins", "torch", "torch.nn", "torch.utils.data", "torch.optim",
                 "torch.optim.lr_scheduler", "torch.amp", "torch.nn.parallel")
#: Capitalised names of other libraries (Lightning, Hugging Face, JAX) and of the papers'
#: vocabulary that the checks above cannot import everywhere.
NOT_OURS = frozenset({
    "Trainer", "TrainerCallback", "LightningModule", "ModelCheckpoint",
    "BertForSequenceClassification", "Feature_based_reweight", "DistributedSampler",
    "SyncBatchNorm", "DistributedDataParallel",
    "GradScaler", "MultiStepLR", "BatchNorm", "ResNet", "Clothing1M",
})
#: The object a lower-case receiver names in the pages.
RECEIVERS = {
    "recipe": ("SurrogateRecipe",),
    "rw": ("SurrogateReweighter", "MetaReweighter", "ModelMetaReweighter"),
    "meta": ("ModelMetaReweighter",),
    "monitor": ("PhaseMonitor",),
    "report": ("PhaseReport", "HealthReport"),
}

_SPAN = re.compile(r"`([^`\n]+)`")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_IMPORT = re.compile(r"^\s*from (robustweights[\w.]*) import ([\w, ()]+)", re.M)
_NAME = re.compile(
    r"(?<![\w.])(robustweights(?:\.\w+)+|[A-Z](?=\w*[a-z])\w{2,}(?:\.\w+)*|"
    r"(?:" + "|".join(RECEIVERS) + r")(?:\.\w+)+)(\((?:[^()]|\([^()]*\))*\)?)?")
_KEYWORD = re.compile(r"(?:^\(|,)\s*(\w+)\s*=(?!=)")


def _pages() -> list[Path]:
    """The README and the hand-written pages of the site (not the generated run records)."""
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("methods/*.md"))]


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None  # an optional framework is not installed here


def _instance_attributes(cls) -> set[str]:
    """The attributes instances of ``cls`` get in its methods (``self.name = ...``)."""
    names = set(getattr(cls, "__dataclass_fields__", {}))
    for klass in inspect.getmro(cls):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names |= set(re.findall(r"\bself\.(\w+)\s*(?::[^=\n]+)?=(?!=)", source))
    return names


def _resolve_from(obj, parts: list[str]):
    for part in parts:
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif inspect.isclass(obj) and part in _instance_attributes(obj):
            return None  # an instance attribute: present, nothing to follow from the class
        else:
            raise AttributeError(part)
    return obj


def _resolve(dotted: str):
    """The object ``dotted`` names, None where it exists but cannot be followed; raises
    LookupError when nothing public has that name."""
    parts = dotted.split(".")
    if parts[0] == "robustweights":
        for i in range(len(parts), 0, -1):
            module = _module(".".join(parts[:i]))
            if module is None:
                continue
            try:
                return _resolve_from(module, parts[i:])
            except AttributeError:
                break
        if "lightning" in parts and _module("lightning") is None:
            return None
        raise LookupError(dotted)
    if parts[0] in RECEIVERS:
        for owner in RECEIVERS[parts[0]]:
            try:
                return _resolve(".".join([owner, *parts[1:]]))
            except LookupError:
                continue
        raise LookupError(dotted)
    if parts[0] in NOT_OURS:
        return None
    for name in (*PUBLIC_MODULES, *OTHER_MODULES):
        module = builtins if name == "builtins" else _module(name)
        if module is None or not hasattr(module, parts[0]):
            continue
        try:
            return _resolve_from(module, parts)
        except AttributeError:
            raise LookupError(dotted) from None
    if _module("lightning") is None and parts[0] in ("RecipeCallback", "RecipeDataLoader",
                                                      "ReweighterCallback"):
        return None
    raise LookupError(dotted)


def _bad_keywords(obj, call: str) -> list[str]:
    if not call or obj is None or not callable(obj):
        return []
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    return [kw for kw in _KEYWORD.findall(call) if kw not in params]


def names_in(text: str) -> list[tuple[str, str]]:
    """(name, call arguments or '') of every API-looking name in ``text``."""
    found = []
    for span in _SPAN.findall(_FENCE.sub("", text)):
        found += [(m.group(1), m.group(2) or "") for m in _NAME.finditer(span)]
    for module, names in _IMPORT.findall(text):
        found += [(f"{module}.{n.strip()}", "") for n in names.strip("()").split(",")
                  if n.strip()]
    return found


def problems_in(text: str) -> list[str]:
    problems = []
    for name, call in names_in(text):
        try:
            obj = _resolve(name)
        except LookupError:
            problems.append(f"`{name}` is not in the public API")
            continue
        problems += [f"`{name}` has no parameter `{kw}`" for kw in _bad_keywords(obj, call)]
    return sorted(set(problems))


#: Calls of other libraries written as a bare name: ``backward()``, ``len()``, ``step()``.
BARE_NOT_OURS = frozenset({"backward", "step", "iter", "len", "super", "destroy_process_group",
                           "set_epoch", "zero_grad"})
_BARE_CALL = re.compile(r"(?<![\w.])([a-z_]\w*)\(")


def _public_methods() -> set[str]:
    """Every attribute name of a public class or module of the package."""
    names = set()
    for name in PUBLIC_MODULES:
        module = _module(name)
        for obj in [getattr(module, n) for n in getattr(module, "__all__", ())]:
            names |= set(dir(obj))
            if inspect.isclass(obj):
                names |= _instance_attributes(obj)
    return names


def bare_calls_in(text: str) -> list[str]:
    """Method calls written without their object (``set_clean(...)``) that nothing public has."""
    known = _public_methods() | BARE_NOT_OURS
    return sorted({f"`{m}(...)` is not a method of the public API"
                   for span in _SPAN.findall(_FENCE.sub("", text))
                   for m in _BARE_CALL.findall(span) if m not in known})


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_bare_method_call_exists(page):
    problems = bare_calls_in(page.read_text())
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_name_exists(page):
    problems = problems_in(page.read_text())
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_pages_name_the_main_objects():
    # The collector finds names at all (a broken pattern would pass every page vacuously).
    readme = {name for name, _ in names_in((ROOT / "README.md").read_text())}
    assert {"SurrogateRecipe", "SurrogateReweighter", "RecipeConfig.authors"} <= readme


def test_the_check_fails_for_a_removed_name():
    assert problems_in("Use `SurrogateRecipe` and `RecipeConfig(dropped_weight=0.3)`.") == []
    assert problems_in("`robustweights.functional.surrogate_weights`, `recipe.end_epoch()`") == []
    assert problems_in("The trainer-style `FBRRecipe` ran these steps.")
    assert problems_in("`RecipeConfig.paper()` is the paper's.")
    assert problems_in("`RecipeConfig(clean_pass=3)`")  # a misspelt keyword
    assert problems_in("`robustweights.functional.fbr_weights`")
    assert problems_in("`recipe.finish_epoch()`")
    assert problems_in("```python\nfrom robustweights import NoSuchThing\n```")
    assert bare_calls_in("stream with `update_clean(...)`, `sync_clean()`") == []
    assert bare_calls_in("stream with `update_clean_inputs(...)`")


# ------------------------------------------------------------------ commands: python -m <module>
_COMMAND = re.compile(r"python3? -m ((?:benchmarks|examples|robustweights)(?:\.\w+)*)")


def _command_sources() -> list[Path]:
    """Every text a user copies commands from: the pages (run records included), the
    benchmarks' README and the docstrings of the benchmark and example scripts."""
    return [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted(DOCS.rglob("*.md")),
            *sorted((ROOT / "benchmarks").rglob("*.py")), *sorted((ROOT / "examples").glob("*.py"))]


def missing_modules(text: str) -> list[str]:
    """The ``python -m`` targets of this repository in ``text`` that do not exist."""
    import importlib.util

    missing = []
    for name in sorted(set(_COMMAND.findall(text))):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def test_every_documented_command_module_exists():
    import sys

    sys.path.insert(0, str(ROOT))  # benchmarks/ and examples/ run from the repository root
    problems = [f"{p.relative_to(ROOT)}: python -m {m}" for p in _command_sources()
                for m in missing_modules(p.read_text(errors="replace"))]
    assert not problems, "modules that do not exist: " + "; ".join(problems)


def test_the_command_check_fails_for_a_moved_module():
    import sys

    sys.path.insert(0, str(ROOT))
    assert missing_modules("python -m benchmarks.cifar_n --preset cpu") == []
    assert missing_modules("python -m benchmarks.cifar_n.cost_accuracy a b") == [
        "benchmarks.cifar_n.cost_accuracy"]
    assert missing_modules("python -m benchmarks.nothing_here") == ["benchmarks.nothing_here"]
