"""Kernel calls: outputs in place, zero copies, and an ArgumentError naming the parameter for every
kind of wrong argument."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tessel as ts
from tessel.errors import ArgumentError


@pytest.fixture(scope="module")
def axpy():
    """Y[i, j] = 2 * X[i, j] + B[j] on (4, 8) float32."""
    X = ts.placeholder((4, 8), "float32", name="X")
    B = ts.placeholder((8,), "float32", name="B")
    Y = ts.compute((4, 8), lambda i, j: X[i, j] * 2.0 + B[j], name="Y")
    return ts.build([X, B, Y])


def args(rng=None):
    rng = rng or np.random.default_rng(0)
    return [rng.standard_normal((4, 8)).astype("float32"), rng.standard_normal(8).astype("float32"),
            np.full((4, 8), 7.0, "float32")]


def test_outputs_are_written_in_place_and_call_returns_none(axpy):
    x, b, y = args()
    y_before = y
    assert axpy(x, b, y) is None
    assert y is y_before
    np.testing.assert_allclose(y, 2 * x + b, rtol=1e-6)


def test_inputs_are_not_copied_views_of_bigger_arrays_work(axpy):
    """A contiguous slice of a larger array (an unaligned address) is used in place."""
    rng = np.random.default_rng(1)
    big = np.full(4 * 8 + 3, 7.0, "float32")
    y = big[3:].reshape(4, 8)  # 12 bytes past an aligned start: not 64-byte aligned
    x, b, _ = args(rng)
    axpy(x, b, y)
    np.testing.assert_allclose(big[3:].reshape(4, 8), 2 * x + b, rtol=1e-6)
    assert (big[:3] == 7.0).all()


def test_read_only_inputs_are_accepted(axpy):
    x, b, y = args()
    x.flags.writeable = False
    axpy(x, b, y)
    np.testing.assert_allclose(y, 2 * x + b, rtol=1e-6)


def test_wrong_argument_count(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match=r"takes 3 array\(s\) \(X, B, Y\), got 2"):
        axpy(x, b)
    with pytest.raises(ArgumentError, match="got 4"):
        axpy(x, b, y, y)


def test_wrong_shape_names_parameter_expected_and_given(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match=r"argument 'B': expected shape \(8,\), got \(9,\)"):
        axpy(x, np.zeros(9, "float32"), y)
    with pytest.raises(ArgumentError, match=r"argument 'X': expected shape \(4, 8\), got \(8, 4\)"):
        axpy(np.zeros((8, 4), "float32"), b, y)


def test_wrong_dtype_names_parameter_expected_and_given(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match="argument 'Y': expected dtype float32, got float64"):
        axpy(x, b, y.astype("float64"))


def test_non_contiguous_array(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match="argument 'X': expected a C-contiguous array"):
        axpy(np.asfortranarray(x), b, y)
    with pytest.raises(ArgumentError, match="argument 'B': expected a C-contiguous array"):
        axpy(x, np.zeros(16, "float32")[::2], y)


def test_non_numpy_arguments(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match=r"argument 'B': expected a numpy array of float32\[8\], got list"):
        axpy(x, [0.0] * 8, y)
    with pytest.raises(ArgumentError, match="argument 'X'.*got float"):
        axpy(1.0, b, y)


def test_read_only_output(axpy):
    x, b, y = args()
    y.flags.writeable = False
    with pytest.raises(ArgumentError, match="argument 'Y' is an output but the array given is read-only"):
        axpy(x, b, y)


def test_output_overlapping_an_input(axpy):
    """The code assumes outputs alias nothing; overlapping memory is refused, disjoint views of
    one buffer are fine."""
    x, b, _ = args()
    with pytest.raises(ArgumentError, match="arguments 'Y' and 'X' overlap"):
        axpy(x, b, x)
    buf = np.zeros(4 * 8 + 8, "float32")
    b_view, y_view = buf[:8], buf[8:].reshape(4, 8)
    b_view[:] = b
    axpy(x, b_view, y_view)
    np.testing.assert_allclose(y_view, 2 * x + b, rtol=1e-6)
    with pytest.raises(ArgumentError, match="overlap"):
        axpy(x, buf[4:12], buf[8:].reshape(4, 8))


def test_errors_apply_to_run_reference_and_time(axpy):
    x, b, y = args()
    with pytest.raises(ArgumentError, match="argument 'B'"):
        axpy.run_reference(x, b.astype("float64"), y)
    with pytest.raises(ArgumentError, match="takes 3"):
        axpy.time(x, b)
    with pytest.raises(ArgumentError, match="number >= 1"):
        axpy.time(x, b, y, number=0)


def test_run_reference_matches_compiled(axpy):
    x, b, y = args()
    y2 = y.copy()
    axpy(x, b, y)
    axpy.run_reference(x, b, y2)
    np.testing.assert_allclose(y, y2, rtol=1e-6)


def test_bfloat16_arrays_go_in_without_copies():
    """bfloat16 (which numpy cannot export through DLPack) still goes in place, both ways."""
    A = ts.placeholder((16,), "bfloat16", name="A")
    B = ts.compute((16,), lambda i: A[i] * ts.const(2.0, "bfloat16") + ts.const(1.0, "bfloat16"), name="B")
    kern = ts.build([A, B])
    a = np.random.default_rng(0).standard_normal(16).astype(ml_dtypes.bfloat16)
    b = np.zeros(16, ml_dtypes.bfloat16)
    kern(a, b)
    np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32) * 2 + 1, rtol=2e-2, atol=2e-2)
    a.flags.writeable = False
    b[:] = 0
    kern(a, b)
    assert (b.astype(np.float32) != 0).any()
    with pytest.raises(ArgumentError, match="expected dtype bfloat16, got float16"):
        kern(a.astype(np.float16), b)
