"""The tuner's output check (tessel.tune.measure.check_outputs): finite values within the relative
tolerance, and NaN / infinities exactly where the reference has them (a correct candidate of a
kernel whose random inputs give a batch norm negative variances is NaN there too)."""

import numpy as np
import pytest

import tessel as ts
from tessel.tune.measure import WrongResult, check_outputs


def _kernel(n=64):
    A = ts.placeholder((n,), name="A")
    return ts.lower([A, ts.compute((n,), lambda i: ts.sqrt(A[i]), name="B")])


def test_nan_and_inf_must_match_the_reference_positions():
    rng = np.random.default_rng()
    a = rng.standard_normal(64)
    want = np.sqrt(np.where(a < 0, np.nan, a))
    want[3] = np.inf
    got = want + rng.standard_normal(64) * 1e-9
    got[3] = np.inf
    check_outputs(_kernel(), [got], (want,), None)  # NaN where the reference is NaN: fine
    moved = got.copy()
    i = int(np.argmax(np.isfinite(want) & (np.arange(64) != 3)))
    moved[i] = np.nan
    with pytest.raises(WrongResult, match=f"element {i}"):
        check_outputs(_kernel(), [moved], (want,), None)
    finite = np.where(np.isnan(want), 0.0, got)
    with pytest.raises(WrongResult, match="element"):
        check_outputs(_kernel(), [finite], (want,), None)
    off = got.copy()
    off[i] += 1.0
    with pytest.raises(WrongResult, match="max abs error"):
        check_outputs(_kernel(), [off], (want,), None)
