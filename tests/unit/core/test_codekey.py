"""The code part of the cache keys (backdoor_utils.core.codekey) on small modules
written here."""

import importlib.util
import itertools
import os
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from backdoor_utils.core import codekey

_count = itertools.count()

BASE = '''
import torch.nn.functional as F
from pathlib import Path

ROOT = Path("/somewhere")
SCALE = 3


def _helper(x):
    if x is None:
        raise ValueError(f"x: must be a tensor, got {x!r}")
    return x * SCALE


def compute(x, steps=5):
    """Docstring."""
    total = 0
    for _ in range(steps):
        total = total + _helper(x)
    return F.relu(total)


def unrelated():
    return 42
'''


def load(source: str):
    """``source`` as a module named inside the package (so its names are followed like
    the package's), from a file of its own."""
    name = f"{codekey.PACKAGE}._codekey_test_{os.getpid()}_{next(_count)}"
    path = Path(tempfile.mkdtemp()) / f"{name.rsplit('.', 1)[1]}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def digest(source: str, name: str = "compute") -> str:
    return codekey.code_digest(getattr(load(source), name))


@pytest.mark.parametrize(
    "refactor",
    [
        # layout and comments
        lambda s: s.replace(
            "total = total + _helper(x)",
            "total = (\n            total\n            + _helper(x)  # add\n        )",
        ),
        # the docstring
        lambda s: s.replace('"""Docstring."""', '"""Another docstring, longer."""'),
        # a private helper renamed (definition and call)
        lambda s: s.replace("_helper", "_times_scale"),
        # a constant renamed
        lambda s: s.replace("SCALE", "FACTOR"),
        # an unrelated function edited, and a new one added
        lambda s: s.replace("return 42", "return 43")
        + "\n\ndef more():\n    return 1\n",
        # an error message reworded
        lambda s: s.replace(
            'f"x: must be a tensor, got {x!r}"', '"x: a tensor is needed"'
        ),
        # the library imported another way
        lambda s: s.replace(
            "import torch.nn.functional as F", "from torch.nn import functional as F"
        ),
        # the function's own name
        lambda s: s.replace("def compute(", "def compute_total(")
        + "\ncompute = compute_total\n",
        # a path constant (clones differ) that the code reads
        lambda s: s.replace('"/somewhere"', '"/elsewhere"').replace(
            "return F.relu(total)", "ROOT\n    return F.relu(total)"
        ),
    ],
    ids=[
        "layout",
        "docstring",
        "private-rename",
        "constant-rename",
        "unrelated-edit",
        "message",
        "import-style",
        "own-name",
        "path-value",
    ],
)
def test_a_refactor_that_cannot_change_a_number_keeps_the_digest(refactor):
    before = (
        BASE.replace("return F.relu(total)", "ROOT\n    return F.relu(total)")
        if "ROOT\n" in refactor(BASE)
        else BASE
    )
    assert digest(refactor(BASE)) == digest(before)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace(
            "return x * SCALE", "return x * SCALE + 1"
        ),  # a line of a helper
        lambda s: s.replace("SCALE = 3", "SCALE = 4"),  # a constant's value
        lambda s: s.replace("steps=5", "steps=6"),  # a default
        lambda s: s.replace("F.relu", "F.gelu"),  # a library function
        lambda s: s.replace(
            "for _ in range(steps)", "for _ in range(steps - 1)"
        ),  # a line of its own
    ],
    ids=["helper-line", "constant-value", "default", "library-call", "own-line"],
)
def test_a_change_that_can_change_a_number_changes_the_digest(change):
    assert digest(change(BASE)) != digest(BASE)


def test_a_class_is_keyed_on_its_methods_and_its_package_bases():
    classes = """
    class Base:
        def scale(self, x):
            return 2 * x

    class Child(Base):
        rate = 0.5

        def compute(self, x):
            return self.scale(x) * self.rate
    """
    child = digest(classes, "Child")
    assert (
        digest(classes.replace("return 2 * x", "return 3 * x"), "Child") != child
    )  # the base's method
    assert (
        digest(classes.replace("rate = 0.5", "rate = 0.6"), "Child") != child
    )  # a class attribute
    assert digest(classes.replace("# nothing", ""), "Child") == child


def test_recursion_ends_and_the_digest_does_not_depend_on_which_root_is_read_first():
    cycle = """
    def compute(n):
        return 0 if n == 0 else other(n - 1)

    def other(n):
        return compute(n) + 1
    """
    first = load(cycle)
    a, b = codekey.code_digest(first.compute), codekey.code_digest(first.other)
    second = load(cycle)
    assert (codekey.code_digest(second.other), codekey.code_digest(second.compute)) == (
        b,
        a,
    )
    assert (
        digest(cycle.replace("+ 1", "+ 2")) != a
    )  # a change inside the cycle still counts


def test_a_function_keyed_elsewhere_is_left_out():
    marked = """
    from backdoor_utils.core.codekey import keyed_elsewhere

    @keyed_elsewhere("its result's hash")
    def fetch():
        return "downloaded"

    def compute():
        return fetch()
    """
    assert digest(marked.replace('"downloaded"', '"fetched another way"')) == digest(
        marked
    )
    assert digest(marked.replace("its result's hash", "reworded")) == digest(marked)


def test_roots_outside_the_package_are_read_by_their_source():
    # an attack declared in a test module keys its own models by its source, like the
    # package's
    assert codekey.code_digest(
        test_roots_outside_the_package_are_read_by_their_source
    ) != codekey.code_digest(load)


def test_a_private_cache_at_module_level_is_state_not_a_constant():
    # a cache of loaded data is keyed by where the data lives: its contents differ between
    # clones and runs, and must not enter the digest of the code that fills it
    cached = """
    _LOADED = {}

    def compute(path):
        if path not in _LOADED:
            _LOADED[path] = len(path)
        return _LOADED[path]
    """
    module = load(cached)
    before = codekey.code_digest(module.compute)
    module.compute("/work/one/clone/data")
    codekey._memo.clear()
    assert codekey.code_digest(module.compute) == before


def test_a_library_name_is_keyed_as_the_code_imports_it_whatever_object_it_gets():
    # `from tqdm.auto import tqdm` hands a script one class and a notebook kernel another:
    # the same code must get the same digest in both (and in any clone)
    import tqdm.std

    source = BASE.replace(
        "from pathlib", "from tqdm.auto import tqdm\nfrom pathlib"
    ).replace("total = 0\n", "total = 0\n    tqdm\n", 1)
    script = codekey.code_digest(load(source).compute)
    kernel = load(source)
    kernel.tqdm = tqdm.std.tqdm  # another class behind the same import
    assert codekey.code_digest(kernel.compute) == script != digest(BASE)
