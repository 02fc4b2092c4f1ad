import os

import nbformat
import pytest

os.environ.setdefault("TQDM_DISABLE", "1")

# Under pytest-xdist (make test runs `pytest -n auto`) the workers share the cores: each
# worker's torch, and every kernel it starts for a chapter (OMP_NUM_THREADS is
# inherited), gets its share instead of all of them - two 2-thread jobs on 2 cores run
# 3-5x slower than one.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    from backdoor_utils.core.runtime import threads_per_worker

    _threads = threads_per_worker(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)


def require_xdist_group(request, group: str, how: str) -> None:
    """Fail unless the requesting test carries ``xdist_group(group)`` (and no other): a
    fixture shared by a group is built once, on the one worker that runs the group; a
    test outside it would build it again on another worker. ``how`` tells the reader how
    to mark it."""
    groups = [mark.args[0] for mark in request.node.iter_markers("xdist_group")]
    assert groups == [group], f"{request.node.name}: {how}, not {groups}"


@pytest.fixture(scope="session")
def splits():
    from backdoor_utils.core.data import load_splits

    return load_splits(n_train=2000)


def write_tiny_notebook(path, sleep_s: float = 0.0):
    """A stand-in chapter (no training): parameters ``seed``, ``poison_rate``; glues
    ``asr``, ``clean_acc`` and, as chapters do, ``computed_with`` - here "setup <seed>",
    so runs of other seeds look computed on other machines; fails inside the notebook
    for ``poison_rate >= 0.5``; optionally sleeps."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    params = nbformat.v4.new_code_cell("seed = 0\npoison_rate = 0.01")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 00 - Tiny"),
        params,
        nbformat.v4.new_code_cell(
            f"import time\nfrom myst_nb import glue\ntime.sleep({sleep_s})\n"
            "assert poison_rate < 0.5, 'poison rate too high for this stand-in'\n"
            "glue('asr', poison_rate * 2 + seed / 100, display=False)\n"
            "glue('clean_acc', 1 - poison_rate, display=False)\n"
            "glue('computed_with', f'setup {seed}', display=False)"
        ),
    ]
    nbformat.write(nb, str(path))
    return path
