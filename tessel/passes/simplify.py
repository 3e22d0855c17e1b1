"""Expression and statement simplification, as rules of the one rewrite engine.

`simplify(node, ranges)` rewrites any node (expression, statement, kernel) with a RuleSet built
for the call. The rules' shared context, `_Context`, holds the variable ranges (the ones given
plus those of every loop and let in the node: names are identities in this IR, so a variable's
range holds wherever it is used) and per-call caches of intervals and linear forms.

What the rules do:
- constant folding (`simplify_fold.py`) of every operator, cast and exact math call, with the
  interpreter's meaning:
  integers wrap at their width, floordiv/floormod round toward minus infinity, floats are rounded
  once, correctly, to their dtype (computed in float64, which is exact or innocuous for
  + - * / sqrt on float16/bfloat16/float32 inputs, then rounded by `round_float`); nothing that
  depends on a library's accuracy (exp, tanh, ...) or on NaN conventions (float min/max) folds;
- identities that hold for every value: x*1, x/1, x-0 on floats (not x+0.0: -0.0 + 0.0 is +0.0),
  double negation, select with a constant condition or equal branches, min/max of equal
  operands, and/or with constants, casts to the same dtype or of constants;
- integer add/sub/mul are rewritten to a canonical linear form (terms collected, constants
  gathered): exact under wrap-around, since integers modulo 2**bits form a ring;
- floordiv/floormod, min/max and comparisons decided or reduced with variable ranges:
  `(i*8 + j) // 8 -> i`, `i < 8 -> true` for i in [0, 7]. These rules are used only where the
  ranges prove that the expression's linear form does not wrap, so they never change what the
  interpreter computes;
- statements: loops of extent 1 are replaced by their body (variable = 0), loops of extent <= 0
  and ifs with constant conditions are resolved, lets of constants or variables are substituted,
  Seqs are flattened and emptied statements dropped. GPU-bound loops are kept even at extent 1:
  they say how the work maps onto the launch.

Float expressions are never reassociated: that would change results.

Example:
    >>> from tessel.ir.nodes import Var
    >>> i, j = Var("i"), Var("j")
    >>> e = simplify(((i * 8 + j) // 8) * 4 + (i * 8 + j) % 8, {i: (0, 3), j: (0, 7)})
    >>> e == i * 4 + j
    True
"""

from __future__ import annotations

import math

from tessel.ir.dtypes import bits, int_range, is_bool, is_float, is_int, is_unsigned, wrap
from tessel.passes.simplify_fold import (  # noqa: F401 - fold_*, round_float: re-exported
    _HOLDS, _NEGATED, _coef, _fvalue, fold_binary, fold_call, fold_cast, round_float,
)
from tessel.ir.nodes import (
    COMPARE_OPS, THREAD_AXES, Binary, Call, Cast, Const, Expr, For, IfThenElse, Kernel, LetStmt, Node, Not, Pat, Rule,
    RuleSet, Select, Seq, Stmt, Var, rewrite, substitute,
)

EMPTY = Seq(())


def simplify(node: Node, ranges: dict | None = None) -> Node:
    """Simplify `node` (an Expr, Stmt or Kernel). `ranges` gives inclusive ranges {Var: (lo, hi)}
    of free variables; loops and lets inside `node` add their own.

    >>> from tessel.ir.nodes import Var
    >>> i = Var("i")
    >>> simplify((i * 4 + 1) - i * 4)
    Const(value=1, dtype='int32')
    >>> simplify((i < 8) & (i >= 0), {i: (0, 7)})
    Const(value=True, dtype='bool')
    """
    ctx = _Context(_collect_ranges(node, ranges or {}))
    return rewrite(node, ctx.rules())


# ---------------------------------------------------------------------------------------------
# Ranges
# ---------------------------------------------------------------------------------------------


def _collect_ranges(node: Node, given: dict) -> dict:
    """`given` plus the range of every loop variable (extent n: [0, n-1]) and integer let variable
    in `node`; a name bound twice gets the hull of its ranges, or none if one is unknown."""
    ranges = dict(given)
    unknown = set()
    bounds = _Context(ranges)  # its intervals are wrap-aware; it sees `ranges` grow

    def add(var: Var, r):
        if r is None:
            unknown.add(var)
        elif var in ranges:
            lo, hi = ranges[var]
            ranges[var] = (min(lo, r[0]), max(hi, r[1]))
        else:
            ranges[var] = r

    stack = [node]
    while stack:  # pre-order over statements: outer loops come first, so extents can use their ranges
        n = stack.pop()
        stack.extend(reversed([c for c in n.children() if isinstance(c, (Stmt, Kernel))]))
        if isinstance(n, For):
            ext = bounds.interval(n.extent)
            add(n.var, (0, ext[1] - 1) if ext is not None and ext[1] >= 1 else None)
        elif isinstance(n, LetStmt) and is_int(n.var.dtype):
            add(n.var, bounds.interval(n.value) if n.value.dtype == n.var.dtype else None)
    for v in unknown:
        ranges.pop(v, None)
    return ranges


# ---------------------------------------------------------------------------------------------
# The rules' context
# ---------------------------------------------------------------------------------------------


class _Context:
    """Variable ranges and the per-call caches the rules share (built anew for each call)."""

    def __init__(self, ranges: dict):
        self.ranges = ranges
        self._intervals: dict = {}
        self._linear: dict = {}
        self._canonical: set = set()  # results of `canonical`, which it leaves as they are

    # -- analysis -----------------------------------------------------------------------------

    def interval(self, e: Expr) -> tuple[int, int] | None:
        """Bounds of the value the (wrapping) evaluation of integer `e` gives, or None."""
        r = self._intervals.get(e, False)
        if r is False:
            r = self._interval(e)
            if r is not None and is_int(e.dtype):
                lo, hi = int_range(e.dtype)
                if r[0] < lo or r[1] > hi:  # it may wrap: no bound from this expression
                    r = None
            self._intervals[e] = r
        return r

    def _interval(self, e: Expr):
        if not is_int(e.dtype):
            return None
        if isinstance(e, Const):
            return e.value, e.value
        if isinstance(e, Var):
            return self.ranges.get(e)
        if isinstance(e, Cast):
            return self.interval(e.value) if is_int(e.value.dtype) else (0, 1) if is_bool(e.value.dtype) else None
        if isinstance(e, Select):
            t, f = self.interval(e.t), self.interval(e.f)
            return None if t is None or f is None else (min(t[0], f[0]), max(t[1], f[1]))
        if not isinstance(e, Binary):
            return None
        if e.op in ("add", "sub", "mul"):
            form = self.linear(e)
            if form[0] != {e: 1}:  # a product of two non-constants is its own atom: use its operands
                return self.form_interval(form)
        a, b = self.interval(e.a), self.interval(e.b)
        if a is None or b is None:
            return None
        if e.op == "mul":
            corners = (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])
            return min(corners), max(corners)
        if e.op == "min":
            return min(a[0], b[0]), min(a[1], b[1])
        if e.op == "max":
            return max(a[0], b[0]), max(a[1], b[1])
        if e.op in ("floordiv", "floormod") and b[0] == b[1] and b[0] > 0:
            c = b[0]
            if e.op == "floordiv":
                return a[0] // c, a[1] // c
            if a[0] // c == a[1] // c:
                return a[0] % c, a[1] % c
            return 0, c - 1
        return None

    def linear(self, e: Expr) -> tuple[dict, int]:
        """Integer `e` as ({atom: coefficient}, constant), coefficients wrapped to e's width: the
        atoms are the sub-expressions that are not add/sub/mul-by-constant."""
        form = self._linear.get(e)
        if form is None:
            form = self._linear_uncached(e)
            self._linear[e] = form
        return form

    def _linear_uncached(self, e: Expr):
        if isinstance(e, Const):
            return {}, e.value
        if isinstance(e, Binary) and e.op in ("add", "sub", "mul") and e.a.dtype == e.b.dtype == e.dtype:
            (ta, ca), (tb, cb) = self.linear(e.a), self.linear(e.b)
            if e.op == "mul":
                if not ta:
                    return _scale(tb, cb, ca, e.dtype)
                if not tb:
                    return _scale(ta, ca, cb, e.dtype)
                return {e: 1}, 0
            return _combine(ta, ca, tb, cb, 1 if e.op == "add" else -1, e.dtype)
        return {e: 1}, 0

    def form_interval(self, form) -> tuple[int, int] | None:
        """Bounds of a linear form evaluated without wrap-around, or None."""
        terms, lo = form
        hi = lo
        for atom, k in terms.items():
            r = self.interval(atom)
            if r is None:
                return None
            x, y = k * r[0], k * r[1]
            lo, hi = lo + min(x, y), hi + max(x, y)
        return lo, hi

    def exact_form(self, e: Expr):
        """e's linear form when the ranges prove evaluating e never wraps (so the form's
        unbounded value is e's value), else None."""
        form = self.linear(e)
        r = self.form_interval(form)
        lo, hi = int_range(e.dtype)
        return form if r is not None and lo <= r[0] and r[1] <= hi else None

    def difference(self, a: Expr, b: Expr) -> tuple[int, int] | None:
        """Bounds of a - b (true integers) when both are exactly known linear forms, else None."""
        fa, fb = self.exact_form(a), self.exact_form(b)
        if fa is None or fb is None:
            return None
        terms = dict(fa[0])
        for atom, k in fb[0].items():
            terms[atom] = terms.get(atom, 0) - k
        return self.form_interval(({t: k for t, k in terms.items() if k}, fa[1] - fb[1]))

    # -- the rules ----------------------------------------------------------------------------

    def rules(self) -> RuleSet:
        x, c = Pat(name="x"), Pat(Const, name="c")

        def op(name, **fields):
            return Pat(Binary, op=name, **fields)

        rules = [
            Rule(Pat(Binary, a=Pat(Const), b=Pat(Const)), lambda node: fold_binary(node.op, node.a, node.b)),
            Rule(Pat(Cast, value=Pat(Const)), lambda node: fold_cast(node.dtype, node.value)),
            Rule(Pat(Call, args=(Pat(Const),)), lambda node: fold_call(node.func, node.args[0])),
            Rule(Pat(Not, a=Pat(Const)), lambda node: Const(not node.a.value, "bool")),
            # Integer arithmetic: one canonical linear form.
            *(Rule(op(o), self.canonical) for o in ("add", "sub", "mul")),
            # Float identities that hold for every value, NaN and signed zeros included.
            Rule(op("mul", a=x, b=c), lambda x, c, **_: x if _is_float_const(c, 1.0) else None),
            Rule(op("mul", a=c, b=x), lambda x, c, **_: x if _is_float_const(c, 1.0) else None),
            Rule(op("div", a=x, b=c), lambda x, c, **_: x if _is_float_const(c, 1.0) else None),
            Rule(op("sub", a=x, b=c), lambda x, c, **_: x if _is_zero(c, sign=1.0) else None),
            Rule(op("add", a=x, b=c), lambda x, c, **_: x if _is_zero(c, sign=-1.0) else None),
            Rule(op("add", a=c, b=x), lambda x, c, **_: x if _is_zero(c, sign=-1.0) else None),
            # Integer division.
            Rule(op("floordiv", a=op("floordiv", a=x, b=Pat(Const, name="c1")), b=Pat(Const, name="c2")),
                 self.nested_floordiv),
            Rule(op("floormod", a=op("floormod", a=x, b=Pat(Const, name="c1")), b=Pat(Const, name="c2")),
                 lambda x, c1, c2, **_: x % c2 if is_int(x.dtype) and c1.dtype == c2.dtype == x.dtype
                 and c2.value > 0 and c1.value > 0 and c1.value % c2.value == 0 else None),
            Rule(op("floordiv", b=c), self.divmod),
            Rule(op("floormod", b=c), self.divmod),
            # min / max.
            Rule(op("min", a=x, b=x), lambda x, **_: x),
            Rule(op("max", a=x, b=x), lambda x, **_: x),
            Rule(op("min"), self.minmax),
            Rule(op("max"), self.minmax),
            # Comparisons and logic.
            *(Rule(op(o), self.compare) for o in COMPARE_OPS),
            Rule(op("and", a=c, b=x), lambda x, c, **_: x if c.value else c),
            Rule(op("and", a=x, b=c), lambda x, c, **_: x if c.value else c),
            Rule(op("or", a=c, b=x), lambda x, c, **_: c if c.value else x),
            Rule(op("or", a=x, b=c), lambda x, c, **_: c if c.value else x),
            Rule(op("and", a=x, b=x), lambda x, **_: x),
            Rule(op("or", a=x, b=x), lambda x, **_: x),
            Rule(Pat(Not, a=Pat(Not, a=x)), lambda x, **_: x),
            Rule(Pat(Not, a=Pat(Binary, name="cmp")), _negate_comparison),
            # Select.
            Rule(Pat(Select, cond=c), lambda node, c, **_: node.t if c.value else node.f),
            Rule(Pat(Select, t=x, f=x), lambda x, **_: x),
            Rule(Pat(Select, cond=Pat(Not, a=x)), lambda node, x, **_: Select(x, node.f, node.t)),
            Rule(Pat(Select, t=Pat(Const, value=True), f=Pat(Const, value=False)), lambda node: node.cond),
            Rule(Pat(Select, t=Pat(Const, value=False), f=Pat(Const, value=True)), lambda node: Not(node.cond)),
            # Casts.
            Rule(Pat(Cast, name="e"), lambda e, **_: e.value if e.value.dtype == e.dtype else None),
            Rule(Pat(Cast, value=Pat(Cast, value=x)),
                 lambda node, x, **_: x if x.dtype == node.dtype and node.value.dtype in _HOLDS.get(x.dtype, ())
                 else None),
            # Statements.
            Rule(Pat(For), _simplify_for),
            Rule(Pat(IfThenElse), _simplify_if),
            Rule(Pat(LetStmt, value=Pat((Const, Var))), lambda node: substitute(node.body, {node.var: node.value})),
            Rule(Pat(Seq), flatten_seq),
        ]
        return _OpRuleSet(rules)

    def canonical(self, node: Binary):
        """Integer add/sub/mul -> its linear form rebuilt canonically (terms in first-seen order,
        positive ones first, the constant last)."""
        if not is_int(node.dtype) or node.b.dtype != node.dtype:
            return None
        if node in self._canonical:
            return None
        terms, k = self.linear(node)
        out = _rebuild(terms, k, node.dtype)
        self._canonical.add(out)
        return out if out != node else None

    def nested_floordiv(self, x, c1, c2, **_):
        """(x // a) // b -> x // (a*b) for positive a, b (a*b must not wrap)."""
        a, b = c1.value, c2.value
        if not is_int(x.dtype) or not c1.dtype == c2.dtype == x.dtype:
            return None
        if a > 0 and b > 0 and a * b <= int_range(x.dtype)[1]:
            return Binary("floordiv", x, Const(a * b, x.dtype))
        return None

    def divmod(self, node: Binary, c: Const, **_):
        """floordiv / floormod by a positive constant, with ranges."""
        e, d, dt, is_div = node.a, c.value, node.dtype, node.op == "floordiv"
        if not is_int(dt) or c.dtype != dt or d <= 0:
            return None
        if d == 1:
            return e if is_div else Const(0, dt)
        terms, k = self.linear(e)
        # e = d*Q + R with every coefficient of R in [0, d)
        q_terms = {t: v // d for t, v in terms.items() if v // d}
        r_terms = {t: v % d for t, v in terms.items() if v % d}
        r_form = (r_terms, k % d)
        exact = self.exact_form(e) is not None
        # e mod d depends only on e mod 2**bits when d divides 2**bits: R stands in for e
        # even when e may wrap.
        pow2 = d & (d - 1) == 0 and d <= int_range(dt)[1]
        if exact or (pow2 and not is_div):
            r = self.form_interval(r_form)
            lo, hi = int_range(dt)
            if r is not None and lo <= r[0] and r[1] <= hi and r[0] // d == r[1] // d:
                m = r[0] // d  # R lies in one block [m*d, m*d + d): the answer is linear
                if is_div:
                    return _rebuild(q_terms, k // d + m, dt)
                return _rebuild(r_terms, k % d - m * d, dt)
            if pow2 and not is_div and r_form != (terms, k):
                return Binary("floormod", _rebuild(r_terms, k % d, dt), c)
        if exact:
            # Pull out only the terms d divides: (d*Q + R) // d == Q + R // d, R unchanged.
            whole = {t: v // d for t, v in terms.items() if v % d == 0}
            if whole:
                rest = ({t: v for t, v in terms.items() if v % d}, k)
                rr = self.form_interval(rest)
                lo, hi = int_range(dt)
                if rr is not None and lo <= rr[0] and rr[1] <= hi:
                    rem = Binary(node.op, _rebuild(*rest, dt), c)
                    return Binary("add", _rebuild(whole, 0, dt), rem) if is_div else rem
        return None

    def minmax(self, node: Binary):
        if not is_int(node.dtype) or node.b.dtype != node.dtype:
            return None
        d = self.difference(node.a, node.b)
        if d is None:
            return None
        if d[1] <= 0:  # a <= b everywhere
            return node.a if node.op == "min" else node.b
        if d[0] >= 0:
            return node.b if node.op == "min" else node.a
        return None

    def compare(self, node: Binary):
        a, b, op = node.a, node.b, node.op
        if a.dtype != b.dtype:
            return None
        if a == b and not is_float(a.dtype):
            return Const(op in ("eq", "le", "ge"), "bool")
        if not is_int(a.dtype):
            return None
        if op in ("eq", "ne"):
            # a - b as a wrapped linear form: a nonzero constant means never equal, wrap or not.
            (ta, ca), (tb, cb) = self.linear(a), self.linear(b)
            terms, k = _combine(ta, ca, tb, cb, -1, a.dtype)
            if not terms:
                return Const((k == 0) == (op == "eq"), "bool")
        d = self.difference(a, b)
        if d is None:
            return None
        lo, hi = d
        decided = {
            "lt": (hi < 0, lo >= 0), "le": (hi <= 0, lo > 0), "gt": (lo > 0, hi <= 0), "ge": (lo >= 0, hi < 0),
            "eq": (lo == hi == 0, lo > 0 or hi < 0), "ne": (lo > 0 or hi < 0, lo == hi == 0),
        }[op]
        if decided[0]:
            return Const(True, "bool")
        if decided[1]:
            return Const(False, "bool")
        return None


# ---------------------------------------------------------------------------------------------
# Rule helpers
# ---------------------------------------------------------------------------------------------


class _OpRuleSet(RuleSet):
    """A RuleSet that also indexes Binary rules by their literal `op`, so an `add` node tries
    only the add rules and the op-agnostic ones (there are about forty Binary rules)."""

    def __init__(self, rules: list[Rule]):
        super().__init__(rules)
        self._by_op: dict[str, list[Rule]] = {}

    def for_node(self, node: Node) -> list[Rule]:
        if not isinstance(node, Binary):
            return super().for_node(node)
        rules = self._by_op.get(node.op)
        if rules is None:
            rules = [r for r in super().for_node(node) if r.pattern.fields.get("op", node.op) == node.op]
            self._by_op[node.op] = rules
        return rules


def _is_float_const(c: Const, value: float) -> bool:
    return is_float(c.dtype) and _fvalue(c) == value


def _is_zero(c: Const, sign: float) -> bool:
    """Whether `c` is the float zero of the given sign (x - 0.0 and x + -0.0 give x back, signed
    zeros included; x + 0.0 does not: -0.0 + 0.0 is +0.0)."""
    return is_float(c.dtype) and c.value == 0.0 and math.copysign(1.0, c.value) == sign


def _negate_comparison(node: Not, cmp: Binary):
    """not (a < b) -> a >= b on integers; not (a == b) -> a != b on any dtype (NaN included)."""
    if cmp.op not in _NEGATED or (is_float(cmp.a.dtype) and cmp.op not in ("eq", "ne")):
        return None
    return Binary(_NEGATED[cmp.op], cmp.a, cmp.b)


def _scale(terms: dict, k: int, s: int, dtype: str):
    out = {t: _coef(v * s, dtype) for t, v in terms.items()}
    return {t: v for t, v in out.items() if v}, _coef(k * s, dtype)


def _combine(ta: dict, ca: int, tb: dict, cb: int, sign: int, dtype: str):
    terms = dict(ta)
    for t, v in tb.items():
        terms[t] = _coef(terms.get(t, 0) + sign * v, dtype)
    return {t: v for t, v in terms.items() if v}, _coef(ca + sign * cb, dtype)


def _rebuild(terms: dict, k: int, dtype: str) -> Expr:
    """The expression of a linear form: positive terms in order, then negative ones subtracted,
    then the constant. Rebuilding the linear form of the result gives the result again."""
    lo = -(1 << (bits(dtype) - 1))  # the residue that has no negation
    k = _coef(k, dtype)

    def term(t, v):
        return t if v == 1 else Binary("mul", t, Const(wrap(v, dtype), dtype))

    out = None
    for t, v in terms.items():
        v = _coef(v, dtype)
        if v > 0 or v == lo:
            out = term(t, v) if out is None else Binary("add", out, term(t, v))
    for t, v in terms.items():
        v = _coef(v, dtype)
        if v < 0 and v != lo:
            if out is None and is_unsigned(dtype):
                # start at the constant mod 2**bits: TVM bounds an unsigned `0 - x` by [0, 0] and folds
                # it away, so -x is written (max - x) + 1
                out, k = (Const(wrap(k, dtype), dtype), 0) if k else (Const(wrap(-1, dtype), dtype), 1)
            elif out is None:
                out, k = (Const(k, dtype), 0) if k > 0 else (Const(0, dtype), k)
            out = Binary("sub", out, term(t, -v))
    if out is None:
        return Const(wrap(k, dtype), dtype)
    if k > 0 or k == lo:
        out = Binary("add", out, Const(wrap(k, dtype), dtype))
    elif k < 0:
        out = Binary("sub", out, Const(-k, dtype))
    return out


def _is_empty(s) -> bool:
    return isinstance(s, Seq) and not s.stmts


def _simplify_for(node: For):
    ext = node.extent
    if _is_empty(node.body):
        return EMPTY
    if isinstance(ext, Const) and ext.value <= 0:
        return EMPTY
    if isinstance(ext, Const) and ext.value == 1 and node.kind not in THREAD_AXES:
        return substitute(node.body, {node.var: Const(0, node.var.dtype)})
    return None


def _simplify_if(node: IfThenElse):
    if isinstance(node.cond, Const):
        return node.then if node.cond.value else (node.else_ if node.else_ is not None else EMPTY)
    if node.else_ is not None and _is_empty(node.else_):
        return IfThenElse(node.cond, node.then, None)
    if _is_empty(node.then):
        return EMPTY if node.else_ is None else IfThenElse(Not(node.cond), node.else_, None)
    return None


def flatten_seq(node: Seq):
    """Rule body: a Seq with nested or empty Seqs flattened, a one-statement Seq unwrapped; None
    when there is nothing to do.

    >>> from tessel.ir.nodes import Barrier
    >>> flatten_seq(Seq((Seq(()), Seq((Barrier(),))))) == Barrier()
    True
    """
    if not any(isinstance(s, Seq) for s in node.stmts) and len(node.stmts) != 1:
        return None
    flat = []
    for s in node.stmts:
        flat.extend(s.stmts if isinstance(s, Seq) else (s,))
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


__all__ = [
    "EMPTY", "flatten_seq", "fold_binary", "fold_call", "fold_cast", "int_range", "round_float", "simplify", "wrap",
]
