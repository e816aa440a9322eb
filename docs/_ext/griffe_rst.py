"""Griffe extension: turn the reST roles in our docstrings into Markdown for mkdocstrings.

The docstrings are Google style with reST maths and cross-references (they also read well in
``help()`` and IDEs). mkdocstrings renders docstrings as Markdown, so before parsing:

- ``.. math::`` blocks become ``$$ ... $$`` display maths (rendered by pymdownx.arithmatex);
- a paragraph ending in ``::`` and its indented literal block become ``:`` and a fenced
  Python code block;
- ``:math:`x``` becomes ``$x$``;
- ``:func:`~a.b.f```, ``:class:``, ``:meth:``, ``:mod:``, ``:attr:`` become code spans.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_MATH = re.compile(r":math:`([^`]+)`")


def _short(target: str, full: str) -> str:
    return f"`{target.split('.')[-1]}`" if full.startswith("~") else f"`{target}`"


def convert(text: str) -> str:
    """reST roles and math blocks in ``text`` to Markdown."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == ".. math::":
            indent = len(line) - len(line.lstrip())
            block, i = [], i + 1
            while i < len(lines) and (not lines[i].strip()
                                      or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            body = textwrap.dedent("\n".join(block)).strip("\n")
            pad = " " * indent
            out += ["", pad + "$$", *[pad + b for b in body.splitlines()], pad + "$$", ""]
            continue
        stripped = line.strip()
        if stripped.endswith("::") and stripped != "::" and not stripped.startswith(".."):
            # "Every epoch::" + an indented literal block -> "Every epoch:" + a fenced code block
            indent = len(line) - len(line.lstrip())
            block, j = [], i + 1
            while j < len(lines) and (not lines[j].strip()
                                      or len(lines[j]) - len(lines[j].lstrip()) > indent):
                block.append(lines[j])
                j += 1
            body = textwrap.dedent("\n".join(block)).strip("\n")
            if body:
                pad = " " * indent
                out += [line.rstrip()[:-1], "", pad + "```python",
                        *[pad + b for b in body.splitlines()], pad + "```", ""]
                i = j
                continue
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = _MATH.sub(lambda m: f"${m.group(1)}$", text)
    return re.sub(r":(?:func|class|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`",
                  lambda m: _short(m.group(2), m.group(1) + m.group(2)), text)


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring once, when griffe loads the object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
