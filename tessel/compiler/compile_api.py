"""`compile(model, example_inputs)`: any supported model in, a CompiledModel out.

Accepted models, dispatched on their type:
- a `tessel.frontend.graph.Graph`, or a `tessel.frontend.builder.GraphBuilder` (its graph);
- an `onnx.ModelProto`, or the path (str or os.PathLike) of an `.onnx` file: imported with
  `tessel.frontend.onnx.import_onnx`, with the example inputs' shapes for the model inputs (which
  must agree with the declared ones); a model with dynamic dims recompiles for new input shapes;
- a torch `nn.Module` (example inputs required): imported with
  `tessel.frontend.torch.import_torch(module, example_inputs)`, specialised to the example shapes;
  calling the model with other shapes imports and compiles again, once per new shape. Outputs come
  back in the module's structure (tensor, tuple, dict, ModelOutput). With `dynamic_shapes=` (torch's
  format, `torch.export.Dim` ranges) the module is also exported with them, and a call whose shapes
  leave the ranges raises ArgumentError naming the input, the dimension and the range;
- a `torch.export.ExportedProgram` (example inputs optional: the program's own by default): its
  ranges are checked in the same way (compiled from `ep.module()`).
  `verbose=True` lets torch's export logs and warnings through (silenced otherwise).

A model with one or two dynamic dimensions (`Dim`s, or named / unnamed ONNX dims) compiled for the CPU
is also compiled once for the whole ranges (`tessel.compiler.model_symbolic`): its kernels take the
size as a scalar parameter, so calls with new sizes in the range export and compile nothing
(`cm.symbolic.kinds` says which kernels are symbolic and which, where the schedule differs between
sizes, are compiled per shape). Where the model cannot be compiled that way (three or more dynamic
dimensions, a graph that changes with the size...), `cm.symbolic_reason` says why, and each new
shape is imported and compiled once, lazily, and cached.

The importers are imported only when a model of their kind arrives, so compiling a built graph
never loads torch or onnx.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.builder import GraphBuilder
    >>> b = GraphBuilder("tiny")
    >>> x = b.input("x", (2, 2))
    >>> b.output(b.relu(x))
    >>> cm = compile(b)
    >>> cm(np.array([[1, -1], [-2, 2]], np.float32)).tolist()
    [[1.0, 0.0], [0.0, 2.0]]
"""

from __future__ import annotations

import os

from tessel.errors import TesselError

ACCEPTED = ("a tessel Graph", "a tessel GraphBuilder", "an onnx.ModelProto", "a path to an .onnx file",
            "a torch.nn.Module (with example_inputs)", "a torch.export.ExportedProgram")
TORCH_OPTIONS = ("dynamic_shapes", "verbose")  # options of torch models only


def compile(model, example_inputs=None, target: str | None = None, tuning_log=None, **options):  # noqa: A001
    """Compile `model` for `target` ("cpu", "cuda", "cuda:sm_XY"; None: `default_target`);
    returns a `tessel.compiler.model.CompiledModel`.

    `options` go to `tessel.compiler.model.compile_graph` (optimize, fold_limit, max_group_ops,
    max_prologue_ops, cuda_graph, allow_tf32: float32 GEMMs on sm_90a may run on tf32 tensor cores,
    10-bit mantissa products; off by default, exact float32); torch models also take `dynamic_shapes`
    and `verbose` (see the module docstring). `tuning_log`: a tuning log (`tessel.tune`) whose best
    records schedule the model's kernels, with no measurement; kernels without a record get the default
    schedule and are listed in one warning.

    >>> import torch, tessel as ts                                      # doctest: +SKIP
    >>> batch = torch.export.Dim("batch", min=1, max=64)                # doctest: +SKIP
    >>> cm = ts.compile(torch.nn.Linear(8, 4), (torch.randn(2, 8),),
    ...                 dynamic_shapes={"input": {0: batch}})           # doctest: +SKIP
    >>> cm(torch.randn(100, 8))                                         # doctest: +SKIP
    ArgumentError: model 'Linear' input 'input' dimension 0 is 100, outside the range [1, 64] of 'batch' ...
    """
    from tessel.compiler.model import compile_graph
    from tessel.frontend.graph import Graph

    if tuning_log is not None:
        options = dict(options, tuning_log=tuning_log)
    if target is None:
        target = default_target(example_inputs)
    _check_target(target)
    torch_options = {k: options.pop(k) for k in TORCH_OPTIONS if k in options}
    if _is_exported_program(model):
        return _compile_exported(model, example_inputs, target, options, torch_options)
    if _is_torch_module(model):
        return _compile_torch(model, example_inputs, target, options, torch_options)
    if torch_options.get("dynamic_shapes") is not None:
        raise TesselError("compile(dynamic_shapes=...) applies to torch modules; an ONNX model's dynamic dims come "
                          "from the model itself")
    if isinstance(model, Graph):
        return compile_graph(model, example_inputs, target, **options)
    builder_graph = _builder_graph(model)
    if builder_graph is not None:
        return compile_graph(builder_graph, example_inputs, target, **options)
    if _is_onnx_model(model) or _is_onnx_path(model):
        return _compile_onnx(model, example_inputs, target, options)
    if isinstance(model, (str, os.PathLike)) and _is_artifact(model):
        raise TesselError(f"compile(): '{os.fspath(model)}' is a compiled tessel model (an artifact): run it with "
                          f"tessel.load({os.fspath(model)!r}), no compiling needed")
    if isinstance(model, (str, os.PathLike)):
        raise TesselError(f"compile(): '{os.fspath(model)}' is not an existing .onnx file; compile accepts "
                          + ", ".join(ACCEPTED))
    raise TesselError(f"compile(): cannot compile a {type(model).__module__}.{type(model).__name__}; it accepts "
                      + ", ".join(ACCEPTED))


def default_target(example_inputs=None, gpu_visible=None) -> str:
    """The target `compile` uses when none is given: "cuda" when an example input lives on a GPU
    or a GPU is visible (`gpu_visible()`; by default the driver through cuda.bindings, or torch
    when it is already imported), else "cpu".

    >>> default_target(gpu_visible=lambda: False)
    'cpu'
    >>> default_target(gpu_visible=lambda: True)
    'cuda'
    """
    if example_inputs is not None:
        for x in _as_tuple(example_inputs):
            dev = getattr(x, "device", None)
            if getattr(dev, "type", None) == "cuda" or hasattr(x, "__cuda_array_interface__"):
                return "cuda"
    return "cuda" if (gpu_visible or _gpu_visible)() else "cpu"


def _gpu_visible() -> bool:
    """A GPU that the driver (cuda.bindings) or an already imported torch can see."""
    import sys

    from tessel.compiler.target import detect_cuda_arch

    if detect_cuda_arch() is not None:
        return True
    torch = sys.modules.get("torch")  # not imported just for this: importing torch takes seconds
    try:
        return torch is not None and bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA set-up means no usable GPU
        return False


def _check_target(target) -> None:
    from tessel.compiler.target import parse_target

    if target == "llvm":
        return
    try:
        parse_target(target)
    except TesselError as e:
        raise TesselError(f"compile(target={target!r}): {e}") from None


def _builder_graph(model):
    try:
        from tessel.frontend.builder import GraphBuilder
    except ImportError:
        return None
    return model.graph if isinstance(model, GraphBuilder) else None


def _is_onnx_model(model) -> bool:
    return type(model).__name__ == "ModelProto" and type(model).__module__.split(".")[0] == "onnx"


def _is_onnx_path(model) -> bool:
    if not isinstance(model, (str, os.PathLike)):
        return False
    path = os.fspath(model)
    return os.path.isfile(path) and str(path).lower().endswith(".onnx")


def _is_artifact(path) -> bool:
    """Whether `path` is a file that starts like a tessel artifact (a zip whose first entry is its manifest)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") and b"manifest.json" in head


def _is_torch_module(model) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a torch module can only exist if torch is already imported
    return torch is not None and isinstance(model, torch.nn.Module)


def _is_exported_program(model) -> bool:
    return type(model).__name__ == "ExportedProgram" and type(model).__module__.startswith("torch.export")


def _compile_torch(module, example_inputs, target, options, torch_options, ranges=None, name=None):
    from tessel.compiler.model import compile_graph
    from tessel.frontend.torch import import_torch

    if example_inputs is None:
        raise TesselError(f"compile(): a torch module ({type(module).__name__}) needs example_inputs to trace "
                          f"with torch.export, e.g. compile(model, (torch.randn(1, 16),))")
    from tessel.frontend.torch import rebuild_outputs, reimport_for_call

    ex = _as_tuple(example_inputs)
    verbose = bool(torch_options.get("verbose", False))
    dynamic = torch_options.get("dynamic_shapes")
    if dynamic is not None and ranges is None:
        from tessel.frontend.torch_dynamic import export_dynamic, input_ranges

        ranges = input_ranges(export_dynamic(module, ex, dynamic, verbose), dynamic, module)
    if ranges is not None:
        from tessel.compiler.model_ranges import InputRanges

        ranges = InputRanges(name or type(module).__name__, ranges)
        ranges.check([(tuple(x.shape), None) for x in ex])  # the example inputs themselves must fit
    # CUDA modules and inputs are fine: constants are read with .cpu()
    graph = import_torch(module, ex, verbose=verbose, name=name)
    return compile_graph(graph, ex, target, restructure=rebuild_outputs, input_ranges=ranges,
                         specialize=lambda inputs: reimport_for_call(module, _as_torch(inputs), ex, verbose),
                         **options)


def _compile_exported(ep, example_inputs, target, options, torch_options):
    """An ExportedProgram: its input ranges (from its Dims), compiled from `ep.module()`."""
    from tessel.frontend.torch_dynamic import example_inputs_of, input_ranges

    if torch_options.get("dynamic_shapes") is not None:
        raise TesselError("compile(): an ExportedProgram already carries its dynamic shapes; pass dynamic_shapes "
                          "to torch.export.export, not to compile")
    ex = example_inputs if example_inputs is not None else example_inputs_of(ep)
    if ex is None:
        raise TesselError("compile(): this ExportedProgram keeps no example inputs; pass example_inputs")
    module = ep.module()
    name = type(module).__name__ if type(module).__name__ != "GraphModule" else "ExportedProgram"
    return _compile_torch(module, ex, target, options, torch_options, ranges=input_ranges(ep), name=name)


def _as_tuple(example_inputs) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)


def _as_torch(inputs) -> tuple:
    import torch

    return tuple(x if isinstance(x, torch.Tensor) else torch.from_numpy(x) for x in inputs)


def _compile_onnx(model, example_inputs, target, options):
    from tessel.compiler.model import compile_graph
    from tessel.errors import ArgumentError
    from tessel.frontend.onnx import import_onnx, load_model

    proto, _ = load_model(model)  # external data loaded: the proto can be imported again later
    init = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in init]

    def shapes(inputs) -> dict:
        if len(inputs) != len(names):
            raise ArgumentError(f"ONNX model '{proto.graph.name}' takes {len(names)} input(s) ({', '.join(names)}), "
                                f"got {len(inputs)}")
        return {n: tuple(x.shape) for n, x in zip(names, inputs)}

    ex = None if example_inputs is None else _as_tuple(example_inputs)
    graph = import_onnx(proto, shapes(ex) if ex is not None else None)
    from tessel.frontend.onnx_load import has_dynamic_dims

    dynamic = has_dynamic_dims(proto)  # dims without a value, with a name, or a negative value
    specialize = (lambda inputs: import_onnx(proto, shapes(inputs))) if dynamic else None
    ranges = _onnx_ranges(proto, graph.name, names) if dynamic else None
    return compile_graph(graph, ex, target, specialize=specialize, input_ranges=ranges, **options)


def _onnx_ranges(proto, name: str, names: list):
    """The InputRanges of an ONNX model's declared input shapes: fixed dims, named dims (inputs that
    share a name must agree) and unnamed dynamic dims (each its own); None when some input declares
    no shape (or is not a tensor), so nothing can be checked before the import."""
    from tessel.compiler.model_ranges import InputRanges
    from tessel.frontend.onnx_load import declared_shape

    by_name = {i.name: i for i in proto.graph.input}
    inputs = []
    for n in names:
        vi = by_name[n]
        shape = declared_shape(vi) if vi.type.HasField("tensor_type") else None
        if shape is None:
            return None
        # a dim_param "?" (Paddle's exporter) means "unknown", not "equal to every other '?'"
        inputs.append((n, [d if isinstance(d, int) else (d if d and d != "?" else f"{n}.{k}", 0, None)
                           for k, d in enumerate(shape)]))
    return InputRanges(name, inputs)
