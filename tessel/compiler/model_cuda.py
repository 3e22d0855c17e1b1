"""Models on the GPU: fused groups scheduled for CUDA (splitting what cannot be), and the runtime.

Compiling (`gpu_steps`): every fused group is lowered (tessel.compiler.lowering) and scheduled
with the default GPU schedule (`tessel.schedules.generic_gpu.default_gpu_schedule`). A group it
refuses (ScheduleError: a matmul with an elementwise epilogue, stages that would communicate
across blocks, several outputs) is split, deterministically, and each part retried:

1. a group with an anchor: [prologue + anchor] then [epilogue] (an epilogue-free group:
   [prologue] then [anchor]);
2. an elementwise group with several outputs: one part per output, each recomputing the
   elementwise ops it needs (cheap: they are inlined into one loop);
3. otherwise one op per part;
4. one op whose lowering is several loop nests (sdpa: scores, max, exp, sum, PV): one kernel
   per nest, the nests' temporaries promoted to GPU buffers of their own. A nest the default
   schedule still refuses gets one thread per output element, and as a last resort one thread.

So every model compiles; `report["gpu_splits"]` (shown by `.summary()`) says which groups were
split, why, and into what.

Running (`GpuProgram`): inputs are torch CUDA tensors (any DLPack GPU array is viewed as one,
without a copy); outputs are fresh torch tensors (cupy arrays for cupy inputs). Intermediates
live in ONE arena, a torch uint8 tensor laid out by the memory plan (tessel.passes.graph.memory),
viewed once per value: one allocation per model and device instead of one per value and call,
liveness reuse, and pointers that stay put, which is what CUDA graph replay needs. Constants are
uploaded once per device, at the first call (compiling needs no GPU). Kernels run on torch's
current stream, so they order with the caller's torch work; the arena is shared by calls, so
calls of one model on different streams at once are not supported (a lock serialises the
launches, not the streams' work).

`CapturedModel` records a whole program as a CUDA graph (torch.cuda.CUDAGraph) and replays it.

Nothing here imports TVM: the CUDA model path runs where TVM is absent.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from tessel.errors import ArgumentError, ScheduleError, TesselError
from tessel.ir.nodes import Allocate, Const, Kernel, Launch, Load, Seq, Store, walk
from tessel.passes.graph.fusion import Group

_THREADS = 256  # threads per block of the one-thread-per-element fallback


# ---------------------------------------------------------------------------------------------
# Compiling: groups -> scheduled GPU kernels
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Piece:
    """One GPU kernel of a group: the unscheduled IR (deduplication key), the scheduled IR, the
    value passed per parameter, the (sub)group it computes and how it was scheduled ("default",
    "threads", "serial")."""

    ir: Kernel
    scheduled: Kernel
    args: list
    group: Group
    how: str


def gpu_pieces(graph, group: Group, target, temps: dict, splits: list, tuning=None, allow_tf32: bool = False) -> list:
    """The scheduled GPU kernels computing `group`, splitting it as the module docstring says.
    New intermediate values (temporaries of split nests) are added to `temps` (name -> (shape,
    dtype)); each split is appended to `splits` as {"group", "reason", "into"}. `tuning`: a
    `tessel.tune.reuse.LogSchedules` whose best record of a kernel replaces its default schedule.
    `allow_tf32`: float32 GEMMs may run on tf32 tensor cores (generic_gpu.default_gpu_schedule).

    >>> from tessel.frontend.graph import Graph
    >>> from tessel.passes.graph.fusion import fuse
    >>> g = Graph(); x = g.add_input("x", (4, 8), "float32"); (y,) = g.add_node("relu", [x])
    >>> g.mark_outputs([y]); [p.how for p in gpu_pieces(g, fuse(g)[0], "cuda:sm_90a", {}, [])]
    ['default']
    """
    from tessel.compiler.lowering import lower_group

    low = lower_group(graph, group)
    conv = _conv_pieces(graph, group, low, target, temps)
    if conv is not None:
        return conv
    try:
        sched, how = _scheduled(low.ir, target, tuning, allow_tf32)
        return [Piece(low.ir, sched, list(low.args), group, how)]
    except ScheduleError as e:
        reason = _first_line(e)
    if len(group.nodes) > 1:
        parts = split_group(graph, group)
        splits.append({"group": group.describe(), "reason": reason, "into": [p.describe() for p in parts]})
        out = []
        for part in parts:
            out += gpu_pieces(graph, part, target, temps, splits, tuning, allow_tf32)
        return out
    pieces = _nest_pieces(low, group, target, temps, tuning, allow_tf32)
    splits.append({"group": group.describe(), "reason": reason,
                   "into": [f"{p.scheduled.name} ({p.how})" for p in pieces]})
    return pieces


def _conv_pieces(graph, group: Group, low, target, temps: dict):
    """A float16 / bfloat16 2-D convolution (groups 1, equal strides, paddings and dilations) and its
    pointwise epilogue as: copies of its weights (a matrix) and input (NHWC, unless 1x1), then the
    implicit GEMM on tensor cores with the epilogue fused (tessel.schedules.conv_gemm); None when
    it does not apply."""
    from tessel.frontend.op_library.contraction import conv_params
    from tessel.schedules.conv_gemm import lower_conv_group

    node = group.anchor
    if node is None or node.op != "conv" or group.nodes[0] is not node or len(group.outputs) != 1:
        return None
    if len(graph.values[node.inputs[0]].shape) != 4 or graph.values[node.inputs[0]].dtype not in ("float16",
                                                                                                  "bfloat16"):
        return None
    stride, (pb, pe), dil, groups = conv_params("conv", node.attrs, 2)
    if groups != 1 or len(set(stride)) != 1 or len(set(dil)) != 1 or len(set(pb + pe)) != 1:
        return None
    try:
        prep, conv = lower_conv_group(low.ir, stride[0], pb[0], dil[0], target)
    except ScheduleError:
        return None
    value_of = {b.name: a for b, a in zip(low.ir.params, low.args)}
    pieces = []
    for kern in prep:  # copies of X (NHWC) and W (a matrix): params (original, copy)
        src, dst = kern.params
        tmp = value_of[dst.name] = f"{group.outputs[0]}.{dst.name}"
        temps[tmp] = (dst.shape, dst.dtype)
        pieces.append(Piece(kern, kern, [value_of[src.name], tmp],
                            Group(group.id, [node], None, [value_of[src.name]], [tmp]), "default"))
    args = [value_of[b.name] for b in conv.params]
    return pieces + [Piece(conv, conv, args, Group(group.id, list(group.nodes), node, args[:-1],
                                                   list(group.outputs)), "default")]


def split_group(graph, group: Group) -> list:
    """Smaller groups computing `group` (rules 1-3 of the module docstring), in execution order.

    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> from tessel.passes.graph.fusion import fuse
    >>> g = Graph(); x = g.add_input("x", (4, 8), "float32")
    >>> (h,) = g.add_node("matmul", [x, g.add_const("w", np.ones((8, 8), np.float32))])
    >>> (y,) = g.add_node("relu", [h]); g.mark_outputs([y])
    >>> [p.describe() for p in split_group(g, fuse(g)[0])]
    ['matmul', 'relu']
    """
    nodes = list(group.nodes)
    if group.anchor is not None:
        i = next(k for k, n in enumerate(nodes) if n is group.anchor)
        head, tail = nodes[: i + 1], nodes[i + 1:]
        parts = [head, tail] if tail else [head[:-1], head[-1:]]
        return [_subgroup(graph, group, p) for p in parts]
    if len(group.outputs) > 1:
        producer = {v: n for n in nodes for v in n.outputs}
        parts, owned = [], set()
        for out in group.outputs:
            if out in owned:
                continue
            cone = _cone(producer, out)
            produced = {v for n in cone for v in n.outputs}
            mine = [o for o in group.outputs if o in produced and o not in owned]
            owned.update(mine)
            parts.append(_subgroup(graph, group, cone, mine))
        if len(parts) > 1:
            return parts
    return [_subgroup(graph, group, [n]) for n in nodes]


def _cone(producer: dict, value: str) -> list:
    """The group's nodes `value` depends on, in the group's order."""
    seen, stack = set(), [value]
    while stack:
        v = stack.pop()
        n = producer.get(v)
        if n is not None and n.name not in seen:
            seen.add(n.name)
            stack.extend(x for x in n.inputs if x is not None)
    order = {id(n): k for k, n in enumerate(producer.values())}
    return sorted({n.name: n for n in producer.values() if n.name in seen}.values(), key=lambda n: order[id(n)])


def _subgroup(graph, group: Group, nodes: list, outputs: list | None = None) -> Group:
    produced = {v for n in nodes for v in n.outputs}
    inputs: list = []
    for n in nodes:
        for v in n.inputs:
            if v is not None and v not in produced and v not in inputs:
                inputs.append(v)
    if outputs is None:
        members = {n.name for n in nodes}
        outside = [n for n in group.nodes if n.name not in members]
        outputs = [v for n in nodes for v in n.outputs
                   if v in group.outputs or any(v in m.inputs for m in outside)]
    anchor = group.anchor if any(n is group.anchor for n in nodes) else None
    return Group(group.id, list(nodes), anchor, inputs, list(outputs))


def _nest_pieces(low, group: Group, target, temps: dict, tuning=None, allow_tf32: bool = False) -> list:
    """One kernel per top-level loop nest of a single op's kernel (rule 4)."""
    ir = low.ir
    value_of = {p.name: a for p, a in zip(ir.params, low.args)}
    body = ir.body
    while isinstance(body, Allocate):
        body = body.body
    items = body.stmts if isinstance(body, Seq) else (body,)
    pieces = []
    for st in items:
        written = []
        for n in walk(st):
            if isinstance(n, Store) and n.buffer not in written:
                written.append(n.buffer)
        if len(written) != 1:
            raise ScheduleError(f"kernel '{ir.name}': a top-level statement writes {len(written)} buffers; "
                                f"it cannot be split into one GPU kernel per loop nest")
        out = written[0]
        reads = []
        for n in walk(st):
            if isinstance(n, Load) and n.buffer != out and n.buffer not in reads:
                reads.append(n.buffer)
        for b in reads + [out]:
            if b.name not in value_of:  # a temporary of the op: a GPU buffer of its own
                value_of[b.name] = f"{group.outputs[0]}.{b.name}"
                temps[value_of[b.name]] = (b.shape, b.dtype)
        kern = Kernel(f"{ir.name}_{out.name}", tuple(reads) + (out,), st)
        scheduled, how = _schedule_nest(kern, target, tuning, allow_tf32)
        part = Group(group.id, list(group.nodes), group.anchor, [value_of[b.name] for b in reads],
                     [value_of[out.name]])
        pieces.append(Piece(kern, scheduled, [value_of[b.name] for b in kern.params], part, how))
    return pieces


def _scheduled(ir: Kernel, target, tuning=None, allow_tf32: bool = False) -> tuple:
    """(scheduled kernel, how): the tuning log's best record ("tuned") or the default schedule."""
    from tessel.schedules.generic_gpu import default_gpu_schedule

    if tuning is not None:
        tuned = tuning.schedule_for(ir)
        if tuned is not None:
            return tuned, "tuned"
    return default_gpu_schedule(ir, target, allow_tf32=allow_tf32).kernel, "default"


def _schedule_nest(kern: Kernel, target, tuning=None, allow_tf32: bool = False) -> tuple:
    try:
        return _scheduled(kern, target, tuning, allow_tf32)
    except ScheduleError:
        pass
    try:
        return thread_per_element(kern), "threads"
    except ScheduleError:
        pass
    return dataclasses.replace(kern, target="cuda", launch=Launch()), "serial"


def thread_per_element(kern: Kernel) -> Kernel:
    """Schedule a one-nest kernel with one GPU thread per output element (loops over the output's
    dimensions fused, split over blocks of 256 threads; any reduction stays serial per thread).

    >>> import tessel as ts
    >>> A = ts.placeholder((10, 3), name="A"); B = ts.compute((10,), lambda i: A[i, 0] + A[i, 2], name="B")
    >>> thread_per_element(ts.lower([A, B])).launch.block
    (32, 1, 1)
    """
    from tessel.schedules.generic import stages
    from tessel.schedules.nest import perfect_chain
    from tessel.schedules.schedule import Schedule

    found = stages(kern)
    if len(found) != 1:
        raise ScheduleError(f"kernel '{kern.name}': {len(found)} loop nests; one thread per element needs one")
    name, nest = found[0]
    ndim = next(n.buffer.ndim for n in walk(nest) if isinstance(n, Store) and n.buffer.name == name)
    chain = perfect_chain(nest)
    if ndim == 0 or len(chain) < ndim or any(not isinstance(lp.extent, Const) for lp in chain[:ndim]):
        raise ScheduleError(f"kernel '{kern.name}': stage '{name}' has no constant loops over its output")
    total = 1
    for lp in chain[:ndim]:
        total *= int(lp.extent.value)
    sch = Schedule(kern)
    loops = [lp.var.name for lp in chain[:ndim]]
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    b, t = sch.split(fused, [None, min(_THREADS, max(32, -(-total // 32) * 32))])
    sch.bind(b, "blockIdx.x")
    sch.bind(t, "threadIdx.x")
    return sch.kernel


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def gpu_available() -> bool:
    """Whether torch sees a CUDA GPU (torch is imported only when asked)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _torch_dtype(torch, dtype: str):
    return {"bfloat16": torch.bfloat16, "bool": torch.bool}.get(dtype) or getattr(torch, dtype)


def upload_array(torch, data, dtype: str, device):
    """A torch tensor on `device` holding a copy of `data` as `dtype` (bfloat16 moved by its bits:
    torch.from_numpy knows no ml_dtypes.bfloat16)."""
    a = np.array(data, copy=True, order="C")  # np.ascontiguousarray would make a 0-d array 1-d
    if dtype == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(a).to(device)


class GpuRuntime:
    """The per-device state of a GPU program: uploaded constants and the arena views."""

    def __init__(self, program, device):
        import torch

        graph, plan = program.graph, program.plan
        self.arena = torch.empty(max(plan.arena_bytes, 1), dtype=torch.uint8, device=device)
        self.static: dict = {}
        for v in graph.values.values():
            if v.is_const:
                self.static[v.name] = upload_array(torch, v.data, v.dtype, device)
        for name, off in plan.offsets.items():
            shape, dtype = program.value_type(name)
            self.static[name] = self.arena[off: off + plan.sizes[name]].view(_torch_dtype(torch, dtype)).view(shape)


class GpuProgram:
    """One specialisation of a model compiled for CUDA (the GPU counterpart of
    tessel.compiler.model.Program, with the same attributes)."""

    device_kind = "cuda"

    def __init__(self, source, graph, steps, plan, report, seconds, target, temps):
        from tessel.compiler.model import InputSpec
        from tessel.ir.dtypes import numpy_dtype

        self.source, self.graph, self.steps, self.plan, self.report = source, graph, steps, plan, report
        self.compile_seconds, self.target, self.temps = seconds, target, temps
        self.inputs = [InputSpec(v, graph.values[v].shape, graph.values[v].dtype) for v in graph.inputs]
        self._np_dtypes = [numpy_dtype(s.dtype) for s in self.inputs]  # for numpy inputs (run_interpreted)
        self._lock = threading.Lock()
        self._runtimes: dict = {}  # device index -> GpuRuntime
        produced = {v for s in steps for v in s.group.outputs}
        self._fresh = [o for o in dict.fromkeys(graph.outputs) if o in produced]

    @property
    def kernels(self) -> list:
        from tessel.compiler.model import unique_kernels

        return unique_kernels(self.steps)

    def value_type(self, name: str) -> tuple:
        if name in self.temps:
            return self.temps[name]
        v = self.graph.values[name]
        return tuple(v.shape), v.dtype

    # -- inputs ------------------------------------------------------------------------------------
    def check_inputs(self, inputs, where: str = "input") -> tuple:
        """Torch CUDA tensors for `inputs` (DLPack GPU arrays viewed as tensors), checked against the
        input specs; returns (tensors, kind of the inputs: "torch" or "cupy")."""
        name = self.source.name
        if len(inputs) != len(self.inputs):
            listed = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.inputs)
            raise ArgumentError(f"model '{name}' takes {len(self.inputs)} input(s) ({listed}), got {len(inputs)}")
        kinds = set()
        tensors = []
        for x, spec in zip(inputs, self.inputs):
            what = f"model '{name}' {where} '{spec.name}'"
            t, kind = _as_cuda_tensor(x, spec, what)
            kinds.add(kind)
            if str(t.dtype).replace("torch.", "") != spec.dtype:
                raise ArgumentError(f"{what}: expected dtype {spec.dtype}, got {str(t.dtype).replace('torch.', '')}")
            if tuple(t.shape) != tuple(spec.shape):
                raise ArgumentError(f"{what}: expected shape {tuple(spec.shape)}, got {tuple(t.shape)}")
            tensors.append(t if t.is_contiguous() else t.contiguous())
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            raise ArgumentError(f"model '{name}': inputs are on several devices ({', '.join(map(str, devices))}); "
                                f"put them on one GPU")
        return tensors, ("cupy" if kinds == {"cupy"} else "torch")

    # -- running -----------------------------------------------------------------------------------
    def runtime(self, device):
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        rt = self._runtimes.get(index)
        if rt is None:
            rt = self._runtimes[index] = GpuRuntime(self, torch.device("cuda", index))
        return rt

    def run(self, tensors: list, profile: dict | None = None, number: int = 5) -> list:
        """Run on checked torch CUDA tensors; returns fresh output tensors. With `profile`, times
        each step (median seconds of `number` calls, CUDA events) right after it runs."""
        import torch

        device = tensors[0].device if tensors else torch.device("cuda", torch.cuda.current_device())
        with self._lock, torch.cuda.device(device):
            rt = self.runtime(device)
            env = dict(rt.static)
            env.update(zip(self.graph.inputs, tensors))
            for o in self._fresh:
                shape, dtype = self.value_type(o)
                env[o] = torch.empty(shape, dtype=_torch_dtype(torch, dtype), device=device)
            for k, step in enumerate(self.steps):
                args = [env[a] for a in step.args]
                step.kernel(*args)
                if profile is not None:
                    profile[k] = step.kernel.time(*args, number=number, repeat=3)
            results, given = [], set()
            for o in self.graph.outputs:
                fresh = o in self._fresh and o not in given
                results.append(env[o] if fresh else env[o].clone())
                given.add(o)
            return results


def interpret_steps(program, arrays: list) -> list:
    """Run `program`'s steps (GPU or CPU) with the reference interpreter on numpy `arrays`; returns
    the outputs. Every intermediate gets a fresh numpy buffer (poison-free: the interpreter
    checks bounds, so a kernel reading outside what it should raises)."""
    from tessel.ir.dtypes import numpy_dtype
    from tessel.ir.interp import run

    temps = getattr(program, "temps", {})
    graph = program.graph
    env = {v.name: np.asarray(v.data) for v in graph.values.values() if v.is_const}
    env.update(zip(graph.inputs, arrays))
    produced = set()
    for s in program.steps:
        for v in s.group.outputs:
            shape, dtype = temps[v] if v in temps else (graph.values[v].shape, graph.values[v].dtype)
            env[v] = np.empty(shape, numpy_dtype(dtype))
            produced.add(v)
        run(s.kernel.ir, *[env[a] for a in s.args])
    results, given = [], set()
    for o in graph.outputs:
        fresh = o in produced and o not in given
        results.append(env[o] if fresh else np.array(env[o], copy=True))
        given.add(o)
    return results


def build_gpu_program(source, work, groups, target, report: dict, t0: float, tuning_log=None,
                      allow_tf32: bool = False) -> GpuProgram:
    """Schedule, split where needed and build the fused `groups` of the optimised graph `work`
    for the CUDA `target`; equal kernels are built once. `tuning_log`: a tuning log whose best
    record of a kernel (on this GPU's architecture) replaces its default schedule, with no
    measurement (`tessel tune --target cuda` writes it). `allow_tf32`: the user's permission for
    float32 GEMMs to run on tf32 tensor cores (10-bit mantissa; off: exact float32)."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tessel.compiler.driver import build
    from tessel.compiler.model import Step

    t_lower = time.perf_counter()
    temps: dict = {}
    splits: list = []
    todo: dict = {}  # unscheduled IR (named "k") -> (kernel name, scheduled IR); equal kernels built once
    names: dict = {}
    hows: dict = {}
    placed = []
    tuning = None
    if tuning_log is not None:
        from tessel.tune.reuse import LogSchedules

        tuning = LogSchedules(tuning_log, target)
    for g in groups:
        for piece in gpu_pieces(work, g, target, temps, splits, tuning, allow_tf32):
            key = dataclasses.replace(piece.ir, name="k")
            if key not in todo:
                base = piece.scheduled.name
                n = names.get(base, 0)
                names[base] = n + 1
                todo[key] = (base if n == 0 else f"{base}_{n}", piece.scheduled)
                hows[piece.how] = hows.get(piece.how, 0) + 1
            placed.append((key, piece))
    # nvcc runs in a subprocess and NVRTC releases the GIL: build the distinct kernels in parallel
    workers = max(1, min(8, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(workers) as pool:
        futures = {key: pool.submit(build, sched, target=target, schedule=sched, name=name)
                   for key, (name, sched) in todo.items()}
        built = {key: f.result() for key, f in futures.items()}
    if tuning is not None:
        tuning.warn()
    steps = [Step(built[key], piece.group, piece.args) for key, piece in placed]
    t_build = time.perf_counter()
    plan = _plan(work, steps, temps)
    report.update(groups=len(groups), kernels=len(built), lower_and_build_seconds=t_build - t_lower,
                  passes_seconds=t_lower - t0, gpu_splits=splits, gpu_schedules=hows)
    return GpuProgram(source, work, steps, plan, report, time.perf_counter() - t0, target, temps)


def _plan(graph, steps: list, temps: dict):
    from tessel.ir.dtypes import numpy_dtype
    from tessel.passes.graph.memory import plan_memory

    outputs = set(graph.outputs)
    planned, sizes, seq = set(), {}, []
    for s in steps:
        seq.append((list(s.args[: len(s.args) - len(s.group.outputs)]), list(s.group.outputs)))
        for v in s.group.outputs:
            if v not in outputs:
                shape, dtype = temps[v] if v in temps else (graph.values[v].shape, graph.values[v].dtype)
                planned.add(v)
                sizes[v] = int(np.prod(shape, dtype=np.int64)) * numpy_dtype(dtype).itemsize
    return plan_memory(seq, sizes, planned)


def _as_cuda_tensor(x, spec, what: str):
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if not x.is_cuda:
            raise ArgumentError(f"{what} is a torch tensor on {x.device}, but the model was compiled for the GPU: "
                                f"pass a CUDA tensor (.cuda()), or compile with target='cpu'")
        return x.detach(), "torch"
    if isinstance(x, (np.ndarray, np.generic)):
        raise ArgumentError(f"{what} is a numpy array in host memory, but the model was compiled for the GPU: pass "
                            f"a torch CUDA tensor (torch.from_numpy(a).cuda()) or another DLPack GPU array, or "
                            f"compile with target='cpu'")
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        dev_type = int(x.__dlpack_device__()[0])
        if dev_type not in (2, 13):  # kDLCUDA, kDLCUDAManaged
            raise ArgumentError(f"{what} is a DLPack array on device type {dev_type}, not a CUDA GPU")
        import torch

        kind = "cupy" if (type(x).__module__ or "").startswith("cupy") else "torch"
        return torch.from_dlpack(x), kind
    raise ArgumentError(f"{what}: expected a torch CUDA tensor or a DLPack GPU array of "
                        f"{spec.dtype}{list(spec.shape)}, got {type(x).__name__}")


def as_kind(results: list, kind: str) -> list:
    """Outputs as the caller's array kind (cupy arrays for cupy inputs, else torch tensors)."""
    if kind == "cupy":
        import cupy

        return [cupy.from_dlpack(r) for r in results]
    return results


def require_gpu(name: str, target) -> None:
    """TesselError unless a CUDA GPU is visible (through torch)."""
    if not gpu_available():
        raise TesselError(f"model '{name}' was compiled for {target}; running it needs an NVIDIA GPU and a CUDA "
                          f"build of torch, and none is visible here. Use cm.run_interpreted(*numpy_inputs) to "
                          f"check it on the CPU with the reference interpreter, or compile with target='cpu'")


class CapturedModel:
    """A GPU program recorded as one CUDA graph: calling it copies the inputs into the captured
    input buffers, replays the graph and returns copies of the outputs (the captured output
    buffers are overwritten by the next replay). Make it with `CompiledModel.capture_graph`.
    """

    def __init__(self, program: GpuProgram, tensors: list):
        import torch

        self.program = program
        self.inputs = [t.clone() for t in tensors]
        device = self.inputs[0].device if self.inputs else torch.device("cuda", torch.cuda.current_device())
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            program.run(self.inputs)  # loads every module: not allowed during a capture
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), torch.cuda.graph(self.cuda_graph, capture_error_mode="relaxed"):
            self.outputs = program.run(self.inputs)

    def replay(self, tensors: list) -> list:
        for dst, src in zip(self.inputs, tensors):
            if src is not dst:
                dst.copy_(src)
        self.cuda_graph.replay()
        return [o.clone() for o in self.outputs]


__all__ = ["CapturedModel", "GpuProgram", "Piece", "as_kind", "build_gpu_program", "gpu_available", "gpu_pieces",
           "interpret_steps", "require_gpu",
           "split_group", "thread_per_element"]
