"""Building CUDA kernels: compile errors carry the log and the saved source, the disk cache
answers a second build without running the compiler (and is written atomically), the key tracks
source, architecture and compiler, builds work without a GPU for a named architecture, and the
"cuda" target detects the GPU's architecture (sm_90a when there is none)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import tessel as ts
from tessel.codegen import cuda_build
from tessel.codegen.cuda_build import BuildCache, build_key, compile_cuda, nvcc_path, nvrtc_version
from tessel.compiler.target import arch_of_capability, detect_cuda_arch, parse_target
from tessel.errors import CodegenError

needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="nvcc is not installed (CUDA compile checks need it)")
SRC = 'extern "C" __global__ void k(float* x) { x[threadIdx.x] = 2.0f * x[threadIdx.x]; }\n'


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path))
    return tmp_path


@needs_nvcc
def test_compile_error_raises_codegen_error_with_log_and_saved_source(cache_dir):
    bad = SRC.replace("2.0f *", "2.0f * undeclared_thing *")
    with pytest.raises(CodegenError) as info:
        compile_cuda(bad, "sm_80", name="broken", compiler="nvcc")
    msg = str(info.value)
    assert "kernel 'broken'" in msg and "sm_80" in msg and "undeclared_thing" in msg and "error" in msg
    saved = msg.split("the source is saved at ")[1].split()[0]
    assert os.path.dirname(saved).endswith(os.path.join("cuda", "failed"))
    with open(saved) as f:
        assert f.read() == bad


@needs_nvcc
def test_second_build_comes_from_the_cache_without_the_compiler(cache_dir, monkeypatch):
    cache = BuildCache()
    first = compile_cuda(SRC, "sm_80", name="k", compiler="nvcc", cache=cache)
    assert cache.stats["built"] == 1 and first.path and os.path.isfile(first.path)
    assert sorted(os.listdir(cache_dir / "cuda")) == sorted([first.key + ".cubin", first.key + ".cu"])  # no temps

    def no_compiler(*args, **kwargs):
        raise AssertionError("the compiler ran although the binary is cached")

    monkeypatch.setattr(cuda_build, "_compile_nvcc", no_compiler)
    assert compile_cuda(SRC, "sm_80", name="k", compiler="nvcc", cache=cache) is first  # memory
    cache.clear_memory()
    again = compile_cuda(SRC, "sm_80", name="k", compiler="nvcc", cache=cache)  # disk
    assert again.code == first.code and cache.stats == {"memory": 1, "disk": 1, "built": 1}


@needs_nvcc
def test_cache_off_still_builds(monkeypatch):
    monkeypatch.setenv("TESSEL_CACHE_DIR", "")
    b = compile_cuda(SRC, "sm_90a", name="k", compiler="nvcc", cache=BuildCache())
    assert b.path is None and b.code[:4] == b"\x7fELF"


@needs_nvcc
def test_cache_key_covers_source_arch_and_compiler(monkeypatch):
    base = build_key(SRC, "sm_80", "nvcc")
    assert build_key(SRC, "sm_80", "nvcc") == base
    assert build_key(SRC + " ", "sm_80", "nvcc") != base
    assert build_key(SRC, "sm_90a", "nvcc") != base
    assert build_key(SRC, "sm_80", "nvcc", fmad=True) != base
    monkeypatch.setattr(cuda_build, "compiler_id", lambda c: "nvcc 99.0")
    assert build_key(SRC, "sm_80", "nvcc") != base


def test_compiler_choice_errors(monkeypatch):
    with pytest.raises(CodegenError, match="unknown CUDA compiler 'clang'"):
        cuda_build.choose_compiler("clang")
    monkeypatch.setattr(cuda_build, "available_compilers", lambda: [])
    with pytest.raises(CodegenError, match="no CUDA compiler is available"):
        cuda_build.choose_compiler()
    with pytest.raises(CodegenError, match="'nvcc' is not available"):
        cuda_build.choose_compiler("nvcc")
    with pytest.raises(CodegenError, match="not of the form sm_XY"):
        compile_cuda(SRC, "ampere")


@pytest.mark.skipif(nvrtc_version() is None, reason="NVRTC (cuda.core + libnvrtc) is not available here")
def test_nvrtc_compiles_the_same_kernel(cache_dir):
    b = compile_cuda(SRC, "sm_90a", name="k", compiler="nvrtc", cache=BuildCache())
    assert b.compiler.startswith("nvrtc") and b.code[:4] == b"\x7fELF"
    with pytest.raises(CodegenError, match="undeclared_thing"):
        compile_cuda(SRC.replace("2.0f *", "undeclared_thing *"), "sm_90a", name="bad", compiler="nvrtc")


@needs_nvcc
def test_build_for_a_named_architecture_needs_no_gpu(cache_dir):
    from tessel.schedules.schedule import Schedule

    A = ts.placeholder((1000,), "float16", name="A")
    B = ts.compute((1000,), lambda i: A[i] * A[i], name="B")
    sch = Schedule(ts.lower([A, B]))
    bo, ti, vi = sch.split("i", [None, 64, 8])
    sch.apply("annotate", loop=bo, kind="blockIdx.x")
    sch.apply("annotate", loop=ti, kind="threadIdx.x")
    sch.vectorize(vi)
    for target in ("cuda:sm_90a", "cuda:sm_80"):
        kern = ts.build([A, B], target=target, schedule=sch)
        assert kern.arch == target.split(":")[1] and kern.launch.block == (64, 1, 1) and kern.ir.target == "cuda"
        assert "__global__" in kern.source and "load_vec<__half, 8>" in kern.source
        a = np.random.default_rng(2).standard_normal(1000).astype(np.float16)
        b = np.full(1000, 7, np.float16)
        kern.run_reference(a, b)
        assert np.array_equal(b, a * a)


def test_cuda_target_detects_the_architecture_or_defaults_to_sm_90a():
    assert arch_of_capability(9, 0) == "sm_90a" and arch_of_capability(8, 0) == "sm_80"
    detected = detect_cuda_arch()
    assert parse_target("cuda").arch == (detected or "sm_90a")
    assert parse_target("cuda:sm_80").arch == "sm_80"
