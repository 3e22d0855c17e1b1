"""The op registry's numpy references at edge ranks (0-d values), against the math module."""

import math

import numpy as np
import pytest

from tessel.frontend.ops import get_op


@pytest.mark.parametrize("name", ["erf", "gelu"])
def test_reference_of_a_0d_value_is_a_0d_array(name):
    # fuzz case erf_reference_of_0d_value: erf(reduce_sum(x)) crashed in the reference (a float has no astype)
    x = np.asarray(np.random.default_rng().normal(), dtype=np.float32)
    (got,) = get_op(name).reference([x], {})
    assert isinstance(got, np.ndarray) and got.shape == ()
    v = float(x)
    want = math.erf(v) if name == "erf" else 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
    assert abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))
