"""Griffe extension: turn the reST roles in our docstrings into Markdown for mkdocstrings.

The docstrings are Google style with reST maths and cross-references (they also read well in
``help()`` and IDEs). mkdocstrings renders docstrings as Markdown, so before parsing:

- ``.. math::`` blocks become ``$$ ... $$`` display maths (rendered by pymdownx.arithmatex);
- a paragraph ending in ``::`` and its indented literal block become ``:`` and a fenced
  Python code block;
- ``:math:`x``` becomes ``$x$``;
- ``:func:`~a.b.f```, ``:class:``, ``:meth:``, ``:mod:``, ``:attr:`` become code spans;
- an ``Example:`` header becomes ``Examples:``, the Google section griffe reads as doctest
  code (``Example:`` alone is an admonition whose ``>>>`` lines render as nested quotes);
- an ``Args:`` entry naming several parameters (``sync, batch_scope: see Reweighter``) becomes
  one entry per parameter with the same description, so that each gets its own row with the
  type and default of the signature.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_MATH = re.compile(r":math:`([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
#: The Google section headers whose entries are parameters.
_ARGS = re.compile(r"^(\s*)(?:Args|Arguments|Params|Parameters|Keyword Args|Keyword Arguments"
                   r"|Other Parameters):\s*$")
#: ``name, other (type): description``: an entry naming several parameters.
_GROUPED = re.compile(r"^(\s+)(\w+(?:\s*,\s*\w+)+)(\s*\([^)]*\))?:(.*)$")


def _short(target: str, full: str) -> str:
    return f"`{target.split('.')[-1]}`" if full.startswith("~") else f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_parameters(text: str) -> str:
    """One ``Args:`` entry per parameter: ``a, b: desc`` becomes ``a: desc`` and ``b: desc``."""
    lines, out, i = text.splitlines(), [], 0
    section = entry = None  # indentation of the current Args header and of its entries
    while i < len(lines):
        line = lines[i]
        if line.strip() and section is not None:
            if _indent(line) <= section:
                section = None
            elif entry is None:
                entry = _indent(line)
        if (header := _ARGS.match(line)) is not None:
            section, entry = len(header.group(1)), None
        elif (section is not None and _indent(line) == entry
              and (m := _GROUPED.match(line)) is not None):
            j = i + 1  # the entry's continuation lines: blank or indented deeper than the entry
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > len(m[1])):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():
                j -= 1
            for name in re.split(r"\s*,\s*", m[2]):
                out += [f"{m[1]}{name}{m[3] or ''}:{m[4]}", *lines[i + 1:j]]
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def convert(text: str) -> str:
    """reST roles and math blocks in ``text`` to Markdown."""
    text = split_grouped_parameters(text)
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
        if (example := _EXAMPLE.match(line)) is not None:
            out.append(f"{example.group(1)}Examples:")
            i += 1
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
