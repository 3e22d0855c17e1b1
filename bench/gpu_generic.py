"""Generic GPU kernels against torch on one GPU: elementwise add / mul, row sum, row softmax, layer norm.

    python bench/gpu_generic.py [--quick] [--only NAME ...]

Prints, per kernel and shape: tessel ms, torch ms, ratio (torch / tessel: above 1 means tessel is
faster), GB/s moved (unique bytes read + written) and the percentage of the 4.2 TB/s copy
bandwidth measured on the H200 (shared/FACTS.md), and the machine. Times are medians of
`triton.testing.do_bench` (CUDA events when triton is absent), both sides in the same run; each
result is checked against torch before it is timed. Each timed call includes its launch from
Python (about 15 us for tessel, 12 us for a torch op on the H200), which is why the default
shapes are large: a 32 MB row sum runs in 31 us on the GPU but measures 42 us per call.

Kernels come from `tessel.schedules.generic_gpu.default_gpu_schedule` when that module exists
(rows marked "generic"), and from the hand schedules below (rows marked "hand"): IR built
directly with thread-bound loops, vectorized loads, warp shuffles (the intrinsic table's
shfl.sync.bfly) and shared-memory block reductions. Rows of softmax and layer norm keep the row
in registers, so each element is read once and written once. Needs torch and a CUDA GPU; never
imports TVM or xgboost.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tessel.ir.nodes import (  # noqa: E402
    Allocate, Barrier, Binary, Buffer, BufferRef, Call, Cast, Const, For, IfThenElse, Intrinsic, Kernel, Store, Var,
    seq,
)

COPY_BANDWIDTH = 4.2e12  # bytes/s, H200 device-to-device copy (shared/FACTS.md)
SHFL = "shfl.sync.bfly.b32"


# ---------------------------------------------------------------------------------------------
# Hand schedules as IR
# ---------------------------------------------------------------------------------------------


def elementwise_ir(op: str, n: int, dtype: str = "float32", threads: int = 256, lanes: int = 4, unroll: int = 2):
    """C = A op B over n elements: each thread moves `unroll` vectors of `lanes` elements, the
    vectors of one unroll step contiguous across the block (coalesced)."""
    A, B, C = (Buffer(x, (n,), dtype) for x in "ABC")
    b, t, u, v = Var("b"), Var("t"), Var("u"), Var("v")
    per_block = threads * lanes * unroll
    if n % per_block:
        raise ValueError(f"n={n} must be a multiple of {per_block}")
    i = ((b * unroll + u) * threads + t) * lanes + v
    body = Store(C, (i,), Binary(op, A[i], B[i]))
    loop = For(b, n // per_block, For(t, threads, For(u, unroll, For(v, lanes, body, "vectorized"), "unrolled"),
                                      "threadIdx.x"), "blockIdx.x")
    return Kernel(f"ew_{op}", (A, B, C), loop, target="cuda")


def _warp_reduce(val: Buffer, tmp: Buffer, op: str):
    """Butterfly reduction of val[0] over the warp (every lane ends with the result)."""
    out = []
    for off in (16, 8, 4, 2, 1):
        out.append(Intrinsic(SHFL, (BufferRef(tmp, (0,)), val[0], Const(off))))
        out.append(Store(val, (0,), Binary(op, val[0], tmp[0])))
    return out


def _block_reduce(val: Buffer, tmp: Buffer, red: Buffer, t: Var, op: str, warps: int):
    """val[0] reduced over the block, in every thread: warp shuffles, one value per warp in
    shared memory, then every thread combines the warps' values (a broadcast read)."""
    w = Var(f"w_{val.name}")
    stmts = _warp_reduce(val, tmp, op)
    if warps == 1:
        return stmts
    stmts += [IfThenElse((t % 32).eq(0), Store(red, (t // 32,), val[0])), Barrier(),
              Store(val, (0,), red[0]),
              For(w, warps - 1, Store(val, (0,), Binary(op, val[0], red[w + 1])), "unrolled"),
              Barrier()]  # red is reused by the next reduction
    return stmts


def _row_plan(n: int, dtype: str, threads: int):
    lanes = 16 // (2 if dtype in ("float16", "bfloat16") else 4)
    if n % (threads * lanes):
        raise ValueError(f"row length {n} must be a multiple of threads * lanes = {threads * lanes}")
    return lanes, n // (threads * lanes)


def row_sum_ir(m: int, n: int, dtype: str = "float32", threads: int = 256, warp_rows: int = 0):
    """S[r] = sum_j X[r, j] (accumulated in float32). One block per row (`threads` threads, a block
    reduction), or with `warp_rows` = R, one warp per row and R rows per block (no shared memory,
    no barriers: each lane keeps n / 32 elements in flight, which suits rows of a few KB)."""
    if warp_rows:
        threads = 32
    lanes, chunks = _row_plan(n, dtype, threads)
    X, S = Buffer("X", (m, n), dtype), Buffer("S", (m,), "float32")
    acc, val, tmp = (Buffer(x, s, "float32", "local") for x, s in (("acc", (lanes,)), ("val", (1,)), ("tmp", (1,))))
    red = Buffer("red", (threads // 32,), "float32", "shared")
    r, t, k, v, v2, y = Var("r"), Var("t"), Var("k"), Var("v"), Var("v2"), Var("y")
    row = r * warp_rows + y if warp_rows else r
    x = X[row, (k * threads + t) * lanes + v]
    x = x if dtype == "float32" else Cast("float32", x)
    reduce = _warp_reduce(val, tmp, "add") if warp_rows else _block_reduce(val, tmp, red, t, "add", threads // 32)
    body = seq(For(v, lanes, Store(acc, (v,), Const(0.0, "float32")), "unrolled"),
               For(k, chunks, For(v, lanes, Store(acc, (v,), acc[v] + x), "vectorized"), "unrolled"),
               Store(val, (0,), acc[0]),
               For(v2, lanes - 1, Store(val, (0,), val[0] + acc[v2 + 1]), "unrolled"),
               *reduce,
               IfThenElse(t.eq(0), Store(S, (row,), val[0])))
    for buf in (tmp, val, acc):
        body = Allocate(buf, body)
    if warp_rows:
        if m % warp_rows:
            raise ValueError(f"m={m} must be a multiple of warp_rows={warp_rows}")
        loop = For(r, m // warp_rows, For(y, warp_rows, For(t, 32, body, "threadIdx.x"), "threadIdx.y"), "blockIdx.x")
    else:
        loop = For(r, m, Allocate(red, For(t, threads, body, "threadIdx.x")), "blockIdx.x")
    return Kernel("row_sum", (X, S), loop, target="cuda")


def _row_kernel(name: str, m: int, n: int, dtype: str, threads: int, extra_params: tuple, make_body):
    """Shared frame of softmax and layer norm: the row in registers as float32 (xs), a block
    reduction helper, the output store; `make_body(ctx)` gives the statements in between."""
    lanes, chunks = _row_plan(n, dtype, threads)
    X, Y = Buffer("X", (m, n), dtype), Buffer("Y", (m, n), dtype)
    xs = Buffer("xs", (chunks * lanes,), "float32", "local")
    val, tmp, aux = (Buffer(x, (1,), "float32", "local") for x in ("val", "tmp", "aux"))
    red = Buffer("red", (threads // 32,), "float32", "shared")
    r, t, k, v = Var("r"), Var("t"), Var("k"), Var("v")
    col = (k * threads + t) * lanes + v
    x = X[r, col]
    load = For(k, chunks, For(v, lanes, Store(xs, (k * lanes + v,), x if dtype == "float32" else Cast("float32", x)),
                              "vectorized"), "unrolled")
    ctx = dict(xs=xs, val=val, tmp=tmp, aux=aux, red=red, t=t, k=k, v=v, col=col, chunks=chunks, lanes=lanes,
               warps=threads // 32, n=n, reduce=lambda op: _block_reduce(val, tmp, red, t, op, threads // 32))
    middle, result = make_body(ctx)
    out = result if dtype == "float32" else Cast(dtype, result)
    store = For(k, chunks, For(v, lanes, Store(Y, (r, col), out), "vectorized"), "unrolled")
    body = seq(load, *middle, store)
    for buf in (aux, tmp, val, xs):
        body = Allocate(buf, body)
    loop = For(r, m, Allocate(red, For(t, threads, body, "threadIdx.x")), "blockIdx.x")
    return Kernel(name, (X, *extra_params, Y), loop, target="cuda")


def _each(ctx, stmt_of):
    k2, v2 = Var("k2"), Var("v2")
    i = k2 * ctx["lanes"] + v2
    return For(k2, ctx["chunks"], For(v2, ctx["lanes"], stmt_of(i), "unrolled"), "unrolled")


def softmax_ir(m: int, n: int, dtype: str = "float32", threads: int = 256):
    """Y[r] = softmax(X[r]) in float32 arithmetic, one block per row, the row in registers."""
    def body(c):
        xs, val, aux = c["xs"], c["val"], c["aux"]
        f32 = lambda v: Const(v, "float32")  # noqa: E731
        return [Store(val, (0,), f32(-math.inf)),
                _each(c, lambda i: Store(val, (0,), Binary("max", val[0], xs[i]))),
                *c["reduce"]("max"),
                Store(aux, (0,), val[0]),
                Store(val, (0,), f32(0.0)),
                _each(c, lambda i: seq(Store(xs, (i,), Call("exp", (xs[i] - aux[0],))),
                                       Store(val, (0,), val[0] + xs[i]))),
                *c["reduce"]("add"),
                Store(aux, (0,), f32(1.0) / val[0])], xs[c["k"] * c["lanes"] + c["v"]] * aux[0]
    return _row_kernel("softmax", m, n, dtype, threads, (), body)


def layer_norm_ir(m: int, n: int, dtype: str = "float32", threads: int = 256, eps: float = 1e-5):
    """Y[r] = (X[r] - mean) / sqrt(var + eps) * W + Bias (statistics in float32, two passes over
    the registers), one block per row."""
    W, Bi = Buffer("W", (n,), dtype), Buffer("Bias", (n,), dtype)

    def body(c):
        xs, val, aux = c["xs"], c["val"], c["aux"]
        f32 = lambda v: Const(v, "float32")  # noqa: E731
        wv, bv = W[c["col"]], Bi[c["col"]]
        if dtype != "float32":
            wv, bv = Cast("float32", wv), Cast("float32", bv)
        return [Store(val, (0,), f32(0.0)),
                _each(c, lambda i: Store(val, (0,), val[0] + xs[i])),
                *c["reduce"]("add"),
                Store(aux, (0,), val[0] / f32(float(n))),
                _each(c, lambda i: Store(xs, (i,), xs[i] - aux[0])),
                Store(val, (0,), f32(0.0)),
                _each(c, lambda i: Store(val, (0,), val[0] + xs[i] * xs[i])),
                *c["reduce"]("add"),
                Store(aux, (0,), Call("rsqrt", (val[0] / f32(float(n)) + f32(eps),)))], \
            xs[c["k"] * c["lanes"] + c["v"]] * aux[0] * wv + bv
    return _row_kernel("layer_norm", m, n, dtype, threads, (W, Bi), body)


# ---------------------------------------------------------------------------------------------
# The generic schedules (when they exist) on DSL definitions
# ---------------------------------------------------------------------------------------------


def generic_kernel(name: str, shape: tuple, dtype: str):
    """The DSL definition of a benchmark kernel, scheduled by generic_gpu; None when that module
    does not exist yet."""
    try:
        from tessel.schedules import generic_gpu
    except ImportError:
        return None
    import tessel as ts
    from tessel.compiler.target import parse_target

    if name in ("add", "mul"):
        A, B = ts.placeholder(shape, dtype, name="A"), ts.placeholder(shape, dtype, name="B")
        C = ts.compute(shape, (lambda i: A[i] + B[i]) if name == "add" else (lambda i: A[i] * B[i]), name="C")
        tensors = [A, B, C]
    else:
        m, n = shape
        X = ts.placeholder((m, n), dtype, name="X")
        k = ts.reduce_axis(n, name="k")
        if name == "row_sum":
            tensors = [X, ts.compute((m,), lambda i: ts.sum(X[i, k].astype("float32"), axis=k), name="S")]
        elif name == "softmax":  # row statistics kept as (m, 1), as the op library lowers them (keepdims)
            mx = ts.compute((m, 1), lambda i, o: ts.max(X[i, k].astype("float32"), axis=k), name="mx")
            k2 = ts.reduce_axis(n, name="k2")
            s = ts.compute((m, 1), lambda i, o: ts.sum(ts.exp(X[i, k2].astype("float32") - mx[i, 0]), axis=k2),
                           name="s")
            tensors = [X, ts.compute((m, n), lambda i, j: (ts.exp(X[i, j].astype("float32") - mx[i, 0]) / s[i, 0])
                                     .astype(dtype), name="Y")]
        else:
            W, Bi = ts.placeholder((n,), dtype, name="W"), ts.placeholder((n,), dtype, name="Bias")
            s1 = ts.compute((m, 1), lambda i, o: ts.sum(X[i, k].astype("float32"), axis=k), name="s1")
            k2 = ts.reduce_axis(n, name="k2")

            def sq(i, j):
                d = X[i, j].astype("float32") - s1[i, 0] / float(n)
                return d * d

            s2 = ts.compute((m, 1), lambda i, o: ts.sum(sq(i, k2), axis=k2), name="s2")
            tensors = [X, W, Bi, ts.compute((m, n), lambda i, j: ((X[i, j].astype("float32") - s1[i, 0] / float(n))
                                                                  * ts.rsqrt(s2[i, 0] / float(n) + 1e-5)
                                                                  * W[j].astype("float32")
                                                                  + Bi[j].astype("float32")).astype(dtype), name="Y")]
    ir = ts.lower(tensors)
    return ts.build(tensors, target="cuda", schedule=generic_gpu.default_gpu_schedule(ir, parse_target("cuda")))


# ---------------------------------------------------------------------------------------------
# Timing and the table
# ---------------------------------------------------------------------------------------------


def bench_ms(fn) -> float:
    """Median milliseconds of `fn` on the GPU."""
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))
    except ImportError:
        import torch

        for _ in range(5):
            fn()
        times = []
        for _ in range(30):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)


def cases(quick: bool, rows_shape: tuple | None = None):
    # Large enough that the per-call launch cost (about 15 us for a tessel kernel, 12 us for a torch
    # op, measured on the H200) is a few percent of the kernel time.
    n_ew = (1 << 24) if quick else (1 << 28)
    rows = rows_shape or ((4096, 4096) if quick else (65536, 4096))
    return [("add", (n_ew,), "float32"), ("mul", (n_ew,), "float32"), ("add", (n_ew,), "bfloat16"),
            ("row_sum", rows, "float32"), ("row_sum", rows, "bfloat16"),
            ("softmax", rows, "float32"), ("softmax", rows, "bfloat16"),
            ("layer_norm", rows, "float32"), ("layer_norm", rows, "bfloat16")]


def hand_kernel(name: str, shape: tuple, dtype: str):
    from tessel.codegen.cuda import build_kernel

    if name in ("add", "mul"):
        lanes = 16 // (2 if dtype != "float32" else 4)
        ir = elementwise_ir(name, shape[0], dtype, lanes=lanes)
    else:
        ir = {"row_sum": row_sum_ir, "softmax": softmax_ir, "layer_norm": layer_norm_ir}[name](*shape, dtype)
    return build_kernel(ir, "cuda")


def run_case(name: str, shape: tuple, dtype: str, source: str):
    import torch

    tdt = getattr(torch, dtype)
    kern = hand_kernel(name, shape, dtype) if source == "hand" else generic_kernel(name, shape, dtype)
    if kern is None:
        return None
    if name in ("add", "mul"):
        a, b = torch.randn(shape, device="cuda", dtype=tdt), torch.randn(shape, device="cuda", dtype=tdt)
        out = torch.empty_like(a)
        args, ref = (a, b, out), (lambda: a + b) if name == "add" else (lambda: a * b)
        nbytes = 3 * a.numel() * a.element_size()
        tol = dict(rtol=0, atol=0)
    else:
        x = torch.randn(shape, device="cuda", dtype=tdt)
        if name == "row_sum":
            out = torch.empty(shape[0], device="cuda", dtype=torch.float32)
            args, ref = (x, out), (lambda: x.float().sum(dim=1))
            nbytes = x.numel() * x.element_size() + out.numel() * 4
            tol = dict(rtol=1e-4, atol=1e-3)
        elif name == "softmax":
            out = torch.empty_like(x)
            args, ref = (x, out), (lambda: torch.softmax(x, dim=-1))
            nbytes = 2 * x.numel() * x.element_size()
            tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=2e-2, atol=1e-3)
        else:
            w = torch.randn(shape[1], device="cuda", dtype=tdt)
            bias = torch.randn(shape[1], device="cuda", dtype=tdt)
            out = torch.empty_like(x)
            args = (x, w, bias, out)
            ref = lambda: torch.nn.functional.layer_norm(x, (shape[1],), w, bias, eps=1e-5)  # noqa: E731
            nbytes = 2 * x.numel() * x.element_size() + 2 * w.numel() * w.element_size()
            tol = dict(rtol=1e-4, atol=1e-4) if dtype == "float32" else dict(rtol=2e-2, atol=2e-2)
    kern(*args)
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ref().to(out.dtype), **tol)
    t_tessel = bench_ms(lambda: kern(*args))
    t_torch = bench_ms(ref)
    return t_tessel, t_torch, nbytes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller shapes")
    p.add_argument("--rows", help="M,N: the shape of the row kernels (row_sum, softmax, layer_norm)")
    p.add_argument("--only", nargs="*", help="kernel names to run (add mul row_sum softmax layer_norm gemm)")
    args = p.parse_args(argv)
    import torch

    from tessel.errors import ScheduleError

    if not torch.cuda.is_available():
        print("needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 1
    machine = torch.cuda.get_device_name()
    print(f"machine: {machine}; copy bandwidth reference {COPY_BANDWIDTH / 1e12:.1f} TB/s")
    head = f"{'kernel':<11} {'sched':<8} {'dtype':<9} {'shape':<14} {'tessel ms':>10} {'torch ms':>9} " \
           f"{'ratio':>6} {'GB/s':>7} {'% copy':>7}"
    print(head)
    print("-" * len(head))
    failures = 0
    rows_shape = tuple(int(v) for v in args.rows.split(",")) if args.rows else None
    for name, shape, dtype in cases(args.quick, rows_shape):
        if args.only and name not in args.only:
            continue
        for source in ("generic", "hand"):
            try:
                got = run_case(name, shape, dtype, source)
            except ScheduleError as e:
                failures += source != "generic"
                print(f"{name:<11} {source:<8} {dtype:<9} {str(shape):<14} not scheduled ({source}): "
                      f"{str(e).splitlines()[0][:160]}")
                continue
            except Exception as e:  # noqa: BLE001 - one failing case must not hide the others
                failures += 1
                print(f"{name:<11} {source:<8} {dtype:<9} {str(shape):<14} FAILED: {type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''}")
                continue
            if got is None:
                continue
            tt, tr, nbytes = got
            gbs = nbytes / (tt * 1e-3) / 1e9
            print(f"{name:<11} {source:<8} {dtype:<9} {str(shape):<14} {tt:>10.4f} {tr:>9.4f} {tr / tt:>6.2f} "
                  f"{gbs:>7.0f} {100 * gbs * 1e9 / COPY_BANDWIDTH:>6.1f}%")
    if not args.only or "gemm" in args.only:
        failures += gemm_rows(args.quick)
    print(f"machine: {machine}")
    return 1 if failures else 0


def gemm_rows(quick: bool) -> int:
    """The default GPU matmul schedule (mma.sync through tensorize) against torch.matmul: float16
    inputs, float32 accumulation and output (torch: float16 output, cuBLAS). Prints TFLOP/s."""
    import torch

    import tessel as ts

    failures = 0
    for n in ((1024,) if quick else (1024, 4096)):
        A = ts.placeholder((n, n), "float16", name="A")
        B = ts.placeholder((n, n), "float16", name="B")
        k = ts.reduce_axis(n, name="k")
        C = ts.compute((n, n), lambda i, j: ts.sum(A[i, k].astype("float32") * B[k, j].astype("float32"), axis=k),
                       name="C")
        try:
            kern = ts.build([A, B, C], target="cuda")
            a = torch.randn(n, n, device="cuda", dtype=torch.float16)
            b = torch.randn(n, n, device="cuda", dtype=torch.float16)
            c = torch.empty(n, n, device="cuda", dtype=torch.float32)
            kern(a, b, c)
            torch.cuda.synchronize()
            torch.testing.assert_close(c, (a.float() @ b.float()), rtol=2e-3, atol=2e-2)
            tt, tr = bench_ms(lambda: kern(a, b, c)), bench_ms(lambda: a @ b)
        except Exception as e:  # noqa: BLE001 - report and go on
            failures += 1
            print(f"gemm        generic  float16   {n}^3 FAILED: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        flop = 2.0 * n**3
        print(f"gemm        generic  float16   {str((n, n, n)):<14} {tt:>10.4f} {tr:>9.4f} {tr / tt:>6.2f} "
              f"{flop / tt / 1e9:>7.0f} TFLOP/s (torch {flop / tr / 1e9:.0f})")
    return failures


if __name__ == "__main__":
    sys.exit(main())
