"""A model's compiled specialisation (`Program`) and how one is made from a graph (`compile_program`).

`compile_program(graph, options)` copies the graph, runs the graph passes (canonicalise, fold
constants, pattern rules: `tessel.passes.graph.optimize`), partitions it into fused groups, lowers
each group to one kernel (`tessel.compiler.lowering`; groups with equal IR share one compiled
kernel) and plans the memory of the values that cross kernels (`tessel.passes.graph.memory`: one
arena, reused by liveness). A `Program` runs those steps on numpy arrays; the arena is shared by
calls, so a lock serialises concurrent calls. `tessel.compiler.model.CompiledModel` holds one
Program per input signature.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph("tiny"); x = g.add_input("x", (3,), "float32"); (y,) = g.add_node("neg", [x])
    >>> g.mark_outputs([y])
    >>> p = compile_program(g, {})
    >>> p.run([np.float32([1, -2, 3])])[0].tolist()
    [-1.0, 2.0, -3.0]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from tessel.compiler.model_io import InputSpec, contiguous
from tessel.errors import TesselError
from tessel.frontend.graph import Graph, OpNode, Value


def unique_kernels(steps) -> list:
    """The kernels of `steps` in order, each once (groups with identical IR share a kernel)."""
    seen, out = set(), []
    for s in steps:
        if id(s.kernel) not in seen:
            seen.add(id(s.kernel))
            out.append(s.kernel)
    return out


@dataclass
class Step:
    """One kernel launch: the kernel, the group it computes, the value passed per parameter."""

    kernel: object  # tessel.compiler.kernel.Kernel
    group: object  # tessel.passes.graph.fusion.Group
    args: list



class Program:
    """One specialisation of a model: the optimised graph, its steps and its memory plan."""

    def __init__(self, source: Graph, graph: Graph, steps: list, plan, report: dict, seconds: float):
        from tessel.ir.dtypes import numpy_dtype

        self.source, self.graph, self.steps, self.plan, self.report = source, graph, steps, plan, report
        self.compile_seconds = seconds
        self.inputs = [InputSpec(v, graph.values[v].shape, graph.values[v].dtype) for v in graph.inputs]
        self._np_dtypes = [numpy_dtype(s.dtype) for s in self.inputs]
        self._lock = threading.Lock()
        self._arena = np.empty(max(plan.arena_bytes, 1), np.uint8)
        self._static: dict = {}  # constants and arena views: the same every call
        for v in graph.values.values():
            if v.is_const:
                self._static[v.name] = contiguous(v.data)
        for name, off in plan.offsets.items():
            val = graph.values[name]
            dt = numpy_dtype(val.dtype)
            self._static[name] = self._arena[off: off + plan.sizes[name]].view(dt).reshape(val.shape)
        produced = {v for s in steps for v in s.group.outputs}
        self._fresh = [(o, graph.values[o]) for o in dict.fromkeys(graph.outputs) if o in produced]
        self._fresh_names = {o for o, _ in self._fresh}
        self._fresh_np = [(o, tuple(v.shape), numpy_dtype(v.dtype)) for o, v in self._fresh]
        self._bound = None  # BoundSteps after the first (checked) run; False: not bindable

    @property
    def kernels(self) -> list:
        return unique_kernels(self.steps)

    def _bind(self):
        """The steps as one `tvm_runtime.BoundSteps` (fixed arrays viewed once; per call only the
        inputs and fresh outputs), or False when a kernel is not a TVM one. Per-call host
        overhead, 10 small kernels, loaded 2-core VM: 4.5 us per kernel before, see bench/cpu_models.py."""
        from tessel.codegen.tvm_runtime import BoundSteps, Runner

        self._changing = list(dict.fromkeys(list(self.graph.inputs) + [o for o, _ in self._fresh]))
        index = {n: k for k, n in enumerate(self._changing)}
        steps = []
        for step in self.steps:
            runner = getattr(step.kernel, "_runner", None)
            if not isinstance(runner, Runner):
                return False
            steps.append((runner, [index[a] if a in index else self._static[a] for a in step.args]))
        return BoundSteps(steps)

    def run(self, arrays: list, profile: dict | None = None, number: int = 5) -> list:
        """Run on checked, contiguous numpy inputs; returns fresh output arrays. With `profile`
        (a dict), also times each step right after it runs, while its inputs are still valid
        (median seconds of `number` calls, keyed by step index)."""
        with self._lock:
            # per call only the inputs and the fresh outputs go in `env`; constants and arena views
            # are looked up in `_static` (copying that dict every call cost microseconds)
            env = dict(zip(self.graph.inputs, arrays))
            for name, shape, dt in self._fresh_np:
                env[name] = np.empty(shape, dt)
            if profile is None and self._bound:  # after one checked call: views made once
                self._bound(*[env[n] for n in self._changing])
            else:
                full = {**self._static, **env}
                for k, step in enumerate(self.steps):
                    args = [full[a] for a in step.args]
                    step.kernel(*args)
                    if profile is not None:
                        profile[k] = step.kernel.time(*args, number=number, repeat=3)
                if self._bound is None:
                    self._bound = self._bind()
            results, given = [], set()
            for o in self.graph.outputs:
                value = env[o] if o in env else self._static[o]
                fresh = o in self._fresh_names and o not in given
                results.append(value if fresh else np.array(value, copy=True))
                given.add(o)
            return results


def compile_program(graph: Graph, options: dict) -> Program:
    from tessel.compiler.lowering import build_kernel, lower_group
    from tessel.passes.graph import optimize
    from tessel.passes.graph.fusion import fuse

    t0 = time.perf_counter()
    if not graph.outputs:
        raise TesselError(f"model '{graph.name}' has no outputs; call graph.mark_outputs([...])")
    source = copy_graph(graph)
    work = copy_graph(graph)
    report: dict = {}
    if options.get("optimize", True):
        report.update(optimize(work, options.get("fold_limit")))
    work.prune()
    work.reorder_topologically()
    from tessel.compiler.model_control import compile_control_program, has_control

    if has_control(work):  # run-time if/loop: compiled programs with control steps between them
        report["passes_seconds"] = time.perf_counter() - t0
        return compile_control_program(source, work, options, report, t0)
    target = options.get("target", "cpu")
    if target != "cpu" and options.get("allow_tf32"):
        from tessel.compiler.tf32_layout import keep_tf32_weights_k_major

        report["tf32_weights_k_major"] = keep_tf32_weights_k_major(work)
    groups = fuse(work, max_group_ops=options.get("max_group_ops", 32),
                  max_prologue_ops=options.get("max_prologue_ops", 8))
    if target != "cpu":
        from tessel.compiler.model_cuda import build_gpu_program

        return build_gpu_program(source, work, groups, target, report, t0, tuning_log=options.get("tuning_log"),
                                 allow_tf32=bool(options.get("allow_tf32", False)))
    tuning = None
    if options.get("tuning_log") is not None:
        from tessel.tune.reuse import LogSchedules

        tuning = LogSchedules(options["tuning_log"], target)
    built: dict = {}  # naive IR kernel -> compiled Kernel (equal groups share one)
    names: dict = {}
    steps = []
    t_lower = time.perf_counter()
    for g in groups:
        low = lower_group(work, g, inline=False)
        kern = built.get(low.naive)
        if kern is None:
            base = low.naive.name
            n = names.get(base, 0)
            names[base] = n + 1
            kern = build_kernel(low.inline().ir, base if n == 0 else f"{base}_{n}", tuning=tuning)
            built[low.naive] = kern
        steps.append(Step(kern, g, low.args))
    if tuning is not None:
        tuning.warn()
    t_build = time.perf_counter()
    plan = _plan(work, steps)
    report.update(groups=len(groups), kernels=len(built), lower_and_build_seconds=t_build - t_lower,
                  passes_seconds=t_lower - t0)
    return Program(source, work, steps, plan, report, time.perf_counter() - t0)


def _plan(graph: Graph, steps: list):
    from tessel.ir.dtypes import numpy_dtype
    from tessel.passes.graph.memory import plan_memory

    outputs = set(graph.outputs)
    planned, sizes, seq = set(), {}, []
    for s in steps:
        seq.append((list(s.group.inputs), list(s.group.outputs)))
        for v in s.group.outputs:
            if v not in outputs:
                val = graph.values[v]
                planned.add(v)
                sizes[v] = int(np.prod(val.shape, dtype=np.int64)) * numpy_dtype(val.dtype).itemsize
    return plan_memory(seq, sizes, planned)


def copy_graph(graph: Graph) -> Graph:
    """A copy whose nodes and values can be rewritten freely; constant arrays are shared (passes
    replace constants, they never write into their arrays)."""
    g = Graph(graph.name)
    g.values = {k: Value(v.name, v.shape, v.dtype, v.data) for k, v in graph.values.items()}
    g.nodes = {k: OpNode(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.origin)
               for k, n in graph.nodes.items()}
    g.inputs, g.outputs = list(graph.inputs), list(graph.outputs)
    g.meta = dict(getattr(graph, "meta", {}))
    g._counter = graph._counter
    return g
