"""The one rewrite engine of the tensor IR: patterns (`Pat`), rules (`Rule`, `RuleSet`) and
`rewrite`, which applies them bottom-up (to a fixpoint by default) with memoisation. Passes and
schedule primitives change trees through it (DESIGN.md, principle 1). `tessel.ir.nodes`
re-exports every name here.

Example:
    >>> from tessel.ir.nodes import Binary, Const, Var
    >>> x = Var("x", "float32")
    >>> double = Rule(Pat(Binary, op="mul", a=Pat(name="v"), b=Pat(Const, value=2.0)),
    ...               lambda v, **_: v + v)
    >>> str(rewrite(x * 2.0, [double]))
    '(x + x)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tessel.ir.nodes import Node



class Pat:
    """A pattern over IR nodes.

    `Pat(cls, name=..., **fields)` matches a node that is an instance of `cls` (any node when cls
    is None) and whose named fields match: a field given as a Pat matches recursively, a tuple of
    Pats matches a tuple field element by element, anything else must be equal. `name` captures
    the matched node; a name captured twice must match equal nodes.

    >>> from tessel.ir.nodes import Binary, Var
    >>> x = Var("x")
    >>> Pat(Binary, op="sub", a=Pat(name="y"), b=Pat(name="y")).match(x - x)
    {'y': Var(name='x', dtype='int32')}
    """

    def __init__(self, cls: type | tuple | None = None, name: str | None = None, **fields):
        self.cls = cls
        self.name = name
        self.fields = fields

    def match(self, node, captures: dict | None = None) -> dict | None:
        captures = {} if captures is None else captures
        return captures if self._match(node, captures) else None

    def _match(self, node, caps: dict) -> bool:
        if self.cls is not None and not isinstance(node, self.cls):
            return False
        for fname, fpat in self.fields.items():
            if not hasattr(node, fname):
                return False
            if not _match_value(fpat, getattr(node, fname), caps):
                return False
        if self.name is not None:
            if self.name in caps and caps[self.name] != node:
                return False
            caps[self.name] = node
        return True


def _match_value(pat, value, caps: dict) -> bool:
    if isinstance(pat, Pat):
        return pat._match(value, caps)
    if isinstance(pat, tuple) and any(isinstance(p, Pat) for p in pat):
        return isinstance(value, tuple) and len(pat) == len(value) and all(
            _match_value(p, v, caps) for p, v in zip(pat, value))
    return type(pat) is type(value) and pat == value if isinstance(pat, (int, float, bool)) else pat == value


@dataclass(frozen=True)
class Rule:
    """A pattern and the function that builds its replacement from the captures (and `node`,
    the matched node). The function returns None when the rule does not apply after all."""

    pattern: Pat
    fn: Callable

    def apply(self, node: Node):
        caps = self.pattern.match(node)
        if caps is None:
            return None
        return self.fn(node=node, **caps)


class RuleSet:
    """Rules indexed by the node class their pattern requires, so a rewrite tries only the rules
    that can match. Build once per pass; it holds no state between rewrites."""

    def __init__(self, rules: list[Rule]):
        self.rules = list(rules)
        self._by_class: dict[type, list[Rule]] = {}

    def for_node(self, node: Node) -> list[Rule]:
        cls = type(node)
        rules = self._by_class.get(cls)
        if rules is None:
            rules = [r for r in self.rules if r.pattern.cls is None or issubclass(cls, r.pattern.cls)]
            self._by_class[cls] = rules
        return rules

    def __call__(self, node: Node):
        for rule in self.for_node(node):
            out = rule.apply(node)
            if out is not None and out is not node:
                return out
        return None


def rewrite(node: Node, rules, fixpoint: bool = True, max_steps: int = 1_000_000) -> Node:
    """Rewrite a tree bottom-up with `rules` (a list of Rules, a RuleSet, or a function
    node -> replacement or None).

    Children are rewritten before their parent. With `fixpoint`, a replacement is itself
    rewritten again until no rule applies; without it, each node is rewritten at most once (what
    substitution needs). Equal subtrees are rewritten once (results are memoised by structure).
    """
    if isinstance(rules, list):
        rules = RuleSet(rules)
    memo: dict[Node, Node] = {}
    steps = [0]

    def visit(n: Node) -> Node:
        done = memo.get(n)
        if done is not None:
            return done
        kids = n.children()
        out = n
        if kids:
            new_kids = [visit(k) for k in kids]
            if any(a is not b for a, b in zip(new_kids, kids)):
                out = n.with_children(new_kids)
        replaced = rules(out)
        if replaced is not None and replaced != out:
            steps[0] += 1
            if steps[0] > max_steps:
                raise RuntimeError("rewrite did not reach a fixpoint (rules cycle?)")
            out = visit(replaced) if fixpoint else replaced
        memo[n] = out
        return out

    return visit(node)


__all__ = ["Pat", "Rule", "RuleSet", "rewrite"]
