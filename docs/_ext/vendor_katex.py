"""Copy KaTeX from the npm registry into ``docs/vendor/katex/`` (committed).

The site renders its maths with KaTeX in the reader's browser, from files served with the site:
no CDN, so the formulas show offline and behind a firewall, and ``mkdocs build`` needs neither
the network nor Node.js. Run this only to upgrade KaTeX (it needs ``npm``)::

    python docs/_ext/vendor_katex.py 0.19.1

It keeps what the site uses: ``katex.min.js``, ``katex.min.css`` with its fonts in WOFF2 only
(every browser that runs KaTeX reads WOFF2; the CSS's WOFF and TrueType fallbacks are dropped
from its ``src`` lists so that it names no file the site lacks), KaTeX's LICENSE (MIT), and
``SOURCE.txt`` recording the version and the npm tarball's integrity hash.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "vendor" / "katex"
#: ``,url(fonts/X.woff) format("woff")`` and the same for TrueType, after the WOFF2 source.
_FALLBACK_SRC = re.compile(r',url\(fonts/[\w-]+\.(?:woff|ttf)\) format\("(?:woff|truetype)"\)')


def woff2_only(css: str) -> str:
    """``katex.min.css`` with each ``@font-face`` reduced to its WOFF2 source."""
    out = _FALLBACK_SRC.sub("", css)
    left = sorted({u for u in re.findall(r"url\(([^)]+)\)", out) if not u.endswith(".woff2")})
    if left:
        raise SystemExit(f"unexpected font sources left in katex.min.css: {left}")
    return out


def vendor(version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        info = json.loads(subprocess.run(
            ["npm", "pack", f"katex@{version}", "--json", "--pack-destination", tmp],
            check=True, capture_output=True, text=True).stdout)[0]
        with tarfile.open(Path(tmp) / info["filename"]) as tar:
            tar.extractall(tmp, filter="data")
        pkg = Path(tmp) / "package"
        if DEST.exists():
            shutil.rmtree(DEST)
        (DEST / "fonts").mkdir(parents=True)
        shutil.copy(pkg / "dist" / "katex.min.js", DEST)
        shutil.copy(pkg / "LICENSE", DEST)
        (DEST / "katex.min.css").write_text(woff2_only((pkg / "dist" / "katex.min.css")
                                                       .read_text()))
        for font in sorted((pkg / "dist" / "fonts").glob("*.woff2")):
            shutil.copy(font, DEST / "fonts")
        (DEST / "SOURCE.txt").write_text(
            f"KaTeX {info['version']} (MIT, see LICENSE), from the npm package katex "
            f"({info['integrity']}),\ncopied by docs/_ext/vendor_katex.py: dist/katex.min.js, "
            "dist/katex.min.css (WOFF2 sources only), dist/fonts/*.woff2.\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="the KaTeX version, e.g. 0.19.1")
    vendor(parser.parse_args().version)
