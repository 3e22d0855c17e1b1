"""Stride-2 vector loads as two contiguous loads and one shuffle, for the CPU backend.

A vectorized loop that reads every second element (a stride-2 convolution's input row,
`x[2 * j + kx]` for j along the vector) becomes, after TVM's `VectorizeLoop`, a load whose index
is `Ramp(base, 2, L)`. TVM's LLVM code generator emits such a load lane by lane (L scalar loads
and inserts): MobileNet's 3x3 stride-2 depthwise convolution (32 channels, 32x32 -> 16x16, one
AVX-512 core) took 10.5 us that way. Written as the contiguous loads `Ramp(base, 1, L)` and
`Ramp(base + L - 1, 1, L)` and a `Shuffle` picking lanes 0, 2, .., L - 2 of the first and
1, 3, .., L - 1 of the second (together exactly the elements base, base + 2, .., base + 2L - 2,
nothing outside what the strided load reads), LLVM emits two vector loads and one two-source
permute (`vpermt2ps`): 3.5 us.

`rewrite(func)` runs `FlattenBuffer` and `VectorizeLoop` itself, the first passes of the backend's
pass list (which runs them again: on flat buffers and without vectorized loops they change
nothing) and rewrites the stride-2 loads; a function with none is returned unchanged, so every
other kernel compiles exactly as before. Kernels holding bfloat16 or float8 values are left alone
(their legalisation passes run before vectorization).

Example:
    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (32,)), Buffer("B", (16,))
    >>> i = Var("i")
    >>> k = Kernel("even", (A, B), For(i, 16, Store(B, (i,), A[i * 2]), kind="vectorized"))
    >>> from tessel.codegen.tvm_tir import to_tvm
    >>> "T.Shuffle" in rewrite(to_tvm(k)).script()
    True
"""

from __future__ import annotations

_SKIP_DTYPES = ("bfloat16", "float8")


def rewrite(func):
    """`func` (a TVM PrimFunc) with its stride-2 vector loads as contiguous loads and a shuffle,
    or `func` itself when it has none (see the module docstring)."""
    import tvm
    import tvm_ffi
    from tvm import tirx

    text = func.script()
    if "vectorized" not in text or any(d in text for d in _SKIP_DTYPES):
        return func
    mod = tvm.IRModule({"main": func})
    try:  # the pipeline's own first passes, in its order (VectorizeLoop wants flat buffers)
        vec = tirx.transform.VectorizeLoop(True)(tirx.transform.FlattenBuffer()(mod))["main"]
    except Exception:  # noqa: BLE001 - whatever TVM refuses here, the unchanged function meets in the pipeline
        return func
    count = [0]

    def on_load(load):
        new = _shuffled(load, tirx)
        if new is None:
            return load
        count[0] += 1
        return new

    out = tvm_ffi.structural_map(vec, [(tvm.ir.expr.TensorLoad, on_load)])
    return out if count[0] else func


def _shuffled(load, tirx):
    """The shuffle of two contiguous loads equal to `load`, when its last index is a stride-2
    ramp of a constant even number of lanes; else None."""
    idx = load.indices[-1] if len(load.indices) else None
    if not isinstance(idx, tirx.Ramp):
        return None
    stride, lanes = idx.stride, idx.lanes
    if not (isinstance(stride, tirx.IntImm) and stride.value == 2 and isinstance(lanes, tirx.IntImm)):
        return None
    n = int(lanes.value)
    if n < 4 or n % 2:
        return None
    base = idx.base
    one = tirx.IntImm(str(base.ty), 1)
    head = list(load.indices[:-1])
    lo = tirx.BufferLoad(load.source, head + [tirx.Ramp(base, one, n)])
    hi = tirx.BufferLoad(load.source, head + [tirx.Ramp(base + tirx.IntImm(str(base.ty), n - 1), one, n)])
    # lanes 2k of `lo` are base + 2k (k < n/2); lanes 2k + 1 of `hi` are base + n - 1 + 2k + 1 = base + 2(n/2 + k)
    picks = [2 * k for k in range(n // 2)] + [n + 2 * k + 1 for k in range(n // 2)]
    return tirx.Shuffle([lo, hi], [tirx.IntImm("int32", p) for p in picks])
