"""The results page is rebuilt whenever a chapter it glues numbers from is re-read."""

from pathlib import Path
from types import SimpleNamespace

from backdoor_utils.tooling.sphinx_glue import glued_documents, outdated_by_glue

RESULTS = """| x | {glue:text}`../notebooks/08_defense_matrix.ipynb::n_cells:d` of
{glue:text}`../notebooks/01_pixel_trigger.ipynb::asr:.4f`, {glue}`../notebooks/02_noise_trigger.ipynb::psnr_db` |
a local glue {glue:text}`n_cells:d` names no other document

```{glue} matrix_table
:doc: ../notebooks/10_certified_defense.ipynb
```
"""


def _env(root: Path):
    (root / "book").mkdir()
    (root / "notebooks").mkdir()
    (root / "book" / "results.md").write_text(RESULTS)
    (root / "book" / "intro.md").write_text("no glue here")
    docs = {"book/results": "book/results.md", "book/intro": "book/intro.md"}
    for stem in (
        "01_pixel_trigger",
        "02_noise_trigger",
        "08_defense_matrix",
        "09_adaptive_attacker",
        "10_certified_defense",
    ):
        (root / "notebooks" / f"{stem}.ipynb").write_text("{}")
        docs[f"notebooks/{stem}"] = f"notebooks/{stem}.ipynb"
    by_path = {str((root / p).resolve()): d for d, p in docs.items()}
    return SimpleNamespace(
        found_docs=set(docs), doc2path=lambda d: root / docs[d], path2doc=by_path.get
    )


def test_glue_references_resolve_to_the_documents_they_name(tmp_path):
    env = _env(tmp_path)
    page = tmp_path / "book" / "results.md"
    assert glued_documents(RESULTS, page, env.path2doc) == {
        "notebooks/08_defense_matrix",
        "notebooks/01_pixel_trigger",
        "notebooks/02_noise_trigger",
        "notebooks/10_certified_defense",  # a glue directive's :doc: option
    }


def test_a_re_read_chapter_makes_the_page_that_glues_from_it_outdated(tmp_path):
    env = _env(tmp_path)
    assert outdated_by_glue(
        None, env, set(), {"notebooks/08_defense_matrix"}, set()
    ) == ["book/results"]
    assert outdated_by_glue(
        None, env, {"notebooks/01_pixel_trigger"}, set(), set()
    ) == ["book/results"]
    # a chapter the page does not glue from, or nothing re-read: nothing more to rebuild
    assert (
        outdated_by_glue(None, env, set(), {"notebooks/09_adaptive_attacker"}, set())
        == []
    )
    assert outdated_by_glue(None, env, set(), set(), set()) == []
    # the page itself being re-read already: not listed twice
    assert (
        outdated_by_glue(
            None, env, set(), {"book/results", "notebooks/08_defense_matrix"}, set()
        )
        == []
    )
