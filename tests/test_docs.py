"""The documentation site covers the public API (CI builds it with ``mkdocs build --strict``)."""

from __future__ import annotations

import re
from pathlib import Path

import robustweights

ROOT = Path(__file__).resolve().parents[1]


def test_api_reference_documents_every_public_name():
    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: robustweights\.(\w+)$", api, re.M))
    missing = sorted(set(robustweights.__all__) - documented)
    assert not missing, f"add `::: robustweights.<name>` to docs/api.md for {missing}"


def test_docs_pages_embed_the_examples_they_describe():
    text = "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for name in ("custom_loop.py", "lightning_example.py", "hf_trainer_example.py"):
        assert f'--8<-- "examples/{name}"' in text, f"the docs no longer include {name}"
