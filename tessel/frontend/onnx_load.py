"""Load and check an ONNX model, and fix the shapes of its inputs (the part of the importer that
runs before any node is converted).

`load_model` reads a path, bytes or an `onnx.ModelProto`; a file that protobuf cannot parse, a
truncated one that parses into a partial model, a value that no node, input or initializer defines,
and a missing external data file each raise `OnnxImportError` naming the file and the tensor or
node at fault (never a protobuf traceback). External data is loaded with onnx's helpers from the
model's folder. `resolve_input_shape` merges a declared shape (fixed dims and `dim_param` names)
with a given one and names the input and both shapes when they contradict.

Example:
    >>> resolve_input_shape("x", ("batch", 3), (4, 3))
    (4, 3)
"""

from __future__ import annotations

import os

from tessel.errors import DTypeError, ShapeError, TesselError

class OnnxImportError(TesselError):
    """A malformed ONNX model: unreadable file, undefined values, missing external data."""


class UnsupportedDTypeError(DTypeError):
    """An ONNX element type tessel has no dtype for (uint8, string, float8, complex ...)."""


# ONNX TensorProto element types that tessel has a dtype for.
_ONNX_TO_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                  10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}
_DTYPE_TO_ONNX = {v: k for k, v in _ONNX_TO_DTYPE.items()}


def onnx_dtype(elem_type: int, what: str) -> str:
    """The tessel dtype of an ONNX element type; UnsupportedDTypeError naming `what` otherwise.

    >>> onnx_dtype(1, "input 'x'")
    'float32'
    """
    if elem_type in _ONNX_TO_DTYPE:
        return _ONNX_TO_DTYPE[elem_type]
    import onnx

    try:
        name = onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        name = f"#{elem_type}"
    raise UnsupportedDTypeError(f"{what}: ONNX element type {name} has no tessel dtype "
                                f"(supported: {', '.join(_ONNX_TO_DTYPE.values())})")


def elem_type_of(dtype: str) -> int:
    """The ONNX element type of a tessel dtype (for context-dependent function bodies)."""
    return _DTYPE_TO_ONNX[dtype]


# -------------------------------------------------------------------------------------------------
# Loading and checking
# -------------------------------------------------------------------------------------------------

def load_model(model_or_path):
    """Load and check an ONNX model; returns (ModelProto with external data loaded, its folder).

    >>> load_model(b"not a model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tessel.frontend.onnx_load.OnnxImportError: ONNX model (11 bytes): not a valid ONNX file ...
    """
    import onnx

    base_dir = None
    if isinstance(model_or_path, onnx.ModelProto):
        model, what = model_or_path, f"ONNX model '{model_or_path.graph.name}'"
    else:
        if isinstance(model_or_path, (bytes, bytearray)):
            data, what = bytes(model_or_path), f"ONNX model ({len(model_or_path)} bytes)"
        elif isinstance(model_or_path, (str, os.PathLike)):
            path = os.fspath(model_or_path)
            what, base_dir = f"ONNX file '{path}'", os.path.dirname(os.path.abspath(path))
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise OnnxImportError(f"{what}: cannot read it ({e.strerror or e})") from None
        else:
            raise OnnxImportError(f"import_onnx: expected an onnx.ModelProto, bytes or a path, "
                                  f"got {type(model_or_path).__name__}")
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as e:  # protobuf raises DecodeError, or RuntimeWarning-like errors
            raise OnnxImportError(f"{what}: not a valid ONNX file (truncated or corrupt: "
                                  f"{type(e).__name__}: {e})") from None
    _check_structure(model, what)
    _load_external_data(model, base_dir, what)
    return model, base_dir


def _check_structure(model, what: str) -> None:
    """The checks protobuf parsing does not make: a truncated file often parses into a partial model."""
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise OnnxImportError(f"{what}: contains no graph (truncated, or not an ONNX model)")
    graph = model.graph
    if not model.opset_import:
        raise OnnxImportError(f"{what}: declares no opset_import (truncated, or not an ONNX model)")
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    for k, node in enumerate(graph.node):
        for v in node.input:
            if v and v not in defined:
                raise OnnxImportError(
                    f"{what}: node '{node.name or f'#{k}'}' ({node.op_type}) reads '{v}', which no initializer, "
                    f"model input or earlier node defines (a missing initializer, or a truncated file)")
        defined.update(o for o in node.output if o)
    for o in graph.output:
        if o.name not in defined:
            raise OnnxImportError(f"{what}: model output '{o.name}' is not produced by any node "
                                  f"(truncated or malformed model)")


def _load_external_data(model, base_dir, what: str) -> None:
    import onnx.external_data_helper as edh

    tensors = [t for t in edh._get_all_tensors(model) if edh.uses_external_data(t)]
    if not tensors:
        return
    for t in tensors:
        location = edh.ExternalDataInfo(t).location
        if base_dir is None:
            raise OnnxImportError(f"{what}: tensor '{t.name}' keeps its data in the external file '{location}'; "
                                  f"pass the model's path (not a ModelProto) so the file can be found")
        path = os.path.join(base_dir, location)
        if not os.path.isfile(path):
            raise OnnxImportError(f"{what}: tensor '{t.name}' keeps its data in the external file "
                                  f"'{location}', which does not exist ({path})")
    try:
        edh.load_external_data_for_model(model, base_dir)
    except Exception as e:  # onnx raises ValueError/OSError for bad offsets, paths outside the folder
        raise OnnxImportError(f"{what}: cannot load external data ({type(e).__name__}: {e})") from None


# -------------------------------------------------------------------------------------------------
# Input shapes
# -------------------------------------------------------------------------------------------------

def declared_shape(value_info) -> tuple | None:
    """The declared shape of a graph input: ints for fixed dims, strings (dim_param) or None for
    dynamic ones; None when no shape is declared at all. A negative dim_value (some exporters, e.g.
    Paddle's, write -1 for "any") is dynamic, like a dim with neither value nor name.

    >>> from onnx import TensorProto, helper
    >>> declared_shape(helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "H", None]))
    (None, 3, 'H', None)
    """
    tt = value_info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else (d.dim_param or None)
                 for d in tt.shape.dim)


def has_dynamic_dims(model) -> bool:
    """Whether some model input has a dim without a fixed value (so the model recompiles per shape)."""
    inputs = set(model_inputs(model))
    return any(d is None or not isinstance(d, int) for i in model.graph.input if i.name in inputs
               for d in (declared_shape(i) or (None,)))


def resolve_input_shape(name: str, declared, given) -> tuple:
    """The static shape of model input `name` from its declared shape and the given one (may be None).

    >>> resolve_input_shape("x", ("N", 3), (2, 3))
    (2, 3)
    >>> resolve_input_shape("x", (1, 3), (2, 3))
    Traceback (most recent call last):
    ...
    tessel.errors.ShapeError: model input 'x': declared shape (1, 3) contradicts the given shape (2, 3)
    """
    def show(shape):
        return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ("," if len(shape) == 1 else "") + ")"

    if given is not None:
        given = tuple(int(d) for d in given)
        if declared is not None:
            if len(declared) != len(given) or any(isinstance(d, int) and d != g for d, g in zip(declared, given)):
                raise ShapeError(f"model input '{name}': declared shape {show(declared)} contradicts the given "
                                 f"shape {show(given)}")
        return given
    if declared is None:
        raise ShapeError(f"model input '{name}' declares no shape; give it with input_shapes={{'{name}': (...)}} "
                         f"or pass example inputs")
    dynamic = [d for d in declared if not isinstance(d, int)]
    if dynamic:
        raise ShapeError(f"model input '{name}' has dynamic shape {show(declared)}; give it with "
                         f"input_shapes={{'{name}': (...)}} or pass example inputs")
    return tuple(declared)


def model_inputs(model) -> list:
    """Names of the model's inputs in order (initializers that IR < 4 lists as inputs excluded)."""
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def shapes_by_name(model, shapes) -> dict:
    """A list of input shapes (in model input order) as {input name: shape}."""
    names = model_inputs(model)
    if len(shapes) != len(names):
        raise ShapeError(f"model '{model.graph.name}' takes {len(names)} input(s) ({', '.join(names)}), "
                         f"got {len(shapes)} shape(s)")
    return {n: tuple(s) for n, s in zip(names, shapes)}
