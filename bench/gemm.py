"""The tensor-core GEMM template (tessel/schedules/gemm.py) against torch.matmul (cuBLAS) on one GPU.

    python bench/gemm.py [--shapes 4096x4096x4096,...] [--dtypes bf16,fp16] [--knobs JSON ...] [--out-f32]

Shapes are M x N x K (A is M x K row-major, B is K x N row-major; C = A @ B, accumulated in float32
and cast to the input dtype in the epilogue, as torch.matmul returns it; --out-f32 stores float32).
Per shape, dtype and knob variant it prints: tessel ms, torch ms, TFLOP/s of each, the fraction of
the 989 TFLOP/s dense bf16/fp16 peak of the H100/H200 datasheet, and the ratio torch time / tessel
time (above 1: tessel is faster), then the machine. Every result is first checked against torch in
float32 on the same fresh random inputs (relative Frobenius error, at most 5e-3). Times are medians
of `triton.testing.do_bench` (CUDA events when triton is absent), both sides warmed, in the same run.
`--knobs '{"bm": 128, "bn": 256, "warps_n": 4}'` (repeatable) times template variants; the default
knobs come first. Needs torch and a CUDA GPU; never imports TVM.

`--split-k 1,2,4` also times gemm.wgmma's default knobs with each split_k (1: the tile rule without
split-K; >1: 128 x 128 tiles, clusters of split_k CTAs sharing each tile's K loop, non-persistent);
the default row already uses `default_split_k`'s rule (skinny and small-MN large-K shapes split).
`--dtypes tf32` times float32 operands on gemm.wgmma's tf32 path (A [M][K], B [N][K]: tf32 wgmma
reads K-major operands only; float32 C) against torch.matmul with cuBLAS tf32 allowed, checked
against float64 (relative error at most 5e-3), of-peak against the 494 TFLOP/s dense tf32 peak.

`--fold [BxMxNxK,...]` times batches of GEMMs sharing the weight (Y[b] = X[b] @ W, X [B, M, K]) on
the default GPU schedule (gemm.mma_sync with the batch folded into M, or what the default picks)
against torch.matmul(x, w) in the same run; `--knobs` are then gemm.mma_sync's.

`--diag nocopy|l1|nobar` (timing only, the results are wrong on purpose) splits the time: "nocopy"
drops the main loop's global-to-shared copies (what is left: ldmatrix, mma, barriers: the SM's own
ceiling), "l1" makes every main-loop copy read one fixed k-tile through L1 (cp.async.ca: operand
traffic from L1 instead of L2), "nobar" drops the k-loop's __syncthreads.

`--epilogue` times GEMM + bias + GELU (exact, erf) fused in one kernel (C = gelu(A @ B + bias), bias
per column, C in the input dtype) against torch's three ops `gelu(matmul(a, b) + bias)` (ratio: torch
time / tessel time), checked against torch in float32 first; `--knobs '{"path": "hopper"}'` also
times the Hopper template with the same epilogue (its `epilogue=(fn, buffers)` hook).

`--conv` times the implicit-GEMM convolution (tessel/schedules/conv_gemm.py; with
`--knobs '{"path":"hopper"}'` the TMA + wgmma one of conv_hopper.py) on ResNet-style 3x3
layers (stride 1, padding 1) in NHWC and NCHW against torch.nn.functional.conv2d (cuDNN, channels_last
memory format for NHWC), FLOPs 2 N K C R S P Q. NCHW is timed as compiled models run it (X copied
to NHWC, then the "NHWC:NCHW" kernel); "NCHW-direct" times the NCHW kernel (element window loads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PEAK = 989e12  # dense bf16 / fp16 tensor-core FLOP/s (H100 / H200 SXM datasheet)
SHAPES = ["2048x2048x2048", "4096x4096x4096", "8192x8192x8192", "16384x4096x4096", "4096x4096x16384",
          "128x8192x8192", "8192x128x8192"]
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "tf32": "float32"}
PEAK_TF32 = 494e12  # dense tf32 tensor-core FLOP/s (H100 / H200 SXM datasheet)


def bench_ms(fn) -> float:
    """Median milliseconds of `fn` on the GPU (warmed)."""
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=50, rep=300, return_mode="median"))
    except ImportError:
        import statistics

        import torch

        for _ in range(10):
            fn()
        times = []
        for _ in range(50):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return statistics.median(times)


def diagnostic(kernel, what: str):
    """The kernel with its k-loop changed for a timing diagnostic (see the module docstring)."""
    from tessel.ir.nodes import Barrier, BufferRef, Const, For, Intrinsic, Seq, rewrite, substitute, walk

    loop = next(n for n in walk(kernel.body) if isinstance(n, For) and n.kind == "serial"
                and any(isinstance(x, Barrier) for x in walk(n)))

    def change(n):
        if what == "nobar" and isinstance(n, Barrier):
            return Seq(())
        if isinstance(n, Intrinsic) and n.name.startswith("cp.async.") and len(n.args) == 2:
            if what == "nocopy":
                return Seq(())
            if what == "l1":
                dst, src = n.args
                src = BufferRef(src.buffer, tuple(substitute(i, {loop.var: Const(0)}) for i in src.indices))
                return Intrinsic(n.name.replace(".cg.", ".ca."), (dst, src))
        return None

    if what not in ("nocopy", "l1", "nobar"):
        raise SystemExit(f"--diag: unknown diagnostic {what!r} (nocopy, l1, nobar)")
    new_loop = rewrite(loop, change, fixpoint=False)
    return rewrite(kernel, lambda n: new_loop if isinstance(n, For) and n.var == loop.var else None, fixpoint=False)


def build(m, n, k, dtype, knobs, out_f32, diag=None):
    from tessel.codegen.cuda import build_kernel
    from tessel.schedules.gemm import GemmKnobs, GemmProblem, default_knobs, gemm_kernel

    tf32 = dtype == "float32"  # --dtypes tf32: A [M][K], B [N][K] float32 on gemm.wgmma's tf32 path
    p = GemmProblem(m, n, k, dtype, b_kcontig=tf32, out_dtype="float32" if out_f32 or tf32 else dtype)
    if tf32 or (knobs is not None and knobs.get("path") == "hopper"):  # '{"path": "hopper", ...}': gemm.wgmma
        from tessel.schedules.gemm_hopper import HopperKnobs, hopper_gemm_kernel
        from tessel.schedules.gemm_hopper import default_knobs as hopper_defaults

        rest = {key: v for key, v in (knobs or {}).items() if key not in ("path", "default_split_k")}
        if "default_split_k" in (knobs or {}):  # --split-k: the default knobs with this split (1: the tile rule)
            kn = hopper_defaults(p, split_k=knobs["default_split_k"])
        else:
            kn = HopperKnobs(**rest) if rest else hopper_defaults(p)
        return build_kernel(hopper_gemm_kernel(p, kn, allow_tf32=tf32), "cuda:sm_90a"), kn
    kn = GemmKnobs(**knobs) if knobs is not None else default_knobs(p)
    ir = gemm_kernel(p, kn)
    return build_kernel(diagnostic(ir, diag) if diag else ir, "cuda"), kn


def run_case(shape: str, dt: str, knobs, out_f32: bool, diag=None) -> dict:
    import torch

    m, n, k = (int(x) for x in shape.split("x"))
    dtype = DTYPES[dt]
    tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    tf32 = dtype == "float32"
    torch.backends.cuda.matmul.allow_tf32 = tf32  # the peer: cuBLAS in tf32 too
    row = {"shape": shape, "dtype": dt, "knobs": knobs, "diag": diag}
    try:
        kern, kn = build(m, n, k, dtype, knobs, out_f32, diag)
    except Exception as e:  # noqa: BLE001 - a knob variant that cannot build is reported, not fatal
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    row["knobs"] = kn.as_dict()
    g = torch.Generator(device="cuda").manual_seed(hash((shape, dt)) % 2**31)
    a = torch.randn(m, k, device="cuda", dtype=tdt, generator=g)
    b = torch.randn(n if tf32 else k, k if tf32 else n, device="cuda", dtype=tdt, generator=g)  # tf32: B [N][K]
    bt = b.t() if tf32 else b
    c = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float32 if out_f32 else tdt)
    kern(a, b, c)
    torch.cuda.synchronize()
    ref = (a.double() @ bt.double()).float()
    row["rel_err"] = float((c.float() - ref).norm() / ref.norm())
    if not row["rel_err"] <= 5e-3 and not diag:
        row["error"] = f"wrong result: relative error {row['rel_err']:.2e}"
        return row
    flops = 2.0 * m * n * k
    row["tessel_ms"] = bench_ms(lambda: kern(a, b, c))
    row["torch_ms"] = bench_ms(lambda: torch.matmul(a, bt))
    row["tessel_tflops"] = flops / row["tessel_ms"] / 1e9
    row["torch_tflops"] = flops / row["torch_ms"] / 1e9
    row["ratio"] = row["torch_ms"] / row["tessel_ms"]
    return row


def build_epilogue(m, n, k, dtype, knobs):
    """The fused GEMM + bias + GELU kernel (parameters A, B, C, bias) and its knobs."""
    from tessel.codegen.cuda import build_kernel
    from tessel.ir.nodes import Buffer
    from tessel.schedules.epilogue import Epilogue
    from tessel.schedules.gemm import GemmKnobs, GemmProblem, default_knobs, gemm_kernel

    p = GemmProblem(m, n, k, dtype, out_dtype=dtype)
    epi = Epilogue.of(("bias", Buffer("bias", (n,), dtype)), "gelu")
    if knobs is not None and knobs.get("path") == "hopper":
        from tessel.schedules.gemm_hopper import HopperKnobs, hopper_gemm_kernel
        from tessel.schedules.gemm_hopper import default_knobs as hopper_defaults

        rest = {key: v for key, v in knobs.items() if key != "path"}
        kn = HopperKnobs(**rest) if rest else hopper_defaults(p)
        return build_kernel(hopper_gemm_kernel(p, kn, epilogue=(epi.hook(), epi.buffers)), "cuda:sm_90a"), kn
    kn = GemmKnobs(**knobs) if knobs is not None else default_knobs(p)
    return build_kernel(gemm_kernel(p, kn, epilogue=epi), "cuda"), kn


def run_epilogue_case(shape: str, dt: str, knobs) -> dict:
    import torch

    m, n, k = (int(x) for x in shape.split("x"))
    dtype = DTYPES[dt]
    tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    tf32 = dtype == "float32"
    torch.backends.cuda.matmul.allow_tf32 = tf32  # the peer: cuBLAS in tf32 too
    row = {"shape": shape, "dtype": dt, "knobs": knobs, "diag": None, "case": "gemm+bias+gelu"}
    try:
        kern, kn = build_epilogue(m, n, k, dtype, knobs)
    except Exception as e:  # noqa: BLE001 - a knob variant that cannot build is reported, not fatal
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    row["knobs"] = kn.as_dict()
    g = torch.Generator(device="cuda").manual_seed(hash((shape, dt, "epi")) % 2**31)
    a = torch.randn(m, k, device="cuda", dtype=tdt, generator=g)
    b = torch.randn(k, n, device="cuda", dtype=tdt, generator=g)
    bias = torch.randn(n, device="cuda", dtype=tdt, generator=g)
    c = torch.full((m, n), float("nan"), device="cuda", dtype=tdt)
    kern(a, b, c, bias)
    torch.cuda.synchronize()
    ref = torch.nn.functional.gelu(a.float() @ b.float() + bias.float())
    row["rel_err"] = float((c.float() - ref).norm() / ref.norm())
    if not row["rel_err"] <= 5e-3:
        row["error"] = f"wrong result: relative error {row['rel_err']:.2e}"
        return row
    flops = 2.0 * m * n * k
    row["tessel_ms"] = bench_ms(lambda: kern(a, b, c, bias))
    row["torch_ms"] = bench_ms(lambda: torch.nn.functional.gelu(torch.matmul(a, b) + bias))
    row["torch_matmul_ms"] = bench_ms(lambda: torch.matmul(a, b))
    row["torch_addmm_gelu_ms"] = bench_ms(lambda: torch.nn.functional.gelu(torch.addmm(bias, a, b)))  # 2 ops
    row["tessel_tflops"] = flops / row["tessel_ms"] / 1e9
    row["torch_tflops"] = flops / row["torch_ms"] / 1e9
    row["ratio"] = row["torch_ms"] / row["tessel_ms"]
    return row


def run_conv_case(spec: str, dt: str, knobs) -> dict:
    """spec "N,C,K,H,W,layout" (3x3, stride 1, padding 1)."""
    import torch

    from tessel.codegen.cuda import build_kernel
    from tessel.ir.nodes import Buffer
    from tessel.schedules.conv_gemm import ConvKnobs, ConvProblem, conv_kernel, default_conv_knobs, nchw_to_nhwc

    nb, c_in, k_out, h, w, layout = spec.split(",")
    nb, c_in, k_out, h, w = (int(x) for x in (nb, c_in, k_out, h, w))
    dtype = DTYPES[dt]
    tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    tf32 = dtype == "float32"
    torch.backends.cuda.matmul.allow_tf32 = tf32  # the peer: cuBLAS in tf32 too
    row = {"shape": f"conv3x3 {spec}", "dtype": dt, "knobs": knobs, "diag": None, "case": "conv"}
    # NCHW as compiled models run it: X copied to NHWC, then the "NHWC:NCHW" implicit GEMM ("NCHW-direct":
    # the NCHW kernel with element loads of the shifted windows)
    klayout = {"NHWC": "NHWC", "NCHW": "NHWC:NCHW", "NCHW-direct": "NCHW"}[layout]
    p = ConvProblem(nb, c_in, k_out, h, w, 3, 3, pad=1, layout=klayout, dtype=dtype, out_dtype=dtype)
    try:
        if knobs is not None and knobs.get("path") == "hopper":  # TMA boxes + wgmma (conv_hopper.py), sm_90a
            from tessel.schedules import conv_hopper
            from tessel.schedules.gemm_hopper import HopperKnobs

            extra = {k: v for k, v in knobs.items() if k != "path"}
            kn = HopperKnobs(**{**conv_hopper.default_conv_knobs(p).as_dict(), **extra})
            kern = build_kernel(conv_hopper.hopper_conv_kernel(p, kn), "cuda:sm_90a")
        else:
            kn = ConvKnobs(**knobs) if knobs is not None else default_conv_knobs(p)
            kern = build_kernel(conv_kernel(p, kn), "cuda")
        if layout == "NCHW":
            to_nhwc = build_kernel(nchw_to_nhwc(Buffer("X", (nb, c_in, h, w), dtype)), "cuda")
    except Exception as e:  # noqa: BLE001
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    row["knobs"] = kn.as_dict()
    g = torch.Generator(device="cuda").manual_seed(hash((spec, dt)) % 2**31)
    x = torch.randn(nb, c_in, h, w, device="cuda", dtype=tdt, generator=g)
    wt = torch.randn(k_out, c_in, 3, 3, device="cuda", dtype=tdt, generator=g) / (3 * c_in) ** 0.5
    if layout == "NHWC":
        x, wt = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
    rsc = wt.permute(0, 2, 3, 1).reshape(k_out, -1).contiguous()
    if layout == "NHWC":
        xs, ws = x.permute(0, 2, 3, 1).contiguous(), rsc
        out = torch.full((nb, h, w, k_out), float("nan"), device="cuda", dtype=tdt)
        step = lambda: kern(xs, ws, out)  # noqa: E731
    elif layout == "NCHW":
        xs, ws = x.contiguous(), rsc
        xt = torch.empty(nb, h, w, c_in, device="cuda", dtype=tdt)
        out = torch.full((nb, k_out, h, w), float("nan"), device="cuda", dtype=tdt)

        def step():
            to_nhwc(xs, xt)
            kern(xt, ws, out)
    else:
        xs, ws = x.contiguous(), wt.reshape(k_out, -1).contiguous()
        out = torch.full((nb, k_out, h, w), float("nan"), device="cuda", dtype=tdt)
        step = lambda: kern(xs, ws, out)  # noqa: E731
    step()
    torch.cuda.synchronize()
    ref = torch.nn.functional.conv2d(x.float(), wt.float(), padding=1)
    got = out.permute(0, 3, 1, 2).float() if layout == "NHWC" else out.float()
    row["rel_err"] = float((got - ref).norm() / ref.norm())
    if not row["rel_err"] <= 5e-3:
        row["error"] = f"wrong result: relative error {row['rel_err']:.2e}"
        return row
    flops = 2.0 * nb * k_out * c_in * 9 * h * w
    row["tessel_ms"] = bench_ms(step)
    row["torch_ms"] = bench_ms(lambda: torch.nn.functional.conv2d(x, wt, padding=1))
    row["tessel_tflops"] = flops / row["tessel_ms"] / 1e9
    row["torch_tflops"] = flops / row["torch_ms"] / 1e9
    row["ratio"] = row["torch_ms"] / row["tessel_ms"]
    return row


def run_fold_case(spec: str, dt: str, knobs) -> dict:
    """--fold: Y[b] = X[b] @ W for a batch sharing W (spec "BxMxNxK"), the DSL GEMM on the default
    GPU template (gemm.mma_sync folds the batch into M: one GEMM of B*M rows; `--knobs` are its
    GemmKnobs) against torch.matmul(x, w) (cuBLAS) in the same run."""
    import torch

    import tessel as ts
    from tessel.codegen.cuda import build_kernel
    from tessel.schedules.generic_gpu import default_gpu_schedule
    from tessel.schedules.template import get_template

    bsz, m, n, k = (int(v) for v in spec.split("x"))
    dtype = DTYPES[dt]
    tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    row = {"shape": spec, "dtype": dt, "knobs": knobs, "case": "fold"}
    X = ts.placeholder((bsz, m, k), dtype, name="X")
    W = ts.placeholder((k, n), dtype, name="W")
    r = ts.reduce_axis(k, name="k")
    Y = ts.compute((bsz, m, n), lambda b, i, j: ts.sum(X[b, i, r].astype("float32") * W[r, j].astype("float32"),
                                                       axis=r), name="Y")
    Z = ts.compute((bsz, m, n), lambda b, i, j: Y[b, i, j].astype(dtype), name="Z")
    kernel = ts.lower([X, W, Z])
    try:
        sch = (get_template("gemm.mma_sync").apply(kernel, knobs, "cuda") if knobs
               else default_gpu_schedule(kernel, "cuda"))
        kern = build_kernel(sch.kernel, "cuda")
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        row["error"] = f"{type(e).__name__}: {e}"[:300]
        return row
    row["knobs"] = dict(sch.trace[0].args["knobs"], template=sch.trace[0].args["name"])
    g = torch.Generator(device="cuda").manual_seed(7)
    x = torch.randn(bsz, m, k, device="cuda", dtype=tdt, generator=g)
    w = torch.randn(k, n, device="cuda", dtype=tdt, generator=g)
    z = torch.full((bsz, m, n), float("nan"), device="cuda", dtype=tdt)
    kern(x, w, z)
    torch.cuda.synchronize()
    ref = x.float() @ w.float()
    row["rel_err"] = float((z.float() - ref).norm() / ref.norm())
    if not row["rel_err"] <= 5e-3:
        row["error"] = f"wrong result: relative error {row['rel_err']:.2e}"
        return row
    flops = 2.0 * bsz * m * n * k
    row["tessel_ms"] = bench_ms(lambda: kern(x, w, z))
    row["torch_ms"] = bench_ms(lambda: torch.matmul(x, w))
    row["tessel_tflops"] = flops / row["tessel_ms"] / 1e9
    row["torch_tflops"] = flops / row["torch_ms"] / 1e9
    row["ratio"] = row["torch_ms"] / row["tessel_ms"]
    return row


def machine() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated MxNxK")
    ap.add_argument("--dtypes", default="bf16,fp16", help="comma-separated: bf16, fp16, tf32 (float32 operands, "
                                                           "B stored [N][K], on gemm.wgmma's tf32 path vs cuBLAS tf32)")
    ap.add_argument("--split-k", help="comma-separated split_k values: time gemm.wgmma's default knobs with each "
                                      "(1: the tile rule without split-K) besides the default")
    ap.add_argument("--knobs", action="append", default=[], help="JSON dict of GemmKnobs fields (repeatable)")
    ap.add_argument("--no-default", action="store_true", help="time only the --knobs variants")
    ap.add_argument("--out-f32", action="store_true", help="store C in float32 instead of the input dtype")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--diag", action="append", default=[], help="also time diagnostic variants: nocopy, l1, nobar")
    ap.add_argument("--epilogue", action="store_true", help="GEMM + bias + GELU fused vs torch's three ops")
    ap.add_argument("--conv", nargs="?", const="32,256,256,56,56,NHWC;32,256,256,56,56,NCHW",
                    help="3x3 convolutions 'N,C,K,H,W,layout;...' vs cuDNN (default: ResNet 256-channel layers)")
    ap.add_argument("--fold", nargs="?", const="64x7x4096x4096,32x1x8192x8192,8x100x4096x4096",
                    help="batches sharing the weight 'BxMxNxK,...': the batch folded into M (gemm.mma_sync) vs "
                         "torch.matmul")
    args = ap.parse_args(argv)
    variants = ([] if args.no_default else [None]) + [json.loads(k) for k in args.knobs]
    variants += [{"path": "hopper", "default_split_k": int(s)} for s in (args.split_k or "").split(",") if s]
    rows = []
    cases = args.conv.split(";") if args.conv else args.fold.split(",") if args.fold else args.shapes.split(",")
    for shape in cases:
        for dt in args.dtypes.split(","):
            for kn in variants:
                for diag in [None] + ([] if args.epilogue or args.conv or args.fold else args.diag):
                    if args.fold:
                        row = run_fold_case(shape, dt, kn)
                    elif args.conv:
                        row = run_conv_case(shape, dt, kn)
                    elif args.epilogue:
                        row = run_epilogue_case(shape, dt, kn)
                    else:
                        row = run_case(shape, dt, kn, args.out_f32, diag)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print()
    print(f"{'shape':>18} {'dt':>4} {'tessel ms':>10} {'torch ms':>9} {'TFLOP/s':>8} {'of peak':>7} "
          f"{'torch TF':>8} {'ratio':>6}  knobs")
    for r in rows:
        kn = r["knobs"] or {}
        if "consumers" in kn:  # gemm.wgmma's knobs
            ks = (f"wgmma {kn['bm']}x{kn['bn']}x{kn['bk']} c{kn['consumers']} s{kn['stages']} split{kn['split_k']}"
                  + (" persistent" if kn["persistent"] else "") + f" {kn['epilogue']}")
        else:
            ks = (f"{kn.get('bm')}x{kn.get('bn')}x{kn.get('bk')} w{kn.get('warps_m')}x{kn.get('warps_n')} "
                  f"s{kn.get('stages')} {kn.get('swizzle')} g{kn.get('group_m')}"
                  + (" spread" if kn.get("spread") else "")
                  + (f" split{kn['split_k']}" if kn.get("split_k", 1) > 1 else "")) if kn else "default"
        if r.get("case"):
            ks = f"[{r['case']}] " + ks + (f"  (torch matmul alone {r['torch_matmul_ms']:.3f} ms, "
                                           f"gelu(addmm) {r['torch_addmm_gelu_ms']:.3f} ms)"
                                           if "torch_matmul_ms" in r else "")
        if r.get("diag"):
            ks += f"  [diag {r['diag']}: wrong results, timing only]"
        if "error" in r:
            print(f"{r['shape']:>18} {r['dtype']:>4}  ERROR {r['error'][:120]}  {ks}")
            continue
        peak = PEAK_TF32 if r["dtype"] == "tf32" else PEAK
        print(f"{r['shape']:>18} {r['dtype']:>4} {r['tessel_ms']:10.3f} {r['torch_ms']:9.3f} "
              f"{r['tessel_tflops']:8.1f} {r['tessel_tflops'] * 1e12 / peak:7.1%} "
              f"{r['torch_tflops']:8.1f} "
              f"{r['ratio']:6.2f}  {ks}")
    print(f"machine: {machine()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
