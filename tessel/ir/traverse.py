"""Traversal of IR trees: pre-order walks, collecting nodes of a type, free variables, substitution.

Re-exported by tessel.ir.nodes, where most callers import them from.

>>> from tessel.ir.nodes import Var
>>> i = Var("i")
>>> sorted(v.name for v in free_vars(i * 2 + Var("j")))
['i', 'j']
"""

from __future__ import annotations

from typing import Iterator

from tessel.ir.nodes import For, LetStmt, Node, Var
from tessel.ir.rewrite import rewrite


def walk(node: Node) -> Iterator[Node]:
    """All nodes of a tree, pre-order (shared subtrees are visited each time they occur)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children()))


def collect(node: Node, cls: type | tuple) -> list:
    """Every node of type `cls` in the tree, pre-order."""
    return [n for n in walk(node) if isinstance(n, cls)]


def free_vars(node: Node) -> set[Var]:
    """Variables used in `node` but not bound inside it (by For or LetStmt)."""
    used: set[Var] = set()
    bound: set[Var] = set()
    for n in walk(node):
        if isinstance(n, Var):
            used.add(n)
        elif isinstance(n, (For, LetStmt)):
            bound.add(n.var)
    return used - bound


def substitute(node: Node, mapping: dict) -> Node:
    """Replace variables (or any sub-trees) by the nodes `mapping` gives for them.

    >>> i = Var("i")
    >>> str(substitute(i + 1, {i: Var("j") * 2}))
    '((j * 2) + 1)'
    """
    if not mapping:
        return node
    return rewrite(node, lambda n: mapping.get(n), fixpoint=False)
