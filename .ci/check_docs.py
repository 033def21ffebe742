"""Check the built documentation site as a reader sees it (run by .ci/run after `mkdocs build`).

    python .ci/check_docs.py SITE_DIR [--screenshots DIR] [--chromium PATH]

1. The HTML as built: no markup leaks in the text a reader sees (outside code, math, scripts and styles): no reST
   double backticks or roles, no unmatched backtick, no ``::`` of a reST literal block, no raw TeX (``_{``, ``^{``,
   ``\\frac``, ``$$``...); no "Returns" table split into several rows; no page that repeats its title as a heading;
   no script, style sheet or font fetched from another host (the site works offline).
2. The pages after their JavaScript ran, in headless Chromium (Debian's ``chromium``) served from 127.0.0.1: every
   formula typeset by KaTeX (no ``math-error``, no raw TeX delimiter left in the text), the theory page holding
   formulas at all, every request answered (no 404), and KaTeX's fonts loaded from the site.
3. Screenshots of the theory page and an API page (``--screenshots DIR``), each checked to be a page, not a blank.

Exits 1 with one line per problem, 0 when the site is clean.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

# Elements whose text is not prose: code, scripts, and the math (arithmatex's source before KaTeX, KaTeX's
# rendering after it, including its MathML annotation that holds the TeX).
_SKIP_TAGS = {"code", "pre", "script", "style", "kbd", "samp", "math", "svg", "annotation"}
_SKIP_CLASSES = {"arithmatex", "katex", "headerlink"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

# What must not appear in the prose of a built page (the text outside code and math).
LEAKS = [
    (re.compile(r"``"), "reST double backticks"),
    (re.compile(r"`"), "a backtick (an unmatched code span)"),
    (re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj):"), "a reST role"),
    (re.compile(r"::(?:\s|$)"), "the '::' of a reST literal block"),
    (re.compile(r"[_^]\{"), "raw TeX sub/superscript braces"),
    (re.compile(r"\\(?:frac|sum|partial|lVert|rVert|mathbf|mathrm|operatorname|left|right|cdot|top)\b"),
     "a raw TeX command"),
    (re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]"), "a raw TeX delimiter"),
]

# The pages that are screenshotted and must hold typeset formulas.
THEORY = "theory/index.html"
API_PAGE = "api/figures/index.html"


class _Page(HTMLParser):
    """The prose of a page (text outside code and math), its headings, tables, math elements and external assets."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []          # (tag, skipped) of the open elements
        self.prose = []          # text chunks outside skipped elements
        self.headings = []       # (level, text)
        self._heading = None
        self.math = 0            # elements with class arithmatex
        self.math_rendered = 0   # ... that hold a KaTeX rendering
        self.math_errors = 0     # elements with class math-error
        self.external = []       # scripts, style sheets and fonts from another host
        self.tables = []         # (caption before the table, number of body rows)
        self._last_text = ""
        self._table = None
        self._math_open = []     # depths of open arithmatex elements, to see KaTeX inside them
        self._katex_in = set()

    def _skipped(self) -> bool:
        return any(skip for _, skip in self.stack)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag in ("script", "link", "img", "source") and re.match(r"(?:https?:)?//", attrs.get("src") or
                                                                    attrs.get("href") or ""):
            if tag != "link" or attrs.get("rel") in ("stylesheet", "preload", "icon"):
                self.external.append(attrs.get("src") or attrs.get("href"))
        if "arithmatex" in classes:
            self.math += 1
            self._math_open.append(len(self.stack))
        if "katex" in classes and self._math_open:
            self._katex_in.add(self._math_open[-1])
        if "math-error" in classes:
            self.math_errors += 1
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = (int(tag[1]), [])
        if tag == "table":
            self._table = [self._last_text.strip(), 0, False]
        if tag == "tbody" and self._table:
            self._table[2] = True
        if tag == "tr" and self._table and self._table[2]:
            self._table[1] += 1
        if tag not in _VOID:
            self.stack.append((tag, tag in _SKIP_TAGS or bool(classes & _SKIP_CLASSES)))

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        while self.stack:
            open_tag, _ = self.stack.pop()
            if self._math_open and self._math_open[-1] == len(self.stack):
                depth = self._math_open.pop()
                self.math_rendered += depth in self._katex_in
                self._katex_in.discard(depth)
            if open_tag == tag:
                break
        if re.fullmatch(r"h[1-6]", tag) and self._heading:
            level, parts = self._heading
            self.headings.append((level, " ".join("".join(parts).replace("¶", "").split())))
            self._heading = None
        if tag == "table" and self._table:
            self.tables.append((self._table[0], self._table[1]))
            self._table = None

    def handle_data(self, data):
        if self._heading is not None and not any(t == "a" and s for t, s in self.stack):
            self._heading[1].append(data)
        if not self._skipped():
            self.prose.append(data)
            if data.strip():
                self._last_text = data


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def _context(text: str, start: int, end: int) -> str:
    return " ".join(text[max(0, start - 40): end + 40].split())


def static_problems(name: str, html: str) -> list[str]:
    """The problems of one built page, as built (before any JavaScript)."""
    page = parse(html)
    problems = []
    text = "".join(page.prose)
    for pattern, what in LEAKS:
        for m in pattern.finditer(text):
            problems.append(f"{name}: {what} in the text: ...{_context(text, m.start(), m.end())}...")
    for caption, rows in page.tables:
        if caption.rstrip().endswith("Returns:") and rows > 1:
            problems.append(f"{name}: a 'Returns' table has {rows} rows (one description split into rows)")
    titles = [text for level, text in page.headings if level == 1]
    for title in titles:
        repeats = [text for _, text in page.headings if text == title]
        if len(repeats) > 1:
            problems.append(f"{name}: the heading {title!r} appears {len(repeats)} times")
    for url in page.external:
        problems.append(f"{name}: loads {url} from another host (the site must work offline)")
    return problems


def rendered_problems(name: str, dom: str, need_math: bool) -> list[str]:
    """The problems of one page's DOM after its JavaScript ran."""
    page = parse(dom)
    problems = []
    if page.math_errors:
        problems.append(f"{name}: {page.math_errors} formula(s) KaTeX could not typeset (class math-error)")
    if page.math_rendered < page.math:
        problems.append(f"{name}: {page.math - page.math_rendered} of {page.math} formulas were not typeset")
    if need_math and page.math_rendered == 0:
        problems.append(f"{name}: no typeset formula (expected the theory's mathematics)")
    text = "".join(page.prose)
    for pattern, what in LEAKS[-2:]:
        for m in pattern.finditer(text):
            problems.append(f"{name} after JavaScript: {what}: ...{_context(text, m.start(), m.end())}...")
    return problems


class _Server(http.server.ThreadingHTTPServer):
    """Serves the site on 127.0.0.1 and records every path requested and every 404."""

    def __init__(self, root: Path):
        self.requested, self.missing = [], []
        handler = functools.partial(_Handler, directory=str(root))
        super().__init__(("127.0.0.1", 0), handler)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def send_error(self, code, *args, **kwargs):
        if code == 404:
            self.server.missing.append(self.path)
        super().send_error(code, *args, **kwargs)

    def do_GET(self):
        self.server.requested.append(self.path)
        super().do_GET()


def _chromium(binary: str, profile: Path, *args: str, timeout: int = 120) -> str:
    # A fresh profile and no background traffic: the only requests are the page's own, to 127.0.0.1.
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", "--virtual-time-budget=5000", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def _screenshot_problems(path: Path) -> list[str]:
    """A screenshot that is missing or one flat colour is not a page."""
    from PIL import Image

    if not path.exists():
        return [f"no screenshot was written to {path}"]
    with Image.open(path) as img:
        grey = img.convert("L")
        lo, hi = grey.getextrema()
        dark = sum(grey.histogram()[:128]) / (grey.width * grey.height)
    if hi - lo < 100 or dark < 0.005:
        return [f"{path.name}: the screenshot is blank (grey levels {lo}–{hi}, {dark:.1%} dark pixels)"]
    return []


def browser_problems(site: Path, binary: str, shots: Path | None) -> list[str]:
    pages = [p.relative_to(site).as_posix() for p in sorted(site.rglob("index.html"))]
    problems = []
    server = _Server(site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, name in enumerate(pages):
                dom = _chromium(binary, Path(tmp) / f"profile-{i}", "--dump-dom", base + name)
                problems += rendered_problems(name, dom, need_math=name == THEORY)
            if not any(re.search(r"/katex/fonts/KaTeX_Main-Regular\.woff2$", p) for p in server.requested):
                problems.append("KaTeX's fonts were not loaded from the site (the formulas fall back to other fonts)")
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                for name, (width, height) in ((THEORY, (1280, 2600)), (API_PAGE, (1280, 2600))):
                    png = shots / (name.split("/index.html")[0].replace("/", "_") + ".png")
                    png.unlink(missing_ok=True)
                    _chromium(binary, Path(tmp) / f"shot-{png.stem}", f"--window-size={width},{height}",
                              f"--screenshot={png}", base + name)
                    problems += _screenshot_problems(png)
    finally:
        server.shutdown()
        server.server_close()
    problems += [f"the site has no file {path} (requested by a page)" for path in sorted(set(server.missing))]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs built")
    parser.add_argument("--screenshots", type=Path, help="write theory.png and api_figures.png here")
    parser.add_argument("--chromium", default=None, help="the browser (default: chromium on PATH)")
    args = parser.parse_args(argv)
    for page in (THEORY, API_PAGE):
        if not (args.site / page).is_file():
            parser.error(f"{args.site} is not a built hamgrad site: {page} is missing")
    binary = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        parser.error("chromium was not found: install Debian's package (apt-get install chromium) or pass --chromium")
    problems = []
    pages = sorted(p for p in args.site.rglob("*.html") if p.name != "404.html")
    for path in pages:
        problems += static_problems(path.relative_to(args.site).as_posix(), path.read_text(encoding="utf-8"))
    problems += browser_problems(args.site, binary, args.screenshots)
    for p in problems:
        print(p)
    print(f"docs check: {len(pages)} pages, {len(problems)} problem(s)"
          + (f"; screenshots in {args.screenshots}" if args.screenshots else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
