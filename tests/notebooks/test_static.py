"""Static checks of the chapters and of the pages that quote them (no execution)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))


def _nb(path):
    return json.loads(path.read_text())


def glue_names(path: Path) -> list[str]:
    """Glue names a notebook publishes; f-string names become regex patterns."""
    names = []
    for cell in _nb(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        for fstring, name in re.findall(
            r'glue\(\s*(f?)"([^"]+)"', "".join(cell["source"])
        ):
            names.append(
                re.sub(r"\\\{.*?\\\}", ".+", re.escape(name))
                if fstring
                else re.escape(name)
            )
    return names


def test_every_chapter_is_numbered_in_order_and_in_the_table_of_contents():
    assert [p.name[:2] for p in NOTEBOOKS] == [
        f"{i:02d}" for i in range(1, len(NOTEBOOKS) + 1)
    ]
    toc = (ROOT / "_toc.yml").read_text()
    assert all(f"notebooks/{p.stem}" in toc for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_cell_has_its_own_id(path):
    # nbformat 4.5 requires cell ids; a missing one is a warning today and an error
    # tomorrow
    ids = [c.get("id") for c in _nb(path)["cells"]]
    assert None not in ids and len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_has_one_parameters_cell_then_validation(path):
    cells = _nb(path)["cells"]
    tagged = [
        i
        for i, c in enumerate(cells)
        if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1
    assert "validate_parameters(" in "".join(cells[tagged[0] + 1]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_is_committed_clean_with_python3_kernel(path):
    nb = _nb(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb["cells"]
        if c["cell_type"] == "code"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_has_one_title_and_a_closing_section(path):
    markdown = [
        "".join(c["source"]) for c in _nb(path)["cells"] if c["cell_type"] == "markdown"
    ]
    titles = [
        line for text in markdown for line in text.splitlines() if line.startswith("# ")
    ]
    assert len(titles) == 1 and titles[0].startswith(f"# {path.name[:2]} - ")
    assert any("## What we learned" in text for text in markdown)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_ends_by_saying_where_and_in_which_precision_it_was_computed(path):
    cells = _nb(path)["cells"]
    assert "{glue:text}`computed_with:s`" in "".join(cells[-1]["source"])
    assert any(
        'glue("computed_with", computed_with(device)' in "".join(c["source"])
        for c in cells
    )


def _referenced(text: str, own: str | None = None):
    """(notebook, name) pairs quoted with {glue:text}`[path::]name[:fmt]` or pasted by
    a glue directive (a table) with a ``:doc:`` option."""
    for ref in re.findall(r"\{glue:(?:text|)\}`([^`]+)`", text):
        if "::" in ref:
            doc, rest = ref.split("::", 1)
            yield Path(doc).name, rest.split(":")[0]
        else:
            yield own, ref.split(":")[0]
    for name, doc in re.findall(r"```\{glue\}[ \t]+(\S+)\n:doc:[ \t]*(\S+)", text):
        yield Path(doc).name, name


def _all_references():
    refs = []
    for page in PAGES:
        refs += [(page.name, nb, name) for nb, name in _referenced(page.read_text())]
    for path in NOTEBOOKS:
        text = "".join(
            "".join(c["source"])
            for c in _nb(path)["cells"]
            if c["cell_type"] == "markdown"
        )
        refs += [(path.name, nb, name) for nb, name in _referenced(text, path.name)]
    return refs


@pytest.mark.parametrize("where, notebook, name", _all_references())
def test_every_quoted_glue_name_is_published_by_its_notebook(where, notebook, name):
    path = ROOT / "notebooks" / notebook
    assert path.exists(), f"{where} quotes {notebook}, which does not exist"
    assert any(
        re.fullmatch(pattern, name) for pattern in glue_names(path)
    ), f"{where} quotes {name!r}, never glued by {notebook}"


def test_headline_metrics_are_glued_by_their_chapters():
    from backdoor_utils.tooling.chapters import HEADLINE_METRICS

    for stem, names in HEADLINE_METRICS.items():
        patterns = glue_names(ROOT / "notebooks" / f"{stem}.ipynb")
        for name in names:
            assert any(
                re.fullmatch(p, name) for p in patterns
            ), f"{stem} does not glue {name}"


def test_every_chapter_and_page_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc
    for page in PAGES:
        assert f"book/{page.stem}" in toc


def test_notebook_code_is_formatted_to_the_books_code_column():
    import subprocess
    import sys

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "black",
            "--check",
            "--line-length",
            "88",
            "--ipynb",
            *map(str, NOTEBOOKS),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, f"run `make format`:\n{run.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_shown_on_the_page_fits_the_code_column(path):
    too_long = [
        line
        for cell in _nb(path)["cells"]
        if cell["cell_type"] == "code"
        and "remove-cell" not in cell["metadata"].get("tags", [])
        for line in "".join(cell["source"]).splitlines()
        if len(line) > 88
    ]
    assert not too_long, too_long


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_that_only_publish_glue_values_are_hidden(path):
    for cell in _nb(path)["cells"]:
        lines = [l for l in "".join(cell["source"]).splitlines() if l.strip()]
        if (
            cell["cell_type"] == "code"
            and lines
            and all(l.startswith(("glue(", "    ", ")")) for l in lines)
            and lines[0].startswith("glue(")
        ):
            tags = set(cell["metadata"].get("tags", []))
            assert tags & {"remove-cell", "remove-input", "hide-input"}, lines[0]


def test_no_environment_setting_switches_the_kernels_display_off():
    # MPLBACKEND=Agg in the build or the tests silently removes every figure from the
    # book
    for path in (
        ROOT / "Makefile",
        ROOT / "tests" / "conftest.py",
        ROOT / ".ci" / "run",
    ):
        assert "MPLBACKEND" not in path.read_text(), path
