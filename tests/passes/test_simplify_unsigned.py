"""The simplifier on the 16-bit and unsigned integer dtypes (int16, uint8, uint16, uint32, uint64).

Properties: random expressions with large constants (so sums and products wrap modulo 2**bits)
evaluate to the same value before and after simplification, by an evaluator written here from
numpy's integer ranges and by the interpreter; simplification is idempotent (a rule pair that
undid each other would recurse for ever); folding matches numpy arithmetic and casts; linear forms
of unsigned expressions keep small coefficients (x - 1 stays x - 1, not x + 255) and ranges still
decide comparisons.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessel.ir import interp
from tessel.ir.nodes import Binary, Cast, Const, Var
from tessel.passes.simplify import fold_binary, fold_cast, simplify
from tests.passes.test_simplify import _np_binary, _wrap, evaluate, index_exprs

NEW_INTS = ["int16", "uint8", "uint16", "uint32", "uint64"]


def _cases():
    for dt in NEW_INTS:
        info = np.iinfo(dt)
        lo, hi = int(info.min), int(info.max)
        a, b = Var("a", dt), Var("b", dt)
        # a in a range that lets some rules fire, b anywhere
        yield dt, (a, b), {a: (max(lo, 0), min(hi, 200)), b: (lo, hi)}


@pytest.mark.parametrize("dtype,variables,ranges", list(_cases()), ids=NEW_INTS)
@given(data=st.data())
@settings(deadline=None, max_examples=60)
def test_wrapping_expressions_keep_their_values(dtype, variables, ranges, data):
    info = np.iinfo(dtype)
    consts = st.integers(int(info.min), int(info.max)) | st.sampled_from([0, 1, 2, int(info.max)])
    expr = data.draw(index_exprs(list(variables), consts))
    out = simplify(expr, ranges)
    assert out.dtype == expr.dtype
    assert simplify(out, ranges) == out, "simplify is not idempotent"
    for _ in range(6):
        env = {v: data.draw(st.integers(*ranges[v])) for v in variables}
        want = evaluate(expr, env)
        assert evaluate(out, env) == want, (expr, out, env)
        assert int(interp.interpret_expr(out, env)) == int(interp.interpret_expr(expr, env)) == want


@given(st.sampled_from(NEW_INTS), st.sampled_from(
    ["add", "sub", "mul", "floordiv", "floormod", "min", "max", "eq", "lt", "ge"]), st.data())
@settings(deadline=None, max_examples=80)
def test_folding_matches_numpy(dtype, op, data):
    info = np.iinfo(dtype)
    a = data.draw(st.integers(int(info.min), int(info.max)))
    b = data.draw(st.integers(int(info.min), int(info.max)) | st.sampled_from([0, 1, 7]))
    got = fold_binary(op, Const(a, dtype), Const(b, dtype))
    if op in ("floordiv", "floormod") and b == 0:
        assert got is None
        return
    want = _np_binary(op, np.array([a], dtype), np.array([b], dtype))[0]
    assert got is not None and got.value == want.item()


@given(st.sampled_from(NEW_INTS + ["int8", "int64"]), st.sampled_from(NEW_INTS + ["int8", "int32"]),
       st.integers(-(2**64), 2**64))
@settings(deadline=None, max_examples=80)
def test_cast_folding_matches_numpy(src, dst, v):
    v = _wrap(v, src)
    got = fold_cast(dst, Const(v, src))
    want = np.array([v], src).astype(dst)[0]
    assert got is not None and got.dtype == dst and got.value == want.item()


def test_unsigned_forms_stay_small_and_ranges_decide():
    x, y = Var("x", "uint8"), Var("y", "uint8")
    assert simplify(x - y) == Binary("sub", x, y)
    assert simplify(x - Const(1, "uint8") + Const(3, "uint8")) == Binary("add", x, Const(2, "uint8"))
    # x + 255 is x - 1 modulo 256: with x in [1, 5] it lies in [0, 4]
    assert simplify((x + Const(255, "uint8")) < Const(10, "uint8"), {x: (1, 5)}) == Const(True, "bool")
    # but with x = 0 possible it wraps to 255: nothing to decide
    assert not isinstance(simplify((x + Const(255, "uint8")) < Const(10, "uint8"), {x: (0, 5)}), Const)
    assert simplify((x * Const(4, "uint8") + Const(3, "uint8")) // Const(4, "uint8"), {x: (0, 60)}) == x
    assert simplify(Cast("uint16", Cast("uint8", Var("z", "uint16")))) != Var("z", "uint16")  # narrowing is lossy
    z = Var("z", "uint8")
    assert simplify(Cast("uint8", Cast("int16", z))) == z  # int16 holds every uint8
