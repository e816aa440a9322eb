"""The documentation site covers the public API (CI builds it with ``mkdocs build --strict``)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import robustweights

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: The modules whose ``__all__`` the site may document with ``::: module.name``. Everything else
#: (``robustweights.surrogate``, ``robustweights.meta``, ...) is an implementation detail: the
#: pages reference a class where users import it from.
PUBLIC_MODULES = ("robustweights", "robustweights.functional", "robustweights.phases",
                  "robustweights.recipe",
                  "robustweights.integrations",
                  "robustweights.integrations.lightning")
#: Public modules that import an optional framework (skipped when it is not installed).
OPTIONAL_MODULES = ("robustweights.integrations.lightning",)
#: Names the API no longer offers; only a page that says they are deprecated may mention them.
DEPRECATED = ("from_model", "weights_from_model", "set_clean_inputs", "update_clean_inputs",
              "alpha_schedule", "fbr_weights", "l2rw_weights", "FBRRecipe")

_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.M)


def _pages() -> list[Path]:
    """Every Markdown page under docs/, the recorded results (docs/results/) included."""
    return sorted(DOCS.rglob("*.md"))


def _undocumentable(target: str) -> str | None:
    """Why ``::: target`` does not name a public object, or None if it does."""
    module, _, name = target.rpartition(".")
    if module not in PUBLIC_MODULES:
        return (f"`{target}`: document objects of {', '.join(PUBLIC_MODULES)} only (e.g. "
                f"`::: robustweights.{name}`), not of an implementation module")
    try:
        mod = importlib.import_module(module)
    except ImportError:
        if module in OPTIONAL_MODULES:
            return None  # its framework is not installed here; CI installs the extras
        raise
    if name not in getattr(mod, "__all__", ()):
        return f"`{target}`: `{name}` is not in `{module}.__all__`"
    return None


def _bad_directives(text: str) -> list[str]:
    return [why for target in _DIRECTIVE.findall(text)
            if (why := _undocumentable(target)) is not None]


def test_api_reference_documents_every_public_name():
    api = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: robustweights\.(\w+)$", api, re.M))
    missing = sorted(set(robustweights.__all__) - documented)
    assert not missing, f"add `::: robustweights.<name>` to docs/api.md for {missing}"


def test_api_reference_documents_the_functional_forms():
    import robustweights.functional as functional

    api = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: robustweights\.functional\.(\w+)$", api, re.M))
    missing = sorted(set(functional.__all__) - documented)
    assert not missing, f"add `::: robustweights.functional.<name>` to docs/api.md for {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_directives_name_public_objects(page):
    bad = _bad_directives(page.read_text())
    assert not bad, f"{page.relative_to(ROOT)}: " + "; ".join(bad)


def test_directive_check_rejects_names_outside_all():
    # The check above must fail for a removed or private name, and for an implementation module.
    assert _bad_directives("::: robustweights.SurrogateReweighter\n") == []
    assert _bad_directives("::: robustweights.functional.surrogate_weights\n") == []
    assert _bad_directives("::: robustweights.functional.fbr_weights\n")  # renamed
    assert _bad_directives("::: robustweights.NoSuchReweighter\n")
    assert _bad_directives("::: robustweights.functional.surrogate_step\n")  # a kernel: internal
    assert _bad_directives("::: robustweights.meta.MetaReweighter\n")
    assert _bad_directives("intro\n\n::: robustweights.set_clean_inputs\n")


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_pages_use_current_names(page):
    stale = [f"line {n}: {line.strip()}" for n, line in enumerate(page.read_text().splitlines(), 1)
             if any(re.search(rf"\b{old}\b", line) for old in DEPRECATED)
             and "deprecated" not in line.lower()]
    assert not stale, (f"{page.relative_to(ROOT)} uses a removed or deprecated name "
                       f"outside a deprecation note: {stale}")


def test_results_pages_are_checked():
    # docs/results/ is written by the benchmarks and edited by hand; it obeys the same names.
    assert any(p.relative_to(DOCS).parts[0] == "results" for p in _pages())
    assert DOCS / "results" / "micro.md" in _pages()


def test_docs_pages_embed_the_examples_they_describe():
    text = "".join(p.read_text() for p in DOCS.glob("*.md"))
    for name in ("custom_loop.py", "recipe_loop.py", "lightning_example.py",
                 "hf_trainer_example.py", "ddp_example.py", "phase_monitor.py",
                 "peer_recipe.py"):
        assert f'--8<-- "examples/{name}"' in text, f"the docs no longer include {name}"


#: The widest code line the site's text column shows without cutting it off (Material's column
#: is about 690 px at the default font size).
CODE_COLUMNS = 88
_CODE_BLOCK = re.compile(r"^( *)```[^\n]*\n(.*?)^\1```", re.S | re.M)
_SNIPPET = re.compile(r'^\s*--8<-- "([^"]+)"\s*$')


def _menu_pages() -> list[Path]:
    """The pages of the site's menu: the hand-written pages and each results page (the per-run
    records in deeper folders are linked, not in the menu)."""
    pages = [*DOCS.glob("*.md"), *DOCS.glob("methods/*.md"), *DOCS.glob("results/*.md"),
             *DOCS.glob("results/*/README.md"), *DOCS.glob("results/*/results.md"),
             *DOCS.glob("results/cifar_n_*/fbr_plus_*/results.md")]
    return sorted(set(pages))


def _wide_code_lines(page: Path) -> list[str]:
    wide = []
    for indent, body in _CODE_BLOCK.findall(page.read_text()):
        for line in body.splitlines():
            line = line[len(indent):]
            if (snippet := _SNIPPET.match(line)) is not None:
                source = ROOT / snippet.group(1)
                wide += [f"{snippet.group(1)}:{n}" for n, text in
                         enumerate(source.read_text().splitlines(), 1)
                         if len(text) > CODE_COLUMNS]
            elif len(line) > CODE_COLUMNS:
                wide.append(line.strip()[:60])
    return wide


@pytest.mark.parametrize("page", _menu_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_code_lines_fit_the_text_column(page):
    wide = _wide_code_lines(page)
    assert not wide, (f"{page.relative_to(ROOT)}: code lines over {CODE_COLUMNS} characters "
                      f"are cut off on the site: {wide}")
