"""The ONNX frontend: `import_onnx` (ONNX model -> Graph).

The work is split by idea: `onnx_load.py` loads and checks a model, `onnx_import.py` walks its
nodes, `onnx_ops.py`, `onnx_ops_tensor.py`, `onnx_ops_nn.py`, `onnx_ops_norm.py` and `onnx_ops_resize.py` convert each
ONNX op onto tessel's op set. This module re-exports the public names; onnx itself is imported
only when a model is imported. `TesselBackend` (onnx's backend API, for onnx's conformance tests)
compiles, so it lives with the driver: `tessel.compiler.onnx_backend`.

Example:
    >>> import onnx.helper as oh
    >>> node = oh.make_node("Softmax", ["x"], ["y"], axis=-1)
    >>> vi = lambda s: oh.make_tensor_value_info(s, 1, [2, 5])
    >>> g = import_onnx(oh.make_model(oh.make_graph([node], "g", [vi("x")], [vi("y")])))
    >>> [(n.op, n.attrs) for n in g.nodes.values()]
    [('softmax', {'axis': 1})]
"""

from __future__ import annotations

from tessel.frontend.onnx_import import (  # noqa: F401
    NotConstantError, OnnxImportError, UnsupportedDTypeError, import_onnx, load_model, model_inputs,
)
from tessel.frontend.ops import UnsupportedOpError  # noqa: F401
