"""Running printed CUDA kernels on the CPU, so their semantics can be tested without a GPU.

The device header is `__host__ __device__` throughout, so the printed kernel body is valid host
code once `__global__` becomes `__host__` and `threadIdx` / `blockIdx` become variables the
harness sets. nvcc compiles that host program (its host compiler runs the code, with `half` /
`bfloat16` through cuda_fp16.h's host implementations and math through the C library); the
harness runs every block and thread of the launch one after the other (the host C++ compiler
builds it when there is one, with the toolkit's headers: five times faster than nvcc), reading and writing the
arrays through files. Only kernels without barriers or shared memory can run this way (the
threads do not communicate), which covers the elementwise, math, cast and operator kernels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from tessel.codegen.cuda_build import INCLUDE_DIR, cuda_include_dirs, nvcc_path
from tessel.codegen.cuda_printer import PrintedKernel, ctype


def nvcc_available() -> bool:
    return nvcc_path() is not None


def host_source(printed: PrintedKernel) -> str:
    """The printed kernel as a host function plus a main() that runs its whole grid."""
    src = printed.source
    if "__syncthreads" in src or "__shared__" in src:
        raise ValueError("kernels with barriers or shared memory cannot run on the host harness")
    src = re.sub(r'extern "C" __global__ void __launch_bounds__\(\d+\)', '__host__ void', src)
    src = re.sub(r"\b(threadIdx|blockIdx)\.([xyz])\b", lambda m: f"tessel_{m.group(1)}.{m.group(2)}", src)
    params = list(printed.params)
    loads, args = [], []
    for k, p in enumerate(params):
        t = ctype(p.dtype)
        loads.append(f"  {t}* p{k} = ({t}*)read_file(argv[{k + 1}], {p.size * np.dtype(_np(p.dtype)).itemsize});")
        args.append(f"p{k}")
    if printed.workspace_bytes:
        loads.append(f"  unsigned char* harness_ws = (unsigned char*)calloc({printed.workspace_bytes}, 1);")
        args.append("harness_ws")
    writes = [f"  write_file(argv[{k + 1}], p{k}, {p.size * np.dtype(_np(p.dtype)).itemsize});"
              for k, p in enumerate(params) if p.name in printed.written]
    (gx, gy, gz), (bx, by, bz) = printed.grid, printed.block
    return "\n".join([
        "#include <cstdio>", "#include <cstdlib>", "static uint3 tessel_threadIdx, tessel_blockIdx;", src,
        "static void* read_file(const char* path, size_t n) {",
        "  void* p = malloc(n ? n : 1); FILE* f = fopen(path, \"rb\"); if (!f || fread(p, 1, n, f) != n) exit(3);",
        "  fclose(f); return p; }",
        "static void write_file(const char* path, const void* p, size_t n) {",
        "  FILE* f = fopen(path, \"wb\"); if (!f || fwrite(p, 1, n, f) != n) exit(4); fclose(f); }",
        "int main(int argc, char** argv) {", *loads,
        f"  for (unsigned bz = 0; bz < {gz}; ++bz) for (unsigned by = 0; by < {gy}; ++by)",
        f"  for (unsigned bx = 0; bx < {gx}; ++bx) for (unsigned tz = 0; tz < {bz}; ++tz)",
        f"  for (unsigned ty = 0; ty < {by}; ++ty) for (unsigned tx = 0; tx < {bx}; ++tx) {{",
        "    tessel_blockIdx = make_uint3(bx, by, bz); tessel_threadIdx = make_uint3(tx, ty, tz);",
        f"    {printed.symbol}({', '.join(args)});",
        "  }", *writes, "  return 0;", "}", ""])


def _np(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


def run_on_host(printed: PrintedKernel, arrays: list, workdir: Path) -> None:
    """Compile `printed` as a host program and run it on `arrays` (numpy, one per parameter);
    outputs are written back in place."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    src = workdir / "harness.cu"
    src.write_text(host_source(printed))
    exe = workdir / "harness"
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx and cuda_include_dirs():
        # The host compiler alone is 5x faster than nvcc; the intrinsic wrappers (device-only PTX)
        # are left out through their include guard.
        cpp = workdir / "harness.cpp"
        cpp.write_text("#define TESSEL_DEVICE_HEADER_INCLUDED 1\n#include <cuda_runtime.h>\n#include <cmath>\n"
                       + src.read_text())
        cmd = [cxx, "-std=c++17", "-O1", "-ffp-contract=off", f"-I{INCLUDE_DIR}", f"-I{cuda_include_dirs()[0]}",
               "-o", str(exe), str(cpp)]
    else:
        cmd = [nvcc_path(), "-std=c++17", "-arch=sm_90a", "-fmad=false", "-Xcompiler", "-ffp-contract=off",
               f"-I{INCLUDE_DIR}", "-o", str(exe), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"host harness did not compile:\n{r.stdout}{r.stderr}")
    files = []
    for k, a in enumerate(arrays):
        f = workdir / f"arg{k}.bin"
        np.ascontiguousarray(a).tofile(f)
        files.append(str(f))
    r = subprocess.run([str(exe), *files], capture_output=True, text=True, timeout=120, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"host harness failed with {r.returncode}: {r.stderr}")
    for k, (a, p) in enumerate(zip(arrays, printed.params)):
        if p.name in printed.written:
            a[...] = np.fromfile(files[k], dtype=a.dtype).reshape(a.shape)
    shutil.rmtree(workdir, ignore_errors=True)
