"""Checks and exports of the built site (``_build/html``) in a real browser.

    python -m backdoor_utils.site check   # every page in headless Chromium, screenshots
    python -m backdoor_utils.site pdf     # the whole book as one PDF

Chromium is Debian's ``chromium`` package (``/usr/bin/chromium``, or ``$CHROMIUM``), driven by
Playwright's Python API; no browser is downloaded.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

BUILD = Path("_build")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]
#: Markers of a notebook error or a Python traceback rendered into a page.
ERROR_SELECTORS = ".output.traceback, .output.error, div.cell_output .traceback, .nboutput .stderr .ansi-red-fg"


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SystemExit("chromium not found: install Debian's chromium package (apt-get install chromium) or set $CHROMIUM")
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


def pages(html_dir: Path) -> list[Path]:
    """Content pages of the site (not Sphinx's generated index/search pages)."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    found = [p for p in html_dir.rglob("*.html") if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts]
    return sorted(p for p in found if 'http-equiv="refresh"' not in p.read_text(errors="ignore")[:2000])  # redirect stubs


def check(html_dir: Path = BUILD / "html", shots: Path = BUILD / "screenshots") -> list[str]:
    """Open every page; return the problems found (empty = all good). Saves one screenshot per page."""
    from playwright.sync_api import sync_playwright

    problems = []
    shots.mkdir(parents=True, exist_ok=True)
    all_pages = pages(html_dir)
    if not all_pages:
        return [f"no pages under {html_dir}: build the book first (make book)"]
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS[1:])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for path in all_pages:
            rel = path.relative_to(html_dir).as_posix()
            response = page.goto(f"{base}/{rel}", wait_until="load")
            page.wait_for_load_state("networkidle")
            if response is None or response.status != 200:
                problems.append(f"{rel}: HTTP {None if response is None else response.status}")
                continue
            broken = page.eval_on_selector_all(
                "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))")
            problems += [f"{rel}: image does not load: {src}" for src in broken]
            if page.query_selector(ERROR_SELECTORS) is not None or "Traceback (most recent call last)" in page.inner_text("body"):
                problems.append(f"{rel}: shows a notebook error or traceback")
            page.screenshot(path=str(shots / (rel.replace("/", "__").removesuffix(".html") + ".png")), full_page=True)
            print(f"ok  {rel}" if not any(p.startswith(rel) for p in problems) else f"BAD {rel}")
        browser.close()
    return problems


def pdf(output: Path = BUILD / "pdf" / "backdoor-book.pdf") -> Path:
    """Build the single-page HTML of the book and print it to one PDF with headless Chromium."""
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "jupyter-book"), "build", ".", "--builder", "singlehtml"], check=True)
    html = (BUILD / "singlehtml" / "index.html").resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                        "--virtual-time-budget=20000", f"--print-to-pdf={tmp}", html.as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not tmp.exists() or tmp.stat().st_size < 10_000:
        raise SystemExit(f"chromium did not produce a PDF at {tmp}")
    os.replace(tmp, output)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backdoor_utils.site", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "pdf"])
    args = parser.parse_args(argv)
    if args.command == "pdf":
        print(pdf())
        return 0
    problems = check()
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{len(pages(BUILD / 'html'))} pages checked, {len(problems)} problems; screenshots in {BUILD / 'screenshots'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
