"""Models with run-time control flow: a graph holding `if` / `loop` nodes (tessel.frontend.op_library.control)
runs as compiled programs with control steps between them.

`compile_control_program(source, work, options, report, t0)` cuts the optimised graph into stages:
a value's level is the number of control nodes on its longest path from the inputs; stage k holds
the ordinary nodes of level k, compiled as one `Program` (fused and planned like any model), and
the control nodes of level k run after it (they are independent of each other: each one's outputs
are of level k + 1). Every subgraph (both branches of an `if`, a `loop` body) is compiled once, at
compile time, with the same options: its kernels never compile at run time. Running:

- `if`: read the condition (one element), run the branch's program on the captured values (a
  branch that the importer could not build for these shapes raises ArgumentError when taken);
- `loop`: run the body's program while the iteration count is below the trip count and the
  condition holds, feeding its carried outputs back (ONNX Loop semantics; the iteration number
  counts from the node's `start`); scan outputs (constant trip count) are written into arrays of
  the trip count's length, one item per iteration.

A `ControlProgram` has what `CompiledModel` uses of a `Program` (inputs, graph, source, steps,
kernels, plan, report, run); `steps` are the top-level stages' kernel launches (the subgraphs'
kernels are in `kernels`). CPU only: a CUDA target is refused with a `TesselError`.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> from tessel.compiler.model_program import compile_program
    >>> def branch(op):
    ...     b = Graph(op); x = b.add_input("x", (2,), "float32"); (y,) = b.add_node(op, [x])
    ...     b.mark_outputs([y]); return b
    >>> g = Graph("m"); c = g.add_input("c", (), "bool"); x = g.add_input("x", (2,), "float32")
    >>> (y,) = g.add_node("if", [c, x], {"then_graph": branch("neg"), "else_graph": branch("abs")})
    >>> g.mark_outputs([y]); p = compile_program(g, {})
    >>> [p.run([np.array(f), np.float32([1, -2])])[0].tolist() for f in (True, False)]
    [[-1.0, 2.0], [1.0, 2.0]]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tessel.compiler.model_io import InputSpec, contiguous
from tessel.errors import TesselError
from tessel.frontend.graph import Graph, OpNode, Value

CONTROL_OPS = ("if", "loop")


def has_control(graph: Graph) -> bool:
    """Whether `graph` holds a control-flow node (which `compile_program` hands to this module)."""
    return any(n.op in CONTROL_OPS for n in graph.nodes.values())


@dataclass
class ControlPlan:
    """The memory of every compiled part together (what `CompiledModel.memory` reads)."""

    arena_bytes: int = 0
    naive_bytes: int = 0
    offsets: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    lifetimes: dict = field(default_factory=dict)


@dataclass
class _Stage:
    program: object  # Program
    inputs: list
    outputs: list


@dataclass
class _Control:
    node: OpNode
    parts: list  # [then, else] programs of an if; [body] of a loop


class ControlProgram:
    """A model with control flow: stages of compiled programs and the control steps between them."""

    def __init__(self, source: Graph, graph: Graph, plan: list, report: dict, seconds: float):
        from tessel.ir.dtypes import numpy_dtype

        self.source, self.graph, self.report, self.compile_seconds = source, graph, report, seconds
        self._plan = plan  # [_Stage | _Control] in execution order
        self.inputs = [InputSpec(v, graph.values[v].shape, graph.values[v].dtype) for v in graph.inputs]
        self._np_dtypes = [numpy_dtype(s.dtype) for s in self.inputs]
        self._consts = {v.name: v.data for v in graph.values.values() if v.is_const}
        self._lock = threading.Lock()
        self.steps = [s for item in plan if isinstance(item, _Stage) for s in item.program.steps]
        self.plan = ControlPlan()
        for p in self.programs():
            self.plan.arena_bytes += p.plan.arena_bytes
            self.plan.naive_bytes += p.plan.naive_bytes
            self.plan.offsets.update(p.plan.offsets)
            self.plan.sizes.update(p.plan.sizes)

    def programs(self) -> list:
        """Every compiled program inside, subgraphs' (and theirs, nested) included."""
        out = []
        for item in self._plan:
            for p in [item.program] if isinstance(item, _Stage) else [q for q in item.parts if q is not None]:
                out.append(p)
                if isinstance(p, ControlProgram):
                    out.extend(p.programs())
        return out

    @property
    def kernels(self) -> list:
        from tessel.compiler.model_program import unique_kernels

        return unique_kernels([s for p in self.programs() for s in p.steps])

    def run(self, arrays: list, profile: dict | None = None, number: int = 5) -> list:
        """Run on checked, contiguous numpy inputs; returns fresh output arrays. `profile` (a dict)
        gets each top-level step's time, keyed by its index in `steps`."""
        with self._lock:
            # (inputs come through model_io.contiguous, which makes 0-d arrays 1-d: kernels do not mind,
            # the control steps and the outputs do)
            env = {**self._consts, **{s.name: np.asarray(a).reshape(s.shape) for s, a in zip(self.inputs, arrays)}}
            base = 0
            for item in self._plan:
                if isinstance(item, _Stage):
                    prof = {} if profile is not None else None
                    outs = item.program.run([env[v] for v in item.inputs], prof, number)
                    env.update(zip(item.outputs, outs))
                    if prof:
                        profile.update({base + k: t for k, t in prof.items()})
                    base += len(item.program.steps)
                else:
                    env.update(zip(item.node.outputs, _run_control(item, env)))
            results, given = [], set()
            for o in self.graph.outputs:
                fresh = o not in given and o not in self._consts and o not in self.graph.inputs
                results.append(env[o] if fresh else np.array(env[o], copy=True))
                given.add(o)
            return results


def _flag(a) -> bool:
    return bool(np.asarray(a).reshape(-1)[0])


def _run_control(item: _Control, env: dict) -> list:
    node = item.node
    args = [env[v] if v is not None else None for v in node.inputs]
    if node.op == "if":
        k = 0 if _flag(args[0]) else 1
        if item.parts[k] is None:
            from tessel.frontend.op_library.control import take_branch

            which = ("then", "else")[k]
            take_branch(node.name, node.attrs[f"{which}_graph"], which)  # raises, naming why
        return item.parts[k].run(args[1:])
    from tessel.frontend.op_library.control import loop_parts
    from tessel.ir.dtypes import numpy_dtype

    body_graph, scans = node.attrs["body"], int(node.attrs.get("scans", 0))
    (body,) = item.parts
    trip, cond, carried, captures = loop_parts(args, body_graph, scans)
    it_shape, flag_shape = (body_graph.values[v].shape for v in body_graph.inputs[:2])
    limit = None if trip is None else int(np.asarray(trip).reshape(-1)[0])
    going = True if cond is None else _flag(cond)
    i, start = 0, int(node.attrs.get("start", 0))
    carried = [contiguous(a) for a in carried]
    n_out = len(body_graph.outputs)
    stacked = [np.empty((limit,) + body_graph.values[v].shape, numpy_dtype(body_graph.values[v].dtype))
               for v in body_graph.outputs[n_out - scans:]]
    while (going or scans) and (limit is None or i < limit):  # (with scan outputs the trip count decides)
        outs = body.run([np.full(it_shape, start + i, np.int64), np.full(flag_shape, going)] + carried + captures)
        going, carried = _flag(outs[0]), list(outs[1:n_out - scans])
        for k, a in enumerate(outs[n_out - scans:]):
            stacked[k][i] = a
        i += 1
    return ([np.array(a, copy=True) for a in carried] if i == 0 else carried) + stacked


def compile_control_program(source: Graph, work: Graph, options: dict, report: dict, t0: float) -> ControlProgram:
    """Stage `work` (optimised, in execution order) around its control nodes and compile every part."""
    from tessel.compiler.model_program import compile_program

    if options.get("target", "cpu") != "cpu":
        bad = next(n for n in work.nodes.values() if n.op in CONTROL_OPS)
        raise TesselError(f"model '{work.name}': run-time control flow ({bad.describe()}) runs on the CPU only, "
                          f"not on {options['target']}")
    level: dict = {}
    stages: dict = {}
    controls: dict = {}
    for n in work.nodes.values():
        k = max((level.get(v, 0) for v in n.inputs if v is not None), default=0)
        if n.op in CONTROL_OPS:
            controls.setdefault(k, []).append(n)
            k += 1
        else:
            stages.setdefault(k, []).append(n)
        for o in n.outputs:
            level[o] = k
    readers: dict = {}  # value -> levels that read it (control nodes count at level + 0.5)
    for k, nodes in stages.items():
        for n in nodes:
            for v in n.inputs:
                readers.setdefault(v, set()).add(k)
    for k, nodes in controls.items():
        for n in nodes:
            for v in n.inputs:
                readers.setdefault(v, set()).add(k + 0.5)
    sub_options = {**options, "optimize": False}
    plan, n_kernels = [], 0
    for k in range(max([*stages, *[c + 1 for c in controls]], default=0) + 1):
        if k in stages:
            sub, ins, outs = _stage_graph(work, stages[k], k, readers)
            if outs:
                program = compile_program(sub, sub_options)
                plan.append(_Stage(program, ins, outs))
                n_kernels += len(program.kernels)
        for n in controls.get(k, []):
            graphs = [n.attrs["then_graph"], n.attrs["else_graph"]] if n.op == "if" else [n.attrs["body"]]
            parts = [None if g.meta.get("fails") else compile_program(g, options) for g in graphs]
            n_kernels += sum(len(p.kernels) for p in parts if p is not None)
            plan.append(_Control(n, parts))
    seconds = time.perf_counter() - t0
    parts = [p.program for p in plan if isinstance(p, _Stage)] + [q for p in plan if isinstance(p, _Control)
                                                                   for q in p.parts if q is not None]
    report.update(stages=sum(isinstance(p, _Stage) for p in plan),
                  control_steps=sum(isinstance(p, _Control) for p in plan), kernels=n_kernels,
                  passes_seconds=report.get("passes_seconds", 0.0) + sum(q.report.get("passes_seconds", 0.0)
                                                                         for q in parts))
    return ControlProgram(source, work, plan, report, seconds)


def _stage_graph(work: Graph, nodes: list, k: int, readers: dict) -> tuple:
    """(Graph of stage k's nodes, its inputs, its outputs): inputs are the non-constant values it
    reads from elsewhere, outputs the values it makes that later parts or the model's outputs read."""
    made = {o for n in nodes for o in n.outputs}
    sub = Graph(f"{work.name}.stage{k}")
    sub._counter = work._counter
    ins: list = []
    for n in nodes:
        for v in n.inputs:
            if v is None or v in made or v in sub.values:
                continue
            val = work.values[v]
            sub.values[v] = Value(v, val.shape, val.dtype, val.data)
            if not val.is_const:
                ins.append(v)
        sub.nodes[n.name] = OpNode(n.name, n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.origin)
        for o in n.outputs:
            val = work.values[o]
            sub.values[o] = Value(o, val.shape, val.dtype, val.data)
    final = set(work.outputs)
    outs = [o for n in nodes for o in n.outputs if o in final or any(r != k for r in readers.get(o, ()))]
    sub.inputs, sub.outputs = ins, outs
    return sub, ins, outs
