"""`compile(model, example_inputs)`: any supported model in, a CompiledModel out.

Accepted models, dispatched on their type:
- a `tessel.frontend.graph.Graph`, or a `tessel.frontend.builder.GraphBuilder` (its graph);
- an `onnx.ModelProto`, or the path (str or os.PathLike) of an `.onnx` file: imported with
  `tessel.frontend.onnx.import_onnx`, with the example inputs' shapes for the model inputs (which
  must agree with the declared ones); a model with dynamic dims recompiles for new input shapes;
- a torch `nn.Module` (example inputs required): imported with
  `tessel.frontend.torch.import_torch(module, example_inputs)`, specialised to the example shapes;
  calling the model with other shapes imports and compiles again, once per new shape. Outputs come
  back in the module's structure (tensor, tuple, dict, ModelOutput).

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
            "a torch.nn.Module (with example_inputs)")


def compile(model, example_inputs=None, target: str | None = None, tuning_log=None, **options):  # noqa: A001
    """Compile `model` for `target` ("cpu", "cuda", "cuda:sm_XY"; None: `default_target`);
    returns a `tessel.compiler.model.CompiledModel`.

    `options` go to `tessel.compiler.model.compile_graph` (optimize, fold_limit, max_group_ops,
    max_prologue_ops, cuda_graph). `tuning_log`: a tuning log (`tessel.tune`) whose best records
    schedule the model's kernels, with no measurement; kernels without a record get the default
    schedule and are listed in one warning.
    """
    from tessel.compiler.model import compile_graph
    from tessel.frontend.graph import Graph

    if tuning_log is not None:
        options = dict(options, tuning_log=tuning_log)
    if target is None:
        target = default_target(example_inputs)
    _check_target(target)
    if isinstance(model, Graph):
        return compile_graph(model, example_inputs, target, **options)
    builder_graph = _builder_graph(model)
    if builder_graph is not None:
        return compile_graph(builder_graph, example_inputs, target, **options)
    if _is_onnx_model(model) or _is_onnx_path(model):
        return _compile_onnx(model, example_inputs, target, options)
    if _is_torch_module(model):
        return _compile_torch(model, example_inputs, target, options)
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


def _is_torch_module(model) -> bool:
    import sys

    torch = sys.modules.get("torch")  # a torch module can only exist if torch is already imported
    return torch is not None and isinstance(model, torch.nn.Module)


def _compile_torch(module, example_inputs, target, options):
    from tessel.compiler.model import compile_graph
    from tessel.frontend.torch import import_torch

    if example_inputs is None:
        raise TesselError(f"compile(): a torch module ({type(module).__name__}) needs example_inputs to trace "
                          f"with torch.export, e.g. compile(model, (torch.randn(1, 16),))")
    from tessel.frontend.torch import rebuild_outputs, reimport_for_call

    ex = _as_tuple(example_inputs)
    graph = import_torch(module, ex)  # CUDA modules and inputs are fine: constants are read with .cpu()
    return compile_graph(graph, ex, target, specialize=lambda inputs: reimport_for_call(module, _as_torch(inputs), ex),
                         restructure=rebuild_outputs, **options)


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
    return compile_graph(graph, ex, target, specialize=specialize, **options)
