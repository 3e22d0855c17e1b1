"""The GPU oracle (tessel/fuzz/gpu_oracle.py): GPU cases built and run on a GPU, compared with the
interpreter. CPU-side tests replace the launch with fakes (a wrong result must be a diff at stage
gpu, a launch error a crash, a lost CUDA context one recorded failure and a fresh worker); the
`gpu` tests run real kernels and a planted printer bug on the device (skipped without a GPU)."""

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import pytest

from tessel.cli import main
from tessel.errors import TesselError
from tessel.fuzz import gpu_oracle, oracles
from tessel.fuzz.case import Case, FuzzError
from tessel.fuzz.gen_gpu import gpu_program
from tessel.fuzz.mutate_ir import default_schedule_cmds
from tessel.fuzz.mutate_passes import base_pipeline
from tessel.fuzz.worker import Worker, run_any, wait_any
from tessel.ir.text import parse_kernel

ROOT = Path(__file__).resolve().parents[2]


def _gpu_case(seed: int, target: str = None) -> Case:
    target = target or ("cuda:sm_80" if seed % 2 else "cuda:sm_90a")
    k = gpu_program(random.Random(seed), target)
    return Case(k, target, default_schedule_cmds(k, target), base_pipeline(target), seed)


def _mul_case(target: str = "cuda:sm_80", seed: int = 3) -> Case:
    k = parse_kernel("kernel mulk(A: float32[8, 256] global, B: float32[8, 256] global) target cpu "
                     "{ for i in 8 { for j in 256 { B[i, j] = (A[i, j] * A[i, j]) } } }")
    return Case(k, target, default_schedule_cmds(k, target), base_pipeline(target), seed)


def _interp_gpu(k, printed, case_target, inputs):  # a faithful fake GPU
    return oracles._interp(k, inputs, 0)


@pytest.fixture
def gpu_on(monkeypatch):
    monkeypatch.setenv(gpu_oracle.ENV, "1")
    monkeypatch.setattr(gpu_oracle, "POISONED", False)
    return monkeypatch


# -- enabling it -----------------------------------------------------------------------------------

def test_resolve_modes(monkeypatch):
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (False, "no GPU in this test"))
    assert gpu_oracle.resolve("auto", ["cuda:sm_90a"]) == (False, "off (no GPU in this test)")
    assert gpu_oracle.resolve("off", ["cuda"])[0] is False
    with pytest.raises(FuzzError, match="--gpu-run on, but GPU cases cannot run here: no GPU in this test"):
        gpu_oracle.resolve("on", ["cuda:sm_80", "cpu"])
    with pytest.raises(FuzzError, match="needs a GPU target"):
        gpu_oracle.resolve("on", ["cpu"])
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (True, "H100, nvrtc"))
    assert gpu_oracle.resolve("auto", ["cpu", "cuda:sm_80"]) == (True, "on (H100, nvrtc)")
    assert gpu_oracle.resolve("auto", ["cpu", "graph"])[0] is False  # (no GPU cases: nothing to run there)


def test_cli_gpu_run_on_without_a_gpu_is_a_clear_error_before_the_campaign(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (False, "torch sees no CUDA GPU"))
    out = tmp_path / "c"
    assert main(["fuzz", "--out", str(out), "--target", "cuda", "--seconds", "1", "--gpu-run", "on"]) == 1
    err = capsys.readouterr().err
    assert "--gpu-run on, but GPU cases cannot run here: torch sees no CUDA GPU" in err
    assert not (out / "report.md").exists()  # refused before any campaign started
    with pytest.raises(SystemExit):
        main(["fuzz", "--out", str(out), "--gpu-run", "sometimes"])
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


@pytest.mark.skipif(gpu_oracle.gpu_status()[0], reason="this machine has a GPU")
def test_real_gpu_run_on_without_a_gpu_fails_and_auto_is_off():
    with pytest.raises(FuzzError, match="--gpu-run on"):
        gpu_oracle.resolve("on", ["cuda"])
    assert gpu_oracle.resolve("auto", ["cuda"])[0] is False


# -- without GPU execution the cuda stage is as before -----------------------------------------------

def test_off_the_cuda_stage_only_prints(monkeypatch):
    monkeypatch.delenv(gpu_oracle.ENV, raising=False)

    def boom(*a):
        raise AssertionError("the GPU launch ran with GPU execution off")

    monkeypatch.setattr(gpu_oracle, "run_on_gpu", boom)
    for seed in range(4):
        out = oracles.run_case(_gpu_case(seed))
        assert out.status == "ok" and not out.gpu and out.to_dict()["gpu"] is False


# -- the comparison and the outcomes, with fake launches -------------------------------------------

def test_a_matching_gpu_counts_as_ran(gpu_on):
    gpu_on.setattr(gpu_oracle, "run_on_gpu", _interp_gpu)
    outs = [oracles.run_case(_gpu_case(s)) for s in range(4)]
    assert all(o.status == "ok" and o.gpu for o in outs), [(o.status, o.kind, o.message[:200]) for o in outs]


def test_a_wrong_gpu_result_is_a_diff_at_stage_gpu(gpu_on):
    seen = []

    def wrong(k, printed, case_target, inputs):
        got = oracles._interp(k, inputs, 0)
        seen.append(printed.source)
        i = random.Random(len(seen)).randrange(got[-1].size)
        got[-1].reshape(-1)[i] += np.asarray(1.0 + abs(got[-1].reshape(-1)[i]), got[-1].dtype)  # one element off
        return got

    gpu_on.setattr(gpu_oracle, "run_on_gpu", wrong)
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("fail", "diff", "gpu"), out.message
    assert "buffer 'B'" in out.message and out.signature.startswith("diff:gpu")
    assert "__global__" in seen[0]  # it was handed the printed CUDA C++


def test_a_nan_in_the_reference_accepts_anything_but_a_wrong_finite_value_does_not():
    p = parse_kernel("kernel f(A: float32[3] global) target cpu { for i in 3 { A[i] = 1.0f32 } }").params
    want = [np.array([np.nan, 1.0, 2.0], "float32")]
    assert oracles.compare([np.array([5.0, 1.0, 2.0], "float32")], want, p, loose=4.0, nan_is_any=True) is None
    assert oracles.compare([np.array([5.0, 1.0, 2.1], "float32")], want, p, loose=4.0, nan_is_any=True)


def test_a_launch_error_is_a_crash_and_a_refusal_is_rejected(gpu_on):
    def crash(*a):
        raise RuntimeError("CUDA error: unspecified launch failure")

    gpu_on.setattr(gpu_oracle, "run_on_gpu", crash)
    gpu_on.setattr(gpu_oracle, "_context_lost", lambda: False)
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("fail", "crash", "gpu")
    assert "unspecified launch failure" in out.message and not gpu_oracle.POISONED

    def refuse(*a):
        raise TesselError("kernel 'mulk' was compiled for sm_90a but GPU 0 has compute capability 8.0")

    gpu_on.setattr(gpu_oracle, "run_on_gpu", refuse)
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("rejected", "refused", "gpu")


def test_a_lost_context_poisons_the_process(gpu_on):
    gpu_on.setattr(gpu_oracle, "run_on_gpu", lambda *a: (_ for _ in ()).throw(RuntimeError("illegal address")))
    gpu_on.setattr(gpu_oracle, "_context_lost", lambda: True)
    out = oracles.run_case(_mul_case())
    assert (out.kind, out.stage) == ("crash", "gpu") and "the worker restarts" in out.message
    assert gpu_oracle.POISONED
    gpu_on.setattr(gpu_oracle, "run_on_gpu", _interp_gpu)
    assert oracles.run_case(_mul_case()).status == "rejected"  # no later case reports a failure of its own


def test_run_arch_picks_what_the_gpu_runs():
    assert gpu_oracle.run_arch("cuda:sm_80", (8, 0)) == "sm_80"
    assert gpu_oracle.run_arch("cuda:sm_80", (9, 0)) == "sm_90"
    assert gpu_oracle.run_arch("cuda:sm_90a", (9, 0)) == "sm_90a"
    for cc in ((8, 0), (10, 0)):
        with pytest.raises(TesselError, match="cannot run on this GPU"):
            gpu_oracle.run_arch("cuda:sm_90a", cc)


def test_a_worker_whose_context_is_lost_answers_once_and_is_replaced(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    w = Worker(coverage=False, gpu=True, plugins=["tests.fuzz.gpu_fake"])
    try:
        crash = _mul_case()
        crash = crash.replace(kernel=dataclasses.replace(crash.kernel, name="gpucrash"))
        cases = [crash, _mul_case(seed=4), _gpu_case(1)]
        w._wait_ready()
        pid = w.proc.pid
        for i, c in enumerate(cases):
            w.submit(i, c.to_text(), 120.0)
        got = {}
        while len(got) < len(cases):
            r = w.poll()
            if r is None:
                wait_any([w], 0.2)
                continue
            got[r[0]] = r[1]
    finally:
        w.close()
    assert (got[0]["status"], got[0]["kind"], got[0]["stage"]) == ("fail", "crash", "gpu"), got[0]
    assert got[0]["restart"] and w.proc.pid != pid
    assert [(got[i]["status"], got[i]["gpu"]) for i in (1, 2)] == [("ok", True), ("ok", True)], got


def test_clear_caches_forgets_built_kernels():
    gpu_oracle.GPU_KERNELS.put(("src", "sm_90a"), object())
    oracles.clear_caches()
    assert not gpu_oracle.GPU_KERNELS.items


# -- on a GPU -----------------------------------------------------------------------------------------

@pytest.fixture
def real_gpu(monkeypatch):
    ok, why = gpu_oracle.gpu_status()
    if not ok:
        pytest.skip(f"GPU execution cannot run here: {why}")
    monkeypatch.setenv(gpu_oracle.ENV, "1")
    monkeypatch.setattr(gpu_oracle, "POISONED", False)
    gpu_oracle.clear()
    yield monkeypatch
    gpu_oracle.clear()


@pytest.mark.gpu
def test_seeded_gpu_cases_run_on_the_gpu_and_match(real_gpu):
    outs = [(s, oracles.run_case(_gpu_case(s))) for s in range(12)]
    bad = [(s, o.signature, o.message[:300]) for s, o in outs if o.status == "fail"]
    assert not bad
    ran = [s for s, o in outs if o.gpu]
    assert len(ran) >= 6, [(s, o.status, o.kind, o.stage, o.message[:200]) for s, o in outs]


@pytest.mark.gpu
def test_a_planted_printer_bug_is_caught_on_the_gpu_only(real_gpu):
    from tessel.codegen import cuda_printer

    original = cuda_printer._Printer.binary

    def plus_for_times(self, e):  # the planted bug: a float32 '*' printed as '+'
        if e.op == "mul" and e.a.dtype == "float32":
            return f"({self.expr(e.a)} + {self.expr(e.b)})"
        return original(self, e)

    for target in ("cuda:sm_80", "cuda:sm_90a"):
        assert oracles.run_case(_mul_case(target)).status == "ok"
    real_gpu.setattr(cuda_printer._Printer, "binary", plus_for_times)
    for target in ("cuda:sm_80", "cuda:sm_90a"):
        real_gpu.setenv(gpu_oracle.ENV, "0")  # the interpreter stages pass: only the printed code is wrong
        assert oracles.run_case(_mul_case(target)).status == "ok"
        real_gpu.setenv(gpu_oracle.ENV, "1")
        out = run_any(_mul_case(target))
        assert (out.status, out.kind, out.stage) == ("fail", "diff", "gpu"), (target, out.message[:500])


def _has_cuda_compiler() -> bool:
    from tessel.codegen.cuda_build import available_compilers

    return bool(available_compilers())


@pytest.mark.skipif(not _has_cuda_compiler(), reason="no CUDA compiler (NVRTC or nvcc) here")
def test_printed_code_the_compiler_rejects_is_a_crash_naming_the_error(gpu_on):
    # (the build runs anywhere nvcc is: only the launch needs a GPU)
    import types

    def broken_print(k, printed, case_target, inputs):
        bad = printed.source.replace("__global__", "__global__ not_a_type", 1)
        return gpu_oracle._build(k, types.SimpleNamespace(source=bad), "sm_80")

    gpu_on.setattr(gpu_oracle, "run_on_gpu", broken_print)
    gpu_on.setattr(gpu_oracle, "_context_lost", lambda: pytest.fail("a compile error does not touch the device"))
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("fail", "crash", "gpu"), out.message[:500]
    assert out.signature.startswith("crash:gpu:CudaCompileFailed@") and "error" in out.signature, out.signature


@pytest.mark.skipif(not _has_cuda_compiler(), reason="no CUDA compiler (NVRTC or nvcc) here")
def test_built_kernels_are_cached_by_source_and_arch():
    from tessel.codegen.cuda_printer import print_kernel

    gpu_oracle.clear()
    k, _ = oracles.compile_case(_mul_case())
    printed = print_kernel(k)
    a = gpu_oracle._build(k, printed, "sm_80")
    assert gpu_oracle._build(k, printed, "sm_80") is a and a.arch == "sm_80"
    assert gpu_oracle._build(k, printed, "sm_90").arch == "sm_90"  # another arch: another binary
    assert len(gpu_oracle.GPU_KERNELS.items) == 2
    gpu_oracle.clear()


@pytest.mark.parametrize("shape", [(3, 5), ()])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64", "int32", "int64", "int8", "bool"])
def test_arrays_cross_to_torch_and_back_bit_for_bit(dtype, shape):
    # (on the CPU here; the oracle moves them to "cuda" the same way; a 0-d buffer stays 0-d)
    torch = pytest.importorskip("torch")
    from tessel.ir.dtypes import numpy_dtype

    rng = np.random.default_rng()
    a = np.asarray((rng.random(shape) < 0.5) if dtype == "bool" else (rng.standard_normal(shape) * 40))
    a = a.astype(numpy_dtype(dtype))
    t = gpu_oracle._to_device(torch, a, dtype, device="cpu")
    assert str(t.dtype) == f"torch.{dtype}" and tuple(t.shape) == a.shape
    back = gpu_oracle._to_host(torch, t, a, dtype)
    assert back.dtype == a.dtype and back.tobytes() == a.tobytes()


def test_a_campaign_with_gpu_execution_counts_and_reports_the_cases_run_there(tmp_path, monkeypatch):
    from tessel.fuzz.campaign import Campaign

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (True, "a fake GPU"))
    monkeypatch.setattr(gpu_oracle, "run_on_gpu", gpu_oracle.run_on_gpu)  # (the plugin replaces it here too)
    c = Campaign(str(tmp_path), target="cuda:sm_80", seed=1, jobs=1, quiet=True, reduce=False, gpu_run="on",
                 plugins=["tests.fuzz.gpu_fake"])
    s = c.run(seconds=60, max_cases=12)
    assert s["gpu"] and 0 < s["gpu_cases"] <= s["cases"], s
    assert "| on GPU" in c.line()
    report = (tmp_path / "report.md").read_text()
    assert f"GPU execution: on (a fake GPU); GPU cases run on the GPU and matching the interpreter: " \
           f"{s['gpu_cases']}" in report


def test_replay_of_a_gpu_failure_runs_it_on_the_gpu_again(tmp_path, monkeypatch, capsys):
    import json

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(gpu_oracle, "run_on_gpu", gpu_oracle.run_on_gpu)  # (the plugin replaces it here too)
    crash = _mul_case()
    path = tmp_path / "reduced.txt"
    path.write_text(crash.replace(kernel=dataclasses.replace(crash.kernel, name="gpucrash")).to_text())
    args = ["fuzz", "--replay", str(path), "--plugin", "tests.fuzz.gpu_fake"]
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (True, "a fake GPU"))
    assert main(args) == 1
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (verdict["kind"], verdict["stage"]) == ("crash", "gpu"), verdict
    assert main(args + ["--gpu-run", "off"]) == 0  # without the GPU the interpreter stages pass
    monkeypatch.setattr(gpu_oracle, "gpu_status", lambda: (False, "no GPU"))
    assert main(args) == 0  # auto: no GPU here, so it is not run there


class _FakeKernel:
    """Stands for a GpuKernel: doubles the last array in place, or fails its launch like the driver."""

    def __init__(self, error=None):
        self.error, self.got = error, None

    def __call__(self, *arrays):
        if self.error:
            raise self.error
        self.got = [a.clone() for a in arrays]
        arrays[-1].mul_(2)


def test_run_on_gpu_hands_every_buffer_over_and_back(monkeypatch):
    torch = pytest.importorskip("torch")
    kern = _FakeKernel()
    monkeypatch.setattr(gpu_oracle, "DEVICE", "cpu")
    monkeypatch.setattr(gpu_oracle, "_capability", lambda: (9, 0))
    monkeypatch.setattr(gpu_oracle, "_build", lambda k, printed, arch: kern)
    k, _ = oracles.compile_case(_mul_case())
    inputs = oracles.make_inputs(k, int(np.random.default_rng().integers(1 << 30)))
    got = gpu_oracle.run_on_gpu(k, None, "cuda:sm_80", inputs)
    for sent, a in zip(kern.got, inputs):  # outputs' initial contents included
        assert np.array_equal(sent.numpy(), a)
    assert np.array_equal(got[0], inputs[0]) and np.array_equal(got[1], inputs[1] * 2)
    assert got[1] is not inputs[1] and isinstance(torch.from_numpy(got[1]), torch.Tensor)


def test_a_launch_the_driver_refuses_is_a_crash_not_a_refusal(gpu_on):
    pytest.importorskip("torch")
    driver = TesselError("kernel 'mulk': launch with grid (8, 1, 1), block (1024, 1, 1), 0 bytes of shared memory "
                         "failed (CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)")
    gpu_on.setattr(gpu_oracle, "DEVICE", "cpu")
    gpu_on.setattr(gpu_oracle, "_capability", lambda: (9, 0))
    gpu_on.setattr(gpu_oracle, "_context_lost", lambda: False)
    gpu_on.setattr(gpu_oracle, "_build", lambda k, printed, arch: _FakeKernel(driver))
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("fail", "crash", "gpu"), out.message[:300]
    assert out.signature.startswith("crash:gpu:CudaLaunchFailed@") and "OUT_OF_RESOURCES" in out.signature
    gpu_on.setattr(gpu_oracle, "_build", lambda k, printed, arch: _FakeKernel(ArgumentErrorLike()))
    out = oracles.run_case(_mul_case())
    assert (out.status, out.kind, out.stage) == ("rejected", "refused", "gpu")


class ArgumentErrorLike(TesselError):
    def __init__(self):
        super().__init__("kernel 'mulk' was compiled for sm_90a but GPU 0 has compute capability 8.0")
