"""The reference interpreter: runs any kernel on numpy arrays, CPU or GPU schedule alike.

It is the oracle of the tests and of the fuzzer, and how GPU schedules are checked where there is
no GPU. It does not walk the tree per element: a kernel is translated once into a Python function
mirroring its loop nest (translate.py for statements, expr.py for expressions, runtime.py for
what the generated code calls), compiled, and cached by the kernel's structure in a bounded
cache; threaded kernels run as blocks of threads (gpu.py); intrinsics come from a registry
(intrinsics.py). A 32x32x32 float32 GEMM runs in about 0.03 s; the default cuda 128x128x64
fp16 GEMM schedule in about 0.4 s of CPU time, 0.7 s with race checking.

Semantics (what a compiled kernel must reproduce):

- Every operation computes in its dtype and rounds to it. float16 / bfloat16 / float32 /
  float64 arithmetic (+ - * /, min, max) is IEEE with round-to-nearest in the operand dtype,
  as CUDA `half` / `__nv_bfloat16` / `float` / `double` arithmetic (numpy and ml_dtypes scalars).
  Float `floordiv` / `floormod` follow numpy (floor of the quotient, remainder with the
  divisor's sign). Float min / max propagate NaN (numpy.minimum / maximum), so a poisoned value
  cannot be hidden by a max.
- Math calls (exp, log, sqrt, rsqrt, tanh, sigmoid, erf, sin, cos, floor, ceil, pow) are computed
  in float64 with Python's `math` module and rounded once to the argument dtype; rsqrt is
  1/sqrt(x) and sigmoid 1/(1+exp(-x)); IEEE special values (inf, nan, -0.0) come out as numpy
  gives them. abs is exact in any dtype.
- Integers are two's complement and wrap on overflow (add, sub, mul, abs, casts, and
  INT_MIN // -1). `floordiv` / `floormod` round toward minus infinity, as in Python; an integer
  division or modulo by zero raises ExecutionError. `div` is true division and only for floats
  (on integers it is refused when the kernel is translated).
- Casts: float to int truncates toward zero and saturates at the dtype's limits (NaN gives 0, as
  CUDA's cvt.rzi; C leaves those cases undefined); int to int wraps; anything to bool is `!= 0`
  (NaN is true); bool to number is 0 or 1; float to float rounds to nearest.
- `and` / `or` evaluate both operands; `Select` evaluates only the chosen branch, so the other
  may hold a load that would be out of bounds (padding).
- Every load and store is bounds-checked: an out-of-bounds access raises ExecutionError naming
  the kernel, the buffer, the index tuple and the shape. Dimensions that interval analysis
  proves in range are not checked at run time.
- Buffers a kernel allocates start poisoned: NaN for floats, POISON_INT truncated to the dtype
  for integers (int8: -90, int32: -1515870810), True for bool. Outputs passed by the caller are
  left as they are where the kernel does not write them.
- Loops of kind parallel, vectorized and unrolled run as serial loops; their legality is the
  scheduler's business.
- GPU: a kernel with thread-bound loops, a Launch, barriers or intrinsics runs as a grid of
  threads (the launch shape is the Launch, or else the largest extent bound to each axis); a
  loop bound to an axis is `v = threadIdx.x` guarded by `v < extent`. `shared` buffers exist
  once per block, `local` ones once per thread (each time the thread allocates), `global` ones
  once per launch. Intrinsics come from a registry (intrinsics.py); an unknown one raises
  TesselError naming it.
- Scheduling (gpu.py): blocks, or the blocks of a thread-block cluster together, run in a seeded
  random order; within them a random runnable thread runs to its next barrier or intrinsic. A
  Barrier releases the block once every thread waits at it; threads at different barriers, or
  some finished while others wait, raise ExecutionError. Warp / warpgroup collectives wait for
  their own lanes only; blocking intrinsics (`IntrinsicImpl.ready`) let producer and consumer
  warps run independently; when no thread can go on, ExecutionError "deadlock" names each wait.
  `run(..., seed=...)` reproduces a schedule; the seed is in every RaceError and deadlock message.
- Races (race.py; `run(..., race_check=True)`, the default): happens-before with vector clocks
  over threads and their async proxies. Barriers, syncing collectives, mbarrier phases and
  cp.async waits order accesses; mma.sync / ldmatrix / shuffles do not (a rendezvous, as on the
  GPU). Two accesses to one shared element, or to one element of a global buffer the kernel
  writes, at least one a write and not both atomic, that nothing orders raise RaceError (an
  ExecutionError) naming the kernel, buffer, element, both threads and both statements. Blocks
  of a grid are never ordered with each other (outside one cluster). Reading what a cp.async has
  not yet been waited for is a RaceError ("read before its cp.async wait"); without race
  checking it reads the poison still there.
- Scalar parameters: a `Var` parameter (int32 / int64) takes a Python or numpy int; buffer shapes,
  loop extents and the launch grid may use it, so one kernel (translated once) serves every
  length; array arguments are checked against the evaluated shapes.

Example:
    >>> import numpy as np
    >>> import tessel as ts
    >>> A = ts.placeholder((2, 3), name="A")
    >>> B = ts.compute((3, 2), lambda i, j: A[j, i] * 2.0, name="B")
    >>> a = np.arange(6, dtype="float32").reshape(2, 3); b = np.empty((3, 2), "float32")
    >>> run(ts.lower([A, B]), a, b)
    >>> bool((b == 2 * a.T).all())
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from tessel.errors import ArgumentError, TesselError
from tessel.ir.dtypes import is_bool, is_float, numpy_dtype
from tessel.ir.interp.gpu import run_grid
from tessel.ir.interp.intrinsics import INTRINSICS, Context, IntrinsicImpl, as_impl
from tessel.ir.interp.runtime import POISON_INT, ExecutionError, Ref, int_range, poison_value
from tessel.ir.interp.expr import ExprTranslation, translate_expr
from tessel.ir.interp.translate import Translation, translate_kernel
from tessel.ir.interp.race import RaceError
from tessel.ir.nodes import Buffer, BufferRef, Expr, Intrinsic, Kernel, Store, Var, walk


class _LRU:
    """A bounded cache, least recently used out first."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()

    def get(self, key, make):
        value = self.data.get(key)
        if value is None:
            value = self.data[key] = make()
            if len(self.data) > self.size:
                self.data.popitem(last=False)
        else:
            self.data.move_to_end(key)
        return value

    def clear(self) -> None:
        self.data.clear()


# Translations by kernel (or expression) structure. They do not depend on the intrinsic
# registry, so all interpreters share them.
_CACHE = _LRU(256)


def clear_cache() -> None:
    """Forget every cached translation."""
    _CACHE.clear()


class Interpreter:
    """Runs kernels with a given intrinsic registry (by default `INTRINSICS`).

    >>> from tessel.ir.nodes import Buffer, Const, Kernel, Store
    >>> k = Kernel("one", (Buffer("X", (1,)),), Store(Buffer("X", (1,)), (0,), Const(1.0, "float32")))
    >>> x = np.zeros(1, "float32"); Interpreter().run(k, x); x.tolist()
    [1.0]
    """

    def __init__(self, intrinsics: Mapping | None = None, seed: int | None = None, race_check: bool = True):
        self.intrinsics = INTRINSICS if intrinsics is None else intrinsics
        self.seed = seed  # None: a fresh seed per run (printed in race and deadlock messages)
        self.race_check = race_check

    def translate(self, kernel: Kernel, race: bool = False, tracked: frozenset = frozenset()) -> Translation:
        """The kernel's translation (cached); `race`: with race-checking hooks on shared memory,
        global allocations and the `tracked` parameters."""
        return _CACHE.get(("kernel", kernel, race, tracked), lambda: translate_kernel(kernel, race, tracked))

    def source(self, kernel: Kernel, race: bool = False) -> str:
        """The Python source the kernel runs as (for debugging)."""
        return self.translate(kernel, race, frozenset(p.name for p in kernel.params)).source

    def run(self, kernel: Kernel, *arrays: np.ndarray, seed: int | None = None,
            race_check: bool | None = None) -> None:
        """Run `kernel` on `arrays` (its parameters, in order); outputs are written in place.

        GPU kernels run with a seeded random schedule (`seed`, else the interpreter's, else a
        fresh one) and, unless `race_check` is False, raise RaceError on a data race."""
        t = self.translate(kernel)
        impls = {}
        for name in sorted(t.intrinsics):
            if name not in self.intrinsics:
                known = ", ".join(sorted(self.intrinsics)) or "none"
                raise TesselError(f"kernel '{kernel.name}': unknown intrinsic '{name}' "
                                  f"(the interpreter knows: {known})")
            impls[name] = as_impl(self.intrinsics[name])
        race = self.race_check if race_check is None else race_check
        if t.threaded and race:
            t = self.translate(kernel, True, _tracked_params(kernel, impls))
        flat, copies, env = _flat_arguments(kernel, t, arrays)
        grid = _grid(t, env, kernel.name) if t.threaded else None
        with np.errstate(all="ignore"):
            if t.threaded:
                run_grid(t, flat, impls, kernel.name, self.seed if seed is None else seed, grid)
            else:
                t.fn(flat, (0, 0, 0), (0, 0, 0), {}, {}, None)
        for original, copy in copies:
            original[...] = copy

    def interpret_expr(self, expr: Expr, env: dict):
        """Evaluate an expression; see the module function `interpret_expr`."""
        t: ExprTranslation = _CACHE.get(("expr", expr), lambda: translate_expr(expr))
        values = [_scalar_argument(v, _lookup(env, v, v.name, "variable")) for v in t.vars]
        arrays = [_array_argument(b, _lookup(env, b, b.name, "buffer")).reshape(-1) for b in t.buffers]
        with np.errstate(all="ignore"):
            out = t.fn(values, arrays)
        to = numpy_dtype(expr.dtype).type
        return out if type(out) is to else to(out)


def _writes(kernel: Kernel) -> tuple:
    """(names of buffers stored to, ((intrinsic, position, buffer name), ...) of buffer operands)."""
    stored, operands = set(), []
    for n in walk(kernel.body):
        if isinstance(n, Store):
            stored.add(n.buffer.name)
        elif isinstance(n, Intrinsic):
            operands.extend((n.name, k, a.buffer.name) for k, a in enumerate(n.args) if isinstance(a, BufferRef))
    return frozenset(stored), tuple(operands)


def _tracked_params(kernel: Kernel, impls: dict) -> frozenset:
    """The parameters whose accesses the race checker tracks: those the kernel may write (stored
    to, or an intrinsic operand it may write). Read-only inputs cannot race."""
    stored, operands = _CACHE.get(("writes", kernel), lambda: _writes(kernel))
    out = set(stored)
    for name, k, buf in operands:
        writes = impls[name].writes
        if writes is None:
            writes = _table_writes(name)
        if writes is None or k in writes:
            out.add(buf)
    return frozenset(p.name for p in kernel.params if isinstance(p, Buffer) and p.name in out)


def _table_writes(name: str):
    from tessel.ir.intrinsics import TABLE  # lazy: that package imports this one

    entry = TABLE.get(name)
    return None if entry is None else tuple(entry.writes())


def _flat_arguments(kernel: Kernel, t: Translation, arrays) -> tuple[list, list, dict]:
    """Check the arguments; return their flat views (contiguous copies where needed; a scalar
    parameter's value as a Python int), the (original, copy) pairs to write back, and the values
    of the scalar parameters (name -> int)."""
    params = kernel.params
    if len(arrays) != len(params):
        names = ", ".join(p.name for p in params)
        what = "array(s)" if not kernel.scalar_params else "argument(s)"
        raise ArgumentError(f"kernel '{kernel.name}' takes {len(params)} {what} ({names}), got {len(arrays)}")
    scalars = {}
    for k, (p, a) in enumerate(zip(params, arrays)):
        if isinstance(p, Var):
            scalars[p.name] = _scalar_param(p, a, f"kernel '{kernel.name}' argument {k} ('{p.name}')")
    env = {p: scalars[p.name] for p in params if isinstance(p, Var)}
    flat, copies = [], []
    for k, (p, a) in enumerate(zip(params, arrays)):
        if isinstance(p, Var):
            flat.append(scalars[p.name])
            continue
        what = f"kernel '{kernel.name}' argument {k} ('{p.name}')"
        a = _array_argument(p, a, what, _shape(p, env, kernel.name) if p.symbolic else None)
        if p.name in t.written and not a.flags.writeable:
            raise ArgumentError(f"{what}: the kernel writes it but the array is read-only")
        if not a.flags.c_contiguous:
            c = np.ascontiguousarray(a)
            if p.name in t.written:
                copies.append((a, c))
            a = c
        flat.append(a.reshape(-1))
    return flat, copies, env


def _scalar_param(p: Var, x, what: str) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ArgumentError(f"{what}: a scalar {p.dtype} parameter takes a Python or numpy int, "
                            f"got {type(x).__name__}")
    lo, hi = int_range(p.dtype)
    if not lo <= int(x) <= hi:
        raise ArgumentError(f"{what}: {int(x)} does not fit in {p.dtype}")
    return int(x)


def _shape(buf: Buffer, env: dict, kernel: str) -> tuple:
    """The int shape of a symbolic buffer for the scalar parameters' values `env`."""
    out = []
    for d in buf.shape:
        v = d if isinstance(d, int) else int(interpret_expr(d, env))
        if v < 0:
            raise ArgumentError(f"kernel '{kernel}': buffer '{buf.name}' has a negative extent {v} for "
                                f"{', '.join(f'{k.name}={x}' for k, x in env.items())}")
        out.append(v)
    return tuple(out)


def _grid(t: Translation, env: dict, kernel: str) -> tuple:
    grid = tuple(g if isinstance(g, int) else int(interpret_expr(g, env)) for g in t.grid)
    if any(g < 1 for g in grid):
        raise ArgumentError(f"kernel '{kernel}': the launch grid {grid} (from "
                            f"{', '.join(f'{k.name}={x}' for k, x in env.items())}) must be positive")
    return grid


def _array_argument(buf: Buffer, a, what: str | None = None, shape: tuple | None = None) -> np.ndarray:
    what = what or f"buffer '{buf.name}'"
    shape = buf.shape if shape is None else shape
    if not isinstance(a, np.ndarray):
        raise ArgumentError(f"{what}: expected a numpy array of shape {shape} and dtype {buf.dtype}, "
                            f"got {type(a).__name__}")
    if a.shape != shape:
        sym = f" ({', '.join(str(d) for d in buf.shape)})" if buf.symbolic else ""
        raise ArgumentError(f"{what}: expected shape {shape}{sym}, got {a.shape}")
    if a.dtype != numpy_dtype(buf.dtype):
        raise ArgumentError(f"{what}: expected dtype {buf.dtype}, got {a.dtype}")
    return a


def _lookup(env: dict, node, name: str, what: str):
    if node in env:
        return env[node]
    if name in env:
        return env[name]
    raise ArgumentError(f"interpret_expr: no value for {what} '{name}' in the environment")


def _scalar_argument(v: Var, x):
    if is_float(v.dtype):
        return numpy_dtype(v.dtype).type(x)
    if is_bool(v.dtype):
        if not isinstance(x, (bool, np.bool_)):
            raise ArgumentError(f"interpret_expr: variable '{v.name}' is bool, got {x!r}")
        return bool(x)
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ArgumentError(f"interpret_expr: variable '{v.name}' is {v.dtype}, got {x!r}")
    lo, hi = int_range(v.dtype)
    if not lo <= int(x) <= hi:
        raise ArgumentError(f"interpret_expr: value {int(x)} of variable '{v.name}' does not fit in {v.dtype}")
    return int(x)


_DEFAULT = Interpreter()


def run(kernel: Kernel, *arrays: np.ndarray, seed: int | None = None, race_check: bool = True) -> None:
    """Run `kernel` on numpy arrays, one per parameter in order; outputs are written in place.

    Raises ArgumentError for a wrong count, shape or dtype, naming the parameter, and
    ExecutionError (a TesselError) for out-of-bounds accesses, integer division by zero,
    divergent barriers and deadlocks; RaceError (an ExecutionError) for a data race of a GPU
    kernel unless `race_check` is False. `seed` fixes the GPU schedule (default: a fresh one).

    >>> import tessel as ts
    >>> A = ts.placeholder((4,), name="A"); k = ts.reduce_axis(4, name="k")
    >>> S = ts.compute((1,), lambda i: ts.sum(A[k], axis=k), name="S")
    >>> s = np.zeros(1, "float32"); run(ts.lower([A, S]), np.arange(4, dtype="float32"), s); s.tolist()
    [6.0]
    """
    _DEFAULT.run(kernel, *arrays, seed=seed, race_check=race_check)


def interpret_expr(expr: Expr, env: dict):
    """Evaluate `expr` with the interpreter's semantics; returns a numpy scalar of its dtype.

    `env` maps each free variable (the Var or its name) to a value and each loaded buffer (the
    Buffer or its name) to a numpy array.

    >>> from tessel.ir.nodes import Var
    >>> x = Var("x", "int32")
    >>> int(interpret_expr(x * 2 + 1, {"x": 2**30}))
    -2147483647
    """
    return _DEFAULT.interpret_expr(expr, env)


__all__ = [
    "INTRINSICS", "POISON_INT", "Context", "ExecutionError", "Interpreter", "IntrinsicImpl", "RaceError", "Ref",
    "clear_cache",
    "interpret_expr", "poison_value", "run",
]
