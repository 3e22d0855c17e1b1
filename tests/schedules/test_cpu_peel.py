"""The `peel` primitive (tessel/schedules/loops.py) and cpu.generic's vectorized remainders: an
innermost loop split into whole pieces and a remainder loop without guards computes what the
unsplit loop computes (interpreter and compiled code against numpy, fresh random inputs); the
default schedule vectorizes elementwise rows the vector width does not divide; bad uses are
refused by name; traces replay."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ScheduleError
from tessel.ir.interp import run
from tessel.ir.nodes import For, IfThenElse, walk
from tessel.schedules.generic import default_schedule
from tessel.schedules.schedule import Schedule


def _elementwise(shape):
    A = ts.placeholder(shape, name="A")
    B = ts.placeholder(shape, name="B")
    C = ts.compute(shape, lambda *i: ts.exp(A[i]) * 0.5 + B[i], name="C")
    return ts.lower([A, B, C])


@pytest.mark.parametrize("extent,factor", [(37, 16), (32, 16), (10, 3), (5, 5), (7, 1)])
def test_peel_keeps_the_values_and_adds_no_guard(extent, factor):
    kernel = _elementwise((3, extent))
    sch = Schedule(kernel)
    names = sch.apply("peel", loop="i1", factor=factor)
    assert len(names) == (3 if extent % factor else 2)
    assert not any(isinstance(n, IfThenElse) for n in walk(sch.kernel.body))
    rng = np.random.default_rng(extent * 7 + factor)
    a, b = (rng.standard_normal((3, extent)).astype(np.float32) for _ in range(2))
    c = np.full((3, extent), np.nan, np.float32)
    run(sch.kernel, a, b, c)
    np.testing.assert_allclose(c, np.exp(a) * 0.5 + b, rtol=1e-6)
    assert Schedule.replay(kernel, sch.trace) == sch.kernel


def test_peel_refuses_loops_with_inner_loops_and_bad_factors():
    kernel = _elementwise((4, 8))
    with pytest.raises(ScheduleError, match="peel 'i0'.*innermost"):
        Schedule(kernel).apply("peel", loop="i0", factor=3)
    with pytest.raises(ScheduleError, match="factor must be an integer in 1..8"):
        Schedule(kernel).apply("peel", loop="i1", factor=9)
    sch = Schedule(kernel)
    sch.vectorize("i1")
    with pytest.raises(ScheduleError, match="peel a serial loop"):
        sch.apply("peel", loop="i1", factor=4)


@pytest.mark.parametrize("shape", [(5, 37), (3, 7), (40,), (2, 3, 50)])
def test_default_schedule_vectorizes_remainders_and_matches_numpy(shape):
    kernel = _elementwise(shape)
    sch = default_schedule(kernel)
    vec = [n for n in walk(sch.kernel.body) if isinstance(n, For) and n.kind == "vectorized"]
    assert vec, "the innermost loop should be vectorized"
    kern = ts.build(kernel, target="cpu", schedule=sch.kernel)
    rng = np.random.default_rng(sum(shape))
    a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    c = np.full(shape, np.nan, np.float32)
    kern(a, b, c)
    np.testing.assert_allclose(c, np.exp(a) * 0.5 + b, rtol=2e-6, atol=1e-6)
