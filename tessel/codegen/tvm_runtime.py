"""Compiling TVM PrimFuncs for the host CPU, saving/loading them, and calling them on numpy arrays.

The second half of the CPU backend (`tessel.codegen.tvm` builds the PrimFunc):

* Target: `{"kind": "llvm", "mtriple": <host triple>, "mcpu": <host cpu>}`. `"mcpu": "native"` is
  silently ignored by TVM 0.27 (generic SSE code), so the CPU is named: LLVM's own detection
  (`llvm_get_system_cpu`, e.g. `znver3`), or `x86-64-v3` when LLVM does not know that name and the
  host has AVX2, else `generic`.
* Pipeline: our own TIR pass list `tessel_cpu` instead of TVM's default S-TIR pipeline. Our kernels
  arrive scheduled, so TVM only flattens buffers, legalizes bfloat16, vectorizes and unrolls the loops
  we marked, simplifies, and builds the packed-call entry. The S-TIR passes that would re-plan our
  loops and buffers (LoopPartition, HoistIfThenElse, StorageRewrite, InjectVirtualThread, ...) are
  left out; NarrowDataType too (our indices are int32 already).
* Calling: arrays go in through DLPack without copies (`tvm_ffi.from_dlpack` without its alignment
  requirement: our parameter buffers promise only element alignment), so outputs are written into
  the caller's arrays. We hand tvm-ffi the DLPack capsule rather than the array (its protocol
  probing costs 0.5 us per array). bfloat16 arrays (which numpy cannot export through DLPack) go
  in as a uint16 view re-typed by TVM, still without a copy. Read-only arrays (inputs only: Kernel
  refuses read-only outputs) go through versioned DLPack, the only version that can mark data
  read-only. `tvm.runtime.tensor` would copy (100 us for 64 floats, and writes would not reach the
  caller); passing numpy arrays to the function directly segfaults in TVM 0.27.
* Measured per call (2-core znver3 VM shared with other jobs, so +-2x): a 16-element add with 3
  arrays costs 6-10 us through `Kernel.__call__`, of which the packed call is 0.5-0.8 us, the three
  DLPack views 2-4 us, tessel's argument checks 1.5-4 us and the overlap check 1-3 us
  (`np.add(a, b, out=c)`: about 1 us).
* A compiled model calls its kernels through `BoundSteps`: constants and arena views are viewed
  once, so a 10-kernel model costs 1.3 us per kernel per call (4.5 us through `Kernel.__call__`).
* Threads: `TESSEL_NUM_THREADS` (else `TVM_NUM_THREADS`, else every CPU) sizes TVM's pool, read
  when it starts (the first parallel call). On a machine whose cores are busy with other jobs, a
  parallel loop waits for its slowest thread, and a descheduled thread costs whole 4 ms scheduler
  slices: 2-thread timings then come in multiples of 4 ms (measured at load 5-8 on 2 cores: a
  512^3 GEMM 4-16 ms, numpy's 1.1-56 ms), while one thread stays steady. Unpinning the workers
  (`TVM_BIND_THREADS=0`) or not spinning (`TVM_THREAD_POOL_SPIN_COUNT=0`) made it worse there.
* Measured per kernel (same VM): `tvm.compile` (TIR passes, LLVM IR and optimisation) 55-130 ms;
  then either the in-process JIT (60-150 ms) or, with the disk cache on, `export_library` (LLVM
  object 60 ms + gcc link 20 ms) and a reload (1 ms): we run the reloaded library, so the machine
  code is generated once. A first build of a DSL kernel (lower, schedule, passes, codegen) takes
  0.25-0.45 s; a memory-cache hit 4-60 ms (lowering and scheduling again, to compute the key).
* FMA: LLVM contracts `a * b + c` into fused multiply-adds (one rounding), which GEMMs need; float
  results may differ from the interpreter's (two roundings) in the last bits.

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> import numpy as np
    >>> from tessel.codegen.tvm_tir import to_tvm, symbol_name
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,))
    >>> i = Var("i")
    >>> k = Kernel("inc", (A, B), For(i, 4, Store(B, (i,), A[i] + 1.0)))
    >>> run = Runner(compile_module(to_tvm(k)), symbol_name(k), k.params)
    >>> a, b = np.arange(4, dtype="float32"), np.zeros(4, "float32")
    >>> run(a, b); b.tolist()
    [1.0, 2.0, 3.0, 4.0]
"""

from __future__ import annotations

import functools
import json
import os

from tessel.errors import CodegenError

PIPELINE_NAME = "tessel_cpu"



def num_threads() -> int:
    """Threads of the CPU kernels' pool: `TESSEL_NUM_THREADS`, else `TVM_NUM_THREADS`, else every
    CPU (`os.cpu_count()`). A value that is not a positive integer is ignored (with a warning).

    >>> num_threads() >= 1
    True
    """
    for name in ("TESSEL_NUM_THREADS", "TVM_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if not text:
            continue
        if text.isdigit() and int(text) > 0:
            return int(text)
        import warnings

        warnings.warn(f"{name}={text!r} is not a positive integer; ignored", stacklevel=2)
    return os.cpu_count() or 1


# TVM sizes its thread pool to half the CPUs on x86 (it assumes hyper-threads), so on a 2-vCPU
# machine `parallel` loops ran on one core (512^3 GEMM 3.7 ms instead of 2.0 ms). The pool reads
# TVM_NUM_THREADS when it starts, at the first parallel kernel call: set it before that.
os.environ["TVM_NUM_THREADS"] = str(num_threads())


@functools.cache  # the host does not change while we run
def host_target() -> dict:
    """The TVM target dict for this machine's CPU.

    >>> host_target()["kind"]
    'llvm'
    """
    from tvm.target import codegen

    cpu = codegen.llvm_get_system_cpu()
    if not cpu or cpu == "generic" or not codegen.llvm_is_valid_cpu(cpu, codegen.llvm_get_system_triple()):
        cpu = "x86-64-v3" if _host_has_avx2() else "generic"
    return {"kind": "llvm", "mtriple": codegen.llvm_get_system_triple(), "mcpu": cpu}


@functools.cache  # the host does not change while we run
def host_has_feature(name: str) -> bool:
    """Whether LLVM's host target has the CPU feature `name` (e.g. "avx512f").

    >>> host_has_feature("no-such-feature")
    False
    """
    import tvm
    from tvm.target import codegen

    return bool(codegen.llvm_cpu_has_features(name, tvm.target.Target(host_target())))


def target_key() -> str:
    """A stable string naming the host target, for cache keys."""
    return json.dumps(host_target(), sort_keys=True)


def _host_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def _pipeline_factory():
    import tvm
    from tvm import tirx
    from tvm.tirx import compilation_pipeline as cp

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        passes = [
            tirx.transform.FlattenBuffer(),          # multi-dimensional buffers -> flat pointers
            tirx.transform.BF16ComputeLegalize(),    # bfloat16 arithmetic runs in float32
            tirx.transform.VectorizeLoop(True),      # our `vectorized` loops -> vector code
            tirx.transform.UnrollLoop(),             # our `unrolled` loops (nothing else: auto-unroll is off)
            tirx.transform.StmtSimplify(),           # fold the index arithmetic the above produce
            tirx.transform.RemoveNoOp(),
            tirx.transform.VerifyMemory(),
            tirx.transform.AnnotateEntryFunc(),
            tirx.transform.SplitHostDevice(),
            tirx.transform.MakePackedAPI(),          # the packed-call entry that checks and unpacks arguments
            tirx.transform.BF16StorageLegalize(),    # bfloat16 storage as uint16
        ]
        return tvm.ir.transform.Sequential(passes)(mod)

    return _pipeline, cp.finalize_host_passes, cp.finalize_device_passes


@functools.cache  # register once per process
def _register_pipeline() -> str:
    from tvm.tirx import compilation_pipeline as cp

    cp.register_tir_pipeline(PIPELINE_NAME, _pipeline_factory)
    return PIPELINE_NAME


def compile_module(func, target: dict | None = None):
    """Compile a PrimFunc with LLVM for the host (or `target`); returns a `tvm.runtime.Module`.

    Raises CodegenError, naming the function, when TVM refuses it.
    """
    import tvm

    pipeline = _register_pipeline()
    try:
        return tvm.compile(func, target=tvm.target.Target(target or host_target()), tir_pipeline=pipeline).mod
    except Exception as e:  # TVM raises its own error types; turn them into ours
        name = func.attrs["global_symbol"] if func.attrs and "global_symbol" in func.attrs else "?"
        raise CodegenError(f"TVM could not compile kernel '{name}': {type(e).__name__}: {_short(e)}") from e


def export(module, path: str) -> None:
    """Save a compiled module as a shared library at `path`, atomically: it is written to a
    temporary file in the same folder and renamed, so readers never see half a file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{id(module):x}.tmp.so")
    try:
        module.export_library(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: str, symbol: str):
    """Load a shared library written by `export` and check it has `symbol`; raises on failure.

    The library is first opened with every symbol bound now (ctypes uses RTLD_NOW), so a library
    that needs a symbol this process lacks fails here, not with an abort in the middle of a call.
    """
    import ctypes

    import tvm

    ctypes.CDLL(path)  # raises OSError for a bad file or an unresolvable symbol
    module = tvm.runtime.load_module(path)
    if module.get_function(symbol, query_imports=True) is None:
        raise CodegenError(f"{path} has no function '{symbol}'")
    return module


def inspect(module, kind: str = "asm") -> str:
    """The LLVM IR (`"ll"`) or assembly (`"asm"`) of a module compiled in this process."""
    try:
        return module.inspect_source(kind)
    except Exception as e:
        raise CodegenError(f"no {kind} source for this module (loaded from a library?): {_short(e)}") from e


def _short(e: Exception) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return lines[-1][:500] if lines else ""


class BoundSteps:
    """A sequence of kernel calls whose arguments are mostly the same arrays every time (a compiled
    model's constants and arena views): their TVM views are made once, here; a call makes views
    only of the arrays that change (the model's inputs and fresh outputs), once each, however many
    kernels read them, and then runs the packed functions back to back.

    `steps`: (runner, args) per call, each arg a fixed numpy array, a fixed numpy int (a scalar
    parameter's value) or a Python int, the index of a changing array. Only for arrays already
    checked (by a first checked call of each kernel).

    >>> import numpy as np
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> from tessel.codegen.tvm_tir import to_tvm, symbol_name
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,)); i = Var("i")
    >>> k = Kernel("inc", (A, B), For(i, 4, Store(B, (i,), A[i] + 1.0)))
    >>> run = Runner(compile_module(to_tvm(k)), symbol_name(k), k.params)
    >>> mid = np.zeros(4, "float32")
    >>> bound = BoundSteps([(run, [0, mid]), (run, [mid, 1])])
    >>> a, b = np.arange(4, dtype="float32"), np.zeros(4, "float32")
    >>> bound(a, b); b.tolist()
    [2.0, 3.0, 4.0, 5.0]
    """

    def __init__(self, steps):
        self._calls = []
        self._makers: dict = {}  # changing-array index -> (runner, parameter index) that views it
        for runner, args in steps:
            fixed, changing = [], []
            for pos, a in enumerate(args):
                if type(a) is int:  # an index; a scalar parameter's fixed value comes as a numpy int
                    self._makers.setdefault(a, (runner, pos))
                    changing.append((pos, a))
                    fixed.append(None)
                else:
                    fixed.append(runner.view(pos, a))
            self._calls.append((runner.function, fixed, tuple(changing)))
        self._order = sorted(self._makers)

    def __call__(self, *arrays) -> None:
        views = {}
        for k in self._order:
            runner, pos = self._makers[k]
            views[k] = runner.view(pos, arrays[k])
        for function, args, changing in self._calls:
            if changing:
                args = list(args)
                for pos, k in changing:
                    args[pos] = views[k]
            function(*args)


class Runner:
    """Calls one compiled kernel on numpy arrays, without copies.

    The arrays must already be checked (dtype, shape, C-contiguous): `tessel.compiler.kernel.Kernel`
    does that and names the parameter at fault; the packed entry re-checks shape and dtype anyway.
    """

    def __init__(self, module, symbol: str, params: tuple):
        import tvm_ffi

        self.module = module
        self.symbol = symbol
        self.function = module.get_function(symbol, query_imports=True)
        self._from_dlpack = tvm_ffi.from_dlpack
        self._bf16 = tuple(p.dtype == "bfloat16" for p in params)
        self._shapes = tuple(getattr(p, "shape", ()) for p in params)
        self._scalars = tuple(not hasattr(p, "shape") for p in params)  # scalar Var parameters: ints by value

    def tensors(self, arrays) -> list:
        """Zero-copy TVM views of `arrays` (ints as they are, for scalar parameters)."""
        out = []
        fd = self._from_dlpack
        for a, bf16, shape, scalar in zip(arrays, self._bf16, self._shapes, self._scalars):
            if scalar:
                out.append(int(a))
            elif bf16:
                out.append(self._bf16_view(a, shape))
            elif a.flags.writeable:
                out.append(fd(a.__dlpack__()))  # the capsule itself: skips from_dlpack's protocol probing
            else:
                out.append(fd(a.__dlpack__(max_version=(1, 1))))  # only versioned DLPack marks read-only

        return out

    def view(self, index: int, a):
        """The zero-copy TVM view of `a` as parameter `index` (what `tensors` makes for it)."""
        if self._scalars[index]:
            return int(a)
        if self._bf16[index]:
            return self._bf16_view(a, self._shapes[index])
        if a.flags.writeable:
            return self._from_dlpack(a.__dlpack__())
        return self._from_dlpack(a.__dlpack__(max_version=(1, 1)))

    def _bf16_view(self, a, shape):
        import numpy as np

        u16 = a.view(np.uint16)
        capsule = u16.__dlpack__() if a.flags.writeable else u16.__dlpack__(max_version=(1, 1))
        if any(not isinstance(d, int) for d in shape):  # symbolic: the array's own shape (checked by the caller)
            shape = a.shape
        return self._from_dlpack(capsule)._create_view(shape, "bfloat16")

    def call(self, tensors) -> None:
        """Run on the views `tensors(arrays)` returned."""
        self.function(*tensors)

    def __call__(self, *arrays) -> None:
        self.function(*self.tensors(arrays))

    def time(self, arrays, number: int = 10, repeat: int = 5) -> list[float]:
        """Seconds per call, one mean over `number` calls for each of `repeat` rounds (after one
        warm-up call), measured by TVM's C++ timer."""
        import tvm

        evaluator = self.module.time_evaluator(self.symbol, tvm.cpu(), number=number, repeat=repeat)
        return list(evaluator(*self.tensors(arrays)).results)
