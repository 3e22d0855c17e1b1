"""Arithmetic on graph values for the aten converters that compose many ops (special functions,
scatters, sorting networks): `X(cx, value)` wraps a graph value so that `a * b + 1`, `a.lt(0)`,
`where(c, a, b)` or `log(a)` add the op-set ops to the graph of importer `cx` (see torch.py).

A Python number next to an X becomes a 0-d constant of the X's dtype. Comparisons are methods
(`lt`, `le`, `gt`, `ge`, `eq`, `ne`) because `==` must stay Python's; `&`, `|` and `~` are the
logical ops on bool values.

Example:
    >>> import torch
    >>> from tessel.frontend.torch import import_torch
    >>> g = import_torch(torch.nn.Hardswish(), (torch.randn(3),))   # composed with X in torch_aten_math
    >>> sorted({n.op for n in g.nodes.values()}) == ['add', 'clip', 'div', 'mul']
    True
"""

from __future__ import annotations

import math


class X:
    """A graph value of importer `cx` with operators that emit ops (see the module docstring)."""

    __slots__ = ("cx", "v")

    def __init__(self, cx, v: str):
        self.cx, self.v = cx, v

    @property
    def dtype(self) -> str:
        return self.cx.g.values[self.v].dtype

    @property
    def shape(self) -> tuple:
        return self.cx.g.values[self.v].shape

    def lift(self, other) -> str:
        """`other` (an X or a Python number) as a graph value of this dtype."""
        if isinstance(other, X):
            return other.v
        return self.cx.scalar(other, self.dtype)

    def op(self, name: str, *others, **attrs) -> "X":
        return X(self.cx, self.cx.emit(name, [self.v] + [self.lift(o) for o in others], **attrs))

    def _rop(self, name: str, other) -> "X":
        return X(self.cx, self.cx.emit(name, [self.lift(other), self.v]))

    def __add__(self, o):
        return self.op("add", o)

    def __radd__(self, o):
        return self._rop("add", o)

    def __sub__(self, o):
        return self.op("sub", o)

    def __rsub__(self, o):
        return self._rop("sub", o)

    def __mul__(self, o):
        return self.op("mul", o)

    def __rmul__(self, o):
        return self._rop("mul", o)

    def __truediv__(self, o):
        return self.op("div", o)

    def __rtruediv__(self, o):
        return self._rop("div", o)

    def __pow__(self, o):
        return self.op("pow", o)

    def __rpow__(self, o):
        return self._rop("pow", o)

    def __neg__(self):
        return self.op("neg")

    def __and__(self, o):
        return self.op("logical_and", o)

    def __or__(self, o):
        return self.op("logical_or", o)

    def __invert__(self):
        return self.op("logical_not")

    def lt(self, o):
        return self.op("lt", o)

    def le(self, o):
        return self.op("le", o)

    def gt(self, o):
        return self.op("gt", o)

    def ge(self, o):
        return self.op("ge", o)

    def eq(self, o):
        return self.op("eq", o)

    def ne(self, o):
        return self.op("ne", o)

    def astype(self, dtype: str) -> "X":
        return X(self.cx, self.cx.cast(self.v, dtype))

    def reshape(self, shape) -> "X":
        return X(self.cx, self.cx.reshape(self.v, shape))

    def sum(self, axes, keepdims: bool = False) -> "X":
        return self.op("reduce_sum", axes=tuple(axes), keepdims=keepdims)


def where(cond: X, a, b, like: X | None = None) -> X:
    """a where cond else b; a or b may be Python numbers (given the other's dtype, or like's when
    both are numbers)."""
    like = a if isinstance(a, X) else b if isinstance(b, X) else like
    return X(cond.cx, cond.cx.emit("where", [cond.v, like.lift(a), like.lift(b)]))


def _unary(name: str):
    def f(x: X) -> X:
        return x.op(name)

    f.__name__ = name
    return f


exp, log, sqrt, rsqrt, tanh, sigmoid, erf = (_unary(n) for n in ("exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid",
                                                                  "erf"))
sin, cos, floor, ceil, reciprocal, relu = (_unary(n) for n in ("sin", "cos", "floor", "ceil", "reciprocal", "relu"))
fabs = _unary("abs")


def maximum(a: X, b) -> X:
    return a.op("maximum", b)


def minimum(a: X, b) -> X:
    return a.op("minimum", b)


def isnan(x: X) -> X:
    return x.ne(x)


def trunc(x: X) -> X:
    return where(x.lt(0), ceil(x), floor(x))


def poly(x: X, coeffs) -> X:
    """coeffs[0] + coeffs[1] x + ... by Horner's rule."""
    coeffs = list(coeffs)
    acc = X(x.cx, x.cx.scalar(coeffs[-1], x.dtype))
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return acc


def log1p(x: X) -> X:
    """log(1 + x) without losing a small x's digits: log(u) * x / (u - 1) with u = 1 + x (Goldberg)."""
    u = x + 1.0
    return where(u.eq(1.0), x, log(u) * x / (u - 1.0))


def expm1(x: X) -> X:
    """exp(x) - 1 without losing a small x's digits: (u - 1) * x / log(u) with u = exp(x) (Kahan)."""
    u = exp(x)
    small = u.eq(1.0)
    big = u.eq(math.inf)
    y = (u - 1.0) * x / log(where(small | big, 2.0, u))
    return where(small, x, where(big, u, where((u - 1.0).eq(-1.0), -1.0, y)))


def atan(x: X) -> X:
    """atan for any x (float64): |x| > 1 through pi/2 - atan(1/x); three halvings
    (atan t = 2 atan(t / (1 + sqrt(1 + t^2)))) bring |t| below 0.2, where ten Taylor terms leave an
    error below 1e-16."""
    big = fabs(x).gt(1.0)
    t = where(big, reciprocal(x), x)
    for _ in range(3):
        t = t / (sqrt(t * t + 1.0) + 1.0)
    t2 = t * t
    a = poly(t2, [(-1) ** k / (2 * k + 1) for k in range(11)]) * t * 8.0
    half_pi = where(x.lt(0.0), -math.pi / 2, math.pi / 2, like=x)
    return where(big, half_pi - a, a)
