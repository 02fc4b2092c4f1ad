"""The browser check on tiny pages: it must notice what a reader would (headless
Chromium)."""

import base64

import nbformat
import pytest

from backdoor_utils.tooling import browser

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d49444154789c6360f8cf000000030101005a4d6b2b0000000049454e44ae426082"
    )
).decode()


@pytest.fixture()
def chapter_site(tmp_path, monkeypatch):
    """A one-chapter site whose notebook has one plotting cell; the test writes the
    page."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("fig = plotting.rate_curves(x, {}, 'x', 't')")
    ]
    nbformat.write(nb, str(notebooks / "01_tiny.ipynb"))
    monkeypatch.setattr(browser, "NOTEBOOKS", notebooks)
    html = tmp_path / "html"
    (html / "notebooks").mkdir(parents=True)

    def write(body):
        (html / "notebooks" / "01_tiny.html").write_text(
            "<html><head><style>pre { width: 300px; overflow: auto; }</style></head>"
            f"<body><main>{body}</main></body></html>"
        )
        return browser.check(html, tmp_path / "shots")[0]

    return write


def test_a_good_chapter_page_passes(chapter_site):
    report = chapter_site(
        "<p>Text.</p><div class='cell_input'><pre>x = 1</pre></div>"
        f"<div class='cell_output'><img src='data:image/png;base64,{PNG}'></div>"
    )
    assert report.problems == [] and report.figures == 1 == report.expected_figures


def test_a_page_that_loads_anything_from_another_host_is_a_problem(chapter_site):
    # the reader's browser would fetch it at read time: the site must work offline
    report = chapter_site(
        "<script src='https://cdnjs.example.org/require.min.js'></script>"
        f"<div class='cell_output'><img src='data:image/png;base64,{PNG}'></div>"
    )
    assert report.problems == [
        "loads a third-party resource: https://cdnjs.example.org/require.min.js"
    ]


def test_a_chapter_page_without_its_figure_fails(chapter_site):
    report = chapter_site("<p>Text.</p><div class='cell_input'><pre>x = 1</pre></div>")
    assert report.figures == 0
    assert any("shows 0 figures" in p for p in report.problems)


def test_raw_tex_and_overflowing_code_are_problems(chapter_site):
    report = chapter_site(
        "<p>Let \\(x\\) be a digit.</p>"
        f"<div class='cell_input'><pre>{'y' * 200}</pre></div>"
        f"<div class='cell_output'><img src='data:image/png;base64,{PNG}'></div>"
    )
    assert any("raw TeX" in p for p in report.problems)
    assert any("runs past its cell" in p for p in report.problems)


def test_a_table_wider_than_its_cell_is_a_problem(chapter_site):
    cells = "".join(f"<td>{i:,}</td>" for i in range(100_000, 100_040))
    report = chapter_site(
        "<div class='cell_output' style='width: 300px'><table><tr><th>seed</th></tr>"
        f"<tr>{cells}</tr></table><img src='data:image/png;base64,{PNG}'></div>"
    )
    assert any("table wider than its column: 'seed'" in p for p in report.problems)


def test_a_page_table_cut_off_by_its_scrolling_box_is_a_problem(chapter_site):
    # the theme wraps a Markdown table in a box that scrolls: its last columns are out
    # of sight
    cells = "".join("<td>0.66&nbsp;±&nbsp;0.57</td>" for _ in range(12))
    box = (
        "<div class='pst-scrollable-table-container' style='width: 400px; overflow-x:"
        " auto'>"
    )
    report = chapter_site(
        f"{box}<table><tr><th>attack</th></tr><tr>{cells}</tr></table></div>"
        f"<div class='cell_output'><img src='data:image/png;base64,{PNG}'></div>"
    )
    assert any("table wider than its column: 'attack'" in p for p in report.problems)
    narrow = chapter_site(
        f"{box}<table><tr><th>attack</th></tr><tr><td>0.66 ±"
        " 0.57</td></tr></table></div><div class='cell_output'><img"
        f" src='data:image/png;base64,{PNG}'></div>"
    )
    assert narrow.problems == []


def test_check_fails_loudly_on_an_empty_build(tmp_path):
    with pytest.raises(SystemExit, match="no pages"):
        browser.check(tmp_path, tmp_path / "shots")


def _pdf(path, text, with_image):
    import matplotlib

    matplotlib.use("agg")  # this test only writes files
    import matplotlib.pyplot as plt
    import numpy as np

    fig = plt.figure(figsize=(3, 3))
    fig.text(0.1, 0.9, text)
    if with_image:
        fig.add_axes([0.1, 0.1, 0.6, 0.6]).imshow(np.arange(64.0).reshape(8, 8))
    fig.savefig(path)
    plt.close(fig)
    return path


def test_pdf_report_counts_pages_and_images(tmp_path):
    report = browser.pdf_report(
        _pdf(tmp_path / "ok.pdf", "Chapter 01", with_image=True), expected_images=1
    )
    assert (report.pages, report.images, report.problems) == (1, 1, [])


def test_pdf_report_notices_missing_figures_and_raw_tex(tmp_path):
    report = browser.pdf_report(
        _pdf(tmp_path / "bad.pdf", r"CA = \[ \frac{1}{n} \]", with_image=False),
        expected_images=2,
    )
    assert any("0 images in the PDF" in p for p in report.problems)
    assert any("raw TeX" in p for p in report.problems)
