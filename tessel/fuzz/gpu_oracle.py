"""The GPU oracle: run a GPU case's final kernel on a real GPU and compare it with the interpreter.

The interpreter stages of `oracles.run_case` judge GPU schedules without a GPU (races, barriers,
async copies); this oracle adds the last arrow, tessel's CUDA code on the device. When GPU
execution is on in this process (`enabled()`: the environment variable TESSEL_FUZZ_GPU is "1";
the campaign sets it in its workers, see `resolve`) and a case's final kernel has target "cuda",
`check` builds the printed CUDA C++ (tessel.codegen.cuda_build: NVRTC or nvcc), copies the same
seeded inputs the interpreter used to torch CUDA tensors (output buffers included, so in/out
buffers start alike), launches, copies back and compares with the interpreter's reference
(`oracles.compare`, loose tolerance, NaN in the reference accepts anything: real memory does not
hold the interpreter's poison). Outcomes, at stage "gpu":

- a mismatch: **diff**;
- a TesselError while building or launching (a refused feature, an architecture the GPU cannot
  run, sm_90a code on a GPU that is not Hopper): rejected ("refused");
- any other exception (the CUDA compiler rejects code tessel printed: `CudaCompileFailed`; the
  driver refuses its launch: `CudaLaunchFailed`; an illegal address): a **crash**, whose signature
  names the exception and the form of its message (the CUDA error, the compiler's first error
  line). A CUDA error can poison
  the process's context; then `POISONED` is set, the result dict says "restart", and the worker
  ends after answering, so the campaign records that failure once and goes on with a fresh child
  (tessel/fuzz/worker.py).

A case scheduled for sm_80 runs on a newer GPU of another major version (an H100) by compiling
the same source for that GPU's architecture (sm_90, without the "a" features): the printed code
is what is tested, and sm_80 code uses nothing sm_90 lacks.

Built kernels are kept per process by (CUDA source, architecture) in an explicit bounded cache
(`GPU_KERNELS`): nvcc costs about a second per kernel. Coverage tracing is paused (`quiet()`) around
the build, torch and the driver (the printer ran, traced, in the cuda stage).

Example (no GPU needed: GPU execution is off here, so the cuda stage only prints):
    >>> enabled(), resolve("off", ["cuda:sm_90a"])
    (False, (False, 'off (--gpu-run off)'))
"""

from __future__ import annotations

import os
import re

import numpy as np

from tessel.errors import TesselError
from tessel.fuzz.oracles import ModuleLRU

ENV = "TESSEL_FUZZ_GPU"
MODES = ("auto", "on", "off")
POISONED = False  # a CUDA error this process's context cannot recover from: the worker must restart


def enabled() -> bool:
    """Whether GPU cases of this process run on the GPU."""
    return os.environ.get(ENV, "") == "1"


def gpu_status() -> tuple[bool, str]:
    """(whether GPU execution can work here, why): torch sees a CUDA GPU and a CUDA compiler
    (NVRTC or nvcc) is there. Importing torch and asking it does not create a CUDA context
    worth worrying about: workers are fresh processes (subprocess), never forked children."""
    import shutil

    if not (os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi")):
        return False, "no NVIDIA GPU here: no /dev/nvidiactl, no nvidia-smi"  # (without importing torch)
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    try:
        if not torch.cuda.is_available():
            return False, f"torch {torch.__version__} sees no CUDA GPU"
        name = torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001 - a broken driver, say
        return False, f"torch.cuda failed: {e}"
    from tessel.codegen.cuda_build import available_compilers

    have = available_compilers()
    if not have:
        return False, "no CUDA compiler (NVRTC or nvcc) is available"
    return True, f"{name}, {have[0]}"


def resolve(mode: str, targets) -> tuple[bool, str]:
    """Whether a campaign over `targets` runs GPU cases on the GPU, and a line saying so.
    `mode`: "off", "on" (FuzzError when no GPU can run them) or "auto" (on where it can be).

    >>> resolve("off", ["cpu"])[0], resolve("auto", ["cpu", "graph"])
    (False, (False, 'off (no GPU targets)'))
    >>> resolve("sometimes", ["cuda"])
    Traceback (most recent call last):
    tessel.fuzz.case.FuzzError: tessel fuzz: --gpu-run must be one of auto, on, off; got 'sometimes'
    """
    from tessel.fuzz.case import FuzzError, is_gpu

    if mode not in MODES:
        raise FuzzError(f"tessel fuzz: --gpu-run must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "off":
        return False, "off (--gpu-run off)"
    if not any(is_gpu(t) for t in targets):
        if mode == "on":
            raise FuzzError(f"tessel fuzz: --gpu-run on needs a GPU target (--target cuda, cuda:ARCH or all); "
                            f"got {', '.join(targets)}")
        return False, "off (no GPU targets)"
    ok, why = gpu_status()
    if mode == "on" and not ok:
        raise FuzzError(f"tessel fuzz: --gpu-run on, but GPU cases cannot run here: {why}")
    return ok, ("on" if ok else "off") + f" ({why})"


# Built GpuKernels by (source, arch), bounded: the same LRU as the TVM modules' (oracles.ModuleLRU).
GPU_KERNELS = ModuleLRU(128)


def _capability() -> tuple[int, int]:
    import torch

    cc = torch.cuda.get_device_capability(0)
    return int(cc[0]), int(cc[1])


def run_arch(case_target: str, cc: tuple[int, int]) -> str:
    """The architecture to build a case of `case_target` for on a GPU of capability `cc`: the
    case's own where that GPU runs it; a plain one (sm_80) of an older major version is built for
    the GPU's own (sm_90); an "a" architecture (sm_90a) runs only on its GPU (TesselError).

    >>> run_arch("cuda:sm_80", (9, 0)), run_arch("cuda:sm_90a", (9, 0)), run_arch("cuda:sm_80", (8, 6))
    ('sm_90', 'sm_90a', 'sm_80')
    >>> run_arch("cuda:sm_90a", (8, 0))
    Traceback (most recent call last):
    tessel.errors.TesselError: case target cuda:sm_90a (sm_90a) cannot run on this GPU (compute capability 8.0)
    """
    from tessel.codegen.cuda_runtime import arch_runs_on
    from tessel.ir.target import parse_target

    arch = parse_target(case_target).arch
    if arch_runs_on(arch, cc):
        return arch
    major = int(arch[3:].rstrip("a")[:-1])
    if not arch.endswith("a") and cc[0] > major:
        return f"sm_{cc[0]}{cc[1]}"
    raise TesselError(f"case target {case_target} ({arch}) cannot run on this GPU (compute capability {cc[0]}.{cc[1]})")


def _to_device(torch, a: np.ndarray, dtype: str, device: str = "cuda"):
    """A torch tensor on `device` holding a copy of `a` (the compiled models' upload)."""
    from tessel.compiler.model_cuda import upload_array

    return upload_array(torch, a, dtype, device)


def _to_host(torch, t, a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return t.view(torch.int16).cpu().numpy().view(a.dtype).reshape(a.shape)
    return t.cpu().numpy().reshape(a.shape)


DEVICE = "cuda"  # where run_on_gpu puts the arrays (tests use "cpu" with a fake kernel)
_LAUNCH_FAILED = re.compile(r": launch with grid .* failed \(|: loading its machine code on GPU")


class CudaLaunchFailed(Exception):
    """The driver refused to load or launch a kernel tessel printed and configured (too many
    registers or shared memory for its block, a module that does not load): a bug, not a refusal,
    though tessel's runtime reports it as a TesselError."""


class CudaCompileFailed(Exception):
    """The CUDA compiler rejected code that tessel printed: a bug of the printer (a crash), not a
    documented refusal, though compile_cuda reports it as a CodegenError."""


def _build(k, printed, arch: str):
    """The GpuKernel of the printed kernel for `arch`, from GPU_KERNELS when built before."""
    from tessel.codegen.cuda_build import BuildCache, compile_cuda
    from tessel.codegen.cuda_kernel import GpuKernel
    from tessel.errors import CodegenError
    from tessel.ir.target import parse_target

    key = (printed.source, arch)
    kern = GPU_KERNELS.get(key)
    if kern is None:
        try:
            binary = compile_cuda(printed.source, arch, name=k.name, cache=BuildCache())  # (GPU_KERNELS caches)
        except CodegenError as e:
            text = str(e)
            if "CUDA compilation for" not in text:  # no compiler, a bad architecture: refusals
                raise
            errors = [ln for ln in text.splitlines()[1:] if "error" in ln.lower()][:1] or text.splitlines()[-1:]
            raise CudaCompileFailed(f"{errors[0].strip() if errors else ''}\n{text}") from None
        kern = GpuKernel(k, printed, binary, parse_target(f"cuda:{arch}"))
        GPU_KERNELS.put(key, kern)
    return kern


def run_on_gpu(k, printed, case_target: str, inputs: list) -> list:
    """Build `printed` (the CUDA C++ of kernel `k`) for this GPU, run it on copies of `inputs` (one
    array per parameter, outputs' initial contents included), and return the arrays afterwards."""
    import torch

    arch = run_arch(case_target, _capability())
    kern = _build(k, printed, arch)
    dtypes = [p.dtype for p in k.params]
    dev = [_to_device(torch, a, dt, DEVICE) for a, dt in zip(inputs, dtypes)]
    try:
        kern(*dev)
    except TesselError as e:  # the driver refused tessel's own launch (resources, a bad module): a bug
        if _LAUNCH_FAILED.search(str(e)):
            raise CudaLaunchFailed(str(e)) from e
        raise
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return [_to_host(torch, t, a, dt) for t, a, dt in zip(dev, inputs, dtypes)]


def _context_lost() -> bool:
    """Whether CUDA still works in this process after an error (a sticky error poisons it)."""
    try:
        import torch

        torch.cuda.synchronize()
        return float(torch.ones(1, device="cuda").sum().item()) != 1.0
    except Exception:  # noqa: BLE001
        return True


def check(case, k, printed, inputs, ref, params, quiet) -> bool:
    """Run the final kernel `k` (printed as `printed`) on the GPU and judge it (see the module
    docstring); raises oracles._Stop with the Outcome of a failure or a refusal. True when the
    kernel ran on the GPU and matched, False when GPU execution is off."""
    from tessel.fuzz.oracles import Outcome, _crash, _Stop, compare, work_dtype

    global POISONED
    if not enabled():
        return False
    if POISONED:  # (the worker ends after the case that poisoned it; this is a safety net)
        raise _Stop(Outcome("rejected", "refused", "gpu", "the CUDA context of this process is lost"))
    with quiet():
        try:
            got = run_on_gpu(k, printed, case.target, inputs)
        except TesselError as e:
            raise _Stop(Outcome("rejected", "refused", "gpu", str(e)[:500])) from e
        except Exception as e:  # noqa: BLE001 - the CUDA compiler, the launch, the device
            out = _crash("gpu", e)
            first, rest = (out.message.split("\n", 1) + [""])[:2]
            from tessel.fuzz.signature import message_form

            head = re.sub(r"\S*\.cu\b", "kernel.cu", str(e).strip().split("\n", 1)[0])  # (no temp paths)
            code = re.search(r"CUDA_ERROR_\w+|cudaError\w+", str(e))  # the driver's name for it, if any
            what = code.group(0) if code else message_form(head)[:80]
            out.message = f"{first} {what}\n{rest}"  # (its first line is the signature's detail)
            if not isinstance(e, CudaCompileFailed) and _context_lost():
                POISONED = True
                out.message += "\n(the CUDA context is lost: the worker restarts)"
            raise _Stop(out) from e
        bad = compare(got, ref, params, loose=4.0, nan_is_any=True, work=work_dtype(k))
    if bad is not None:
        raise _Stop(Outcome("fail", "diff", "gpu", bad))
    return True


def clear() -> None:
    """Forget the built kernels (after changing tessel's code in this process: a planted mutant)."""
    GPU_KERNELS.items.clear()


__all__ = ["CudaCompileFailed", "CudaLaunchFailed", "ENV", "GPU_KERNELS", "MODES", "POISONED", "check", "clear",
           "enabled", "gpu_status", "resolve", "run_arch", "run_on_gpu"]
