"""The vector_access step decides on the IR which vectorized loops become vector loads/stores (the
printer then prints exactly those, and none when it is switched off), and simplify folds the index
arithmetic of GPU kernels: constant modulos, `(x * c + y) - x * c`, and arithmetic over
thread-bound loop variables, whose ranges the launch gives."""

from __future__ import annotations

from tessel.codegen.cuda_printer import print_kernel
from tessel.codegen.cuda_vectorize import decide_vector_loops, vectorize_loop
from tessel.compiler.pipeline import Pass, cuda_pipeline, run_pipeline
from tessel.ir.nodes import Binary, Buffer, Const, For, IfThenElse, Kernel, Launch, Store, Var, walk
from tessel.passes.simplify import simplify
from tests.passes.gpu_cases import case, equal_bits, run_case

A, B = Buffer("A", (1024,), "float16"), Buffer("B", (1024,), "float16")
b, t, v, k = Var("b"), Var("t"), Var("v"), Var("k")


def gpu(body, block=(128, 1, 1), grid=(1, 1, 1)):
    return Kernel("k", (A, B), body, "cuda", Launch(grid, block))


def vector_loops(kernel):
    return [n for n in walk(kernel.body) if isinstance(n, For) and n.kind == "vectorized"]


def test_contiguous_loops_stay_vectorized_the_others_become_scalar():
    good = For(v, 8, Store(B, (t * 8 + v,), A[t * 8 + v]), "vectorized")
    strided = For(v, 8, Store(B, (t * 8 + v,), A[v * 64 + t]), "vectorized")  # A not contiguous in v
    k = gpu(For(t, 128, good, "threadIdx.x"))
    assert vector_loops(decide_vector_loops(k)) == vector_loops(k)
    k2 = gpu(For(t, 128, strided, "threadIdx.x"))
    out = decide_vector_loops(k2)
    assert not vector_loops(out) and [n.kind for n in walk(out.body) if isinstance(n, For)][1] == "unrolled"
    assert print_kernel(out).source == print_kernel(k2).source  # what the printer did for it anyway


def test_every_vectorized_loop_left_by_the_pipeline_is_printed_as_vector_accesses():
    c = case("elementwise_f16")
    out = run_pipeline(c.kernel, cuda_pipeline())
    loops = vector_loops(out)
    assert loops
    params = {p.name for p in out.params}
    assert all(vectorize_loop(lp, params) is not None for lp in loops)
    src = print_kernel(out).source
    assert "tessel::load_vec" in src and "tessel::store_vec" in src


def test_switched_off_no_vector_accesses_and_same_bits():
    c = case("elementwise_f16")
    pipe = [Pass("vector_access", {"enabled": False}) if p.name == "vector_access" else p for p in cuda_pipeline()]
    out = run_pipeline(c.kernel, pipe, debug=True)
    assert not vector_loops(out)
    printed = print_kernel(out)
    assert "load_vec" not in printed.source and "store_vec" not in printed.source and not printed.alignment
    assert equal_bits(run_case(c.kernel, c), run_case(out, c))


# -- simplify on GPU kernels ------------------------------------------------------------------------

def _ops(e, op):
    return sum(1 for n in walk(e) if isinstance(n, Binary) and n.op == op)


def test_constant_modulos_and_cancelled_products_fold():
    idx = (Const(0) % 3) * 256 + ((k * 32 + t) - k * 32) + (Const(0) // 2) % 4
    body = For(k, 4, For(t, 128, Store(B, (idx + k * 128,), A[idx + k * 128]), "threadIdx.x"))
    out = simplify(gpu(body))
    (st,) = [n for n in walk(out.body) if isinstance(n, Store)]
    assert st.indices[0] == t + k * 128
    assert _ops(st.indices[0], "floormod") == 0 and _ops(st.indices[0], "sub") == 0


def test_index_arithmetic_over_thread_bound_loops_folds():
    # t in [0, 127] (the launch): t // 128 is 0, t % 128 is t, t < 128 always holds, and the
    # block's part of a split index separates
    idx = (b * 128 + t) // 128 * 128 + (b * 128 + t) % 128
    body = For(b, 8, For(t, 128, IfThenElse(t < 128, Store(B, (idx,), A[t // 128 + t])), "threadIdx.x"),
               "blockIdx.x")
    out = simplify(gpu(body, grid=(8, 1, 1)))
    (st,) = [n for n in walk(out.body) if isinstance(n, Store)]
    assert not any(isinstance(n, IfThenElse) for n in walk(out.body))
    assert st.indices[0] == b * 128 + t and st.value.indices[0] == t
    assert [n.kind for n in walk(out.body) if isinstance(n, For)] == ["blockIdx.x", "threadIdx.x"]  # kept
