"""Mutation of tessel's own source, to measure how many real bugs the fuzzer would catch.

`sites(module)` lists the mechanical mutations of a module's source: flipped comparisons
(`<` <-> `<=`, `>` <-> `>=`, `==` <-> `!=`), swapped arithmetic operators (`+` <-> `-`,
`*` -> `//`, `//` -> `*`), off-by-one integer constants (`n` -> `n + 1`), and dropped statements
(an assignment or call statement replaced by `pass`). `apply(module, site)` recompiles the module
with that one change and rebinds its functions in place (callers that look functions up through
the module or the pass registry get the mutant; names imported elsewhere by value keep the
original, so a few sites are inert: the selection step filters those out).

As a plugin (`tessel fuzz --plugin tessel.fuzz.mutant`), importing this module applies the mutant
named by the environment variable `TESSEL_FUZZ_MUTANT` (`module:site`) in the campaign and in
each worker, which inherit the environment.

Example:
    >>> s = sites("tessel.passes.dce")
    >>> len(s) > 10 and s[0].kind in KINDS
    True
"""

from __future__ import annotations

import ast
import importlib
import os
from dataclasses import dataclass

KINDS = ("compare", "arith", "const", "drop")
_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
_ARITH = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}


@dataclass(frozen=True)
class Site:
    module: str
    index: int
    kind: str
    line: int
    text: str  # the source line, for the report

    @property
    def name(self) -> str:
        return f"{self.module}:{self.index}"


_FROZEN: dict = {}  # module -> (path, source) read by freeze()


def freeze(modules) -> None:
    """Import `modules` and read their sources now: `sites` and `apply` use these texts from then on,
    so an evaluation that runs for many minutes is not thrown off by someone editing the files
    meanwhile (a site's index would then name another mutation, and a mutant re-executing the new
    file would change more than its one spot). Forked children inherit the frozen texts."""
    for m in modules:
        importlib.import_module(m)
        _FROZEN[m] = _read(m)


def _read(module: str) -> tuple[str, str]:
    spec = importlib.util.find_spec(module)
    path = spec.origin
    with open(path) as f:
        return path, f.read()


def _source(module: str) -> tuple[str, str]:
    return _FROZEN.get(module) or _read(module)


def _candidates(tree):
    """(kind, node, field-or-None) for every mutable spot, in a fixed order."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP:
            out.append(("compare", node))
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH and not isinstance(node.left, ast.Constant) \
                and not (isinstance(node.left, ast.JoinedStr) or isinstance(node.right, ast.JoinedStr)):
            out.append(("arith", node))
        elif isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value <= 64:
            out.append(("const", node))
        elif isinstance(node, (ast.FunctionDef, ast.For, ast.If, ast.While, ast.With)):
            for stmt in node.body:
                if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.Expr)) and not (
                        isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):  # not docstrings
                    out.append(("drop", stmt))
    return [(k, n) for k, n in out if getattr(n, "lineno", None) is not None]


def sites(module: str) -> list[Site]:
    """The mutation sites of a module (their order is stable for a given source)."""
    path, src = _source(module)
    lines = src.splitlines()
    tree = ast.parse(src, path)
    return [Site(module, i, kind, n.lineno, lines[n.lineno - 1].strip()[:100])
            for i, (kind, n) in enumerate(_candidates(tree))]


class _Drop(ast.NodeTransformer):
    def __init__(self, target):
        self.target = target

    def generic_visit(self, node):
        super().generic_visit(node)
        for field in ("body", "orelse"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                setattr(node, field, [ast.copy_location(ast.Pass(), s) if s is self.target else s for s in stmts])
        return node


def mutated_code(module: str, index: int):
    """The module's code object with mutation `index` applied."""
    path, src = _source(module)
    tree = ast.parse(src, path)
    kind, node = _candidates(tree)[index]
    if kind == "compare":
        node.ops = [_CMP[type(node.ops[0])]()]
    elif kind == "arith":
        node.op = _ARITH[type(node.op)]()
    elif kind == "const":
        node.value = node.value + 1
    else:
        tree = _Drop(node).visit(tree)
    ast.fix_missing_locations(tree)
    return compile(tree, path, "exec")


def apply(module: str, index: int) -> None:
    """Re-execute `module` with mutation `index`, in the module's own namespace (functions and
    classes rebound in place)."""
    mod = importlib.import_module(module)
    exec(mutated_code(module, index), mod.__dict__)  # noqa: S102 - that is the point


def _from_env() -> None:
    spec = os.environ.get("TESSEL_FUZZ_MUTANT", "").strip()
    if spec:
        module, _, index = spec.rpartition(":")
        apply(module, int(index))


_from_env()

__all__ = ["KINDS", "Site", "apply", "freeze", "mutated_code", "sites"]
