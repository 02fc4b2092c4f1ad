"""The cache keys at the right depth, on an edited copy of the whole package.

Each case edits a copy of ``backdoor_utils`` the way a developer would, imports the copy
in a fresh interpreter and reads the code part of every kind of cache entry the book
computes (the same roots the package passes to ``train_cached``): a refactor that cannot
change a number keeps every one; a change that can changes exactly the entries it
affects.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import backdoor_utils
from backdoor_utils.core import codekey
from backdoor_utils.orchestration import defend, experiments
from backdoor_utils.orchestration.experiments import Experiment

PACKAGE = Path(backdoor_utils.__file__).parent

#: Every kind of cache entry, by the roots its key's code part is read from.
ENTRIES = """
from backdoor_utils import defenses, detectors
from backdoor_utils.core.data import load_splits
from backdoor_utils.defenses import neural_cleanse, pack_reversed
from backdoor_utils.orchestration.experiments import Experiment, evaluate_attack, retrain_without, train_attack_model, train_on_data_cached
from backdoor_utils.orchestration.defend import cell_roots, detect_and_score, pack_detection, screen_inputs

def entries():
    out = {f"model {a}": (train_attack_model, *Experiment(a).code())
           for a in ("none", "patch", "noise", "sig", "wanet", "learned")}
    ac, ss, strip = (type(detectors.get(n)) for n in ("activation_clustering", "spectral_signatures", "strip"))
    out.update({
        "attack metrics": (evaluate_attack, load_splits, *Experiment("patch").code()),
        "model on data": (train_on_data_cached,),
        "retrain": (retrain_without,),
        "reversal": (neural_cleanse, pack_reversed),
        "detection ac": (detect_and_score, pack_detection, ac),
        "screening": (screen_inputs, strip),
    })
    # every matrix column's cells, by the roots the package itself declares for them
    for name in ("activation_clustering", "spectral_signatures", "strip"):
        out[f"cell {name}"] = cell_roots(detectors.get(name))
    for name in ("fine_pruning", "neural_cleanse"):
        out[f"cell {name}"] = cell_roots(defenses.get(name))
    return out
"""

SCRIPT = ENTRIES + """
import json
from backdoor_utils.core.codekey import code_digest
print(json.dumps({name: code_digest(*roots) for name, roots in entries().items()}))
"""


def keys_of(root: Path) -> dict:
    """The entries' code digests as the package under ``root`` computes them (a fresh
    interpreter)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(root)!r})\n" + SCRIPT,
        ],
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return keys_of(copy_package(tmp_path_factory.mktemp("original")))


def copy_package(root: Path) -> Path:
    shutil.copytree(
        PACKAGE, root / "backdoor_utils", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def edit(root: Path, module: str, old: str, new: str, count: int = 1) -> None:
    path = root / "backdoor_utils" / module
    text = path.read_text()
    assert (
        text.count(old) >= count
    ), f"{module}: {old!r} not found - update this test with the code"
    path.write_text(text.replace(old, new))


def black(root):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "black",
            "-q",
            "--line-length",
            "88",
            str(root / "backdoor_utils"),
        ],
        check=True,
    )


def comments(root):
    edit(
        root,
        "core/training.py",
        "    dev = resolve_device(device)\n    if model is None:",
        "    # a comment in the training step\n    dev = resolve_device(device)\n\n   "
        " if model is None:",
    )
    edit(
        root, "attacks/base.py", "Dirty-label choice:", "Dirty-label choice (reworded):"
    )


def rename_private(root):
    for module in ("attacks/base.py",):
        edit(root, module, "_stamped(", "_stamp_and_relabel(", count=3)


def move_function(root):
    # metrics.non_target_mask moves to training.py; metrics and its importers read it
    # from there
    source = (root / "backdoor_utils" / "core" / "metrics.py").read_text()
    block = re.search(r"\ndef non_target_mask\(.*?\n\n\n", source, re.S).group(0)
    edit(root, "core/metrics.py", block, "\n\n")
    edit(
        root,
        "core/metrics.py",
        "from .training import ",
        "from .training import non_target_mask, ",
    )
    (root / "backdoor_utils" / "core" / "training.py").write_text(
        (root / "backdoor_utils" / "core" / "training.py").read_text() + block
    )


@pytest.mark.parametrize("refactor", [black, comments, rename_private, move_function])
def test_a_refactor_keeps_every_key(refactor, original, tmp_path):
    root = copy_package(tmp_path)
    refactor(root)
    after = keys_of(root)
    assert {name for name in original if after[name] != original[name]} == set()


MODELS = {
    "model none",
    "model patch",
    "model noise",
    "model sig",
    "model wanet",
    "model learned",
}
DIRTY = MODELS - {"model none", "model sig"}


@pytest.mark.parametrize(
    "change, changed, kept",
    [
        # a default hyper-parameter of training: every model, and what trains one on the
        # way
        (
            lambda root: edit(
                root, "core/training.py", "max_lr: float = 3e-3", "max_lr: float = 2e-3"
            ),
            MODELS | {"model on data", "retrain", "detection ac", "cell fine_pruning"},
            {"reversal", "screening", "attack metrics"},
        ),
        # a line of the training step
        (
            lambda root: edit(
                root,
                "core/training.py",
                "F.cross_entropy(model(xb), yb)",
                "F.cross_entropy(model(xb), yb, label_smoothing=0.1)",
            ),
            MODELS | {"model on data", "retrain", "detection ac", "cell fine_pruning"},
            {"reversal", "screening", "attack metrics"},
        ),
        # the dirty-label poison selection: the dirty-label attacks' models only
        (
            lambda root: edit(
                root,
                "attacks/base.py",
                "max(1, round(poison_rate * len(y)))",
                "max(2, round(poison_rate * len(y)))",
            ),
            DIRTY,
            {"model none", "model sig", "model on data", "screening", "reversal"},
        ),
        # a detector's threshold rule: that detector's entries only
        (
            lambda root: edit(
                root,
                "detectors/spectral_signatures.py",
                "np.floor(1.5 * self.epsilon",
                "np.floor(1.4 * self.epsilon",
            ),
            {"cell spectral_signatures"},
            MODELS | {"detection ac", "screening", "cell fine_pruning", "reversal"},
        ),
        # one kind of cell's code: the cells of that kind only
        (
            lambda root: edit(
                root,
                "orchestration/defend.py",
                "report = cleanse(result, method, defender.x_tune)",
                "report = cleanse(result, method, defender.x_select)",
            ),
            {"cell neural_cleanse"},
            {
                "cell fine_pruning",
                "cell strip",
                "cell activation_clustering",
                "cell spectral_signatures",
                "reversal",
            },
        ),
    ],
    ids=[
        "default-hyperparameter",
        "training-step",
        "poison-selection",
        "detector-threshold",
        "one-cell-kind",
    ],
)
def test_a_change_that_can_move_a_number_changes_exactly_the_keys_it_affects(
    change, changed, kept, original, tmp_path
):
    root = copy_package(tmp_path)
    change(root)
    after = keys_of(root)
    moved = {name for name in original if after[name] != original[name]}
    assert changed <= moved, f"not re-keyed: {sorted(changed - moved)}"
    assert not (kept & moved), f"re-keyed without cause: {sorted(kept & moved)}"


def test_the_package_keys_its_entries_on_these_roots(tmp_path, monkeypatch):
    """The roots above are the ones the package uses: a model's and its metrics' saved
    specs carry the code digest of exactly these roots."""
    from backdoor_utils.core import cache

    monkeypatch.setattr(cache, "ARTIFACTS", tmp_path)
    namespace = {}
    exec(ENTRIES, namespace)
    roots = namespace["entries"]()
    result = experiments.run_attack(Experiment("patch", n_train=300, epochs=1), "cpu")
    specs = {
        json.loads(p.read_text())["kind"]: json.loads(p.read_text())
        for p in tmp_path.rglob("*.json")
    }
    assert specs["attack"]["code"] == codekey.code_digest(*roots["model patch"])
    assert specs["attack_metrics"]["code"] == codekey.code_digest(
        *roots["attack metrics"]
    )
    assert specs["attack_metrics"]["model"] == result.key
    found = defend.detect_cached(
        result, backdoor_utils.detectors.get("activation_clustering"), device="cpu"
    )
    assert found is not None
    specs = {
        json.loads(p.read_text())["kind"]: json.loads(p.read_text())
        for p in tmp_path.rglob("*.json")
    }
    assert specs["detection"]["code"] == codekey.code_digest(*roots["detection ac"])
    assert specs["detection"]["model"] == result.key


def test_a_models_key_does_not_depend_on_loaded_data_or_where_the_clone_lives(
    monkeypatch,
):
    from backdoor_utils.core import data
    from backdoor_utils.orchestration.experiments import train_attack_model

    roots = (train_attack_model, *Experiment("patch").code())
    codekey._memo.clear()
    before = codekey.code_digest(*roots)
    data.load_splits(
        n_train=100
    )  # fills the float-image cache, keyed by the data's path
    monkeypatch.setitem(data._FLOATS, "/another/clone/data", ())
    codekey._memo.clear()
    assert codekey.code_digest(*roots) == before
