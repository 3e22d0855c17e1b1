"""Float min / max in TIR with numpy.minimum / maximum's meaning: a NaN operand is the result.

TVM's own Min / Max drop a NaN (a compare and a select), so in general tvm_tir emits
`llvm.minimum` / `llvm.maximum` (IEEE 754-2019: NaN propagates; they vectorize), which x86 lowers
to six instructions per vector (signed-zero blends and a NaN fix-up). Where one operand is a
constant that is not NaN (ReLU's max(x, 0), a clip's bounds) one select with an ordered compare
does it exactly: numpy gives the second operand unless the first is greater (for max) or a NaN,
so max(x, c) = x <= c ? c : x and max(c, x) = c > x ? c : x; a NaN x fails the compare and is the
result, and signed zeros come out as numpy's, bit for bit. That is one vmaxps.

Example:
    >>> import tvm.tirx as T
    >>> from tessel.ir.nodes import Binary, Const, Var
    >>> x = Var("x", "float32")
    >>> e = Binary("max", x, Const(0.0, "float32"))
    >>> type(float_extreme(T, "max", e, T.Var("x", "float32"), T.const(0.0, "float32"))).__name__
    'Select'
"""

from __future__ import annotations

from tessel.ir.nodes import Const


def _non_nan_const(e) -> bool:
    return isinstance(e, Const) and e.value == e.value


def float_extreme(T, op: str, e, a, b):
    """The TIR of the float Binary `e` = op(e.a, e.b), op "min" or "max", whose operands translate
    to `a` and `b` (see the module docstring)."""
    if _non_nan_const(e.b):
        return T.Select(T.LE(a, b) if op == "max" else T.GE(a, b), b, a)
    if _non_nan_const(e.a):
        return T.Select(T.GT(a, b) if op == "max" else T.LT(a, b), a, b)
    # an `a != a` test would be folded to false by TVM's simplifier
    return T.call_llvm_pure_intrin(e.dtype, f"llvm.{op}imum", a, b)
