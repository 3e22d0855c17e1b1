"""The Hopper intrinsics' CUDA side without a GPU: every wrapper compiles with nvcc for sm_90a,
the printed hello-world kernels compile to the instructions they are meant to (HGMMA, UTMALDG,
SYNCS, STSM, RED, UCGABAR in the SASS when a disassembler is at hand), and the printer's
tensor-map, scalar-parameter, cluster and alignment output."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from tests.codegen import gpu_hopper_kernels as H
from tessel.codegen.cuda_build import compile_cuda
from tessel.codegen.cuda_printer import print_kernel
from tessel.errors import CodegenError
from tessel.ir.intrinsics import HOPPER_MODULES, device_header
from tessel.ir.intrinsics import tma
from tessel.ir.nodes import Buffer, BufferRef, Const, For, IfThenElse, Intrinsic, Kernel, Launch, Store, Var

HOPPER = [e for m in HOPPER_MODULES for e in m.entries()
          # the wgmma shapes share one generator: compile a spread of N (all 32 would take minutes)
          if not re.search(r"m64n(\d+)k(8|16)\.", e.name)
          or int(re.search(r"m64n(\d+)k(8|16)\.", e.name)[1]) in (8, 16, 136, 256)]
_CT = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "int32": "int", "int64": "long long"}
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def _probe_source() -> str:
    """One kernel calling every Hopper wrapper, arguments printed the way the CUDA printer does
    (a TMA tensor operand as (map, coordinates))."""
    lines = [device_header([e.name for e in HOPPER]),
             'extern "C" __global__ void __launch_bounds__(128, 1) probe(float* gf, __half* gh, int* gi, '
             "const __grid_constant__ tessel::TensorMap map) {",
             "  __shared__ __align__(1024) __half sh[8192];",
             "  __shared__ __align__(8) long long bars[4];",
             "  int lane = threadIdx.x; float acc = 0.f;"]
    for k, e in enumerate(HOPPER):
        args = []
        for j, op in enumerate(e.operands):
            d = op.dtypes[0] if op.dtypes else "float16"
            if j == getattr(e, "tensor_operand", None):
                args.append(("map", ["lane"] * e.dims))
            elif not op.is_buffer:
                args.append({"box0": "64"}.get(op.name, "0" if op.const or op.name.startswith("tnsp") else "lane")
                            if not op.name.startswith("box") else "8")
                if op.name == "swizzle":
                    args[-1] = "0"
                if op.name == "n" and e.name.startswith("setmaxnreg"):
                    args[-1] = "240" if ".inc." in e.name else "40"
            elif op.scopes == ("shared",) and d == "int64":
                args.append("&bars[0]")
            elif "shared" in op.scopes and d in ("float16", "bfloat16"):
                args.append(f"({_CT[d]}*)&sh[(lane % 16) * 8]")
            elif "global" in op.scopes:
                args.append({"float32": "&gf[lane]", "int32": "&gi[lane]"}.get(d, f"({_CT[d]}*)&gh[lane * 2]"))
            elif op.scopes == ("shared",):
                args.append("&sh[0]")
            else:
                n = op.count(d)
                lines.append(f"  {_CT[d]} v{k}_{j}[{n}];")
                lines.append(f"  for (int q = 0; q < {n}; ++q) v{k}_{j}[q] = ({_CT[d]})(q + lane);")
                args.append(f"&v{k}_{j}[0]")
        lines.append("  " + e.cuda_text(args))
        lines += [f"  acc += (float)v{k}_{j}[0];" for j, op in enumerate(e.operands)
                  if op.is_buffer and op.role != "read" and isinstance(args[j], str) and args[j].startswith("&v")]
    lines.append("  gf[threadIdx.x] = acc;\n}")
    return "\n".join(lines)


@needs_nvcc
def test_every_hopper_wrapper_compiles_for_sm_90a(tmp_path):
    src = tmp_path / "probe.cu"
    src.write_text(_probe_source())
    r = subprocess.run([NVCC, "-gencode=arch=compute_90a,code=sm_90a", "-c", str(src), "-o", str(tmp_path / "p.o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


def _cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    for pattern in ("/usr/local/cuda*/bin/cuobjdump", "/tmp/*/lib/python3*/site-packages/nvidia/cu1*/bin/cuobjdump",
                    os.path.expanduser("~/.local/lib/python3*/site-packages/nvidia/cu1*/bin/cuobjdump")):
        hits = glob.glob(pattern)
        if hits:
            return hits[0]
    return None


KERNELS = [
    (H.tma_swizzle, {}, ["UTMALDG.2D", "SYNCS.PHASECHK", "SYNCS.ARRIVE.TRANS64"]),
    (H.wgmma_tile, {"b_major": "mn"}, ["HGMMA.64x128x16.F32.BF16", "UTMALDG.2D", "WARPGROUP.DEPBAR"]),
    (H.pipeline_ring, {}, ["HGMMA.64x64x16.F32.BF16", "UTMALDG.2D", "SYNCS.PHASECHK"]),
    (H.cluster_multicast, {}, ["UTMALDG.2D.MULTICAST", "UCGABAR_ARV", "UCGABAR_WAIT"]),
    (H.atomic_splitk, {}, ["REDG.E.ADD.F32"]),
    (H.stmatrix_warp, {"num": 4, "trans": True}, ["STSM.16.MT88.4"]),
    (H.ws_gemm_tile, {}, ["HGMMA.64x128x16.F32.BF16", "STSM.16.M88.4", "UTMASTG.2D", "UTMALDG.2D", "FENCE.VIEW.ASYNC"]),
    (H.pipeline_ring, {"regs": (40, 232)}, ["USETMAXREG", "HGMMA.64x64x16.F32.BF16"]),
    (H.attention_tile, {"n_kv": 128}, ["HGMMA.64x128x16.F32.BF16", "HGMMA.64x64x16.F32.BF16 R88, R24, gdesc"]),
    (lambda **kw: (H.tma_box_kernel(**kw),), {"shape": (2, 3, 4, 5, 32), "dtype": "float16", "start": (1, 2, 1, 3, 0),
                        "box": (1, 2, 4, 2, 32), "swizzle": 64}, ["UTMALDG.5D"]),
]


@needs_nvcc
@pytest.mark.parametrize("maker,kw,sass", KERNELS)
def test_hello_world_kernels_compile_to_hopper_instructions(maker, kw, sass):
    kernel = maker(**kw)[0]
    printed = print_kernel(kernel)
    binary = compile_cuda(printed.source, "sm_90a", name=kernel.name)
    tool = _cuobjdump()
    if tool is None:
        return  # compiled; the disassembly check needs cuobjdump (checked where it is installed)
    path = binary.path if getattr(binary, "path", None) else None
    if path is None or not os.path.exists(str(path)):
        import tempfile

        fd, path = tempfile.mkstemp(suffix=".cubin")
        os.write(fd, binary.code)
        os.close(fd)
    text = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, timeout=120).stdout
    for instr in sass:
        assert instr in text, (kernel.name, instr)
    assert not re.search(r"\b(LDL|STL)\b", text), f"{kernel.name} spills to local memory"


def test_printer_derives_tensor_maps_and_aligns_swizzled_shared_buffers():
    printed = print_kernel(H.wgmma_tile(n=128, k=64, b_major="k")[0])
    assert [(m.buffer, m.box, m.swizzle) for m in printed.tensor_maps] == [("A", (64, 64), 128), ("B", (128, 64), 128)]
    sig = printed.source.split('extern "C"')[1].split("{")[0]
    assert "const __grid_constant__ tessel::TensorMap tessel_tmap_0" in sig
    assert sig.index("tessel_tmap_0") > sig.index("O")  # trailing, after the buffer parameters
    assert "__shared__ __align__(1024) __nv_bfloat16 SA[" in printed.source
    assert "tessel::tma_load_2d(&tessel_tmap_1, &SB[0], &bar[0], 0, 0);" in printed.source  # coords innermost first


def test_printer_writes_cluster_dims_and_scalar_parameters():
    printed = print_kernel(H.cluster_multicast()[0])
    assert "__cluster_dims__(2, 1, 1)" in printed.source and printed.cluster == (2, 1, 1)
    printed = print_kernel(H.tma_swizzle(symbolic=True)[0])
    assert "tma_swizzle_n(const int n, " in printed.source


@needs_nvcc
def test_symbolic_extents_print_as_expressions_of_scalar_parameters():
    n = Var("n")
    A, B = Buffer("A", (n, 4)), Buffer("B", (n, 4))
    b, t, j = Var("b"), Var("t"), Var("j")
    i = b * 128 + t
    body = For(b, 8, For(t, 128, IfThenElse(i < n, For(j, 4, Store(B, (i, j), A[i, j] * 2.0))), "threadIdx.x"),
               "blockIdx.x")
    printed = print_kernel(Kernel("scale", (n, A, B), body, target="cuda", launch=Launch((8, 1, 1), (128, 1, 1))))
    assert "B[((long long)((b * 128) + t) * 4 + j)]" in printed.source
    compile_cuda(printed.source, "sm_90a", name="scale")


def test_printer_refuses_bad_hopper_uses():
    A = Buffer("A", (64, 64), "bfloat16")
    S = Buffer("S", (4096,), "bfloat16", "shared")
    bar = Buffer("bar", (1,), "int64", "shared")
    call = Intrinsic(tma.tma_load_name(2), (BufferRef(S, (Const(0),)), BufferRef(bar, (Const(0),)),
                                            BufferRef(A, (Const(0), Const(0))), Const(64), Const(64), Const(128)))
    from tessel.ir.nodes import Allocate

    k = Kernel("nop", (), Allocate(A, Allocate(S, Allocate(bar, For(Var("t"), 32, call, "threadIdx.x")))),
               target="cuda")
    with pytest.raises(CodegenError, match="must be a kernel parameter"):
        print_kernel(k)
    with pytest.raises(CodegenError, match="does not divide the grid"):
        print_kernel(Kernel("c", (), For(Var("b"), 3, Store(Buffer("X", (3,)), (Var("b"),), Const(1.0, "float32")),
                                         "blockIdx.x"),
                            target="cuda", launch=Launch((3, 1, 1), (1, 1, 1), cluster=(2, 1, 1))))
