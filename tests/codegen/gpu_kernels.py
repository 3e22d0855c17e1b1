"""Hand-built GPU kernels (IR with thread-bound loops) shared by the CUDA backend's tests, with
input makers: fresh random values plus the special values each operation must get right.

Each maker returns `(kernel, make_inputs)`; `make_inputs(rng)` returns one numpy array per
parameter (outputs filled with a sentinel, never zeros, so an unwritten output shows).
"""

from __future__ import annotations

import numpy as np

from tessel.codegen.cuda_text import CUDA_INT_DTYPES as INT_DTYPES  # the ints the CUDA printer takes
from tessel.ir.dtypes import FLOAT_DTYPES, numpy_dtype
from tessel.ir.nodes import (
    MATH_FUNCS, Allocate, Barrier, Binary, Buffer, BufferRef, Call, Cast, Const, For, IfThenElse, Intrinsic, Kernel,
    Launch, Select, Store, Var, seq,
)

ALL = FLOAT_DTYPES + INT_DTYPES + ("bool",)


def _out(shape, dtype) -> np.ndarray:
    return np.full(shape, 7, dtype=numpy_dtype(dtype)) if dtype != "bool" else np.ones(shape, bool)


def _grid_loop(n: int, block: int, body_of, name: str):
    """`for b in blocks (blockIdx.x): for t in block (threadIdx.x): if i < n: body(i)` with i = b*block+t."""
    b, t = Var(f"{name}_b"), Var(f"{name}_t")
    i = b * block + t
    nb = -(-n // block)
    inner = body_of(i)
    if nb * block != n:
        inner = IfThenElse(i < n, inner)
    return For(b, nb, For(t, block, inner, "threadIdx.x"), "blockIdx.x")


def elementwise(n: int = 1000, block: int = 64, lanes: int = 4):
    """One stage per dtype (float32, float16, bfloat16): C = A * B + A - B / 2 with vectorized
    inner loops of `lanes` and a guard for the tail (n not a multiple of block * lanes)."""
    stages, params = [], []
    for dt in ("float32", "float16", "bfloat16"):
        A, B, C = (Buffer(f"{x}_{dt}", (n,), dt) for x in "ABC")
        params += [A, B, C]
        b, t, v = Var(f"b_{dt}"), Var(f"t_{dt}"), Var(f"v_{dt}")
        i = (b * block + t) * lanes + v
        two = Const(2.0, dt)
        value = A[i] * B[i] + A[i] - B[i] / two
        nb = -(-n // (block * lanes))
        stages.append(For(b, nb, For(t, block, For(v, lanes, IfThenElse(i < n, Store(C, (i,), value)), "vectorized"),
                                     "threadIdx.x"), "blockIdx.x"))
    kernel = Kernel("ew", tuple(params), seq(*stages), target="cuda")

    def inputs(rng):
        out = []
        for dt in ("float32", "float16", "bfloat16"):
            npd = numpy_dtype(dt)
            out += [rng.standard_normal(n).astype(npd), (rng.standard_normal(n) + 0.5).astype(npd), _out(n, dt)]
        return out

    return kernel, inputs


def block_sum(nblocks: int = 3, threads: int = 64, dtype: str = "float32"):
    """Each block sums its `threads` elements by a tree reduction in shared memory with barriers."""
    A = Buffer("A", (nblocks * threads,), dtype)
    O = Buffer("O", (nblocks,), dtype)
    S = Buffer("S", (threads,), dtype, "shared")
    b, t = Var("b"), Var("t")
    steps, s = [], threads // 2
    while s >= 1:
        steps += [IfThenElse(t < s, Store(S, (t,), S[t] + S[t + s])), Barrier()]
        s //= 2
    body = seq(Store(S, (t,), A[b * threads + t]), Barrier(), *steps, IfThenElse(t.eq(0), Store(O, (b,), S[0])))
    kernel = Kernel("block_sum", (A, O), For(b, nblocks, Allocate(S, For(t, threads, body, "threadIdx.x")),
                                              "blockIdx.x"), target="cuda")

    def inputs(rng):
        a = rng.standard_normal(nblocks * threads) if dtype.startswith("float") else rng.integers(-99, 99, A.size)
        return [a.astype(numpy_dtype(dtype)), _out(nblocks, dtype)]

    return kernel, inputs


UNARY = [f for f, n in MATH_FUNCS.items() if n == 1]


def math_calls(n: int = 96, block: int = 32):
    """For each float dtype: O[f, i] = f(X[i]) for every unary math function, and pow(X, Y)."""
    stages, params = [], []
    funcs = UNARY + ["pow"]
    for dt in FLOAT_DTYPES:
        X, Y = Buffer(f"X_{dt}", (n,), dt), Buffer(f"Y_{dt}", (n,), dt)
        O = Buffer(f"O_{dt}", (len(funcs), n), dt)
        params += [X, Y, O]

        def body(i, X=X, Y=Y, O=O):
            calls = [Call(f, (X[i], Y[i]) if f == "pow" else (X[i],)) for f in funcs]
            return seq(*[Store(O, (k, i), c) for k, c in enumerate(calls)])

        stages.append(_grid_loop(n, block, body, f"m_{dt}"))
    kernel = Kernel("math_calls", tuple(params), seq(*stages), target="cuda")

    def inputs(rng):
        out = []
        for dt in FLOAT_DTYPES:
            npd = numpy_dtype(dt)
            x = rng.uniform(0.05, 4.0, n) * rng.choice([-1, 1], n)
            x[:6] = [0.5, 1.0, 2.0, -1.5, 3.0, -0.25]
            y = rng.uniform(-3.0, 3.0, n)
            out += [x.astype(npd), y.astype(npd), _out((len(funcs), n), dt)]
        return out

    return kernel, inputs, funcs


_SPECIAL_F = [0.0, -0.0, 1.5, -1.5, 2.5, -2.5, np.inf, -np.inf, np.nan, 1e30, -1e30, 3e9, -3e9, 127.5, -128.7,
              70000.0, 2147483520.0, 9.3e18, -9.3e18, 1e-8]
_SPECIAL_I = {"int8": [0, 1, -1, 127, -128, 100, -100],
              "int32": [0, 1, -1, 2**31 - 1, -2**31, 65519, 16777217, -70000],
              "int64": [0, 1, -1, 2**63 - 1, -2**63, 2**53 + 1, 2**31, 2**24 + 1]}


def cast_values(dtype: str, n: int, rng) -> np.ndarray:
    """`n` values of `dtype`: the special ones first, then random."""
    npd = numpy_dtype(dtype)
    if dtype == "bool":
        v = rng.integers(0, 2, n).astype(bool)
        v[:2] = [True, False]
        return v
    if dtype in FLOAT_DTYPES:
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 12, n)
        with np.errstate(over="ignore"):
            sp = np.array(_SPECIAL_F).astype(npd)
    else:
        info = np.iinfo(npd)
        v = rng.integers(info.min, info.max, n, dtype=npd, endpoint=True)
        sp = np.array(_SPECIAL_I[dtype], dtype=npd)
    with np.errstate(over="ignore", invalid="ignore"):
        v = v.astype(npd)
    v[: len(sp)] = sp
    return v


def casts(n: int = 64, block: int = 32):
    """For every pair of distinct dtypes (src, dst): O_src_dst[i] = cast(dst, X_src[i])."""
    inputs_ = {dt: Buffer(f"X_{dt}", (n,), dt) for dt in ALL}
    outs = {(s, d): Buffer(f"O_{s}_{d}", (n,), d) for s in ALL for d in ALL if s != d}
    body = lambda i: seq(*[Store(o, (i,), Cast(d, inputs_[s][i])) for (s, d), o in outs.items()])  # noqa: E731
    kernel = Kernel("casts", tuple(inputs_.values()) + tuple(outs.values()), _grid_loop(n, block, body, "c"),
                    target="cuda")

    def inputs(rng):
        return [cast_values(dt, n, rng) for dt in ALL] + [_out(n, d) for (_, d) in outs]

    return kernel, inputs


INT_OPS = ("add", "sub", "mul", "floordiv", "floormod", "min", "max")


def int_ops(n: int = 64, block: int = 32):
    """For each int dtype: O[k, i] = X[i] op_k Y[i] (wrapping), abs, and comparisons as selects."""
    stages, params = [], []
    for dt in INT_DTYPES:
        X, Y = Buffer(f"X_{dt}", (n,), dt), Buffer(f"Y_{dt}", (n,), dt)
        O = Buffer(f"O_{dt}", (len(INT_OPS) + 3, n), dt)
        params += [X, Y, O]

        def body(i, X=X, Y=Y, O=O, dt=dt):
            x, y = X[i], Y[i]
            vals = [Binary(op, x, y) for op in INT_OPS]
            vals.append(Call("abs", (x,)))
            vals.append(Select(x < y, x * Const(3, dt), y - x))
            vals.append(Select(x.eq(y) | (x >= Const(0, dt)), Const(1, dt), Const(-1, dt)))
            return seq(*[Store(O, (k, i), v) for k, v in enumerate(vals)])

        stages.append(_grid_loop(n, block, body, f"i_{dt}"))
    kernel = Kernel("int_ops", tuple(params), seq(*stages), target="cuda")

    def inputs(rng):
        out = []
        for dt in INT_DTYPES:
            x, y = cast_values(dt, n, rng), cast_values(dt, n, rng)[::-1].copy()
            y[y == 0] = 3  # division by zero is where CUDA and the interpreter differ (documented)
            y[-1] = -1
            x[-1] = np.iinfo(numpy_dtype(dt)).min  # INT_MIN // -1 wraps
            out += [x, y, _out((len(INT_OPS) + 3, n), dt)]
        return out

    return kernel, inputs


FLOAT_OPS = ("add", "sub", "mul", "div", "floordiv", "floormod", "min", "max")


def float_ops(n: int = 64, block: int = 32):
    """For each float dtype: O[k, i] = X[i] op_k Y[i] (including floor division / modulo and
    NaN-propagating min / max on special values), and comparisons through selects."""
    stages, params = [], []
    for dt in FLOAT_DTYPES:
        X, Y = Buffer(f"X_{dt}", (n,), dt), Buffer(f"Y_{dt}", (n,), dt)
        O = Buffer(f"O_{dt}", (len(FLOAT_OPS) + 2, n), dt)
        params += [X, Y, O]

        def body(i, X=X, Y=Y, O=O, dt=dt):
            x, y = X[i], Y[i]
            vals = [Binary(op, x, y) for op in FLOAT_OPS]
            vals.append(Select((x < y) & (x.ne(Const(0.0, dt))), x, y * Const(0.1, dt)))
            vals.append(Select(x.eq(y) | (x >= y), Const(1.0, dt), Const(-1.0, dt)))
            return seq(*[Store(O, (k, i), v) for k, v in enumerate(vals)])

        stages.append(_grid_loop(n, block, body, f"f_{dt}"))
    kernel = Kernel("float_ops", tuple(params), seq(*stages), target="cuda", launch=Launch((2, 1, 1), (32, 1, 1)))

    def inputs(rng):
        out = []
        for dt in FLOAT_DTYPES:
            x = cast_values(dt, n, rng)
            y = np.roll(cast_values(dt, n, rng), 3)
            out += [x, y, _out((len(FLOAT_OPS) + 2, n), dt)]
        return out

    return kernel, inputs


def warp_sum(rows: int = 2):
    """O[r] = sum of A[r, 0:32], one warp per row, by butterfly shuffles (shfl.sync.bfly.b32)."""
    A, O = Buffer("A", (rows, 32), "float32"), Buffer("O", (rows,), "float32")
    acc, tmp = Buffer("acc", (1,), "float32", "local"), Buffer("tmp", (1,), "float32", "local")
    b, t = Var("b"), Var("t")
    steps = []
    for off in (16, 8, 4, 2, 1):
        steps += [Intrinsic("shfl.sync.bfly.b32", (BufferRef(tmp, (0,)), acc[0], Const(off))),
                  Store(acc, (0,), acc[0] + tmp[0])]
    body = seq(Store(acc, (0,), A[b, t]), *steps, IfThenElse(t.eq(0), Store(O, (b,), acc[0])))
    body = Allocate(acc, Allocate(tmp, body))
    kernel = Kernel("warp_sum", (A, O), For(b, rows, For(t, 32, body, "threadIdx.x"), "blockIdx.x"), target="cuda")
    return kernel, lambda rng: [rng.standard_normal((rows, 32)).astype(np.float32), np.full(rows, 7, np.float32)]


def workspace():
    """Two stages through a global buffer the kernel allocates (each thread reads back only what
    it wrote, so the workspace needs no synchronisation)."""
    n = 96
    A, B = Buffer("A", (n,), "float32"), Buffer("B", (n,), "float32")
    T = Buffer("T", (n,), "float32", "global")
    b, t = Var("b"), Var("t")
    i = b * 32 + t
    body = seq(Store(T, (i,), A[i] * A[i]), Store(B, (i,), T[i] + Const(1.0, "float32")))
    kernel = Kernel("ws", (A, B), Allocate(T, For(b, 3, For(t, 32, body, "threadIdx.x"), "blockIdx.x")), target="cuda")
    return kernel, lambda rng: [rng.standard_normal(n).astype(np.float32), np.full(n, 7, np.float32)]


def shared_reverse(n: int = 16384, threads: int = 256):
    """B = A reversed through a shared buffer of n float32 (64 KB by default: above the 48 KB of
    static shared memory, so it is carved from dynamic shared memory)."""
    A, B = Buffer("A", (n,)), Buffer("B", (n,))
    S = Buffer("S", (n,), "float32", "shared")
    t, k = Var("t"), Var("k")
    body = seq(For(k, n // threads, Store(S, (k * threads + t,), A[k * threads + t])), Barrier(),
               For(k, n // threads, Store(B, (k * threads + t,), S[n - 1 - (k * threads + t)])))
    return Kernel("rev", (A, B), Allocate(S, For(t, threads, body, "threadIdx.x")), target="cuda")


KERNELS = {
    "elementwise": lambda: elementwise()[:2],
    "block_sum": lambda: block_sum()[:2],
    "math_calls": lambda: math_calls()[:2],
    "casts": lambda: casts()[:2],
    "int_ops": lambda: int_ops()[:2],
    "float_ops": lambda: float_ops()[:2],
    "warp_sum": warp_sum,
    "workspace": workspace,
}
HOST_RUNNABLE = ["elementwise", "math_calls", "casts", "int_ops", "float_ops", "workspace"]
