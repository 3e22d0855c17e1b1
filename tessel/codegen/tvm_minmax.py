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

from tessel.ir.nodes import Const, Load, Var


def _zero(e) -> bool:
    return isinstance(e, Const) and e.value == 0


def float_extreme(T, op: str, e, a, b, bind: bool = True):
    """The TIR of the float Binary `e` = op(e.a, e.b), op "min" or "max", whose operands translate
    to `a` and `b` (see the module docstring). The select names the other operand twice: unless it
    is a variable, a load or a constant it is bound once by a Let (a subtree holding Lets must not
    appear twice: VectorizeLoop refuses a variable bound twice), or, where `bind` is off (kernels
    whose 16-bit legalisation copies subtrees), the intrinsic is kept."""
    const_second = _zero(e.b)
    if const_second or _zero(e.a):
        x, c = (a, b) if const_second else (b, a)
        if not isinstance(e.a if const_second else e.b, (Var, Load, Const)):
            if not bind:
                return T.call_llvm_pure_intrin(e.dtype, f"llvm.{op}imum", a, b)
            v = T.Var("mm", e.dtype)
            return T.Let(v, x, _zero_select(T, op, v, c, const_second))
        return _zero_select(T, op, x, c, const_second)
    # an `a != a` test would be folded to false by TVM's simplifier
    return T.call_llvm_pure_intrin(e.dtype, f"llvm.{op}imum", a, b)


def _zero_select(T, op: str, x, c, const_second: bool):
    if const_second:  # op(x, c): x <= c ? c : x for max
        return T.Select(T.LE(x, c) if op == "max" else T.GE(x, c), c, x)
    return T.Select(T.GT(c, x) if op == "max" else T.LT(c, x), c, x)  # op(c, x): c > x ? c : x
