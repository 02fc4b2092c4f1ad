"""The code part of a cache key: a digest of what a computation runs, not of the files
it lives in.

:func:`code_digest` hashes the syntax tree of a function or class - without its
docstrings, its comments, its layout or its own name - in which every name that refers
to something of this package is replaced by *that* thing's digest (a function or class:
its own tree, recursively; a constant: its value), and every name that refers to a
library by the dotted path the code imports it as (the same in a script and in a
notebook kernel, whichever object the environment hands over). A private mutable
container at module level (a cache of loaded data) is state, not a constant, and a path
never enters: a digest is the same in every clone. So:

* reformatting, a comment, a docstring, renaming or moving a helper, or editing an
  unrelated function in the same file keeps the digest (and every cache key built on
  it);
* a changed line, default, constant or helper anywhere in what the computation calls
  changes it.

Calls the tree cannot resolve (a method of an argument, a class found in a registry by
name) are covered by passing that class as a root of its own (:func:`code_digest` takes
several).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import hashlib
import inspect
import textwrap
import types
from pathlib import PurePath

PACKAGE = __name__.split(".")[0]

#: Value types whose ``repr`` is part of a digest when a computation reads a constant of
#: them.
_PLAIN = (int, float, bool, str, bytes, type(None), complex)


def keyed_elsewhere(reason: str):
    """Mark a function whose result is keyed by other means (``reason``, e.g. the data's
    SHA-256): its code is left out of every digest that calls it, so that an edit to,
    say, the download logic does not re-key results that the verified files' hashes
    already key."""

    def mark(fn):
        fn.__keyed_elsewhere__ = reason
        return fn

    return mark


def _in_package(obj) -> bool:
    if isinstance(obj, types.ModuleType):
        module = obj.__name__
    else:
        module = getattr(obj, "__module__", None) or ""
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _unwrap(obj):
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return inspect.unwrap(obj) if callable(obj) else obj


class _Messages(ast.NodeTransformer):
    """The text of an error message (a raised exception's strings) as one
    placeholder."""

    def visit_Constant(self, node):
        return ast.Constant(value="message") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):
        return ast.Constant(value="message")


def _strip(tree: ast.AST) -> ast.AST:
    """Drop docstrings, error messages' wording, type annotations of arguments and
    return values (they compute nothing) and the definition's own name (a rename keeps
    the digest)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            node.exc = _Messages().visit(node.exc)
        if isinstance(node, ast.arg):
            node.annotation = None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
        ):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(getattr(body[0], "value", None), ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    if isinstance(tree, ast.Module) and len(tree.body) == 1:
        tree = tree.body[0]
    if isinstance(tree, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        tree.name = ""
    return tree


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None when the chain does not start at a plain
    name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


class _Resolver(ast.NodeTransformer):
    """Replace each resolvable name chain by a constant naming what it refers to."""

    def __init__(self, scope: dict, local: set, stack: list, imports: dict):
        self.scope, self.local, self.stack, self.imports = scope, local, stack, imports

    def _resolve(self, node):
        parts = _chain(node)
        if not parts or parts[0] in self.local or parts[0] not in self.scope:
            return None
        obj, used = self.scope[parts[0]], 1
        if parts[0] in self.imports and not _in_package(obj):
            # a library name: as the code imported it (stable across environments)
            return _attributes(
                ast.Constant(value=f"lib:{self.imports[parts[0]]}"), parts[1:]
            )
        if parts[0].startswith("_") and isinstance(obj, (dict, list, set)):
            # a private mutable container at module level is runtime state (a cache of
            # loaded data, say), not a constant: its contents differ between runs and
            # clones and never enter a digest
            return _attributes(ast.Constant(value="state"), parts[1:])
        # follow attributes through the package's modules and classes only (never call a
        # property); a library module keeps the attributes as written
        # (``torch.bfloat16``)
        while (
            used < len(parts)
            and _in_package(obj)
            and isinstance(obj, (types.ModuleType, type))
        ):
            try:
                obj = inspect.getattr_static(obj, parts[used])
            except AttributeError:
                return None
            used += 1
        label = _describe(obj, self.stack)
        if label is None:
            return None
        return _attributes(ast.Constant(value=label), parts[used:])

    def visit_Attribute(self, node):
        resolved = self._resolve(node) if isinstance(node.ctx, ast.Load) else None
        return resolved if resolved is not None else self.generic_visit(node)

    def visit_Name(self, node):
        resolved = self._resolve(node) if isinstance(node.ctx, ast.Load) else None
        return resolved if resolved is not None else node


def _attributes(node: ast.AST, attrs: list) -> ast.AST:
    """``node`` followed by the attribute names ``attrs`` (``node.a.b``)."""
    for attr in attrs:
        node = ast.Attribute(value=node, attr=attr, ctx=ast.Load())
    return node


def _library(module: str | None, qualname: str) -> str:
    """A library object's label: its library (the top-level package) and its qualified
    name - not the submodule that happens to provide it, which can depend on the
    environment (``tqdm.auto.tqdm`` is one class in a notebook kernel, another in a
    script)."""
    return f"lib:{(module or '?').split('.')[0]}.{qualname}"


def _bound_names(tree: ast.AST) -> set:
    """Names the definition binds itself (arguments, assignments, loop and comprehension
    variables, imports inside it): these shadow module names and are never resolved."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(
                (alias.asname or alias.name).split(".")[0] for alias in node.names
            )
        elif (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node is not tree
        ):
            names.add(node.name)
    return names


def _describe(obj, stack: list) -> str | None:
    """What a name refers to, as it enters a digest; None to leave the name as
    written."""
    if isinstance(obj, types.ModuleType):
        return "module:package" if _in_package(obj) else f"module:{obj.__name__}"
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    elif isinstance(obj, property):
        obj = obj.fget
    target = _unwrap(obj)
    if isinstance(target, (types.FunctionType, type)):
        if _in_package(target):
            return f"code:{_digest_one(obj, stack)}"
        return _library(getattr(target, "__module__", None), target.__qualname__)
    if callable(obj) and not _in_package(obj) and not _in_package(type(obj)):
        # a builtin or a library's callable (a ufunc, a functools.partial of one, ...)
        name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
        return _library(getattr(obj, "__module__", None) or type(obj).__module__, name)
    return f"value:{_value(obj, stack)}"


def _value(obj, stack: list) -> str:
    """A constant's content: plain values and containers of them; for anything else its
    type (a path, for one, differs between clones and must not enter a key)."""
    if isinstance(obj, enum.Enum):
        return repr(obj)
    if isinstance(obj, _PLAIN):
        return repr(obj)
    if isinstance(obj, (tuple, list, set, frozenset)):
        items = [_value(v, stack) for v in obj]
        if isinstance(obj, (set, frozenset)):
            items = sorted(items)
        return f"{type(obj).__name__}({', '.join(items)})"
    if isinstance(obj, dict):
        items = sorted(
            f"{_value(k, stack)}: {_value(v, stack)}" for k, v in obj.items()
        )
        return "dict(" + ", ".join(items) + ")"
    if isinstance(
        obj, (types.FunctionType, type, types.ModuleType, types.BuiltinFunctionType)
    ):
        return _describe(obj, stack)
    if isinstance(obj, PurePath):
        return "path"
    kind = type(obj)
    if _in_package(kind):
        fields = vars(obj) if dataclasses.is_dataclass(obj) else {}
        return f"instance:{_digest_one(kind, stack)}{_value(fields, stack)}"
    return f"instance:{kind.__module__}.{kind.__qualname__}"


@functools.lru_cache(maxsize=None)
def _library_imports(module) -> dict:
    """The names ``module`` binds by importing from a library, each with the dotted
    path it was imported as (``F`` -> ``torch.nn.functional``; ``tqdm`` ->
    ``tqdm.auto.tqdm``): what the code asks for, whichever object the environment then
    hands it."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return {k: v for k, v in names.items() if v.split(".")[0] != PACKAGE}


@functools.lru_cache(maxsize=None)
def _source_of(obj) -> tuple[str, dict]:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as error:
        raise ValueError(
            f"code_digest: cannot read the source of {obj!r} ({error})"
        ) from None
    scope = dict(getattr(inspect.getmodule(obj), "__dict__", {}))
    if isinstance(obj, types.FunctionType) and obj.__closure__:
        scope.update(inspect.getclosurevars(obj).nonlocals)
    return source, scope


#: Digests computed so far, by object - only of objects outside every cycle: a member of
#: a cycle is digested afresh from each root, so a digest never depends on which root
#: was read first.
_memo: dict = {}


def _digest_one(obj, stack: list | None = None) -> str:
    reason = getattr(obj, "__keyed_elsewhere__", None)
    obj = _unwrap(obj)
    reason = reason or getattr(obj, "__keyed_elsewhere__", None)
    if reason is not None:
        return (  # the reason is for the reader: rewording it re-keys nothing
            "keyed elsewhere"
        )
    if obj in _memo:
        return _memo[obj]
    stack = [] if stack is None else stack
    frames = [frame for frame, _ in stack]
    if (
        obj in frames
    ):  # recursion (a function calling itself, two classes naming each other)
        depth = frames.index(obj)
        for frame in stack[
            depth:
        ]:  # every member of the cycle: its digest depends on the entry
            frame[1].add(depth)
        return "recursive"
    entry = (obj, set())
    stack.append(entry)
    try:
        source, scope = _source_of(obj)
        tree = _strip(ast.parse(source))
        parts = []
        if isinstance(obj, type):  # package base classes shape their subclasses
            parts += [
                _digest_one(base, stack)
                for base in obj.__mro__[1:]
                if _in_package(base)
            ]
        imports = _library_imports(inspect.getmodule(obj))
        local = _bound_names(tree) - {"__class__"}
        tree = _Resolver(scope, local, stack, imports).visit(tree)
        parts.append(ast.dump(tree, annotate_fields=False, include_attributes=False))
    finally:
        stack.pop()
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    if not entry[1]:  # in no cycle: the same from any root
        _memo[obj] = digest
    return digest


def code_digest(*objects) -> str:
    """Digest of the code behind ``objects`` (functions and classes of this package),
    each with everything it calls in the package; see the module's docstring for what
    changes it.
    """
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(_digest_one(obj).encode() + b"\0")
    return digest.hexdigest()[:16]
