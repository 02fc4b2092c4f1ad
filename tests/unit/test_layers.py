"""The package's layers: every module imports alone, and no layer imports a higher one."""

import ast
import subprocess
import sys
from pathlib import Path


from backdoor_utils import attacks

PACKAGE = Path(attacks.__file__).resolve().parent.parent


def _package_modules():
    return sorted(
        ".".join(
            ("backdoor_utils",) + p.relative_to(PACKAGE).with_suffix("").parts
        ).removesuffix(".__init__")
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py"
    )


_IMPORT_EACH = """
import importlib, os, sys, traceback
import matplotlib, numpy, pandas, sklearn.cluster, sklearn.decomposition, sklearn.metrics, torch, torchvision
assert not any(m.startswith("backdoor_utils") for m in sys.modules)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()  # a child that has loaded no module of the package
    if pid == 0:
        try:
            importlib.import_module(name)
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    if os.waitpid(pid, 0)[1]:
        failed.append(name)
print(failed)
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    # third-party libraries are loaded once, then every package module is imported
    # first, alone, in a forked child that has loaded nothing of the package (an import
    # cycle shows up there)
    modules = _package_modules()
    assert len(modules) > 20 and "backdoor_utils.attacks.noise" in modules
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *modules], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]


LAYERS = {  # a module may import its own layer and the layers below it
    "core": ("__init__", "core"),
    "methods": ("attacks", "detectors", "defenses"),
    "orchestration": ("orchestration",),
    "tooling": ("tooling", "__main__"),
}


ORDER = list(LAYERS)


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, name in enumerate(ORDER) if top in LAYERS[name])


def test_lower_layers_never_import_higher_ones_and_no_import_hides_in_a_function():
    problems = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("").parts
        own = _layer(".".join(rel))
        tree = ast.parse(path.read_text())
        functions = [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = list(rel[:-1])[: len(rel) - node.level]
            if node.module:
                targets = [".".join(base + [node.module])]
            else:  # "from . import x": a module x, or a name from the package's __init__
                targets = [
                    (
                        ".".join(base + [a.name])
                        if PACKAGE.joinpath(*base, a.name).with_suffix(".py").exists()
                        or PACKAGE.joinpath(*base, a.name).is_dir()
                        else ".".join(base + ["__init__"])
                    )
                    for a in node.names
                ]
            for target in targets:
                if _layer(target) > own:
                    problems.append(
                        f"{'/'.join(rel)} imports {target} (a higher layer)"
                    )
                if id(node) in nested:
                    problems.append(
                        f"{'/'.join(rel)} imports {target} inside a function"
                    )
    assert not problems, problems


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                private += [
                    f"{path.relative_to(PACKAGE)} imports {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert not private, private
