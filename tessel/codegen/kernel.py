"""Kernel: a compiled kernel, callable on arrays, with its IR, its generated code and a timer.

`Kernel` is what `tessel.build` returns (it lives in codegen because the backends build it; the
driver re-exports it as `tessel.compiler.kernel.Kernel`). Calling it checks every argument against
the kernel's parameters (count, type, dtype, shape, contiguity, writability of outputs, overlap) and raises
`ArgumentError` naming the parameter, what was expected and what was given; then the backend runs
on the caller's arrays, writing outputs in place.

Scalar parameters (int32 / int64 `Var`s in `.ir.params`, see `tessel.ir.nodes.Kernel`) take a
Python or numpy int; array shapes that are expressions of them (`Buffer("A", (n,))`) are checked
against the shape evaluated with the values given, so one compiled kernel serves every length.
Both backends compile them: the CPU one (TVM, `tessel.codegen.tvm_tir`) and the CUDA one
(`tessel.codegen.cuda_kernel.GpuKernel`).

The backend object (`runner`) provides `tensors(arrays)` (zero-copy views with `data_ptr()`),
`call(tensors)` and `time(arrays, number, repeat)`. Measured per-call overhead, 2-core VM, 3 arrays:
about 1 us of checks per argument plus the backend's own (see `tessel.codegen.tvm_runtime`).

Example:
    >>> import numpy as np, tessel as ts
    >>> A = ts.placeholder((4,), name="A")
    >>> B = ts.compute((4,), lambda i: A[i] * 2.0, name="B")
    >>> kern = ts.build([A, B])
    >>> a, b = np.arange(4, dtype="float32"), np.zeros(4, "float32")
    >>> kern(a, b); b.tolist()
    [0.0, 2.0, 4.0, 6.0]
    >>> [p.name for p in kern.params]
    ['A', 'B']
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from tessel.errors import ArgumentError
from tessel.ir.dtypes import numpy_dtype
from tessel.ir.nodes import Expr, Intrinsic, Store, Var, free_vars, walk
from tessel.ir.nodes import Kernel as IRKernel

_BOUND_CACHE = 64  # evaluated shapes kept per kernel, one entry per distinct set of scalar values


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple  # ints and (for a symbolic buffer) integer Exprs of scalar parameters; () for a scalar
    dtype: str
    np_dtype: np.dtype
    output: bool
    nbytes: int | None  # None when the shape is symbolic (see _Bound.nbytes)
    scalar: bool = False


class _Bound:
    """What depends on the scalar arguments of one call: the values (name -> int), every
    parameter's int shape and byte size, and room for the backend's own (`extra`)."""

    __slots__ = ("scalars", "shapes", "nbytes", "extra")

    def __init__(self, scalars: dict, shapes: tuple, nbytes: tuple):
        self.scalars, self.shapes, self.nbytes, self.extra = scalars, shapes, nbytes, {}


def _shape_text(shape) -> str:
    from tessel.ir.text import to_text

    return "(" + ", ".join(str(d) if isinstance(d, int) else to_text(d) for d in shape) + ("," if len(shape) == 1
                                                                                         else "") + ")"


class Kernel:
    """A compiled kernel.

    Attributes: `name`, `params` (parameter Buffers in call order), `ir` (the scheduled tessel
    kernel after the pass pipeline), `target` (a `tessel.ir.target.Target`), `source` (the
    generated code: TVMScript text of the TIR on the CPU). `inspect("asm")` / `inspect("ll")`
    give the machine code the backend produced.
    """

    def __init__(self, ir: IRKernel, runner, target, source=None, inspect=None, written=None):
        self.ir = ir
        self.name = ir.name
        self.target = target
        self._runner = runner
        self._source = source  # a string, or a function producing it on first use
        self._inspect = inspect
        if written is None:  # without the backend's answer: every buffer an intrinsic is handed may be written
            written = {n.buffer.name for n in walk(ir.body) if isinstance(n, Store)}
            written |= {a.buffer.name for n in walk(ir.body) if isinstance(n, Intrinsic)
                        for a in n.args if hasattr(a, "buffer")}
        specs = []
        for p in ir.params:
            if isinstance(p, Var):
                specs.append(_Param(p.name, (), p.dtype, np.dtype(p.dtype), False, 0, True))
            else:
                nbytes = None if p.symbolic else p.size * numpy_dtype(p.dtype).itemsize
                specs.append(_Param(p.name, tuple(p.shape), p.dtype, numpy_dtype(p.dtype), p.name in written, nbytes))
        self._specs = tuple(specs)
        self._outputs = tuple(i for i, s in enumerate(self._specs) if s.output)
        self._scalar_index = tuple(i for i, s in enumerate(self._specs) if s.scalar)
        self._static = None if self._scalar_index else self._bound({})
        self._bounds: dict = {}  # tuple of scalar values -> _Bound

    @property
    def params(self) -> tuple:
        """The parameters in call order, as in `.ir.params`: Buffers (name, shape, dtype) and
        scalar Vars (name, dtype)."""
        return self.ir.params

    @property
    def source(self) -> str:
        if callable(self._source):
            self._source = self._source()
        return self._source or ""

    def inspect(self, kind: str = "asm") -> str:
        """Backend code of another kind: "asm" (assembly) or "ll" (LLVM IR) on the CPU."""
        if self._inspect is None:
            raise ArgumentError(f"kernel '{self.name}': this backend has no '{kind}' code to show")
        return self._inspect(kind)

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.dtype}" if s.scalar else
                        f"{s.name}: {s.dtype}[{_shape_text(s.shape)[1:-1].rstrip(',')}]{' (out)' if s.output else ''}"
                        for s in self._specs)
        return f"<tessel.Kernel {self.name}({sig}) on {self.target}>"

    # -- calling ---------------------------------------------------------------------------------

    def __call__(self, *arrays) -> None:
        """Run the kernel on numpy arrays, one per parameter in order; outputs are written in place."""
        bound = self._check(arrays)
        tensors = self._runner.tensors(arrays)
        if self._outputs:
            self._check_overlap(tensors, bound.nbytes)
        self._runner.call(tensors)

    def run_reference(self, *arrays) -> None:
        """Run `.ir` with the reference interpreter (`tessel.ir.interp.run`), outputs in place;
        the arguments are those of a call (ints for scalar parameters)."""
        from tessel.ir.interp import run

        self._check(arrays)
        run(self.ir, *arrays)

    def time(self, *arrays, number: int = 10, repeat: int = 5) -> float:
        """Median seconds per call over `repeat` rounds of `number` calls each (after a warm-up).

        The arrays are used as in a call, so outputs are overwritten.
        """
        bound = self._check(arrays)
        if self._outputs:
            self._check_overlap(self._runner.tensors(arrays), bound.nbytes)
        if number < 1 or repeat < 1:
            raise ArgumentError(f"kernel '{self.name}': time() needs number >= 1 and repeat >= 1, "
                                f"got number={number}, repeat={repeat}")
        return statistics.median(self._runner.time(arrays, number=number, repeat=repeat))

    # -- scalar parameters and the shapes they give ----------------------------------------------

    def _count(self, args) -> None:
        specs = self._specs
        if len(args) != len(specs):
            names = ", ".join(s.name for s in specs)
            what = "argument(s)" if self._scalar_index else "array(s)"
            raise ArgumentError(f"kernel '{self.name}' takes {len(specs)} {what} ({names}), got {len(args)}")

    def _scalar(self, s: _Param, x) -> int:
        """The int value of scalar parameter `s` given `x` (a Python or numpy int in s's range)."""
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': a scalar {s.dtype} parameter takes a "
                                f"Python or numpy int, got {type(x).__name__}")
        info = np.iinfo(s.np_dtype)
        if not info.min <= int(x) <= info.max:
            raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': {int(x)} is out of the range of "
                                f"{s.dtype} ({info.min} .. {info.max})")
        return int(x)

    def _bind(self, args) -> _Bound:
        """The call's _Bound: scalar arguments checked, symbolic shapes evaluated (cached per values)."""
        if self._static is not None:
            return self._static
        values = tuple(self._scalar(self._specs[i], args[i]) for i in self._scalar_index)
        bound = self._bounds.get(values)
        if bound is None:
            if len(self._bounds) >= _BOUND_CACHE:
                self._bounds.clear()
            env = {self._specs[i].name: v for i, v in zip(self._scalar_index, values)}
            bound = self._bounds[values] = self._bound(env)
        return bound

    def _bound(self, env: dict) -> _Bound:
        """Evaluate the shapes (and whatever else a backend adds) for scalar values `env`."""
        shapes, nbytes = [], []
        for s in self._specs:
            if s.scalar or s.nbytes is not None:
                shapes.append(s.shape)
                nbytes.append(s.nbytes)
                continue
            from tessel.ir.interp import interpret_expr

            shape = tuple(d if isinstance(d, int) else int(interpret_expr(d, env)) for d in s.shape)
            if any(d < 0 for d in shape):
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': its shape {_shape_text(s.shape)} is "
                                    f"{shape} for {_values(env)}; an extent must not be negative")
            shapes.append(shape)
            nbytes.append(int(np.prod(shape, dtype=np.int64)) * s.np_dtype.itemsize)
        return _Bound(env, tuple(shapes), tuple(nbytes))

    def _shape_error(self, s: _Param, want: tuple, got: tuple, scalars: dict) -> ArgumentError:
        """ArgumentError for array `s` of shape `got`, expected `want`: the dimension and the scalars."""
        what = f"kernel '{self.name}' argument '{s.name}'"
        sym = f" (shape {_shape_text(s.shape)} for {_values(scalars)})" if s.nbytes is None else ""
        if len(got) != len(want):
            return ArgumentError(f"{what}: expected shape {want}{sym}, got shape {got} ({len(got)} dimensions, "
                                 f"not {len(want)})")
        d = next(d for d, (w, g) in enumerate(zip(want, got)) if w != g)
        e = s.shape[d]
        if isinstance(e, Expr):
            from tessel.ir.text import to_text

            deps = sorted(v.name for v in free_vars(e))
            on = f"{to_text(e)} = {want[d]} for {_values({k: scalars[k] for k in deps if k in scalars})}"
            return ArgumentError(f"{what}: dimension {d} has {got[d]} elements but must have {on} "
                                 f"(it depends on scalar parameter(s) {', '.join(deps)}); expected shape {want}, "
                                 f"got {got}")
        return ArgumentError(f"{what}: expected shape {want}{sym}, got {got} (dimension {d}: {got[d]}, not {want[d]})")

    def _check(self, arrays) -> _Bound:
        """Check host (numpy) arguments; return the call's _Bound."""
        self._count(arrays)
        specs = self._specs
        bound = self._bind(arrays)
        for a, s, shape in zip(arrays, specs, bound.shapes):
            if s.scalar:
                continue
            if type(a) is not np.ndarray and not isinstance(a, np.ndarray):  # exact type first: fast path
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected a numpy array of "
                                    f"{s.dtype}{list(shape)}, got {type(a).__name__}")
            if a.dtype != s.np_dtype:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected dtype {s.dtype}, "
                                    f"got {a.dtype}")
            if a.shape != shape:
                if s.nbytes is not None and not self._scalar_index:
                    raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected shape {s.shape}, "
                                        f"got {a.shape}")
                raise self._shape_error(s, shape, a.shape, bound.scalars)
            if not a.flags.c_contiguous:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected a C-contiguous array, "
                                    f"got strides {a.strides}; pass np.ascontiguousarray(...)")
            if s.output and not a.flags.writeable:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}' is an output but the array "
                                    f"given is read-only")
        return bound

    def _check_overlap(self, tensors, sizes: tuple) -> None:
        # The code assumes no aliasing (tir.noalias): an output must not overlap another argument.
        # Data pointers of the zero-copy views are cheap (0.15 us; np.may_share_memory costs 1 us).
        ptrs = [None if s.scalar else t.data_ptr() for t, s in zip(tensors, self._specs)]
        for i in self._outputs:
            lo, hi = ptrs[i], ptrs[i] + sizes[i]
            for j, p in enumerate(ptrs):
                if p is not None and p < hi and lo < p + sizes[j] and j != i:
                    specs = self._specs
                    raise ArgumentError(f"kernel '{self.name}' arguments '{specs[i].name}' and '{specs[j].name}' "
                                        f"overlap in memory; an output must not share memory with another argument")


def _values(env: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items()) or "no scalars"
