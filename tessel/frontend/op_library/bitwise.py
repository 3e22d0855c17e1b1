"""Bitwise ops on integers: bitwise_and, bitwise_or, bitwise_xor, bitwise_not, shift_left and
shift_right (numpy broadcasting; both operands of one integer dtype, bools allowed for and/or/xor).

The tensor IR has no bitwise operators, so these are composed from its integer arithmetic, which
wraps at the dtype's width (exact, but slower than one machine instruction):
- not x is -1 - x (all ones minus x: two's complement, and 2**bits - 1 - x on unsigned types);
- and splits both operands into their bits, bit k being (x // 2**k) % 2 (floor division is an
  arithmetic shift, so this holds for negative signed values too; the sign bit is x < 0), multiplies
  bit k of each and sums the bits back with weights 2**k (the sign bit weighs -2**(bits-1));
- or and xor come from and without a second bit split: a | b = a + (b - (a & b)) and
  a ^ b = (a | b) - (a & b). Every step is borrow- and carry-free (a & b has only bits of b; a and
  b - (a & b) share none), so no signed value overflows. (Bit by bit, p + q - p*q summed over 64
  bits, the simplifier took 32 s on one uint64 bitwise_or kernel; now as long as and: 1 s.)
- x << y is x * 2**y and x >> y is x // 2**y (floor: arithmetic on signed types), 2**y chosen by a
  select over the bits-many possible shift counts. A count outside [0, bits) gives 0 (and -1 for a
  negative x shifted right), as numpy does on x86 for counts of bits or more.

Example:
    >>> import numpy as np
    >>> get_op("bitwise_xor").reference([np.array([12], np.uint8), np.array([10], np.uint8)], {})
    [array([6], dtype=uint8)]
"""

from __future__ import annotations

from tessel.errors import DTypeError
from tessel.frontend.ops import get_op, register  # noqa: F401 - get_op is used in the docstring
from tessel.frontend.op_library.common import bload, broadcast_shapes, check_inputs, to_np
from tessel.ir import dsl
from tessel.ir.dtypes import bits, from_numpy_dtype, is_bool, is_int, is_unsigned, wrap


def _np():
    import numpy as np

    return np


def _check(op: str, dtypes: list, allow_bool: bool) -> str:
    if len(set(dtypes)) != 1:
        raise DTypeError(f"{op}: operands have dtypes {', '.join(dtypes)}; expected one integer dtype (insert a cast)")
    dt = dtypes[0]
    if not (is_int(dt) or (allow_bool and is_bool(dt))):
        raise DTypeError(f"{op}: input 0 has dtype {dt}, expected an integer dtype")
    return dt


def _bit(x, k: int, n: int, dt: str):
    """Bit k of integer expression x (0 or 1, of x's dtype)."""
    if is_unsigned(dt):
        q = x // dsl.const(1 << k, dt) if k else x
        return q if k == n - 1 else q % dsl.const(2, dt)
    if k == n - 1:
        return (x < 0).astype(dt)
    if k == n - 2:  # q in [-2, 1]; `q % 2` would let TVM rewrite (x // 2**k) % 2 as (x % 2**(k+1)) // 2**k,
        q = x // dsl.const(1 << k, dt)  # whose 2**(n-1) does not fit the dtype
        return (q.eq(1) | q.eq(-1)).astype(dt)
    return (x // dsl.const(1 << k, dt)) % dsl.const(2, dt) if k else x % dsl.const(2, dt)


def _combine_bits(op: str, a, b, dt: str):
    if dt == "bool":
        return {"bitwise_and": a & b, "bitwise_or": a | b, "bitwise_xor": a.ne(b)}[op]
    both = _and_bits(a, b, dt)
    if op == "bitwise_and":
        return both
    either = a + (b - both)
    return either if op == "bitwise_or" else either - both


def _and_bits(a, b, dt: str):
    n = bits(dt)
    out = None
    for k in range(n):
        r = _bit(a, k, n, dt) * _bit(b, k, n, dt)
        if k == n - 1 and not is_unsigned(dt):  # the sign bit weighs -2**(n-1): a select, as TVM's
            term = dsl.where(r.ne(0), dsl.const(wrap(1 << k, dt), dt), dsl.const(0, dt))  # (no product by MIN)
        else:
            term = r * dsl.const(1 << k, dt) if k else r
        out = term if out is None else out + term
    return out


def _pow2_select(y, n: int, dt: str, value):
    """value(j) for the shift count j = y in [0, n); `outside` for other counts (a select chain)."""
    out = value(None)
    for j in reversed(range(n)):
        out = dsl.where(y.eq(dsl.const(j, dt)), value(j), out)
    return out


def _shift(op: str, x, y, dt: str):
    n = bits(dt)
    if op == "shift_left":
        return _pow2_select(y, n, dt, lambda j: dsl.const(0, dt) if j is None else x * dsl.const(wrap(1 << j, dt), dt))

    def right(j):
        if j is None:  # counts >= bits: 0, or -1 for a negative signed x
            return dsl.const(0, dt) if is_unsigned(dt) else dsl.where(x < 0, dsl.const(-1, dt), dsl.const(0, dt))
        if j == n - 1 and not is_unsigned(dt):
            return dsl.where(x < 0, dsl.const(-1, dt), dsl.const(0, dt))
        return x // dsl.const(1 << j, dt) if j else x

    return _pow2_select(y, n, dt, right)


def _shift_ref(op: str, a, b, dt: str):
    np = _np()
    n = bits(dt)
    inside = (b >= 0) & (b < n) if not is_unsigned(dt) else b < n
    safe = np.where(inside, b, 0).astype(a.dtype)
    if op == "shift_left":
        return np.where(inside, np.left_shift(a, safe), 0)
    fill = np.where(a < 0, -1, 0) if not is_unsigned(dt) else 0
    return np.where(inside, np.right_shift(a, safe), fill)


_BINARY = ("bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right")


def _register_binary(op: str) -> None:
    allow_bool = not op.startswith("shift")

    def infer(inputs, attrs):
        a, b = check_inputs(op, inputs, 2)
        shape = broadcast_shapes(op, [a.shape, b.shape])
        return [(shape, _check(op, [a.dtype, b.dtype], allow_bool))]

    def lower(inputs, attrs, outs, names):
        a, b = inputs
        shape, dt = outs[0]

        def body(*i):
            x, y = bload(a, shape, i), bload(b, shape, i)
            return _shift(op, x, y, dt) if op.startswith("shift") else _combine_bits(op, x, y, dt)

        return [dsl.compute(shape, body, name=names[0])]

    def reference(arrays, attrs):
        np = _np()
        a, b = (np.asarray(x) for x in arrays)
        dt = from_numpy_dtype(a.dtype)
        if op.startswith("shift"):
            return [to_np(_shift_ref(op, a, b, dt), dt)]
        f = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor}[op]
        return [to_np(f(a, b), dt)]

    cls = type(op, (), {"infer": staticmethod(infer), "lower": staticmethod(lower),
                        "reference": staticmethod(reference)})
    register(op, "elementwise")(cls)


for _op in _BINARY:
    _register_binary(_op)


@register("bitwise_not", "elementwise")
class BitwiseNot:
    """~x: all ones minus x, i.e. -1 - x with wrap-around (bool: logical not)."""

    @staticmethod
    def infer(inputs, attrs):
        (x,) = check_inputs("bitwise_not", inputs, 1)
        return [(x.shape, _check("bitwise_not", [x.dtype], True))]

    @staticmethod
    def lower(inputs, attrs, outs, names):
        (x,) = inputs
        shape, dt = outs[0]
        if dt == "bool":
            return [dsl.compute(shape, lambda *i: ~x[i], name=names[0])]
        return [dsl.compute(shape, lambda *i: dsl.const(wrap(-1, dt), dt) - x[i], name=names[0])]

    @staticmethod
    def reference(arrays, attrs):
        np = _np()
        a = np.asarray(arrays[0])
        return [np.invert(a)]
