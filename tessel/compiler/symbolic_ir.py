"""Symbolic kernels from concrete ones: the IR of one kernel lowered and scheduled at several sizes
of a dynamic dimension, generalised into one IR whose extents are expressions of a scalar `n`.

Why this way: the op lowerings and the CPU schedules work on int extents (they pick tile factors,
peel remainders and vectorize by looking at them). Rather than teach every one of them symbols,
the driver lowers and schedules a group at three prime sizes P1 > P2 > P3 of the dynamic
dimension (primes: no tile divides them, so every split keeps its guarded tail, and they rarely
coincide with the model's own constants), then walks the three trees in step (`generalize`).
Where they agree, the node is kept; where only integer constants (or buffer extents) differ, the
three values must be one formula `(a * n + b) // d` of the sizes (small a, b, d: the extent itself,
`n - 1`, a fused `8 * n`, a split's `ceil(n / 8)`), which replaces them; a float constant that is
`r / P` at every size (a mean over the dynamic axis) becomes `r / float(n)`. Anything else that
differs (a schedule that tiled differently at one size, a float that is no such ratio) means the
kernel does not generalise: `generalize` returns None, with the reason in `why`. A formula fitted
through three points is an extrapolation, so the driver also checks the symbolic model against
the per-shape one on random inputs before it uses it (`tessel.compiler.model_symbolic`).

`instantiate(tree, n, value)` is the other way: every expression of `n` becomes its int constant
(used to schedule a kernel per shape where only its unscheduled IR generalises).

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> def kern(p):
    ...     i = Var("i"); A, B = Buffer("A", (p, 8)), Buffer("B", (p, 8))
    ...     return For(i, p - 1, Store(B, (i, 0), A[i, 0]))
    >>> n = Var("n")
    >>> g = generalize([kern(31), kern(29), kern(23)], [31, 29, 23], n)
    >>> from tessel.ir.text import to_text
    >>> to_text(g.extent), g.body.buffer.shape[1]
    ('(n + -1)', 8)
    >>> instantiate(g, n, 5).extent
    Const(value=4, dtype='int32')
"""

from __future__ import annotations

import dataclasses
import math

from tessel.ir.dtypes import is_float, is_int
from tessel.ir.nodes import Binary, Cast, Const, Expr, Node, Var, free_vars

MAX_FACTOR = 64  # largest multiplier a and divisor d a formula may use
MAX_OFFSET = 64  # largest |b|


class NotGeneral(Exception):
    """The trees differ in a way no formula of the size explains (the message says where)."""


def generalize(trees: list, sizes: list, n: Var, why: list | None = None):
    """One tree for the concrete `trees` (built at `sizes` of one dimension), their differing
    constants replaced by expressions of `n`; None when they do not generalise (the reason is
    appended to `why` when given). See the module docstring."""
    try:
        g = _Generalizer(sizes, n)
        g.trees = [t for t in trees if isinstance(t, Node)]
        return g.gen(trees)
    except NotGeneral as e:
        if why is not None:
            why.append(str(e))
        return None


class _Generalizer:
    def __init__(self, sizes: list, n: Var):
        if len(set(sizes)) != len(sizes) or len(sizes) < 2:
            raise ValueError(f"generalize needs distinct sizes, got {sizes}")
        self.sizes, self.n = list(sizes), n
        self.memo: dict = {}  # id of the first tree's node -> result (shared subtrees: buffers)
        self.formulas: dict = {}  # value tuple -> Expr
        self.trees: list = []
        self.divisors = None  # candidate divisors d (see _fit), from the trees' common constants

    def gen(self, xs: list):
        x0 = xs[0]
        key = id(x0)
        hit = self.memo.get(key)
        if hit is not None and hit[0] == xs:
            return hit[1]
        out = self._gen(xs)
        if isinstance(x0, Node):
            self.memo[key] = (xs, out)
        return out

    def _gen(self, xs: list):
        x0 = xs[0]
        if all(x is x0 for x in xs[1:]):
            return x0
        if any(type(x) is not type(x0) for x in xs):
            other = next(type(x).__name__ for x in xs if type(x) is not type(x0))
            raise NotGeneral(f"a {type(x0).__name__} is a {other} at another size")
        if isinstance(x0, Const):
            if all(x == x0 for x in xs):
                return x0
            return self.constant(xs)
        if isinstance(x0, bool) or x0 is None or isinstance(x0, str):
            if all(x == x0 for x in xs):
                return x0
            raise NotGeneral(f"{x0!r} differs between sizes ({', '.join(repr(x) for x in xs)})")
        if isinstance(x0, int):
            if all(x == x0 for x in xs):
                return x0
            return self.formula(tuple(xs), "int32")
        if isinstance(x0, float):
            if all(x == x0 for x in xs):
                return x0
            raise NotGeneral(f"the float {x0!r} differs between sizes")
        if isinstance(x0, (tuple, list)):
            if any(len(x) != len(x0) for x in xs):
                raise NotGeneral(f"a sequence of {len(x0)} has another length at another size")
            out = [self.gen([x[k] for x in xs]) for k in range(len(x0))]
            return type(x0)(out)
        if isinstance(x0, dict):
            if any(x.keys() != x0.keys() for x in xs):
                raise NotGeneral("a mapping has other keys at another size")
            return {k: self.gen([x[k] for x in xs]) for k in x0}
        if isinstance(x0, Node) and dataclasses.is_dataclass(x0):
            if all(x == x0 for x in xs):
                return x0
            fields = {f.name: self.gen([getattr(x, f.name) for x in xs]) for f in dataclasses.fields(x0)
                      if f.init}
            return type(x0)(**fields)
        if all(x == x0 for x in xs):
            return x0
        raise NotGeneral(f"a {type(x0).__name__} differs between sizes")

    def constant(self, xs: list) -> Expr:
        c0 = xs[0]
        if any(x.dtype != c0.dtype for x in xs):
            raise NotGeneral(f"a constant has dtypes {sorted({x.dtype for x in xs})} at different sizes")
        values = tuple(x.value for x in xs)
        if is_int(c0.dtype) and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return self.formula(values, c0.dtype)
        if is_float(c0.dtype):
            r = [v * p for v, p in zip(values, self.sizes)]
            k = round(r[0])
            if k != 0 and all(math.isclose(x, k, rel_tol=1e-5) for x in r):  # r / n: a mean over the axis
                return Binary("div", Const(float(k), c0.dtype), Cast(c0.dtype, self.n))
            raise NotGeneral(f"the {c0.dtype} constant {values[0]!r} is {values[1]!r} at another size, "
                             f"not a ratio of the size")
        raise NotGeneral(f"the {c0.dtype} constant {values[0]!r} differs between sizes")

    def formula(self, values: tuple, dtype: str) -> Expr:
        """The first `(a * n + b) // d` (d = 1 first, then the smallest d, a, |b|) equal to
        `values` at every size."""
        hit = self.formulas.get((values, dtype))
        if hit is not None:
            return hit
        if self.divisors is None:
            self.divisors = _int_constants(self.trees) if self.trees else set()
        found = _fit(values, self.sizes, self.divisors)
        if found is None:
            raise NotGeneral(f"the extents {', '.join(map(str, values))} at sizes "
                             f"{', '.join(map(str, self.sizes))} are no formula (a * n + b) // d of the size")
        a, b, d = found
        n = self.n
        e = n if a == 1 else Binary("mul", n, Const(a, n.dtype))
        if b:
            e = Binary("add", e, Const(b, n.dtype))
        if d != 1:
            e = Binary("floordiv", e, Const(d, n.dtype))
        if dtype != n.dtype:
            e = Cast(dtype, e)
        self.formulas[(values, dtype)] = e
        return e


def _fit(values: tuple, sizes: list, divisors=()):
    """(a, b, d) with (a * p + b) // d == v for every (p, v), or None.

    Three points admit many formulas (ceil(n / 8) and n // 7 agree at 31, 29 and 23), so the search
    is ordered by what schedules produce: d = 1 first (n, n - 1, 8 * n), then the divisors given
    (the split factors: constants of the kernel itself), smallest first, with b a multiple of d or
    one less (floor and ceiling: n // 8, (n + 7) // 8) before any other offset."""
    p0, v0 = sizes[0], values[0]
    slope, rest = divmod(values[1] - v0, sizes[1] - p0)
    if not rest and slope >= 1:  # d = 1 in closed form: any a (a fused extent n * 8 * m at m = 97), any b
        b = v0 - slope * p0
        if all(slope * p + b == v for p, v in zip(sizes, values)):
            return slope, b, 1
    for d in sorted(x for x in set(divisors) if 1 < x <= MAX_FACTOR):
        for a in range(1, MAX_FACTOR + 1):
            lo = d * v0 - a * p0  # floor((a p0 + b) / d) = v0  <=>  lo <= b <= lo + d - 1
            for b in sorted(range(lo, lo + d), key=lambda b: (b % d not in (0, d - 1), abs(b))):
                if abs(b) > MAX_OFFSET:
                    continue
                if all((a * p + b) // d == v for p, v in zip(sizes, values)):
                    return a, b, d
    return None


def _int_constants(trees: list) -> set:
    """The int constants (Const values and ints in tuples: buffer extents) present in every tree."""
    from tessel.ir.nodes import walk

    common = None
    for t in trees:
        found = set()
        for x in walk(t):
            if isinstance(x, Const) and isinstance(x.value, int) and not isinstance(x.value, bool):
                found.add(x.value)
            elif dataclasses.is_dataclass(x) and hasattr(x, "shape"):
                found.update(d for d in x.shape if isinstance(d, int))
        common = found if common is None else common & found
    return common or set()


def instantiate(tree, n: Var, value: int):
    """`tree` with every integer expression of `n` (and nothing else) replaced by its value at
    `n = value`, as a Const; buffer shape entries become ints."""
    return instantiate_all(tree, {n.name: value})


def instantiate_all(tree, env: dict):
    """`instantiate` for several size parameters at once: `env` maps their names to values."""
    from tessel.ir.interp import interpret_expr

    memo: dict = {}
    names = set(env)

    def sub(x):
        if isinstance(x, Expr) and _only(x, names):
            v = interpret_expr(x, {k: env[k] for k in {u.name for u in free_vars(x)}})
            return Const(int(v) if is_int(x.dtype) else float(v), x.dtype)
        if isinstance(x, (tuple, list)):
            return type(x)(sub(y) for y in x)
        if isinstance(x, Node) and dataclasses.is_dataclass(x):
            hit = memo.get(id(x))
            if hit is not None and hit[0] is x:
                return hit[1]
            fields = {f.name: sub(getattr(x, f.name)) for f in dataclasses.fields(x) if f.init}
            out = x if all(fields[k] is getattr(x, k) for k in fields) else type(x)(**fields)
            memo[id(x)] = (x, out)
            return out
        return x

    return sub(tree)


def _only(e: Expr, names: set) -> bool:
    used = {v.name for v in free_vars(e)}
    return bool(used) and used <= names and not _has_load(e)


def _has_load(e: Expr) -> bool:
    from tessel.ir.nodes import Load, walk

    return any(isinstance(x, Load) for x in walk(e))
