"""The built documentation site: nothing loaded from the network, API pages rendered properly.

Needs the docs extra (``pip install -e ".[docs]"``): without mkdocs every test here is skipped,
unless ``ROBUSTWEIGHTS_DOCS_TESTS=1`` (set by ``.ci/run``, which runs this file again after
installing the extra) makes a missing extra a failure. The site is built into a temporary
folder with ``mkdocs build --strict``, or taken from ``ROBUSTWEIGHTS_DOCS_SITE`` when CI has just
built it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import posixpath
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DOCS_EXTRA = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "griffe")


def _missing_docs_extra() -> list[str]:
    missing = []
    for name in _DOCS_EXTRA:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


if (_missing := _missing_docs_extra()):
    if os.environ.get("ROBUSTWEIGHTS_DOCS_TESTS") == "1":
        raise ImportError(f"ROBUSTWEIGHTS_DOCS_TESTS=1 but the docs extra is missing: {_missing}")
    pytest.skip(f"the docs extra is not installed ({', '.join(_missing)}); "
                "pip install -e '.[docs]' (CI runs this file after installing it)",
                allow_module_level=True)

# A URL that makes the browser go to another host: http(s)://, protocol-relative //host, or
# any other scheme with an authority (ftp://, ws://).
_REMOTE = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]+)\1\s*\)|@import\s+(['"])([^'"]+)\3""", re.I)
#: The attributes a browser loads without a click: (tag, attribute).
_LOADS = {("script", "src"), ("link", "href"), ("img", "src"), ("img", "srcset"),
          ("iframe", "src"), ("frame", "src"), ("embed", "src"), ("object", "data"),
          ("source", "src"), ("source", "srcset"), ("video", "src"), ("video", "poster"),
          ("audio", "src"), ("track", "src"), ("input", "src"), ("image", "href"),
          ("use", "href"), ("image", "xlink:href"), ("use", "xlink:href")}


def _css_urls(css: str) -> list[str]:
    return [m.group(2) or m.group(4) for m in _CSS_URL.finditer(css)]


def _srcset_urls(value: str) -> list[str]:
    return [part.split()[0] for part in value.split(",") if part.strip()]


class _Loads(HTMLParser):
    """Every URL a page makes the browser fetch: load attributes, inline CSS, <style> blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str]] = []  # (where, url)
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if (tag, name) in _LOADS:
                urls = _srcset_urls(value) if name == "srcset" else [value]
                self.urls += [(f"<{tag} {name}>", u) for u in urls]
            elif name == "style":
                self.urls += [(f"<{tag} style>", u) for u in _css_urls(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += [("<style>", u) for u in _css_urls(data)]


def _page_loads(html: str) -> list[tuple[str, str]]:
    parser = _Loads()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if given := os.environ.get("ROBUSTWEIGHTS_DOCS_SITE"):
        return Path(given)
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(out)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


def _html_pages(site: Path) -> list[Path]:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10, f"only {len(pages)} pages built in {site}"
    return pages


def test_scanner_finds_every_kind_of_load():
    # The check below must catch each way a page can reach another host, and ignore links
    # and XML namespaces (which load nothing).
    html = """<html><head>
      <script src="https://cdn.example/m.js"></script><link rel="stylesheet" href="//cdn.x/a.css">
      <style>@import "http://fonts.example/f.css"; .a { background: url('https://x/i.png') }</style>
      </head><body style="background:url(//x/b.png)">
      <img srcset="local.png 1x, https://x/2.png 2x"><iframe src="HTTP://X/frame"></iframe>
      <svg xmlns="http://www.w3.org/2000/svg"><use href="#icon"/></svg>
      <a href="https://github.com/">a link, not a load</a><script src="local.js"></script>
      </body></html>"""
    remote = sorted(u for _, u in _page_loads(html) if _REMOTE.match(u))
    assert remote == ["//cdn.x/a.css", "//x/b.png", "HTTP://X/frame", "http://fonts.example/f.css",
                      "https://cdn.example/m.js", "https://x/2.png", "https://x/i.png"]


def test_no_page_loads_anything_from_the_network(site):
    remote = [f"{page.relative_to(site)}: {where} {url}" for page in _html_pages(site)
              for where, url in _page_loads(page.read_text(encoding="utf-8"))
              if _REMOTE.match(url)]
    assert not remote, ("pages that load from the network (ship the file with the site "
                        "instead):\n" + "\n".join(remote[:30]))


def test_no_stylesheet_loads_anything_from_the_network(site):
    remote = [f"{css.relative_to(site)}: {url}" for css in sorted(site.rglob("*.css"))
              for url in _css_urls(css.read_text(encoding="utf-8")) if _REMOTE.match(url)]
    assert not remote, "stylesheets that load from the network:\n" + "\n".join(remote)


def _local_target(site: Path, base: Path, url: str) -> Path | None:
    """The file in the site a local URL of ``base`` names; None for data:, #, and the like."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    if path.startswith("/"):  # 404.html is served from any depth, so its URLs are absolute
        rel = posixpath.normpath(path.lstrip("/") or ".")
    else:
        rel = posixpath.normpath(posixpath.join(
            posixpath.dirname(base.relative_to(site).as_posix()), path))
    if rel == ".." or rel.startswith("../"):
        return site.parent / "outside-the-site" / rel
    target = site / rel
    return target / "index.html" if target.is_dir() else target


def test_every_local_asset_a_page_loads_is_in_the_site(site):
    # Shipping the renderer is only offline if all of it ships: scripts, stylesheets, and the
    # fonts and images those stylesheets name (KaTeX's fonts).
    missing = []
    for page in _html_pages(site):
        for where, url in _page_loads(page.read_text(encoding="utf-8")):
            target = _local_target(site, page, url)
            if target is not None and not target.exists():
                missing.append(f"{page.relative_to(site)}: {where} {url}")
    for css in sorted(site.rglob("*.css")):
        for url in _css_urls(css.read_text(encoding="utf-8")):
            target = _local_target(site, css, url)
            if target is not None and not target.exists():
                missing.append(f"{css.relative_to(site)}: url({url})")
    assert not missing, "assets missing from the site:\n" + "\n".join(missing[:30])


def test_pages_with_maths_load_the_shipped_renderer(site):
    for page in _html_pages(site):
        html = page.read_text(encoding="utf-8")
        if 'class="arithmatex"' not in html:
            continue
        scripts = [u for where, u in _page_loads(html) if where == "<script src>"]
        assert any(u.endswith("vendor/katex/katex.min.js") for u in scripts), (
            f"{page.relative_to(site)} has maths but does not load vendor/katex/katex.min.js")
        assert any(u.endswith("javascripts/katex.js") for u in scripts), page


def _without_code(html: str) -> str:
    return re.sub(r"<(pre|code)\b.*?</\1>", "", html, flags=re.S)


def test_api_examples_render_as_highlighted_code(site):
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # '>>>' outside a code block is Markdown for a nested quote: the example lost its code.
    assert "&gt;&gt;&gt;" not in _without_code(api), "a doctest renders as quoted text"
    assert "<blockquote" not in api
    # Each Examples section is a highlighted console session: the prompt is a Pygments token.
    sections = api.count('<span class="doc-section-title">Examples:</span>')
    as_code = len(re.findall(r'<span class="doc-section-title">Examples:</span></p>\s*'
                             r'<div class="highlight"><pre><span></span><code>'
                             r'<span class="gp">&gt;&gt;&gt; </span>', api))
    assert sections >= 10, f"only {sections} Examples sections on the API page"
    assert as_code == sections, f"{sections - as_code} Examples sections are not doctest code"


class _ParameterTables(HTMLParser):
    """The rows of every "Parameters:" table of an API page, with the object they document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[str, list[str]]] = []  # (object id, [name, type, desc, default])
        self._object = ""
        self._section: list[str] | None = None  # text of the current section title
        self._want_table = self._in_table = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if re.fullmatch(r"h[1-6]", tag) and "doc-heading" in (a.get("class") or ""):
            self._object = a.get("id") or ""
        elif tag == "span" and "doc-section-title" in (a.get("class") or ""):
            self._section = []
        elif tag == "table" and self._want_table:
            self._in_table, self._want_table = True, False
        elif self._in_table and tag == "tr" and "doc-section-item" in (a.get("class") or ""):
            self._row = []
        elif self._row is not None and tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "span" and self._section is not None:
            self._want_table = "".join(self._section).strip() == "Parameters:"
            self._section = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._object, self._row))
            self._row = None
        elif tag == "table":
            self._in_table = False

    def handle_data(self, data):
        if self._section is not None:
            self._section.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _documented_object(dotted: str):
    """The object an API heading id names, or None where its optional framework is missing."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            if importlib.util.find_spec(parts[0]) is None:
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    return None


def test_api_parameters_one_row_each_with_type_and_default(site):
    parser = _ParameterTables()
    parser.feed((site / "api" / "index.html").read_text(encoding="utf-8"))
    assert len(parser.rows) > 40, f"found only {len(parser.rows)} parameter rows"
    problems = []
    for obj_id, (name, type_, _description, default) in parser.rows:
        where = f"{obj_id}({name})"
        if not re.fullmatch(r"\*{0,2}\w+", name):
            problems.append(f"{where}: one row documents several parameters")
            continue
        if not type_:
            problems.append(f"{where}: no type")
        try:
            obj = _documented_object(obj_id)
        except (ImportError, AttributeError) as err:
            if "lightning" in str(err):
                continue  # the integration's framework is not installed here
            raise
        param = inspect.signature(obj).parameters.get(name.lstrip("*"))
        if param is None:
            problems.append(f"{where}: not a parameter of the signature")
        elif param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        elif (param.default is inspect.Parameter.empty) != (default in ("required", "")):
            problems.append(f"{where}: the table says {default!r}, the signature "
                            f"{'has no default' if param.default is param.empty else param}")
    assert not problems, "\n".join(problems)


def test_griffe_extension_splits_grouped_parameters_and_examples():
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        from griffe_rst import convert
    finally:
        sys.path.remove(str(ROOT / "docs" / "_ext"))
    doc = ("Summary.\n\nArgs:\n    a: first.\n    sync, batch_scope (str): see\n"
           "        :class:`~x.Reweighter`.\n    c: last, d: not a list.\n\n"
           "Raises:\n    ValueError, TypeError: named.\n\nExample:\n    >>> 1\n    1\n")
    assert convert(doc) == (
        "Summary.\n\nArgs:\n    a: first.\n    sync (str): see\n        `Reweighter`.\n"
        "    batch_scope (str): see\n        `Reweighter`.\n    c: last, d: not a list.\n\n"
        "Raises:\n    ValueError, TypeError: named.\n\nExamples:\n    >>> 1\n    1")
