"""Checks and exports of the built site (``_build/html``) in a real browser.

python -m backdoor_utils.site check   # every page in headless Chromium, screenshots
python -m backdoor_utils.site pdf     # the whole book as one PDF, printed by Chromium

Chromium is Debian's ``chromium`` package (``/usr/bin/chromium``, or ``$CHROMIUM``),
driven by Playwright's Python API; no browser is downloaded. Pages are served from
127.0.0.1, so what the browser sees is what a reader sees: styles, figures and formulas
all come from the build itself.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .chapters import plotting_cells

BUILD = Path("_build")
NOTEBOOKS = Path("notebooks")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
#: Markers of a notebook error or a Python traceback rendered into a page.
ERROR_SELECTORS = (
    ".output.traceback, .output.error, div.cell_output .traceback, .nboutput .stderr"
    " .ansi-red-fg"
)
#: TeX delimiters that MathJax replaces: any left on the page is a formula the reader
#: sees raw.
RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\\frac|\\mathrm")
#: The page the README's picture is taken from.
README_PAGE = "notebooks/01_pixel_trigger.html"

# Text of the article without code (code may legitimately contain backslashes).
_PROSE_TEXT = """() => {
  const main = document.querySelector('main') || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-assistive-mml').forEach(e => e.remove());
  return copy.innerText;
}"""
_FIGURES = """() => Array.from(document.querySelectorAll('div.cell_output img'))
  .filter(i => i.complete && i.naturalWidth > 0).length"""
_BROKEN_IMAGES = """() => Array.from(document.images)
  .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"""
_OVERFLOWING_CODE = """() => Array.from(document.querySelectorAll('div.cell_input pre'))
  .filter(p => p.offsetParent !== null && p.clientWidth > 0 && p.scrollWidth > p.clientWidth + 1)
  .map(p => p.textContent.split('\\n').reduce((a, b) => a.length >= b.length ? a : b, '').slice(0, 60))"""
# A table in a cell's output, or a page's own (Markdown) table in the theme's scrolling
# box: wider than the box, its last columns are cut off until the reader scrolls
# sideways.
_WIDE_TABLES = """() => Array.from(document.querySelectorAll('main table'))
  .filter(t => t.offsetParent !== null)
  .filter(t => {
    const box = t.closest('div.cell_output, div.pst-scrollable-table-container') || t.parentElement;
    return t.getBoundingClientRect().width > box.clientWidth + 1;
  })
  .map(t => Array.from(t.querySelectorAll('th')).map(h => h.textContent.trim()).join(' ').slice(0, 60))"""
_LOAD_ALL_IMAGES = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
}"""
_MATHJAX_DONE = """async () => {
  for (let i = 0; i < 200 && document.querySelector('.math') &&
       !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++)
    await new Promise(r => setTimeout(r, 50));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
}"""
# The site's navigation has no place on paper.
PRINT_CSS = """
.bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-header-article, .header-article,
.prev-next-area, .bd-footer, .bd-footer-article, .bd-footer-content, .skip-link, #pst-skip-link,
.search-button, .search-button-field, .theme-switch-button, .article-header-buttons,
.bd-search, .primary-toggle, .secondary-toggle, .sidebar-toggle, #pst-back-to-top,
button.toggle-button, .headerlink { display: none !important; }
.bd-main, .bd-content, .bd-article-container, .bd-article { max-width: 100% !important;
  margin: 0 !important; padding: 0 !important; }
div.cell_output img { max-width: 100% !important; page-break-inside: avoid; }
"""


def chromium_path() -> str:
    path = (
        os.environ.get("CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not path:
        raise SystemExit(
            "chromium not found: `make browser-check` installs Debian's chromium"
            " package; elsewhere install it (apt-get install chromium) or set $CHROMIUM"
        )
    return path


@contextmanager
def serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def browser_page(width: int = 1280, height: int = 900):
    """A Playwright page in Debian's Chromium that can reach nothing but 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_FLAGS[1:]
        )
        page = browser.new_page(viewport={"width": width, "height": height})
        # offline: anything but 127.0.0.1 is refused, and noted for the page's report
        page.blocked_requests = []

        def refuse(route):
            page.blocked_requests.append(route.request.url)
            route.abort()

        page.route(re.compile(r"^(?!http://127\.0\.0\.1[:/]).*"), refuse)
        try:
            yield page
        finally:
            browser.close()


def pages(html_dir: Path) -> list[Path]:
    """Content pages of the site (not Sphinx's generated index/search pages, not
    redirect stubs)."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    found = [
        p
        for p in html_dir.rglob("*.html")
        if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts
    ]
    return sorted(
        p
        for p in found
        if 'http-equiv="refresh"' not in p.read_text(errors="ignore")[:2000]
    )


def expected_figures(rel: str, notebooks: Path | None = None) -> int:
    """Figures a page must show: the plotting cells of the notebook it was built from (0
    for prose)."""
    source = (notebooks or NOTEBOOKS) / Path(rel).with_suffix(".ipynb").name
    return (
        plotting_cells(source)
        if rel.startswith("notebooks/") and source.exists()
        else 0
    )


@dataclass
class PageReport:
    """What the browser saw on one page."""

    page: str
    figures: int
    expected_figures: int
    problems: list = field(default_factory=list)


def inspect_page(page, url: str, rel: str) -> PageReport:
    """Load ``url`` fully (network idle, MathJax done) and check what a reader would
    see."""
    blocked = getattr(page, "blocked_requests", [])
    blocked.clear()
    response = page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")
    report = PageReport(rel, 0, expected_figures(rel))
    report.problems += [f"loads a third-party resource: {u}" for u in blocked]
    if response is None or response.status != 200:
        report.problems.append(f"HTTP {None if response is None else response.status}")
        return report
    page.evaluate(_MATHJAX_DONE)
    page.evaluate(_LOAD_ALL_IMAGES)
    report.figures = page.evaluate(_FIGURES)
    if report.figures < report.expected_figures:
        report.problems.append(
            f"shows {report.figures} figures, its notebook has"
            f" {report.expected_figures} plotting cells"
        )
    report.problems += [
        f"image does not load: {src}" for src in page.evaluate(_BROKEN_IMAGES)
    ]
    report.problems += [
        f"code runs past its cell: {line!r}"
        for line in page.evaluate(_OVERFLOWING_CODE)
    ]
    report.problems += [
        f"table wider than its column: {head!r}" for head in page.evaluate(_WIDE_TABLES)
    ]
    if page.query_selector(
        ERROR_SELECTORS
    ) is not None or "Traceback (most recent call last)" in page.inner_text("body"):
        report.problems.append("shows a notebook error or traceback")
    raw = RAW_MATH.search(page.evaluate(_PROSE_TEXT))
    if raw:
        report.problems.append(
            f"shows raw TeX ({raw.group(0)!r}): the math renderer did not run"
        )
    return report


def check(
    html_dir: Path = BUILD / "html", shots: Path = BUILD / "screenshots"
) -> list[PageReport]:
    """Open every page; one report per page. Saves a full-page screenshot of each, and
    the README's picture (the first figure of chapter 01 in the browser's window) as
    ``readme-picture.png``.
    """
    all_pages = pages(html_dir)
    if not all_pages:
        raise SystemExit(f"no pages under {html_dir}: build the book first (make book)")
    shots.mkdir(parents=True, exist_ok=True)
    reports = []
    with serve(html_dir) as base, browser_page() as page:
        for path in all_pages:
            rel = path.relative_to(html_dir).as_posix()
            report = inspect_page(page, f"{base}/{rel}", rel)
            reports.append(report)
            page.screenshot(
                path=str(
                    shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                ),
                full_page=True,
            )
            if rel == README_PAGE and report.figures:
                top = page.evaluate(
                    "() => document.querySelector('div.cell_output img')"
                    ".getBoundingClientRect().top + window.scrollY"
                )
                clip = {"x": 0, "y": max(0, top - 420), "width": 1280, "height": 900}
                page.screenshot(
                    path=str(shots / "readme-picture.png"), full_page=True, clip=clip
                )
            status = "ok " if not report.problems else "BAD"
            print(
                f"{status} {rel}: {report.figures} figures (expected >="
                f" {report.expected_figures})",
                flush=True,
            )
    return reports


@dataclass
class PdfReport:
    """What poppler-utils read from the printed book."""

    path: Path
    pages: int
    images: int
    expected_images: int
    problems: list


def pdf_report(path: Path, expected_images: int) -> PdfReport:
    """Page count (``pdfinfo``), embedded images (``pdfimages -list``) and raw TeX left
    in the text (``pdftotext``) of a printed book."""
    info = subprocess.run(
        ["pdfinfo", str(path)], capture_output=True, text=True, check=True
    ).stdout
    n_pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    listing = subprocess.run(
        ["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    n_images = sum(
        1 for line in listing.splitlines()[2:] if line.split()[2:3] == ["image"]
    )
    text = subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    problems = []
    if n_images < expected_images:
        problems.append(
            f"{n_images} images in the PDF, the chapters have {expected_images}"
            " plotting cells"
        )
    raw = RAW_MATH.search(text)
    if raw:
        problems.append(f"raw TeX in the PDF text ({raw.group(0)!r})")
    if "Skip to main content" in text:
        problems.append("the site's navigation was printed (its CSS did not load)")
    return PdfReport(path, n_pages, n_images, expected_images, problems)


def pdf(output: Path = BUILD / "pdf" / "backdoor-book.pdf") -> PdfReport:
    """Build the single-page HTML of the book, serve it on 127.0.0.1, let Chromium load
    it fully (styles, figures, MathJax) and print it without the navigation; then check
    the PDF.
    """
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "jupyter-book"), "build", ".", "--builder", "singlehtml"],
        check=True,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    single = BUILD / "singlehtml"
    # index.html only redirects to the root document (book/intro.html), whose styles,
    # scripts and figures the singlehtml builder links as if it stood at the root: print
    # a copy from there
    target = re.search(r'url=([^"]+)"', (single / "index.html").read_text())
    rel = "book.html"
    shutil.copyfile(
        single / (target.group(1) if target else "index.html"), single / rel
    )
    with serve(single) as base, browser_page() as page:
        report = inspect_page(page, f"{base}/{rel}", rel)
        if report.problems:
            raise SystemExit(
                f"the single-page book is not ready to print: {report.problems}"
            )
        page.add_style_tag(content=PRINT_CSS)
        page.emulate_media(media="print")
        page.pdf(
            path=str(tmp),
            format="A4",
            print_background=True,
            margin={"top": "15mm", "bottom": "15mm", "left": "12mm", "right": "12mm"},
        )
    os.replace(tmp, output)
    expected = sum(plotting_cells(nb) for nb in sorted(NOTEBOOKS.glob("*.ipynb")))
    return pdf_report(output, expected)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backdoor_utils.site", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["check", "pdf"])
    args = parser.parse_args(argv)
    if args.command == "pdf":
        report = pdf()
        for problem in report.problems:
            print(f"problem: {problem}")
        print(
            f"{report.path}: {report.pages} pages, {report.images} images (chapters'"
            f" plotting cells: {report.expected_images}), {len(report.problems)}"
            " problems"
        )
        return 1 if report.problems else 0
    reports = check()
    problems = [f"{r.page}: {p}" for r in reports for p in r.problems]
    for problem in problems:
        print(f"problem: {problem}")
    figures = sum(r.figures for r in reports)
    print(
        f"{len(reports)} pages checked, {figures} figures seen, {len(problems)}"
        f" problems; screenshots in {BUILD / 'screenshots'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
