"""A fuzz plugin for tests/fuzz/test_gpu_oracle.py: a fake GPU in a worker child. It runs kernels in
the interpreter (so they match), except a kernel named `gpucrash`, whose launch fails the way an
illegal address does and leaves the CUDA context lost. Loaded with `Worker(plugins=[...])`."""

from tessel.fuzz import gpu_oracle, oracles


def _fake_run(k, printed, case_target, inputs):
    if k.name == "gpucrash":
        gpu_oracle._context_lost = lambda: True
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return oracles._interp(k, inputs, 0)


gpu_oracle.run_on_gpu = _fake_run
