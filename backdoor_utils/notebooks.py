"""Reading chapters: their parameters and the values they glued (myst-nb ``glue``)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat

GLUE_MIME = "application/papermill.record/"


def glued_values(path: Path | str) -> dict:
    """Every value an executed notebook published with ``myst_nb.glue`` (parsed from its text form)."""
    nb = nbformat.read(str(path), as_version=4)
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is None:
                continue
            text = output.get("data", {}).get(GLUE_MIME + "text/plain")
            try:
                values[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError):
                values[name] = text
    return values


def error_outputs(path: Path | str) -> list[str]:
    """Error outputs (ename: evalue) of an executed notebook."""
    nb = nbformat.read(str(path), as_version=4)
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


#: The headline values each chapter must glue (the book's results page and the tests read them).
HEADLINE_METRICS = {
    "01_pixel_trigger": ["clean_acc_baseline", "clean_acc", "asr"],
    "02_noise_trigger": ["clean_acc", "asr", "psnr_db"],
    "03_blur_trigger": ["clean_acc", "asr"],
    "04_learned_trigger": ["clean_acc", "asr"],
    "05_activation_clustering": ["precision", "recall", "f1", "asr_after", "clean_acc_after"],
    "06_fine_pruning": ["fp_asr_after", "fp_clean_acc_after", "nc_anomaly_index", "nc_asr_after", "nc_clean_acc_after"],
}
