"""Reference kernels: one unscheduled kernel per GPU template family, and the planted-bug judge's
reference suite.

Kernel builders (unscheduled, as `ts.lower` or the model compiler's lowering makes them; the
template tests, the race tests and the pass tests build the same shapes):

- `matmul(M, N, K, dtype, a_t, b_t, batch, epilogue)`: C = A @ B (float32 accumulation for 16-bit
  operands), A stored K x M when `a_t`, B stored N x K when `b_t`, a leading batch dimension, and an
  optional elementwise epilogue after it ("bias_relu": relu(C + bias[j]); "cast": C as the operand
  dtype; "bias_gelu_cast": both and a GELU): the kernels gemm.mma_sync, gemm.wgmma and
  gpu.matmul_simt take;
- `elementwise`, `row_reduce`, `column_sum`, `transpose`, `transpose3`, `lowered(op, shapes, dtype)`
  (one registered op lowered as a fused group: softmax, layer_norm, rms_norm ...).

The judge's suite (bench/fuzz_judge.py, bench/fuzz_eval.py bugs): `programs()` names the programs,
`run_program(name)` compiles and runs one and returns None when it matches its reference (a message
otherwise): random op graphs through `tessel.compile(target="cpu")` against the op registry's numpy
references ("graph.<seed>"), random DSL kernels through `tessel.build(target="cpu")` against the
interpreter on the unscheduled kernel ("dsl.<seed>"), and GPU kernels scheduled by their default
template (and given knobs) and the CUDA pipeline, run by the race-checking interpreter, against the
interpreter on the unscheduled kernel ("gpu.<name>", `GPU_PROGRAMS`; `EXTRA_GPU_PROGRAMS` reach the
templates' other paths: sm_80 and sm_90a GEMMs with transposes, batches, epilogues and non-default
knobs, block-wide reductions, wide rows).

Example:
    >>> k = matmul(64, 64, 64, "float16", epilogue="bias_relu")
    >>> [p.name for p in k.params]
    ['A', 'B', 'bias', 'D']
    >>> run_program("gpu.transpose_40x70") is None
    True
"""

from __future__ import annotations

import random

import tessel as ts

# -- kernel builders -----------------------------------------------------------------------------


def matmul(M, N, K, dtype="float16", a_t=False, b_t=False, batch=None, epilogue=None):
    """The unscheduled GEMM kernel (see the module docstring)."""
    pre = (batch,) if batch else ()
    A = ts.placeholder(pre + ((K, M) if a_t else (M, K)), dtype, name="A")
    B = ts.placeholder(pre + ((N, K) if b_t else (K, N)), dtype, name="B")
    k = ts.reduce_axis(K, name="k")
    acc = "float32" if dtype in ("float16", "bfloat16") else dtype

    def body(*idx):
        b, (i, j) = idx[:-2], idx[-2:]
        x = A[b + ((k, i) if a_t else (i, k))]
        y = B[b + ((j, k) if b_t else (k, j))]
        return ts.sum(x.astype(acc) * y.astype(acc), axis=k)

    C = ts.compute(pre + (M, N), body, name="C")
    if epilogue is None:
        return ts.lower([A, B, C])
    if epilogue == "cast":
        D = ts.compute(pre + (M, N), lambda *i: C[i].astype(dtype), name="D")
        return ts.lower([A, B, D])
    bias = ts.placeholder((N,), acc, name="bias")
    if epilogue == "bias_relu":
        D = ts.compute(pre + (M, N), lambda *i: ts.maximum(C[i] + bias[i[-1]], ts.const(0.0, acc)), name="D")
    elif epilogue == "bias_gelu_cast":
        def gelu(*i):
            v = C[i] + bias[i[-1]]
            return (v * ts.const(0.5, acc) * (ts.erf(v * ts.const(0.7071067811865476, acc)) + ts.const(1.0, acc))
                    ).astype(dtype)
        D = ts.compute(pre + (M, N), gelu, name="D")
    else:
        raise ValueError(f"unknown epilogue {epilogue!r}")
    return ts.lower([A, B, bias, D])


def elementwise(shape, dtype="float32"):
    A = ts.placeholder(shape, dtype, name="A")
    return ts.lower([A, ts.compute(shape, lambda *i: ts.exp(A[i].astype("float32")).astype(dtype) * A[i], name="B")])


def row_reduce(rows, cols, op="sum"):
    X = ts.placeholder((rows, cols), name="X")
    k = ts.reduce_axis(cols, name="k")
    red = {"sum": ts.sum, "max": ts.max, "min": ts.min}[op]
    return ts.lower([X, ts.compute((rows,), lambda i: red(X[i, k], axis=k), name="S")])


def column_sum(rows, cols):
    X = ts.placeholder((rows, cols), name="X")
    k = ts.reduce_axis(rows, name="k")
    return ts.lower([X, ts.compute((cols,), lambda j: ts.sum(X[k, j], axis=k), name="S")])


def transpose(rows, cols):
    A = ts.placeholder((rows, cols), name="A")
    return ts.lower([A, ts.compute((cols, rows), lambda i, j: A[j, i], name="B")])


def transpose3(a, b, c):
    A = ts.placeholder((a, b, c), name="A")
    return ts.lower([A, ts.compute((a, c, b), lambda i, j, k: A[i, k, j], name="B")])


def conv(n, c, f, h, w, k=3, stride=1, pad=1, groups=1, epilogue="relu", layout=None):
    """conv2d (+ an elementwise epilogue: "relu", "bias_clip" relu6(y + b[f]) or None) lowered as
    compile() lowers it, temporaries inlined: the kernels cpu.conv (direct and Winograd),
    cpu.conv_nchw and cpu.depthwise (`groups == c == f`) take. `layout="CKF"`: the channels-last
    form with the pre-transposed weight."""
    from tessel.compiler.lowering import inline_temporaries
    from tessel.frontend.ops import get_op

    x = ts.placeholder((n, c, h, w), name="x")
    cg = c // groups
    wt = ts.placeholder((cg, k, k, f) if layout == "CKF" else (f, cg, k, k), name="w")
    shape = (n, f, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
    attrs = {"padding": (pad, pad), "stride": (stride, stride), **({"groups": groups} if groups > 1 else {}),
             **({"weight_layout": layout} if layout else {})}
    (y,) = get_op("conv").lower([x, wt], attrs, [(shape, "float32")], ["y"])
    ins = [x, wt]
    if epilogue == "relu":
        out = ts.compute(shape, lambda *i: ts.maximum(y[i], 0.0), name="z")
    elif epilogue == "bias_clip":
        b = ts.placeholder((f,), name="b")
        ins.append(b)
        out = ts.compute(shape, lambda a, j, p, q: ts.minimum(ts.maximum(y[a, j, p, q] + b[j], 0.0), 6.0), name="z")
    else:
        out = y
    return inline_temporaries(ts.lower(ins + [out], name="conv"))[0]


def attention(b, h, lq, s, e, ev, causal=False):
    """Scaled dot-product attention (the sdpa op) lowered as compile() lowers it: cpu.attention's kernel."""
    from tessel.compiler.lowering import inline_temporaries
    from tessel.frontend.ops import get_op

    ins = [ts.placeholder((b, h, lq, e), name="q"), ts.placeholder((b, h, s, e), name="k"),
           ts.placeholder((b, h, s, ev), name="v")]
    (out,) = get_op("sdpa").lower(ins, {"is_causal": causal, "scale": None}, [((b, h, lq, ev), "float32")], ["o"])
    return inline_temporaries(ts.lower(ins + [out], name="attention"))[0]


def pad_stage(n, c, h, w, top, left, bottom, right):
    """A zero-padding copy (cpu.generic rebuilds it as row copies: cpu_pad.py)."""
    x = ts.placeholder((n, c, h, w), name="x")
    P = ts.compute((n, c, h + top + bottom, w + left + right),
                   lambda a, b, i, j: ts.where((i >= top) & (i < top + h) & (j >= left) & (j < left + w),
                                               x[a, b, i - top, j - left], ts.const(0.0, "float32")), name="P")
    return ts.lower([x, P])


def lowered(op, shapes, dtype, attrs=None):
    """A one-op graph lowered as the model compiler lowers a fused group."""
    from tessel.compiler.lowering import lower_group
    from tessel.frontend.graph import Graph
    from tessel.passes.graph.fusion import fuse

    g = Graph()
    ins = [g.add_input(f"x{i}", s, dtype) for i, s in enumerate(shapes)]
    (y,) = g.add_node(op, ins, attrs or {})
    g.mark_outputs([y])
    (group,) = fuse(g)
    return lower_group(g, group).ir


# -- the judge's suite ---------------------------------------------------------------------------

# name -> (kernel builder, target, template knobs or None). "cuda" is the default CUDA target
# (sm_90a without a GPU: the first GEMM below is scheduled by gemm.wgmma here, whatever its name says;
# the names stay, so the planted-bug sample of earlier runs is drawn again).
GPU_PROGRAMS = {
    "gpu.gemm_mma_f16_64": (lambda: matmul(64, 64, 64, "float16"), "cuda", None),
    "gpu.gemm_mma_bf16_tt_32": (lambda: matmul(32, 32, 32, "bfloat16", True, True), "cuda", None),
    "gpu.gemm_wgmma_f16_64": (lambda: matmul(64, 64, 64, "float16"), "cuda:sm_90a", None),
    "gpu.matmul_simt_33x40x17": (lambda: matmul(33, 40, 17, "float32"), "cuda", None),
    "gpu.row_sum_6x100": (lambda: row_reduce(6, 100, "sum"), "cuda", None),
    "gpu.row_max_3x1000": (lambda: row_reduce(3, 1000, "max"), "cuda", None),
    "gpu.column_sum_50x7": (lambda: column_sum(50, 7), "cuda", None),
    "gpu.transpose_40x70": (lambda: transpose(40, 70), "cuda", None),
    "gpu.elementwise_37x19": (lambda: elementwise((37, 19)), "cuda", None),
    "gpu.elementwise_f16_64x48": (lambda: elementwise((64, 48), "float16"), "cuda", None),
    "gpu.softmax_6x40": (lambda: lowered("softmax", [(6, 40)], "float32"), "cuda", None),
    "gpu.layer_norm_f16_5x64": (lambda: lowered("layer_norm", [(5, 64), (64,), (64,)], "float16"), "cuda", None),
}

EXTRA_GPU_PROGRAMS = {
    "gpu.x.mma_f16_64_sm80": (lambda: matmul(64, 64, 64, "float16"), "cuda:sm_80", None),
    "gpu.x.mma_bf16_96x80x48_at_sm80": (lambda: matmul(96, 80, 48, "bfloat16", a_t=True), "cuda:sm_80", None),
    "gpu.x.mma_f16_128x128x96_3stage": (lambda: matmul(128, 128, 96, "float16"), "cuda:sm_80",
                                        {"bm": 128, "bn": 128, "bk": 32, "warps_m": 2, "warps_n": 2, "stages": 3}),
    "gpu.x.mma_f16_bmm_2x32x48x32": (lambda: matmul(32, 48, 32, "float16", batch=2), "cuda:sm_80", None),
    "gpu.x.mma_f16_64x64x64_bias_relu": (lambda: matmul(64, 64, 64, "float16", epilogue="bias_relu"),
                                         "cuda:sm_80", None),
    "gpu.x.wgmma_bf16_128x64x128_bt": (lambda: matmul(128, 64, 128, "bfloat16", b_t=True), "cuda:sm_90a", None),
    "gpu.x.wgmma_f16_64x128x64_1consumer": (lambda: matmul(64, 128, 64, "float16"), "cuda:sm_90a",
                                            {"bm": 64, "bn": 128, "consumers": 1, "stages": 2}),
    "gpu.x.wgmma_f16_128x128x128_pingpong": (lambda: matmul(128, 128, 128, "float16"), "cuda:sm_90a",
                                             {"bm": 128, "bn": 64, "pingpong": True, "persistent": True,
                                              "consumers": 2, "stages": 3}),
    "gpu.x.wgmma_f16_64x64x128_bias_gelu_cast": (lambda: matmul(64, 64, 128, "float16", epilogue="bias_gelu_cast"),
                                                 "cuda:sm_90a", {"bm": 64, "bn": 64, "consumers": 1,
                                                                 "epilogue": "tma"}),
    "gpu.x.row_sum_2x5000": (lambda: row_reduce(2, 5000), "cuda", None),
    "gpu.x.row_min_5x600": (lambda: row_reduce(5, 600, "min"), "cuda", None),
    "gpu.x.softmax_3x700": (lambda: lowered("softmax", [(3, 700)], "float32"), "cuda", None),
    "gpu.x.rms_norm_bf16_4x600": (lambda: lowered("rms_norm", [(4, 600), (600,)], "bfloat16"), "cuda", None),
    "gpu.x.transpose3_3x20x36": (lambda: transpose3(3, 20, 36), "cuda", None),
    "gpu.x.column_sum_300x33": (lambda: column_sum(300, 33), "cuda", None),
}


# name -> (kernel builder, template name or None (the default one), knobs or None): the CPU templates
# and the default CPU schedules on small shapes, built by tessel.build (schedule, CPU pipeline, TVM)
CPU_PROGRAMS = {
    "cpu.gemm_24x40x36": (lambda: matmul(24, 40, 36, "float32"), None, None),
    "cpu.gemm_bt_17x33x20_tiles": (lambda: matmul(17, 33, 20, "float32", b_t=True), "cpu.generic",
                                   {"tile_rows": 3, "tile_cols": 16}),
    "cpu.bmm_bias_relu_2x16x32x24": (lambda: matmul(16, 32, 24, "float32", batch=2, epilogue="bias_relu"), None,
                                     None),
    "cpu.row_sum_7x150": (lambda: row_reduce(7, 150, "sum"), None, None),
    "cpu.row_max_5x67_acc4": (lambda: row_reduce(5, 67, "max"), "cpu.generic", {"reduce_accumulators": 4}),
    "cpu.column_sum_20x37": (lambda: column_sum(20, 37), None, None),
    "cpu.transpose_40x70": (lambda: transpose(40, 70), None, None),
    "cpu.softmax_6x100": (lambda: lowered("softmax", [(6, 100)], "float32"), None, None),
    "cpu.layer_norm_5x64": (lambda: lowered("layer_norm", [(5, 64), (64,), (64,)], "float32"), None, None),
    "cpu.pad_2x3x9x10": (lambda: pad_stage(2, 3, 9, 10, 1, 2, 1, 1), None, None),
    "cpu.conv3x3_relu_8to16_10x10": (lambda: conv(1, 8, 16, 10, 10), None, None),
    "cpu.conv3x3_ckf_16to16_8x8": (lambda: conv(1, 16, 16, 8, 8, layout="CKF"), None, None),
    "cpu.conv3x3_winograd_8to16_12x12": (lambda: conv(1, 8, 16, 12, 12), "cpu.conv", {"algorithm": "winograd"}),
    "cpu.conv3x3_winograd_b2_16to16_8x10": (lambda: conv(2, 16, 16, 8, 10, epilogue="bias_clip"), "cpu.conv",
                                            {"algorithm": "winograd"}),
    "cpu.conv1x1_bias_clip_16to16_8x8": (lambda: conv(1, 16, 16, 8, 8, k=1, pad=0, epilogue="bias_clip"), None,
                                         None),
    "cpu.conv_stem_s2_3to16_16x16": (lambda: conv(1, 3, 16, 16, 16, stride=2, epilogue="bias_clip"), None, None),
    "cpu.pointwise_nchw_16to32_16x16": (lambda: conv(1, 16, 32, 16, 16, k=1, pad=0, epilogue="bias_clip"), None,
                                        None),
    "cpu.depthwise_8_9x9": (lambda: conv(1, 8, 8, 9, 9, groups=8, epilogue="bias_clip"), None, None),
    "cpu.depthwise_s2_16_12x12": (lambda: conv(1, 16, 16, 12, 12, stride=2, groups=16, epilogue="bias_clip"), None,
                                  None),
    "cpu.attention_1x2x8x12x16": (lambda: attention(1, 2, 8, 12, 16, 16), None, None),
    "cpu.attention_causal_2x1x16x16x8": (lambda: attention(2, 1, 16, 16, 8, 8, causal=True), None, None),
}


def gpu_programs(extra: bool = False) -> dict:
    """name -> (builder, target, knobs) of the suite's GPU programs (with the extra ones)."""
    return {**GPU_PROGRAMS, **(EXTRA_GPU_PROGRAMS if extra else {})}


def programs(n_graph: int = 24, n_dsl: int = 24, gpu: bool = True, extra: bool = False, cpu: bool = False) -> list:
    """The suite's program names: graph.<seed>, dsl.<seed>, gpu.<name> (and cpu.<name>: `CPU_PROGRAMS`).

    >>> programs(2, 1, gpu=False)
    ['graph.0', 'graph.1', 'dsl.0']
    """
    out = [f"graph.{s}" for s in range(n_graph)] + [f"dsl.{s}" for s in range(n_dsl)]
    if gpu:
        out += sorted(GPU_PROGRAMS)
    if extra:
        out += sorted(EXTRA_GPU_PROGRAMS)
    if cpu:
        out += sorted(CPU_PROGRAMS)
    return out


def schedule_gpu(kernel, target, knobs=None):
    """`kernel` scheduled by its default GPU template (with `knobs`) and run through the CUDA pipeline."""
    from tessel.compiler.pipeline import as_pipeline, cuda_pipeline
    from tessel.schedules.generic_gpu import default_gpu_schedule

    sk = default_gpu_schedule(kernel, target, knobs).kernel
    for p in as_pipeline(cuda_pipeline()):
        sk = p(sk)
    return sk


def run_program(name: str):
    """Compile and run one suite program; None when it matches its reference, else a message
    (a miscompilation). Exceptions propagate (the caller counts them as crashes)."""
    import numpy as np

    kind, _, key = name.partition(".")
    if kind == "graph":
        import tessel
        from tessel.frontend.reference import run_graph
        from tessel.fuzz.gen import random_graph

        g = random_graph(random.Random(1000 + int(key)))
        if not g.nodes:
            return None
        rng = np.random.default_rng(int(key))
        ins = [rng.standard_normal(g.values[v].shape).astype("float32") for v in g.inputs]
        want = run_graph(g, ins)
        got = tessel.compile(random_graph(random.Random(1000 + int(key))), ins, target="cpu")(*ins)
        got = got if isinstance(got, (list, tuple)) else [got]
        for i, (a, w) in enumerate(zip(got, want)):
            if not np.allclose(np.asarray(a), w, rtol=1e-3, atol=1e-4, equal_nan=True):
                return f"output {i} differs from numpy"
        return None
    from tessel.fuzz.oracles import _interp, _reads_uninitialized, compare, make_inputs

    if kind == "dsl":
        import tessel
        from tessel.fuzz.gen import dsl_kernel

        k = dsl_kernel(random.Random(2000 + int(key)))
        ins = make_inputs(k, int(key))
        want = _interp(k, ins, 0)
        if _reads_uninitialized(k, ins, 0, want):
            return None
        built = tessel.build(k, target="cpu")
        got = [a.copy() for a in ins]
        built(*got)
        return compare(got, want, k.params, loose=4.0, nan_is_any=True)
    if kind == "cpu":
        import tessel
        from tessel.schedules.generic import default_schedule
        from tessel.schedules.template import get_template

        make, tpl, knobs = CPU_PROGRAMS[name]
        k = make()
        ins = make_inputs(k, 3)
        want = _interp(k, ins, 0)
        sched = (lambda kk: get_template(tpl).apply(kk, knobs, "cpu")) if tpl else default_schedule
        built = tessel.build(k, target="cpu", schedule=sched)
        got = [a.copy() for a in ins]
        built(*got)
        return compare(got, want, k.params, loose=4.0)
    if kind == "gpu":
        make, target, knobs = gpu_programs(extra=True)[name]
        k = make()
        ins = make_inputs(k, 3)
        want = _interp(k, ins, 0)
        got = _interp(schedule_gpu(k, target, knobs), ins, 1)
        return compare(got, want, k.params, loose=2.0)
    raise ValueError(f"unknown suite program {name!r}")


__all__ = ["CPU_PROGRAMS", "EXTRA_GPU_PROGRAMS", "GPU_PROGRAMS", "attention", "column_sum", "conv", "elementwise",
           "gpu_programs", "lowered", "matmul", "pad_stage", "programs", "row_reduce", "run_program", "schedule_gpu",
           "transpose", "transpose3"]
