"""Measuring tuning candidates: built in parallel, each run alone in its own process, checked
against the reference before its time counts.

One executor interface, `Executor.measure(inputs) -> results`; `LocalExecutor` is a local process
pool (a distributed executor can implement the same method later). For each batch it

1. builds every candidate in a child process (`parallel` at a time, `build_timeout` each): the
   task's `builder(kernel, target, template, knobs)` applies the template and the pass pipeline
   and compiles it (the compiled library lands in tessel's disk cache); the child sends back the
   final IR;
2. runs the built candidates one at a time (so they do not disturb each other's timings), each in
   a fresh child with `run_timeout` and `memory_limit`: the code is loaded from the disk cache,
   run once on seeded random inputs and compared with the reference outputs (a mismatch is an
   error, "wrong result ..."), then timed.

A candidate that crashes, hangs or runs out of memory in either step costs its own trial and
nothing more: its result carries the error (see `tessel.tune.isolate`).

Timing (`time_calls`): one warm-up call, then `repeats` rounds; a round runs the kernel often
enough to last `min_round_s` and its time is the mean per call; the result is the median round.
Inputs are rotated between calls over several sets (enough to exceed `ROTATE_BYTES`, at most
`MAX_SETS`) so a kernel is not flattered by finding its data in cache. On the GPU
(`gpu_time_calls`) CUDA events bracket each call on the stream and many more repeats are taken.

Example:
    >>> import numpy as np
    >>> times = time_calls(lambda x: x.sum(), [(np.ones(100),), (np.ones(100),)], repeats=3, min_round_s=0)
    >>> len(times)
    3
"""

from __future__ import annotations

import abc
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from tessel.tune.isolate import Job, run_isolated

ROTATE_BYTES = 64 * 2**20  # more than the last-level cache of the machines we run on
MAX_SETS = 8


@dataclass(frozen=True)
class MeasureTask:
    """One workload to measure candidates of.

    `kernel`: the unscheduled IR kernel; `target`: "cpu" or "cuda:sm_XY"; `builder`: a picklable
    function `(kernel, target, template, knobs) -> built IR kernel`; `expected`: the reference
    outputs (one array per output parameter, in parameter order) on the inputs of `seed`
    (`make_inputs`); `tolerance`: the largest max-abs-error / max-|reference| accepted (None: by
    dtype, `default_tolerance`).
    """

    kernel: object
    target: str
    builder: object
    expected: tuple
    seed: int = 0
    tolerance: float | None = None
    repeats: int = 7
    min_round_s: float = 2e-3


@dataclass(frozen=True)
class MeasureInput:
    """A candidate: a task and the template knob values to build it with."""

    task: MeasureTask
    template: str
    knobs: dict


@dataclass(frozen=True)
class MeasureResult:
    """`time` (median seconds per call) and `times` (the rounds), or `error`; and the seconds
    the build and the run took."""

    time: float | None = None
    times: tuple = ()
    error: str | None = None
    build_seconds: float = 0.0
    run_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.time is not None


class Executor(abc.ABC):
    """Measures candidates. Implementations: `LocalExecutor` (processes on this machine)."""

    @abc.abstractmethod
    def measure(self, inputs: list) -> list:
        """One MeasureResult per MeasureInput, in order; never raises for a bad candidate."""


class LocalExecutor(Executor):
    """Builds `parallel` candidates at a time and runs them one by one, each in its own process.

    `cache_dir`: where built libraries go between the build and the run (default: tessel's disk
    cache, or a temporary folder when that is turned off). `count` counts the candidates measured
    so far (tests use it to check that nothing was measured).
    """

    def __init__(self, parallel: int | None = None, build_timeout: float = 120.0, run_timeout: float = 60.0,
                 memory_limit: int | None = 4 * 2**30, cache_dir: str | None = None):
        self.parallel = parallel or max(1, (os.cpu_count() or 1))
        self.build_timeout, self.run_timeout, self.memory_limit = build_timeout, run_timeout, memory_limit
        self.cache_dir = cache_dir or _cache_dir()
        self.count = 0

    def measure(self, inputs: list) -> list:
        inputs = list(inputs)
        self.count += len(inputs)
        builds = run_isolated([Job(_build_child, (m.task.builder, m.task.kernel, m.task.target, m.template,
                                                  dict(m.knobs), self.cache_dir),
                                   timeout=self.build_timeout, memory_limit=self.memory_limit) for m in inputs],
                              parallel=self.parallel)
        results: list = [None] * len(inputs)
        to_run = []
        for i, b in enumerate(builds):
            if b.ok:
                to_run.append(i)
            else:
                results[i] = MeasureResult(error=f"build: {b.error}", build_seconds=b.seconds)
        runs = run_isolated([Job(_run_child, (builds[i].value, inputs[i].task, self.cache_dir),
                                 timeout=self.run_timeout, memory_limit=self.memory_limit) for i in to_run])
        for i, r in zip(to_run, runs):
            if r.ok:
                times = tuple(r.value)
                results[i] = MeasureResult(statistics.median(times), times, None, builds[i].seconds, r.seconds)
            else:
                results[i] = MeasureResult(error=f"run: {r.error}", build_seconds=builds[i].seconds,
                                           run_seconds=r.seconds)
        return results


def reference_outputs(builder, kernel, target: str, template: str, knobs: dict, seed: int,
                      timeout: float = 600.0) -> tuple:
    """The outputs of one candidate (normally the template's default point) on the inputs of
    `seed`, built and run in a child process: the reference of last resort, for workloads too
    large for the interpreter. Raises RuntimeError when that candidate fails."""
    out = run_isolated([Job(_reference_child, (builder, kernel, target, template, dict(knobs), seed, _cache_dir()),
                            timeout=timeout)])[0]
    if not out.ok:
        raise RuntimeError(f"the reference candidate failed: {out.error}")
    return tuple(out.value)


def _reference_child(builder, kernel, target, template, knobs, seed, cache_dir):
    built = _build_child(builder, kernel, target, template, knobs, cache_dir)
    arrays = make_inputs(kernel, seed)
    if str(target).startswith("cuda"):
        import torch

        from tessel.codegen import cuda

        dev = [torch.from_numpy(a).cuda() for a in arrays]
        cuda.build_kernel(built, target)(*dev)
        return [x.cpu().numpy() for x in outputs_of(kernel, built, dev)]
    from tessel.codegen import tvm as backend

    runner = backend.compile_kernel(built)
    runner.call(runner.tensors(arrays))
    return outputs_of(kernel, built, arrays)


def _cache_dir() -> str:
    from tessel.codegen.cache import cache_dir

    d = cache_dir()
    return str(d) if d is not None else tempfile.mkdtemp(prefix="tessel-tune-")


def _build_child(builder, kernel, target, template, knobs, cache_dir):
    os.environ["TESSEL_CACHE_DIR"] = cache_dir
    return builder(kernel, target, template, knobs)


def _run_child(built, task: MeasureTask, cache_dir):
    os.environ["TESSEL_CACHE_DIR"] = cache_dir
    if str(task.target).startswith("cuda"):
        return _run_gpu(built, task)
    return _run_cpu(built, task)


# ---------------------------------------------------------------------------------------------
# Inputs, the reference check and the timers
# ---------------------------------------------------------------------------------------------


def output_names(kernel) -> list:
    """Names of the parameters the kernel writes (stores or intrinsic destinations)."""
    from tessel.ir.nodes import Intrinsic, Store, walk

    written = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Store)}
    written |= {a.buffer.name for n in walk(kernel.body) if isinstance(n, Intrinsic)
                for a in n.args if hasattr(a, "buffer")}
    return [p.name for p in kernel.params if p.name in written]


def outputs_of(kernel, built, arrays) -> list:
    """The output arrays among `arrays` (one per parameter of `built`), in the order of the outputs
    of the unscheduled `kernel`. The outputs are read off the unscheduled kernel: a scheduled one
    passes its inputs to intrinsics (cp.async reads A and B), which would count them as written."""
    index = [p.name for p in built.params]
    return [arrays[index.index(n)] for n in output_names(kernel)]


def make_inputs(kernel, seed: int) -> list:
    """One numpy array per parameter, random (outputs too: a kernel that leaves part of an output
    unwritten leaves garbage there, which the check sees). Floats are standard normal; integers
    in [-4, 4]; bools random.

    >>> from tessel.ir.nodes import Buffer, For, Kernel, Store, Var
    >>> A, B = Buffer("A", (4,)), Buffer("B", (4,)); i = Var("i")
    >>> [a.shape for a in make_inputs(Kernel("k", (A, B), For(i, 4, Store(B, (i,), A[i]))), 0)]
    [(4,), (4,)]
    """
    from tessel.ir.dtypes import numpy_dtype

    rng = np.random.default_rng(seed)
    out = []
    for p in kernel.params:
        dt = numpy_dtype(p.dtype)
        shape = tuple(p.shape)
        if dt.kind == "f" or p.dtype in ("bfloat16",):
            a = rng.standard_normal(shape, dtype=np.float32).astype(dt)
        elif dt.kind in "iu":
            a = rng.integers(0 if dt.kind == "u" else -4, 5, shape).astype(dt)
        elif dt.kind == "b":
            a = rng.random(shape) < 0.5
        else:
            a = rng.standard_normal(shape).astype(dt)
        out.append(np.ascontiguousarray(a))
    return out


def default_tolerance(dtype: str) -> float:
    """Largest accepted max-abs-error / max-|reference| for outputs of `dtype`.

    >>> default_tolerance("float32"), default_tolerance("float16")
    (0.0001, 0.02)
    """
    return {"float64": 1e-9, "float32": 1e-4, "float16": 2e-2, "bfloat16": 3e-2}.get(dtype, 0.0)


def check_outputs(kernel, got: list, expected: tuple, tolerance: float | None) -> None:
    """Raise WrongResult naming the first output that differs from the reference."""
    names = output_names(kernel)
    params = {p.name: p for p in kernel.params}
    if len(names) != len(expected):
        raise WrongResult(f"{len(names)} output(s) but the reference has {len(expected)}")
    for name, g, w in zip(names, got, expected):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            raise WrongResult(f"output '{name}': shape {g.shape}, reference {w.shape}")
        tol = tolerance if tolerance is not None else default_tolerance(params[name].dtype)
        # NaN and infinities must sit where the reference has them (a batch norm of the random inputs'
        # negative variances is NaN in every correct candidate); the finite values are compared
        special = ~np.isfinite(w) | ~np.isfinite(g)
        if special.any():
            same = np.isnan(g) & np.isnan(w) | (g == w)
            if not same[special].all():
                bad = int(np.argmax(special & ~same))
                raise WrongResult(f"wrong result: output '{name}' element {bad} is {g.flat[bad]!r}, the reference "
                                  f"{w.flat[bad]!r}")
            g, w = g[~special], w[~special]
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        err = float(np.max(np.abs(g - w))) if w.size else 0.0
        if not np.isfinite(err) or err > tol * max(scale, 1e-30):
            raise WrongResult(f"wrong result: output '{name}' max abs error {err:.3g} against a reference of "
                              f"max |value| {scale:.3g} (tolerance {tol:g} relative)")


class WrongResult(Exception):
    """A candidate's output disagrees with the reference (raised in the run child)."""


def _rotation(kernel, seed: int, make) -> list:
    nbytes = sum(math.prod(p.shape) * np.dtype(_np_dtype(p.dtype)).itemsize for p in kernel.params) or 1
    sets = min(MAX_SETS, max(2, math.ceil(ROTATE_BYTES / nbytes)))
    return [make(seed + 1 + i) for i in range(sets - 1)]


def _np_dtype(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)


def _run_cpu(built, task: MeasureTask) -> list:
    from tessel.codegen import tvm as backend

    runner = backend.compile_kernel(built)
    arrays = make_inputs(task.kernel, task.seed)
    runner.call(runner.tensors(arrays))
    check_outputs(task.kernel, outputs_of(task.kernel, built, arrays), task.expected, task.tolerance)
    sets = [runner.tensors(arrays)] + [runner.tensors(a) for a in _rotation(task.kernel, task.seed,
                                                                          lambda s: make_inputs(task.kernel, s))]
    return time_calls(lambda ts: runner.call(ts), [(s,) for s in sets], repeats=task.repeats,
                      min_round_s=task.min_round_s, clock=cpu_clock())


def cpu_clock():
    """The clock CPU candidates are timed by: the calling thread's CPU time when the kernels run on one
    thread (`TESSEL_NUM_THREADS=1`: TVM runs a one-thread pool's work in the calling thread), which a
    loaded machine's other processes do not inflate; wall time otherwise (a pool's other threads'
    work is not in this thread's CPU time).

    >>> cpu_clock() in (time.thread_time, time.perf_counter)
    True
    """
    from tessel.codegen.tvm_runtime import num_threads

    return time.thread_time if num_threads() == 1 else time.perf_counter


def time_calls(fn, arg_sets, warmup: int = 1, repeats: int = 7, min_round_s: float = 2e-3,
               clock=time.perf_counter) -> list:
    """Seconds per call of `fn(*args)` by `clock`, one figure per round, rotating through `arg_sets`."""
    n = len(arg_sets)
    for i in range(max(warmup, 1)):
        fn(*arg_sets[i % n])
    start = clock()
    fn(*arg_sets[0])
    single = max(clock() - start, 1e-9)
    number = max(1, math.ceil(min_round_s / single))
    times, k = [], 0
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn(*arg_sets[k % n])
            k += 1
        times.append(max(clock() - start, 1e-9) / number)
    return times


def _run_gpu(built, task: MeasureTask) -> list:
    import torch

    from tessel.codegen import cuda

    kern = cuda.build_kernel(built, task.target)
    arrays = make_inputs(task.kernel, task.seed)
    dev = [torch.from_numpy(a).cuda() for a in arrays]
    kern(*dev)
    torch.cuda.synchronize()
    got = [x.cpu().numpy() for x in outputs_of(task.kernel, built, dev)]
    check_outputs(task.kernel, got, task.expected, task.tolerance)
    sets = [dev] + [[torch.from_numpy(a).cuda() for a in s]
                    for s in _rotation(task.kernel, task.seed, lambda s: make_inputs(task.kernel, s))]
    return gpu_time_calls(kern, sets, repeats=max(task.repeats, 50))


def gpu_time_calls(fn, arg_sets, warmup: int = 5, repeats: int = 100) -> list:
    """Seconds per call of `fn(*args)` on the current CUDA stream, each call bracketed by CUDA
    events, rotating through `arg_sets` (lists of GPU tensors); one figure per call."""
    import torch

    n = len(arg_sets)
    for i in range(warmup):
        fn(*arg_sets[i % n])
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for i in range(repeats):
        starts[i].record()
        fn(*arg_sets[i % n])
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]
