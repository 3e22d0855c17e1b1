"""CompiledModel: a graph compiled into a sequence of kernels (CPU or CUDA), callable on arrays.

For a CUDA target ("cuda", "cuda:sm_XY") the groups are scheduled for the GPU and split where the
default GPU schedule refuses them, and the model runs on torch CUDA tensors: see
tessel.compiler.model_cuda. What follows describes the CPU case; both share this class.

`compile_graph(graph)` copies the graph, runs the graph passes (canonicalise, fold constants,
pattern rules: `tessel.passes.graph.optimize`), partitions it into fused groups, lowers each group
to one kernel (`tessel.compiler.lowering`; groups with equal IR share one compiled kernel), plans
the memory of the values that cross kernels (`tessel.passes.graph.memory`: one arena, reused by
liveness) and returns a `CompiledModel` (the steps are in `tessel.compiler.model_program`, the
input checks and conversions in `tessel.compiler.model_io`).

Calling the model takes numpy arrays or CPU torch tensors, one per graph input, and returns the
same kind: one array for a one-output model, a tuple for several. Inputs are checked (count,
shape, dtype) and a mismatch raises `ArgumentError` naming the input. A model made from a torch
module is specialised to the shapes it is called with: each new combination of input shapes and
dtypes is imported and compiled once and kept in the model's per-shape cache. With input ranges
(`torch.export.Dim`, see `tessel.compiler.model_ranges`) a new shape outside them is an
`ArgumentError` before anything is compiled; with one or two dynamic dimensions the model is compiled
once for the ranges, on the first call with a new shape (`symbolic`, see
`tessel.compiler.model_symbolic`), and later sizes compile nothing.
`save(path)` writes every specialisation to an
artifact that `tessel.load` runs without compiling (`tessel.compiler.artifact`).

The arena is shared by calls, so a lock serialises concurrent calls of one model.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph("tiny")
    >>> x = g.add_input("x", (2, 3), "float32")
    >>> (y,) = g.add_node("relu", [x]); g.mark_outputs([y])
    >>> cm = compile_graph(g)
    >>> cm(np.array([[-1, 2, -3], [4, -5, 6]], np.float32)).tolist()
    [[0.0, 2.0, 0.0], [4.0, 0.0, 6.0]]
"""

from __future__ import annotations

import threading

import numpy as np

from tessel.compiler.model_io import (  # noqa: F401 - re-exported: callers import them from here
    InputSpec, _check_example, _check_inputs, _fmt_key, _is_torch, _key_of, _signature, _torch_of, contiguous,
    random_inputs,
)
from tessel.compiler.model_program import (  # noqa: F401 - re-exported
    Program, Step, compile_program, copy_graph, unique_kernels,
)
from tessel.compiler.model_summary import SummaryText, summary_table
from tessel.errors import ArgumentError, TesselError
from tessel.frontend.graph import Graph

_compile_program = compile_program  # the old private name (tessel.tune.api's docstring cites it)


class CompiledModel:
    """A compiled model (see the module docstring). Attributes: `kernels` (the distinct compiled
    `Kernel`s, each with `.name`, `.ir`, `.source`), `graph` (the optimised graph), `source_graph`
    (the graph as given), `steps`, `memory` (arena bytes vs one buffer per value), `report`,
    `target` ("cpu" or "cuda:sm_XY")."""

    def __init__(self, program: Program, specialize=None, options: dict | None = None, restructure=None,
                 input_ranges=None):
        self.name = program.source.name
        self.input_ranges = input_ranges  # InputRanges (dynamic torch dims) or None: shapes are not range-checked
        self.loaded_from = None  # the artifact path, for a model made by tessel.load
        self._programs = {_key_of(program.inputs): program}
        self._current = program
        self._specialize = specialize  # raw inputs -> Graph, for models that specialise to shapes
        self._restructure = restructure  # (graph, flat outputs) -> the source model's output structure
        self._options = dict(options or {})
        self._compile_lock = threading.Lock()  # one specialisation compiles at a time
        self._captured: dict = {}  # input signature -> CapturedModel (option cuda_graph)
        self._symbolic = None  # SymbolicParts: the program(s) for every size in the ranges (model_symbolic_parts)
        self._symbolic_reason = None  # why there is none, for a model with input ranges
        self._symbolic_pending = False  # True: build it on first use (a new shape, or reading .symbolic)

    # -- views of the current specialisation -----------------------------------------------------
    @property
    def kernels(self) -> list:
        return self._current.kernels

    @property
    def steps(self) -> list:
        return self._current.steps

    @property
    def graph(self) -> Graph:
        return self._current.graph

    @property
    def source_graph(self) -> Graph:
        return self._current.source

    @property
    def inputs(self) -> list:
        return list(self._current.inputs)

    @property
    def report(self) -> dict:
        return self._current.report

    @property
    def compile_seconds(self) -> float:
        return self._current.compile_seconds

    @property
    def target(self) -> str:
        return str(getattr(self._current, "target", "cpu"))

    @property
    def on_gpu(self) -> bool:
        return getattr(self._current, "device_kind", "cpu") == "cuda"

    @property
    def memory(self) -> dict:
        p = self._current.plan
        return {"arena_bytes": p.arena_bytes, "naive_bytes": p.naive_bytes, "values": len(p.offsets)}

    @property
    def specializations(self) -> list:
        """The input signatures compiled so far: [((shape, dtype), ...), ...]."""
        return list(self._programs)

    def __repr__(self) -> str:
        sig = ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.inputs)
        return f"<tessel.CompiledModel {self.name}({sig}): {len(self.steps)} steps, {len(self.kernels)} kernels>"

    # -- calling ---------------------------------------------------------------------------------
    def __call__(self, *inputs):
        if self.on_gpu:
            return self._call_gpu(inputs)
        program, arrays, as_torch = self._prepare(inputs)
        return self._wrap(program, program.run(arrays), as_torch)

    def _call_gpu(self, inputs):
        from tessel.compiler.model_cuda import as_kind, require_gpu

        require_gpu(self.name, self.target)
        program = self._specialized(inputs)
        tensors, kind = program.check_inputs(inputs)
        if self._options.get("cuda_graph"):
            key = _key_of(program.inputs)
            captured = self._captured.get(key)
            if captured is None:
                captured = self._captured[key] = self._capture(program, tensors)
            results = captured.replay(tensors)
        else:
            results = program.run(tensors)
        return self._restructured(program, as_kind(results, kind))

    def capture_graph(self, *inputs):
        """Record the whole model, run on `inputs` (GPU tensors), as one CUDA graph; returns a
        callable that replays it on new inputs of the same shapes (copied into the captured
        input buffers) and returns copies of the outputs. (`compile(..., cuda_graph=True)` does
        this on every call, capturing once per input signature.) Skipped in the doctest run: it needs a GPU.

        >>> g = cm.capture_graph(x)          # doctest: +SKIP
        >>> y = g(x2)                        # doctest: +SKIP
        """
        from tessel.compiler.model_cuda import require_gpu

        if not self.on_gpu:
            raise TesselError(f"model '{self.name}' was compiled for {self.target}; CUDA graphs need target='cuda'")
        require_gpu(self.name, self.target)
        program = self._specialized(inputs)
        tensors, kind = program.check_inputs(inputs)
        return _Replayer(self, program, self._capture(program, tensors), kind)

    def _capture(self, program, tensors):
        from tessel.compiler.model_cuda import CapturedModel

        return CapturedModel(program, tensors)

    def run_reference(self, *inputs):
        """Run the source graph with the ops' numpy references (tessel.frontend.reference). Takes
        what calling the model takes (and, for a GPU model, numpy arrays too); returns the same kind."""
        from tessel.frontend.reference import run_graph

        program, arrays, back = self._prepare_host(inputs)
        return self._restructured(program, back(run_graph(program.source, arrays)))

    def run_interpreted(self, *inputs):
        """Run the compiled kernels' IR (the scheduled GPU or CPU kernels, in order, through the
        memory the model would use) with the reference interpreter on numpy copies of `inputs`:
        how a CUDA-compiled model is checked where there is no GPU. Slow: use small sizes. (The last
        two lines are skipped in the doctest run: compiling for CUDA needs nvcc or NVRTC.)

        >>> import numpy as np
        >>> from tessel.frontend.graph import Graph
        >>> g = Graph(); x = g.add_input("x", (2, 2), "float32"); (y,) = g.add_node("relu", [x])
        >>> g.mark_outputs([y]); cm = compile_graph(g, target="cuda:sm_90a")   # doctest: +SKIP
        >>> cm.run_interpreted(np.float32([[1, -1], [-2, 2]])).tolist()         # doctest: +SKIP
        [[1.0, 0.0], [0.0, 2.0]]
        """
        from tessel.compiler.model_cuda import interpret_steps

        program, arrays, back = self._prepare_host(inputs)
        return self._restructured(program, back(interpret_steps(program, arrays)))

    def _prepare_host(self, inputs):
        """(program, numpy inputs, function turning numpy results back into the inputs' kind)."""
        if not self.on_gpu:
            program, arrays, as_torch = self._prepare(inputs)
            if not as_torch:
                return program, arrays, lambda rs: rs
            return program, arrays, lambda rs: [_torch_of(r) for r in rs]
        program = self._specialized(inputs)
        device = next((x.device for x in inputs if _is_torch(x) and x.device.type != "cpu"), None)
        host = [x.detach().cpu() if _is_torch(x) else x for x in inputs]
        arrays = _check_inputs(program, host)
        if device is not None:
            return program, arrays, lambda rs: [_torch_of(r).to(device) for r in rs]
        if any(_is_torch(x) for x in inputs):
            return program, arrays, lambda rs: [_torch_of(r) for r in rs]
        return program, arrays, lambda rs: rs

    def _restructured(self, program, results: list):
        if self._restructure is not None:
            return self._restructure(program.source, results)
        return results[0] if len(results) == 1 else tuple(results)

    def _wrap(self, program: Program, results: list, as_torch: bool):
        if as_torch:
            results = [_torch_of(r) for r in results]
        if self._restructure is not None:
            return self._restructure(program.source, results)
        return results[0] if len(results) == 1 else tuple(results)

    def summary(self, *inputs, number: int = 5, show: bool = False) -> str:
        """A table of the kernels run in order, the ops fused into each, and each one's time
        (median of a profiling run on `inputs`, or random inputs when none are given), returned as
        text that also displays as the table at a prompt; `show=True` prints it too. So
        `print(cm.summary(x))` prints it once."""
        prof: dict = {}
        if self.on_gpu:
            from tessel.compiler.model_cuda import gpu_available

            program = self._specialized(inputs) if inputs else self._current
            if gpu_available():
                if not inputs:
                    import torch

                    inputs = tuple(torch.from_numpy(a).cuda() for a in random_inputs(self.inputs))
                tensors, _ = program.check_inputs(inputs)
                program.run(tensors, profile=prof, number=number)
        else:
            if not inputs:
                inputs = tuple(random_inputs(self.inputs))
            program, arrays, _ = self._prepare(inputs)
            program.run(arrays, profile=prof, number=number)
        text = SummaryText(summary_table(program, prof))
        if show:
            print(text)
        return text

    def _prepare(self, inputs):
        # fast path: C-contiguous numpy arrays of exactly the current program's shapes and dtypes
        # (_specialized would return it and _check_inputs pass them through): 9.8 -> 7.0 us per call
        # for a 4-kernel MLP (cpu's measurement, /work/notes/cpu-callpath-patch.md)
        p = self._current
        fast = getattr(p, "_np_keys", None)
        if fast is None and hasattr(p, "_np_dtypes"):
            fast = p._np_keys = tuple((tuple(s.shape), np.dtype(d)) for s, d in zip(p.inputs, p._np_dtypes))
        if fast is not None and len(inputs) == len(fast) and all(
                type(a) is np.ndarray and a.shape == s and a.dtype == d and a.flags.c_contiguous
                for a, (s, d) in zip(inputs, fast)):
            return p, list(inputs), False
        as_torch = any(_is_torch(x) for x in inputs)
        program = self._specialized(inputs)
        return program, _check_inputs(program, inputs), as_torch

    def _specialized(self, inputs):
        """The program for the inputs' signature (compiled now for a new one, where the model
        specialises); the current program when the inputs say nothing or it cannot specialise."""
        program = self._current
        key = _signature(inputs)
        if key is not None and key != _key_of(program.inputs):
            found = self._programs.get(key)
            if found is None and self.input_ranges is not None:
                self.input_ranges.check(key)  # before any export or compile: names input, dim and range
            if found is None and self.symbolic is not None:
                bound = self._symbolic_for(key)
                if bound is not None:
                    return bound  # every size of the range: nothing to compile (except per-shape kernels)
            if found is None and self._specialize is None and self.loaded_from is not None:
                self._not_in_artifact(key)
            if found is None and self._specialize is not None:
                with self._compile_lock:
                    found = self._programs.get(key) or self._compile_for(inputs, key)
            if found is not None:
                program = self._current = found
        return program

    @property
    def symbolic(self):
        """The model's symbolic program(s) (`tessel.compiler.model_symbolic_parts.SymbolicParts`:
        `.kinds`, `.describe()`), compiled on first use: the first call with a shape other than the
        example's, or reading this; None when the model has no dynamic ranges or cannot be compiled
        that way (`symbolic_reason` says why)."""
        self._ensure_symbolic()
        return self._symbolic

    @symbolic.setter
    def symbolic(self, parts) -> None:
        self._symbolic, self._symbolic_pending = parts, False

    @property
    def symbolic_reason(self):
        """Why a model with dynamic ranges has no symbolic program (None when it has one)."""
        self._ensure_symbolic()
        return self._symbolic_reason

    def _ensure_symbolic(self) -> None:
        if self._symbolic_pending:
            with self._compile_lock:
                if self._symbolic_pending:
                    self._make_symbolic()
                    self._symbolic_pending = False

    def _make_symbolic(self) -> None:
        """Compile the model once for its dynamic dimensions' ranges (`tessel.compiler.model_symbolic`),
        checked against the example's program; where it cannot be, say why in `symbolic_reason`
        (the model then compiles once per shape)."""
        from tessel.compiler.model_symbolic_parts import build_parts

        try:
            sym = build_parts(self._specialize, self.input_ranges, self._current, self._options)
        except TesselError as e:  # SymbolicUnsupported, or a size the import or a schedule refuses
            self._symbolic_reason = f"{type(e).__name__}: {e}"
            return
        self._symbolic = sym

    def _symbolic_for(self, key):
        """The symbolic program bound to the size of signature `key`, or None (not symbolic, or
        dtypes / dimensions it does not cover)."""
        sym = self.symbolic
        if sym is None or len(key) != len(self._current.inputs):
            return None
        if any(d != s.dtype for (_, d), s in zip(key, self._current.inputs)):
            return None
        sizes = sym.size_of(key)
        # size 0: zero-size arrays reach TVM with strides it refuses; that shape compiles on its own
        if sizes is None or min(sizes) <= 0 or sym.part_for(sizes) is None:
            return None
        return sym.bind(sizes)

    def _not_in_artifact(self, key) -> None:
        """A loaded model cannot compile: a shape it was not saved with is an ArgumentError (when the
        count and dtypes agree, so that a plain mismatch keeps its own message)."""
        ours = [k for k in self._programs]
        if len(key) != len(ours[0]) or any(d != od for (_, d), (_, od) in zip(key, ours[0])):
            return
        saved = "; ".join(_fmt_key(k) for k in ours)
        note = getattr(self, "_symbolic_not_saved", None)
        if note:
            raise ArgumentError(f"model '{self.name}' loaded from {self.loaded_from} holds the input shapes {saved}, "
                                f"not {_fmt_key(key)}: {note}")
        raise ArgumentError(f"model '{self.name}' loaded from {self.loaded_from} holds the input shapes {saved}, "
                            f"not {_fmt_key(key)}: a loaded model does not compile; call the original model with "
                            f"this shape before saving it, then save it again")

    def save(self, path) -> str:
        """Write the model, every specialisation compiled so far, to an artifact file (see
        `tessel.compiler.artifact`; the suffix .tsl is the convention) that `tessel.load` runs without
        compiling. Returns the path.

        >>> import numpy as np, tessel as ts, tempfile, os
        >>> b = ts.GraphBuilder("m"); x = b.input("x", (2,)); b.output(b.relu(x))
        >>> path = ts.compile(b, target="cpu").save(os.path.join(tempfile.mkdtemp(), "m.tsl"))
        >>> ts.load(path)(np.float32([-1, 2])).tolist()
        [0.0, 2.0]
        """
        from tessel.compiler.artifact import save_model

        return save_model(self, path)

    def _compile_for(self, inputs, key) -> Program:
        graph = self._specialize(inputs)
        program = compile_program(graph, self._options)
        if _key_of(program.inputs) != key:
            raise ArgumentError(f"model '{self.name}': recompiling for inputs {_fmt_key(key)} gave a graph "
                                f"that takes {_fmt_key(_key_of(program.inputs))}")
        self._programs[key] = program
        return program


class _Replayer:
    """What `CompiledModel.capture_graph` returns: calling it replays the captured CUDA graph."""

    def __init__(self, model: CompiledModel, program, captured, kind: str):
        self._model, self._program, self.captured, self._kind = model, program, captured, kind

    def __call__(self, *inputs):
        from tessel.compiler.model_cuda import as_kind

        tensors, _ = self._program.check_inputs(inputs)
        return self._model._restructured(self._program, as_kind(self.captured.replay(tensors), self._kind))

    def __repr__(self) -> str:
        return f"<tessel CUDA graph of model '{self._model.name}': {len(self._program.steps)} launches>"


# ---------------------------------------------------------------------------------------------
# compile_graph
# ---------------------------------------------------------------------------------------------

_OPTIONS = ("optimize", "fold_limit", "max_group_ops", "max_prologue_ops", "cuda_graph", "tuning_log", "allow_tf32")


def compile_graph(graph: Graph, example_inputs=None, target: str = "cpu", specialize=None, restructure=None,
                  input_ranges=None, **options) -> CompiledModel:
    """Compile a Graph for `target` ("cpu", "cuda", "cuda:sm_XY") into a CompiledModel (see the
    module docstring; the GPU specifics are in tessel.compiler.model_cuda).

    Options: `optimize` (default True: run the graph passes), `fold_limit` (largest constant, in
    elements, that folding may produce), `max_group_ops`, `max_prologue_ops` (fusion limits),
    `cuda_graph` (GPU targets: capture each input signature's run as a CUDA graph and replay it),
    `allow_tf32` (default False: exact float32; True: float32 GEMMs on sm_90a may run on tf32 tensor
    cores, 10-bit mantissa products).
    `example_inputs`, when given, must agree with the graph's declared input shapes and dtypes.
    `specialize(inputs) -> Graph` makes a model that recompiles for new input shapes;
    `restructure(graph, flat_outputs)` rebuilds the source model's output structure (by default one
    output is returned as is and several as a tuple). `input_ranges` (a
    `tessel.compiler.model_ranges.InputRanges`) refuses calls whose shapes leave the ranges.

    >>> from tessel.frontend.graph import Graph
    >>> g = Graph(); x = g.add_input("x", (3,), "float32"); (y,) = g.add_node("neg", [x])
    >>> g.mark_outputs([y]); compile_graph(g).kernels[0].name
    'neg'
    """
    if not isinstance(graph, Graph):
        raise TesselError(f"compile_graph() takes a tessel.frontend.graph.Graph, got {type(graph).__name__}")
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise TesselError(f"compile: unknown option(s) {sorted(unknown)}; known: {', '.join(_OPTIONS)}")
    target = _model_target(graph.name, target)
    if options.get("cuda_graph") and target == "cpu":
        raise TesselError(f"model '{graph.name}': cuda_graph=True needs a CUDA target, not 'cpu'")
    options = dict(options, target=target)
    program = compile_program(graph, options)
    if example_inputs is not None:
        _check_example(program, example_inputs)
    cm = CompiledModel(program, specialize, options, restructure, input_ranges)
    if input_ranges is not None and input_ranges.dynamic and specialize is not None:
        cm._symbolic_pending = True  # compiled on first use: a model only ever called at its example shape pays nothing
    return cm


def _model_target(name: str, target) -> str:
    """The canonical target string of a model: "cpu" or "cuda:sm_XY" (plain "cuda": the visible
    GPU's architecture, sm_90a without one)."""
    from tessel.compiler.target import parse_target

    if target == "llvm":
        return "cpu"
    try:
        return str(parse_target(target))
    except TesselError as e:
        raise TesselError(f"model '{name}': {e}") from None


