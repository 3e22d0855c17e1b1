"""The tensorize proof can fail: a replacement whose meaning differs from the nest it replaces
raises ScheduleError, at small sizes and on kernels too large to prove at full size (which are
proved on a scaled-down copy, not skipped)."""

from __future__ import annotations

import pytest

from tessel.errors import ScheduleError
from tessel.ir import interp
from tessel.ir.intrinsics import mma_name
from tessel.ir.interp import IntrinsicImpl
from tessel.ir.nodes import Load, rewrite
from tessel.schedules import tensorize_proof
from tessel.schedules.nest import find_loop, loop_path
from tessel.schedules.tensorize import _samples
from tessel.schedules.tensorize_proof import MAX_PROOF_ELEMENTS, prove_same
from tests.schedules.test_gpu_primitives import gemm, mma_schedule


def _nest(k, **kw):
    """The scheduled kernel before tensorize, the element loop's name, its nest and context."""
    sch, names = mma_schedule(k, tensorize=False, **kw)
    kernel = sch.kernel
    path = loop_path(kernel.body, names[3])
    lane = [lp for lp in path[:-1] if lp.kind == "threadIdx.x"][-1].var
    return sch, names[3], kernel, path, find_loop(kernel.body, names[3]), lane


def _transposed(stmt, buffer: str):
    """`stmt` with every load of `buffer` reading [b, a] instead of [a, b]."""
    def fn(n):
        if isinstance(n, Load) and n.buffer.name == buffer:
            return Load(n.buffer, n.indices[::-1])
        return None
    return rewrite(stmt, fn, fixpoint=False)


def test_the_proof_rejects_a_transposed_operand():
    sch, _, kernel, path, nest, lane = _nest(gemm(16, 8, 16), warps=(1, 1), tiles=(1, 1), shared=False)
    samples = _samples(path[:-1], lane)
    prove_same(kernel, path, nest, nest, lane, samples)  # the nest is itself: proved
    wrong = _transposed(nest, "A")  # A is 16 x 16: A[k, m] stays in bounds, only the meaning differs
    assert wrong != nest
    with pytest.raises(ScheduleError, match="differs from the original nest on random inputs"):
        prove_same(kernel, path, nest, wrong, lane, samples)


def _shifted_b_meaning(name: str) -> IntrinsicImpl:
    """The mma, except that each lane's B fragment comes from the lane 4 further on: the product
    uses column n + 1 of B for column n (the meaning of a wrongly laid out operand)."""
    real = interp.INTRINSICS[name]

    def wrong(*args):  # (lanes) or (context, lanes)
        lanes = args[-1]
        shifted = [(lr[0], lr[1], lanes[(i + 4) % 32][2], lr[3]) for i, lr in enumerate(lanes)]
        return real.fn(*args[:-1], shifted)

    return IntrinsicImpl(wrong, real.scope, with_context=real.with_context)


@pytest.fixture
def wrong_mma(monkeypatch):
    name = mma_name("float16")
    registry = {**interp._DEFAULT.intrinsics, name: _shifted_b_meaning(name)}
    monkeypatch.setattr(interp._DEFAULT, "intrinsics", registry)
    return name


@pytest.mark.parametrize("shared", [False, True])
def test_tensorize_fails_when_the_intrinsic_means_something_else(wrong_mma, shared):
    sch, loop, *_ = _nest(gemm(32, 16, 32), warps=(1, 2), tiles=(2, 1), shared=shared)
    with pytest.raises(ScheduleError, match="the replacement differs from the original nest"):
        sch.tensorize(loop, wrong_mma)


def test_the_true_intrinsic_is_proved():
    sch, loop, *_ = _nest(gemm(32, 16, 32), warps=(1, 2), tiles=(2, 1), shared=False)
    sch.tensorize(loop, mma_name("float16"))


def test_a_kernel_above_the_limit_is_proved_on_a_scaled_down_copy(monkeypatch, wrong_mma):
    """A 2048^3 GEMM reading its operands from global memory (8M elements) is proved on a copy
    whose k loop is cut to 2 steps; the wrong intrinsic is caught there, the right one passes."""
    seen = []
    real = tensorize_proof.scaled_down

    def spy(*args):
        got = real(*args)
        seen.append(got)
        return got

    monkeypatch.setattr(tensorize_proof, "scaled_down", spy)
    sch, loop, kernel, *_ = _nest(gemm(2048, 2048, 2048), warps=(2, 2), tiles=(2, 2), shared=False)
    assert sum(p.size for p in kernel.params[:2]) > MAX_PROOF_ELEMENTS
    with pytest.raises(ScheduleError, match="differs"):
        sch.tensorize(loop, wrong_mma)
    bufs, cut = seen[-1]
    assert sum(b.size for b in bufs if b.scope != "local") <= MAX_PROOF_ELEMENTS
    assert cut and all(e == 2 for e in cut.values())
    assert {b.name: b.shape for b in bufs if b.scope == "global"} == {"A": (2048, 32), "B": (32, 2048)}
    monkeypatch.undo()
    sch, loop, *_ = _nest(gemm(2048, 2048, 2048), warps=(2, 2), tiles=(2, 2), shared=False)
    sch.tensorize(loop, mma_name("float16"))
