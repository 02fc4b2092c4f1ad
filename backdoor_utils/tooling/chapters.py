"""Reading executed chapters: the values they glued (myst-nb ``glue``), their plotting
cells and figures, their errors, and the headline metrics a rerun prints."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

GLUE_MIME = "application/papermill.record/"


def glued_values(path: Path | str) -> dict:
    """Every value an executed notebook published with ``myst_nb.glue`` (parsed from its
    text form)."""
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


#: A code cell that draws a figure: it calls one of the book's plotting helpers or
#: pyplot directly.
FIGURE_CALL = re.compile(
    r"\bplotting\.\w+\(|\bplt\.(subplots|figure|imshow|plot|bar|hist)\("
)


def plotting_cells(path: Path | str) -> int:
    """How many code cells of a notebook draw a figure (not counting cells removed from
    the page)."""
    nb = nbformat.read(str(path), as_version=4)
    hidden = {"remove-cell", "remove-output"}
    return sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        and FIGURE_CALL.search(c.source)
        and not hidden & set(c.metadata.get("tags", []))
    )


def image_outputs(path: Path | str) -> int:
    """How many ``image/png`` outputs an executed notebook carries."""
    nb = nbformat.read(str(path), as_version=4)
    return sum(
        1
        for c in nb.cells
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    )


def error_outputs(path: Path | str) -> list[str]:
    """Error outputs (ename: evalue) of an executed notebook."""
    nb = nbformat.read(str(path), as_version=4)
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


#: The headline values each chapter must glue (the book's results page and the tests
#: read them).
HEADLINE_METRICS = {
    "01_pixel_trigger": ["clean_acc_baseline", "clean_acc", "asr"],
    "02_noise_trigger": ["clean_acc", "asr", "psnr_db"],
    "03_blur_trigger": ["clean_acc", "asr"],
    "04_learned_trigger": ["clean_acc", "asr"],
    "05_activation_clustering": [
        "precision",
        "recall",
        "f1",
        "asr_after",
        "clean_acc_after",
        "asr_relabel",
        "clean_acc_relabel",
    ],
    "06_fine_pruning": [
        "fp_asr_after",
        "fp_clean_acc_after",
        "nc_anomaly_index",
        "nc_asr_after",
        "nc_clean_acc_after",
    ],
    "07_more_attacks": [
        "blend_clean_acc",
        "blend_asr",
        "sig_clean_acc",
        "sig_asr",
        "wanet_clean_acc",
        "wanet_asr",
    ],
    "08_defense_matrix": [
        "ss_recall",
        "ss_precision",
        "ss_asr_after",
        "strip_far",
        "strip_auroc",
    ],
    "09_adaptive_attacker": [
        "ac_blended",
        "ac_adaptive",
        "ss_blended",
        "ss_adaptive",
        "asr_blended",
        "asr_adaptive",
    ],
    "10_certified_defense": ["dpa_clean_acc", "dpa_asr", "dpa_certified_changes"],
}
