"""Row reductions with vector accumulators (tessel/schedules/cpu_reduce.py): the default CPU schedule
of sums, maxima and minima along contiguous rows agrees with numpy on fresh random inputs, compiled and
through the interpreter, for rows of whole vectors, of a remainder, longer than the accumulators, and of
one element (which keeps the serial chain).

Tolerance of a float32 sum against float64: (n - 1) * 2^-24 * sum(|x|), the bound of recursive
summation in any order (Higham, Accuracy and Stability, 4.3); max/min are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.schedules.generic import default_schedule

tvm = pytest.importorskip("tvm")


def _rows(shape, red_axes, combine):
    x = ts.placeholder(shape, name="x")
    axes = [ts.reduce_axis(shape[a], name=f"r{a}") for a in red_axes]
    keep = [d for d in range(len(shape)) if d not in red_axes]

    def body(*o):
        idx, it, ir = [], iter(o), iter(axes)
        for d in range(len(shape)):
            idx.append(next(ir) if d in red_axes else next(it))
        return combine(x[tuple(idx)], axis=axes)

    return x, ts.compute(tuple(shape[d] for d in keep), body, name="y")


def _sum_bound(x64, axes):
    n = int(np.prod([x64.shape[a] for a in axes]))
    return max(n - 1, 1) * 2.0 ** -24 * np.abs(x64).sum(axis=axes) + 1e-30


CASES = [((6, 16), (1,)), ((5, 37), (1,)), ((3, 1000), (1,)), ((2, 3, 5, 7), (2, 3)), ((1, 8, 8, 8), (2, 3)),
         ((4, 3, 1), (2,)), ((4, 2, 33), (1, 2)), ((300,), (0,))]


@pytest.mark.parametrize("shape,axes", CASES)
@pytest.mark.parametrize("kind", ["sum", "max", "min"])
def test_row_reduction_matches_numpy(shape, axes, kind):
    rng = np.random.default_rng()
    x, y = _rows(shape, axes, {"sum": ts.sum, "max": ts.max, "min": ts.min}[kind])
    kern = ts.build([x, y], target="cpu")
    flat = int(np.prod([shape[a] for a in axes]))
    # rows of at least a vector take the vector accumulators; shorter ones keep the serial chain
    assert ("_vacc" in str(kern.ir)) == (flat >= 16)
    a = rng.standard_normal(shape).astype("float32")
    out = np.zeros(tuple(int(s) for s in y.shape), "float32")
    kern(a, out)
    ref = {"sum": np.sum, "max": np.max, "min": np.min}[kind](a.astype("float64"), axis=axes)
    if kind == "sum":
        assert np.all(np.abs(out - ref) <= _sum_bound(a.astype("float64"), axes))
    else:
        np.testing.assert_array_equal(out, ref.astype("float32"))
    again = np.zeros_like(out)
    kern.run_reference(a, again)
    np.testing.assert_allclose(again, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("of", ["load", "expression"])
@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("shape", [(40, 1000), (24, 37)])
def test_row_max_and_min_propagate_nan_and_keep_infinities(kind, shape, of):
    """A NaN anywhere in a row (a lane of any accumulator, the remainder, the first or last element)
    makes that row's max / min NaN, as numpy's; infinities and rows of -inf / +inf only are exact.
    (The vector steps are two selects, value > acc and value <= acc, with NaNs kept aside.)"""
    rng = np.random.default_rng()
    red = {"max": ts.max, "min": ts.min}[kind]
    x, y = _rows(shape, (1,), red if of == "load" else lambda v, axis: red(v * 2.0 - 1.0, axis=axis))
    kern = ts.build([x, y], target="cpu")
    assert ("_vnan" in str(kern.ir)) == (of == "load")
    a = rng.standard_normal(shape).astype("float32")
    n, m = shape
    for row, col in zip(rng.choice(n, n // 2, replace=False), rng.integers(0, m, n // 2)):
        a[row, col] = np.nan
    a[0, 0] = a[1, m - 1] = np.nan
    a[2, :] = -np.inf
    a[3, :] = np.inf
    a[4, rng.integers(0, m, 3)] = np.inf
    a[5, rng.integers(0, m, 3)] = -np.inf
    a[6, 0], a[6, 1:] = np.nan, np.inf
    out = np.zeros(n, "float32")
    kern(a, out)
    ref = {"max": np.max, "min": np.min}[kind](a if of == "load" else a * 2 - 1, axis=1)
    np.testing.assert_array_equal(out, ref)
    again = np.zeros_like(out)
    kern.run_reference(a, again)
    np.testing.assert_array_equal(again, ref)


def test_row_sum_of_negative_zeros_is_positive_zero_as_the_interpreter_gives():
    """The vector partials of a float sum start at -0.0 (an add LLVM can drop); the row's sum adds the
    stage's +0.0 init once, so a row of -0.0 sums to +0.0 as in the interpreter (0.0 + -0.0 ...)."""
    x, y = _rows((5, 100), (1,), ts.sum)
    kern = ts.build([x, y], target="cpu")
    a = np.random.default_rng().standard_normal((5, 100)).astype("float32")
    a[1] = -0.0
    a[3, :] = np.float32(2.0) ** -140  # subnormals
    a[3, ::2] *= -1
    out = np.full(5, np.nan, "float32")
    kern(a, out)
    ref = np.full(5, np.nan, "float32")
    kern.run_reference(a, ref)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(ref))
    assert out[1] == 0 and not np.signbit(out[1]) and out[3] == 0
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("accumulators", [1, 2, 4, 8])
def test_accumulator_knob_keeps_the_value(accumulators):
    rng = np.random.default_rng()
    x, y = _rows((7, 150), (1,), ts.sum)
    kern = ts.build([x, y], target="cpu",
                    schedule=lambda k: default_schedule(k, "cpu", {"reduce_accumulators": accumulators}))
    a = rng.standard_normal((7, 150)).astype("float32")
    out = np.zeros(7, "float32")
    kern(a, out)
    assert np.all(np.abs(out - a.astype("float64").sum(1)) <= _sum_bound(a.astype("float64"), (1,)))


def test_reduce_vector_off_keeps_the_serial_chain():
    x, y = _rows((4, 64), (1,), ts.sum)
    sch = default_schedule(ts.lower([x, y]), "cpu", {"reduce_vector": False})
    assert "_vacc" not in str(sch.kernel)


def test_sum_of_a_middle_axis_keeps_the_value():
    x, y = _rows((8, 32, 4), (1,), ts.sum)  # neither the innermost axis nor a vector of kept outputs
    kern = ts.build([x, y], target="cpu")
    assert "_vacc" not in str(kern.ir)
    a = np.random.default_rng().standard_normal((8, 32, 4)).astype("float32")
    out = np.zeros((8, 4), "float32")
    kern(a, out)
    assert np.all(np.abs(out - a.astype("float64").sum(1)) <= _sum_bound(a.astype("float64"), (1,)))


@pytest.mark.parametrize("op", ["layer_norm", "softmax", "reduce_mean"])
def test_model_ops_match_numpy(op):
    """layer_norm, softmax and a global average pool built by the op library, compiled end to end."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    if op == "layer_norm":
        m, x = torch.nn.LayerNorm(72).eval(), rng.standard_normal((5, 9, 72))
    elif op == "softmax":
        m, x = torch.nn.Softmax(-1), rng.standard_normal((6, 45)) * 4
    else:
        m, x = torch.nn.AdaptiveAvgPool2d(1), rng.standard_normal((3, 10, 7, 7))
    xt = torch.tensor(x, dtype=torch.float32)
    cm = ts.compile(m, (xt,))
    got = np.asarray(cm(xt))
    want = m.double()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_bad_accumulator_count_names_the_knob():
    x, y = _rows((4, 64), (1,), ts.sum)
    with pytest.raises(ScheduleError, match="reduce_accumulators"):
        default_schedule(ts.lower([x, y]), "cpu", {"reduce_accumulators": 3})


@pytest.mark.parametrize("shape,axes", [((40, 32), (0,)), ((3, 5, 48), (0, 1)), ((7, 16), (0,)), ((1, 32), (0,))])
def test_reduction_over_outer_axes_vectorizes_the_kept_axis(shape, axes):
    """A sum over outer axes with the innermost kept axis contiguous: that axis is vectorized inside the
    reduction loops (the same serial order per output: no reassociation)."""
    rng = np.random.default_rng()
    x, y = _rows(shape, axes, ts.sum)
    kern = ts.build([x, y], target="cpu")
    assert "vectorized" in str(kern.ir) and "_vacc" not in str(kern.ir)
    a = rng.standard_normal(shape).astype("float32")
    out = np.zeros(tuple(int(s) for s in y.shape), "float32")
    kern(a, out)
    assert np.all(np.abs(out - a.astype("float64").sum(axes)) <= _sum_bound(a.astype("float64"), axes))
    again = np.zeros_like(out)
    kern.run_reference(a, again)
    np.testing.assert_allclose(again, out, rtol=1e-6, atol=1e-6)
