"""The tensor DSL: what it lowers to, and the errors it gives for bad programs (each naming the
tensor and the dimension at fault)."""

import numpy as np
import pytest

import tessel as ts
from tessel.errors import DTypeError, ShapeError, TesselError
from tessel.ir import interp
from tessel.ir.nodes import Allocate, For, IfThenElse, Store, walk
from tessel.ir.verify import verify


def test_gemm_lowers_to_one_perfect_nest_with_a_guarded_init():
    A = ts.placeholder((4, 6), name="A")
    B = ts.placeholder((6, 5), name="B")
    k = ts.reduce_axis(6, name="k")
    C = ts.compute((4, 5), lambda i, j: ts.sum(A[i, k] * B[k, j], axis=k), name="C")
    kern = ts.lower([A, B, C])
    loops = [n for n in walk(kern.body) if isinstance(n, For)]
    assert [(lp.var.name, lp.extent.value) for lp in loops] == [("i", 4), ("j", 5), ("k", 6)]
    guard = [n for n in walk(kern.body) if isinstance(n, IfThenElse)]
    assert len(guard) == 1 and "k == 0" in str(guard[0].cond)
    verify(kern)


def test_temporaries_are_allocated_and_names_stay_unique():
    A = ts.placeholder((3, 4), name="A")
    k = ts.reduce_axis(4, name="k")
    M = ts.compute((3,), lambda i: ts.max(A[i, k], axis=k), name="M")
    E = ts.compute((3, 4), lambda i, j: ts.exp(A[i, j] - M[i]), name="E")
    k2 = ts.reduce_axis(4, name="k")
    S = ts.compute((3,), lambda i: ts.sum(E[i, k2], axis=k2), name="S")
    Y = ts.compute((3, 4), lambda i, j: E[i, j] / S[i], name="Y")
    kern = ts.lower([A, Y])
    allocs = [n.buffer.name for n in walk(kern.body) if isinstance(n, Allocate)]
    assert sorted(allocs) == ["E", "M", "S"]
    names = [n.var.name for n in walk(kern.body) if isinstance(n, For)]
    assert len(names) == len(set(names))  # i, j, k reused by several computes get suffixes
    verify(kern)
    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    y = np.empty_like(a)
    interp.run(kern, a, y)
    e = np.exp(a - a.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-6)


def test_max_and_min_use_infinite_identities_so_negative_rows_work():
    A = ts.placeholder((2, 3), name="A")
    k = ts.reduce_axis(3, name="k")
    M = ts.compute((2,), lambda i: ts.max(A[i, k], axis=k), name="M")
    N = ts.compute((2,), lambda i: ts.min(A[i, k], axis=k), name="N")
    a = -np.abs(np.random.default_rng(2).standard_normal((2, 3))).astype(np.float32) - 1
    m, n = np.empty(2, np.float32), np.empty(2, np.float32)
    interp.run(ts.lower([A, M, N]), a, m, n)
    np.testing.assert_array_equal(m, a.max(1))
    np.testing.assert_array_equal(n, a.min(1))


def test_compute_dtype_casts_the_result():
    A = ts.placeholder((4,), "float16", name="A")
    B = ts.compute((4,), lambda i: A[i] * 2.0, name="B", dtype="float32")
    assert B.dtype == "float32"


def test_index_count_mismatch_names_tensor():
    A = ts.placeholder((3, 4), name="A")
    with pytest.raises(ShapeError, match="tensor 'A' has 2 dimension"):
        ts.compute((3,), lambda i: A[i], name="B")


def test_lambda_arity_must_match_shape():
    A = ts.placeholder((3, 4), name="A")
    with pytest.raises(ShapeError, match="compute 'B': shape has 2 dimension"):
        ts.compute((3, 4), lambda i: A[i, 0], name="B")


def test_out_of_bounds_index_names_tensor_and_dim():
    A = ts.placeholder((3, 4), name="A")
    with pytest.raises(ShapeError, match="index 1 of 'A' ranges over \\[1, 4\\] but 'A' dim 1 has extent 4"):
        ts.compute((3, 4), lambda i, j: A[i, j + 1], name="B")


def test_guarded_out_of_bounds_index_is_allowed():
    A = ts.placeholder((4,), name="A")
    B = ts.compute((4,), lambda i: ts.where(i > 0, A[i - 1], 0.0), name="B")
    a = np.random.default_rng(3).standard_normal(4).astype(np.float32)
    b = np.empty(4, np.float32)
    interp.run(ts.lower([A, B]), a, b)
    np.testing.assert_array_equal(b, np.concatenate([[0.0], a[:-1]]).astype(np.float32))


def test_reduce_axis_outside_its_reduction():
    A = ts.placeholder((3, 4), name="A")
    k = ts.reduce_axis(4, name="k")
    with pytest.raises(ShapeError, match="reduce axis 'k' is used outside a reduction"):
        ts.compute((3,), lambda i: A[i, k] + 1.0, name="B")
    r = ts.reduce_axis(4, name="r")
    with pytest.raises(ShapeError, match="reduce axis 'k'"):
        ts.compute((3,), lambda i: ts.sum(A[i, r] + A[i, k], axis=r), name="C")


def test_reduction_inside_an_expression_is_refused():
    A = ts.placeholder((3, 4), name="A")
    k = ts.reduce_axis(4, name="k")
    with pytest.raises(TesselError, match="whole body"):
        ts.compute((3,), lambda i: ts.sum(A[i, k], axis=k) * 2.0, name="B")


@pytest.mark.parametrize("bad", ["float8", "complex64", "int4", None])
def test_unknown_dtype(bad):
    with pytest.raises(DTypeError, match="placeholder 'X'"):
        ts.placeholder((2,), bad, name="X")


def test_mixed_dtypes_need_astype():
    A = ts.placeholder((2,), "float16", name="A")
    B = ts.placeholder((2,), "float32", name="B")
    with pytest.raises(DTypeError, match="astype"):
        ts.compute((2,), lambda i: A[i] + B[i], name="C")
    C = ts.compute((2,), lambda i: A[i].astype("float32") + B[i], name="C")
    assert C.dtype == "float32"


@pytest.mark.parametrize("shape", [(0, 3), (-1,), (2.5,), "ab"])
def test_bad_shapes(shape):
    with pytest.raises(ShapeError):
        ts.placeholder(shape, name="X")


def test_missing_placeholder_among_build_arguments():
    A = ts.placeholder((3,), name="A")
    B = ts.compute((3,), lambda i: A[i] + 1.0, name="B")
    with pytest.raises(TesselError, match="placeholder 'A' is read by 'B' but is not among"):
        ts.lower([B])


def test_duplicate_parameter_names():
    A = ts.placeholder((3,), name="X")
    B = ts.placeholder((3,), name="X")
    with pytest.raises(TesselError, match="named 'X'"):
        ts.compute((3,), lambda i: A[i] + B[i], name="C")
    C = ts.compute((3,), lambda i: A[i] * 2.0, name="C")
    with pytest.raises(TesselError, match="named 'X'"):
        ts.lower([A, B, C])


def test_stores_write_only_the_outputs_and_temporaries():
    A = ts.placeholder((2, 2), name="A")
    B = ts.compute((2, 2), lambda i, j: A[j, i], name="B")
    kern = ts.lower([A, B])
    assert {n.buffer.name for n in walk(kern.body) if isinstance(n, Store)} == {"B"}


def test_index_wrapping_select_is_decided_by_bounds():
    """`where(i < 0, i + n, i)` (negative-index wrapping, as gather lowers) with i known to be in
    range is not reported as out of bounds, and an undecidable select still is."""
    A = ts.placeholder((2, 4), name="A")
    B = ts.compute((1, 4), lambda i, j: A[ts.where(i < 0, i + 2, i), j], name="B")
    a = np.random.default_rng(4).standard_normal((2, 4)).astype(np.float32)
    b = np.empty((1, 4), np.float32)
    interp.run(ts.lower([A, B]), a, b)
    np.testing.assert_array_equal(b, a[:1])
    with pytest.raises(ShapeError):
        ts.compute((2, 4), lambda i, j: A[ts.where(j < 2, i + 1, i), j], name="C")
