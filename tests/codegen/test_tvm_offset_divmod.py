"""Index expressions with floordiv / floormod terms of one dividend at different constant offsets
compile right on the CPU (TVM backend), checked against numpy's floor semantics.

TVM 0.27's iter-map simplification, which FlattenBuffer applies to each access, merges such terms
as if they were equal: `in3[(i + 3) % 2, i % 2]` read `in3[(i + 1) % 2 * 3]` (fuzz case
tvm_index_of_nested_floormod, where compute_inline had made `in3[((i % 2) + 3) % 2, i % 2]`).
tessel emits those terms truncated (tessel/codegen/tvm_tir.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tessel.codegen.tvm import compile_kernel
from tessel.codegen.tvm_index import fold_nested_mod as _fold_nested_mod
from tessel.codegen.tvm_index import offset_divmods as _offset_divmods
from tessel.codegen.tvm_tir import to_tvm
from tessel.ir.interp import interpret_expr
from tessel.ir.text import parse_kernel, parse_expr


def gather(shape: tuple, n: int, index: str):
    """out[i] = src[index] for i in range(n) (`index`: the IR text of src's indices)."""
    dims = ", ".join(map(str, shape))
    return parse_kernel(f"kernel g(src: float64[{dims}] global, out: float64[{n}] global) target cpu {{\n"
                        f"  for i in {n} {{ out[i] = src[{index}] }}\n}}")


def run(kernel, src: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, 7e3)
    compile_kernel(kernel)(src.copy(), out)
    return out


CASES = [
    # (shape, n, index as IR text, numpy indices of i)
    ((2, 2), 3, "(((i % 2) + 3) % 2), (i % 2)", lambda i: (((i % 2) + 3) % 2, i % 2)),  # the fuzz case
    ((2, 2), 7, "((i + 3) % 2), (i % 2)", lambda i: ((i + 3) % 2, i % 2)),
    ((2, 2), 9, "(i % 2), ((i + 1) % 2)", lambda i: (i % 2, (i + 1) % 2)),
    ((4, 4), 11, "(i % 3), ((i + 1) % 3)", lambda i: (i % 3, (i + 1) % 3)),
    ((4, 4), 13, "((i + 1) % 4), ((i + 2) % 4)", lambda i: ((i + 1) % 4, (i + 2) % 4)),
    ((8, 8), 20, "(i // 3), ((i + 1) // 3)", lambda i: (i // 3, (i + 1) // 3)),
    # negative dividends: TVM happens to get these right; they check the truncated form kept floor semantics
    ((3, 3), 12, "((i - 5) % 3), ((i + 1) % 3)", lambda i: ((i - 5) % 3, (i + 1) % 3)),
    ((5, 3), 12, "((i - 7) // 3 + 3), ((i + 1) % 3)", lambda i: ((i - 7) // 3 + 3, (i + 1) % 3)),
]


@pytest.mark.parametrize("shape,n,index,ref", CASES, ids=[c[2] for c in CASES])
def test_offset_divmods_in_one_access_match_numpy(shape, n, index, ref):
    src = np.random.default_rng().standard_normal(shape)
    i = np.arange(n)
    np.testing.assert_array_equal(run(gather(shape, n, index), src, n), src[ref(i)])


def test_two_loop_variables():
    # a fused index (i + j) at two offsets: merged by TVM the same way
    k = parse_kernel("kernel g(src: float64[3, 3] global, out: float64[4, 5] global) target cpu {\n"
                     "  for i in 4 { for j in 5 { out[i, j] = src[((i + j) % 3), (((i + j) + 1) % 3)] } }\n}")
    src = np.random.default_rng().standard_normal((3, 3))
    out = np.full((4, 5), 7e3)
    compile_kernel(k)(src.copy(), out)
    s = np.arange(4)[:, None] + np.arange(5)[None, :]
    np.testing.assert_array_equal(out, src[s % 3, (s + 1) % 3])


def test_only_offset_terms_are_truncated():
    """Plain accesses keep TVM's floor operators (its analyses, vectorization included, know them)."""
    plain = to_tvm(gather((4, 4), 16, "(i // 4), (i % 4)")).script()
    assert "truncmod" not in plain and "truncdiv" not in plain
    mixed = to_tvm(gather((4, 4), 11, "(i % 3), ((i + 1) % 3)")).script()
    assert mixed.count("truncmod") == 2


@pytest.mark.parametrize("text", ["(((x % 3) + 4) % 3)", "((x % 5) % 5)", "(((1 + (x % 2)) + 2) % 2)",
                                  "((((x % 4) - 6) % 4) + (x % 7))", "(((x % 3) + 1) % 6)"])
def test_fold_nested_mod_keeps_values(text):
    e = parse_expr(text)  # x: an int32 variable
    folded = _fold_nested_mod(e)
    for x in range(-25, 26):
        assert interpret_expr(folded, {"x": x}) == interpret_expr(e, {"x": x}), (text, x)
    if text.endswith("% 6)"):
        assert folded == e  # different divisors: nothing to fold
    else:
        assert str(folded).count("%") < str(e).count("%")


def test_offset_groups():
    idx = (parse_expr("((i + 3) % 2)"), parse_expr("(i % 2)"))
    assert len(_offset_divmods(idx)) == 2
    assert not _offset_divmods(idx[:1]) and not _offset_divmods((idx[1], idx[1]))

