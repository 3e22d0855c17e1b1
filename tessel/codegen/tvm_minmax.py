"""Float min / max in TIR with numpy.minimum / maximum's meaning: a NaN operand is the result.

TVM's own Min / Max drop a NaN (a compare and a select), so tvm_tir emits `llvm.minimum` /
`llvm.maximum` (IEEE 754-2019: NaN propagates; they vectorize). They differ from numpy only in
the sign of a zero result: numpy gives the second operand unless the first is greater (for max)
or a NaN, so numpy.maximum(+0.0, -0.0) is -0.0 where IEEE's maximum is +0.0.

A zero constant operand (ReLU's max(x, 0)) becomes one select with an ordered compare, numpy's own
rule bit for bit: max(x, c) = x <= c ? c : x, max(c, x) = c > x ? c : x (a NaN x fails the compare
and is the result). That is one vmaxps, where LLVM lowers llvm.maximum(x, +0.0) to three
instructions (a max, an unordered compare, a masked move) and llvm.maximum(x, y) to six. With any
other constant that is not NaN the intrinsic agrees with numpy and LLVM lowers it to one vmaxps
itself (it orders the operands so that a NaN x survives), so a clip's bound costs one instruction.

Why not a select for every constant: LLVM analyses chains of selects and compares slowly. A fuzz
kernel of ReLU6 around tanh(exp(..)) and sigmoid took 33.8 s to compile with selects for every
constant, 3.5 s with selects for the zeros only, 2.2 s with none (3.6 s before any of this).

Example:
    >>> import tvm.tirx as T
    >>> from tessel.ir.nodes import Binary, Const, Var
    >>> x = Var("x", "float32")
    >>> e = Binary("max", x, Const(-0.0, "float32"))
    >>> type(float_extreme(T, "max", e, T.Var("x", "float32"), T.const(-0.0, "float32"))).__name__
    'Select'
"""

from __future__ import annotations

from tessel.ir.nodes import Const


def _zero(e) -> bool:
    return isinstance(e, Const) and e.value == 0


def float_extreme(T, op: str, e, a, b):
    """The TIR of the float Binary `e` = op(e.a, e.b), op "min" or "max", whose operands translate
    to `a` and `b` (see the module docstring)."""
    if _zero(e.b):  # op(x, c): x <= c ? c : x for max
        return T.Select(T.LE(a, b) if op == "max" else T.GE(a, b), b, a)
    if _zero(e.a):  # op(c, x): c > x ? c : x for max
        return T.Select(T.GT(a, b) if op == "max" else T.LT(a, b), a, b)
    # an `a != a` test would be folded to false by TVM's simplifier
    return T.call_llvm_pure_intrin(e.dtype, f"llvm.{op}imum", a, b)
