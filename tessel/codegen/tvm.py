"""The CPU backend: a scheduled tessel Kernel in, a compiled kernel callable on numpy arrays out.

Three modules, one idea each:
  * `tvm_tir.py`      tessel IR -> TVM TIR PrimFunc (and why TIR nodes are built directly);
  * `tvm_runtime.py`  host target, the TIR pass list, LLVM compilation, shared-library export/load,
                      and zero-copy calls on numpy arrays (with the measured per-call overhead);
  * `tvm_strided.py`  stride-2 vector loads as two contiguous loads and a shuffle;
  * this module       strings them together behind the compiled-kernel cache (`cache.py`).

The cache key covers the kernel's IR text, the host target, the tessel and TVM versions and a hash
of this backend's own source files, so editing the code generator never reuses stale machine code.

Example:
    >>> import numpy as np
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,))
    >>> i = Var("i")
    >>> run = compile_kernel(Kernel("inc", (A, B), For(i, 4, Store(B, (i,), A[i] + 1.0))))
    >>> a, b = np.arange(4, dtype="float32"), np.zeros(4, "float32")
    >>> run(a, b); b.tolist()
    [1.0, 2.0, 3.0, 4.0]
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from tessel.codegen import cache as _cache
from tessel.codegen import tvm_runtime, tvm_strided, tvm_tir
from tessel.codegen.tvm_tir import symbol_name, to_tvm  # noqa: F401 - the translator, re-exported
from tessel.errors import CodegenError
from tessel.ir.nodes import Kernel


def compile_kernel(kernel: Kernel, cache: _cache.ModuleCache | None = None) -> tvm_runtime.Runner:
    """Compile a CPU-scheduled kernel (or fetch it from the cache) and return its Runner."""
    cache = cache if cache is not None else _cache.default_cache()
    symbol = tvm_tir.symbol_name(kernel)
    key = _cache.cache_key(ir_text(kernel), tvm_runtime.target_key(), backend_version())

    module = cache.get_or_build(key, lambda: build_module(kernel), save=tvm_runtime.export,
                                load=lambda path: tvm_runtime.load(path, symbol))
    return tvm_runtime.Runner(module, symbol, kernel.params)


def build_module(kernel: Kernel, prim=None, strided: bool = True):
    """The compiled TVM module of a CPU-scheduled kernel (from `prim`, its translation, when given;
    `strided`: through tvm_strided's rewrite). A kernel holding 16-bit floats whose build TVM refuses
    is translated again with its fast-math calls unbound (`tvm_tir.to_tvm`'s `bind_in_narrow`)."""
    def prepare(p):
        return tvm_strided.rewrite(p) if strided else p

    try:
        return tvm_runtime.compile_module(prepare(prim if prim is not None else tvm_tir.to_tvm(kernel)))
    except CodegenError:  # TVM refused it (VectorizeLoop: "Let cannot bind the same var to two different values")
        if not tvm_tir.has_narrow_floats(kernel):
            raise
    return tvm_runtime.compile_module(prepare(tvm_tir.to_tvm(kernel, bind_in_narrow=False)))


def tvm_script(kernel: Kernel) -> str:
    """The TVMScript text of the PrimFunc a kernel becomes (for reading; nothing parses it)."""
    return tvm_tir.to_tvm(kernel).script()


def inspect(runner: tvm_runtime.Runner, kernel: Kernel, kind: str = "asm") -> str:
    """The assembly ("asm") or LLVM IR ("ll") of a compiled kernel. A module loaded from the disk
    cache keeps no LLVM IR, so the kernel is compiled again (uncached) to show it."""
    if kind not in ("asm", "ll"):
        raise CodegenError(f"kernel '{kernel.name}': unknown code kind {kind!r}; expected 'asm' or 'll'")
    try:
        text = runner.module.inspect_source(kind)
    except Exception:  # noqa: BLE001 - any failure here just means: compile again
        text = ""
    if not text:  # a loaded shared library has no source: compile again to show it
        text = tvm_runtime.inspect(build_module(kernel), kind)
    return text


def ir_text(kernel: Kernel) -> str:
    """The kernel's text form (the cache key's main part)."""
    try:
        from tessel.ir.text import to_text
    except ImportError:  # the printer is optional for hashing: repr is also complete and stable
        return repr(kernel)
    return to_text(kernel)


def backend_sources() -> list:
    """The source files whose text is in the cache key: every tvm_*.py module of this folder (a list
    of names here once missed tvm_select.py, so a changed select rule reused stale modules)."""
    return sorted(Path(__file__).parent.glob("tvm_*.py"))


@functools.cache  # versions and sources do not change while we run
def backend_version() -> str:
    """TVM's version plus a hash of this backend's source files."""
    import tvm

    h = hashlib.sha256()
    for path in backend_sources():
        h.update(path.read_bytes())
    return f"tvm-{tvm.__version__}-{h.hexdigest()[:12]}"
