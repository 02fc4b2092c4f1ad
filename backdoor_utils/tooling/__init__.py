"""Tooling beside the book: run and sweep chapters (``cli``), read executed chapters
(``chapters``), the sentences chapters glue (``sentences``), figures (``plotting``), the
browser and PDF checks (``browser``), the Sphinx extension (``sphinx_glue``) and the
training bench (``bench``).
"""
