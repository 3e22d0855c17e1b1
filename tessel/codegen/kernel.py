"""Kernel: a compiled kernel, callable on arrays, with its IR, its generated code and a timer.

`Kernel` is what `tessel.build` returns (it lives in codegen because the backends build it; the
driver re-exports it as `tessel.compiler.kernel.Kernel`). Calling it checks every argument against
the kernel's parameters (count, type, dtype, shape, contiguity, writability of outputs, overlap) and raises
`ArgumentError` naming the parameter, what was expected and what was given; then the backend runs
on the caller's arrays, writing outputs in place.

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
from tessel.ir.nodes import Intrinsic, Store, walk
from tessel.ir.nodes import Kernel as IRKernel


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple
    dtype: str
    np_dtype: np.dtype
    output: bool
    nbytes: int


class Kernel:
    """A compiled kernel.

    Attributes: `name`, `params` (parameter Buffers in call order), `ir` (the scheduled tessel
    kernel after the pass pipeline), `target` (a `tessel.ir.target.Target`), `source` (the
    generated code: TVMScript text of the TIR on the CPU). `inspect("asm")` / `inspect("ll")`
    give the machine code the backend produced.
    """

    def __init__(self, ir: IRKernel, runner, target, source=None, inspect=None):
        self.ir = ir
        self.name = ir.name
        self.target = target
        self._runner = runner
        self._source = source  # a string, or a function producing it on first use
        self._inspect = inspect
        written = {n.buffer.name for n in walk(ir.body) if isinstance(n, Store)}
        written |= {a.buffer.name for n in walk(ir.body) if isinstance(n, Intrinsic)
                    for a in n.args if hasattr(a, "buffer")}
        self._specs = tuple(_Param(p.name, tuple(p.shape), p.dtype, numpy_dtype(p.dtype), p.name in written,
                                   p.size * numpy_dtype(p.dtype).itemsize) for p in ir.params)
        self._nbytes = tuple(s.nbytes for s in self._specs)
        self._outputs = tuple(i for i, s in enumerate(self._specs) if s.output)

    @property
    def params(self) -> tuple:
        """The parameter Buffers (name, shape, dtype) in call order, as in `.ir.params`."""
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
        sig = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}{' (out)' if s.output else ''}" for s in self._specs)
        return f"<tessel.Kernel {self.name}({sig}) on {self.target}>"

    # -- calling ---------------------------------------------------------------------------------

    def __call__(self, *arrays) -> None:
        """Run the kernel on numpy arrays, one per parameter in order; outputs are written in place."""
        self._check(arrays)
        tensors = self._runner.tensors(arrays)
        if self._outputs:
            self._check_overlap(tensors)
        self._runner.call(tensors)

    def run_reference(self, *arrays) -> None:
        """Run `.ir` with the reference interpreter (`tessel.ir.interp.run`), outputs in place."""
        from tessel.ir.interp import run

        self._check(arrays)
        run(self.ir, *arrays)

    def time(self, *arrays, number: int = 10, repeat: int = 5) -> float:
        """Median seconds per call over `repeat` rounds of `number` calls each (after a warm-up).

        The arrays are used as in a call, so outputs are overwritten.
        """
        self._check(arrays)
        if self._outputs:
            self._check_overlap(self._runner.tensors(arrays))
        if number < 1 or repeat < 1:
            raise ArgumentError(f"kernel '{self.name}': time() needs number >= 1 and repeat >= 1, "
                                f"got number={number}, repeat={repeat}")
        return statistics.median(self._runner.time(arrays, number=number, repeat=repeat))

    def _check(self, arrays) -> None:
        specs = self._specs
        if len(arrays) != len(specs):
            names = ", ".join(s.name for s in specs)
            raise ArgumentError(f"kernel '{self.name}' takes {len(specs)} array(s) ({names}), got {len(arrays)}")
        for a, s in zip(arrays, specs):
            if type(a) is not np.ndarray and not isinstance(a, np.ndarray):  # exact type first: fast path
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected a numpy array of "
                                    f"{s.dtype}{list(s.shape)}, got {type(a).__name__}")
            if a.dtype != s.np_dtype:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected dtype {s.dtype}, "
                                    f"got {a.dtype}")
            if a.shape != s.shape:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected shape {s.shape}, "
                                    f"got {a.shape}")
            if not a.flags.c_contiguous:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}': expected a C-contiguous array, "
                                    f"got strides {a.strides}; pass np.ascontiguousarray(...)")
            if s.output and not a.flags.writeable:
                raise ArgumentError(f"kernel '{self.name}' argument '{s.name}' is an output but the array "
                                    f"given is read-only")

    def _check_overlap(self, tensors) -> None:
        # The code assumes no aliasing (tir.noalias): an output must not overlap another argument.
        # Data pointers of the zero-copy views are cheap (0.15 us; np.may_share_memory costs 1 us).
        ptrs = [t.data_ptr() for t in tensors]
        sizes = self._nbytes
        for i in self._outputs:
            lo, hi = ptrs[i], ptrs[i] + sizes[i]
            for j, p in enumerate(ptrs):
                if p < hi and lo < p + sizes[j] and j != i:
                    specs = self._specs
                    raise ArgumentError(f"kernel '{self.name}' arguments '{specs[i].name}' and '{specs[j].name}' "
                                        f"overlap in memory; an output must not share memory with another argument")
