"""Sphinx extension: a page that glues values from other documents is rebuilt when they
change.

MyST-NB resolves a cross-document glue (``{glue:text}`../notebooks/08_x.ipynb::key```,
or a ``{glue}`` directive with a ``:doc:`` option) only when the page that uses it is
written, and Sphinx writes only the pages it re-read. Without this extension,
re-executing chapter 08 (a parameter or a cell changed) leaves the results page with the
numbers of the previous execution. Listed in ``_config.yml``
under ``sphinx.extra_extensions``.
"""

from __future__ import annotations

import re
from pathlib import Path

#: ``{glue}`path::key``` or ``{glue:text}`path::key:format``` (any glue role) naming
#: another document.
GLUE_REF = re.compile(r"\{glue(?::[a-z]+)?\}`([^`]+?)::")
#: A glue directive pasting from another document (a table, a figure): its ``:doc:``
#: option, among the directive's options.
GLUE_DOC = re.compile(
    r"\{glue(?::[a-z]+)?\}[^\n]*\n(?:[ \t]*:[a-z-]+:[^\n]*\n)*?[ \t]*:doc:[ \t]*(\S+)"
)


def glued_documents(source: str, page: Path, path2doc) -> set[str]:
    """The documents ``source`` (the text of ``page``) glues values from, as Sphinx
    docnames."""
    docs = set()
    for ref in GLUE_REF.findall(source) + GLUE_DOC.findall(source):
        doc = path2doc(str((page.parent / ref).resolve()))
        if doc:
            docs.add(doc)
    return docs


def outdated_by_glue(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated`` handler: every page that glues from a document about to be
    re-read."""
    fresh = set(added) | set(changed)
    if not fresh:
        return []
    stale = []
    for docname in sorted(env.found_docs - fresh):
        path = Path(env.doc2path(docname))
        if (
            path.exists()
            and glued_documents(path.read_text(encoding="utf-8"), path, env.path2doc)
            & fresh
        ):
            stale.append(docname)
    return stale


def setup(app):
    app.connect("env-get-outdated", outdated_by_glue)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
