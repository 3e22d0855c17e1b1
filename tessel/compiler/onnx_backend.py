"""`TesselBackend`: tessel behind onnx's backend interface (`onnx.backend.base.Backend`), so that
onnx's own conformance suite (`onnx.backend.test.BackendTest`) can run against it.

`prepare(model)` checks the model and returns a `TesselBackendRep`; its `run(inputs)` imports the
model with the shapes of the inputs (binding as constants the inputs an op needs at import time,
such as Reshape's shape, which the node tests feed as inputs), compiles it with
`tessel.compile(graph, inputs, target="cpu")`, and runs it. Compiled models are cached per input
signature (shapes, dtypes, and the values of bound inputs).

Anything tessel does not support (an op, an attribute value, an element type) raises
`unittest.SkipTest` naming it, which the suite counts as skipped; never
`BackendIsNotSupposedToImplementIt`, which it counts as passed.

`use_reference=True` (in `prepare`) runs the imported graph with the op references instead of
compiling; it checks the importer alone.

It lives with the driver, not in `tessel.frontend`: it compiles, and importers know no driver.

Example:
    >>> import numpy as np, onnx.helper as oh
    >>> n = oh.make_node("Relu", ["x"], ["y"])
    >>> vi = lambda s: oh.make_tensor_value_info(s, 1, [3])
    >>> m = oh.make_model(oh.make_graph([n], "g", [vi("x")], [vi("y")]))
    >>> rep = TesselBackend.prepare(m, "CPU", use_reference=True)
    >>> rep.run([np.array([-1.0, 0.0, 2.0], np.float32)])[0].tolist()
    [0.0, 0.0, 2.0]
"""

from __future__ import annotations

import unittest

import numpy as np
from onnx.backend.base import Backend, BackendRep

from tessel.errors import ArgumentError
from tessel.frontend.onnx_import import UnsupportedDTypeError, import_onnx, load_model, model_inputs
from tessel.frontend.ops import UnsupportedOpError


class TesselBackendRep(BackendRep):
    """A prepared model: compiles per input signature on `run`."""

    def __init__(self, model, use_reference: bool = False):
        super().__init__()
        self.model = model
        self.use_reference = use_reference
        self.input_names = model_inputs(model)
        self._cache: dict = {}

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = {k: _array(v) for k, v in inputs.items()}
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            if len(inputs) != len(self.input_names):
                raise ArgumentError(f"model '{self.model.graph.name}' takes {len(self.input_names)} input(s) "
                                    f"({', '.join(self.input_names)}), got {len(inputs)}")
            feeds = {n: _array(a) for n, a in zip(self.input_names, inputs)}
        graph, compiled = self._compiled(feeds)
        flat = _flat(feeds)
        args = [flat[n] for n in graph.inputs]
        if compiled is None:
            from tessel.frontend.reference import run_graph

            outs = run_graph(graph, args)
        else:
            outs = compiled(*args) if graph.outputs else []
            outs = [outs] if len(graph.outputs) == 1 else list(outs)
        outs = [np.asarray(o) for o in outs]
        result, k = [], 0
        for _, items in graph.meta.get("onnx_outputs") or [(o, None) for o in graph.outputs]:
            if items == "empty":  # an empty optional
                result.append(None)
                continue
            result.append(outs[k] if items is None else outs[k:k + items])  # a sequence: a list of arrays
            k += 1 if items is None else items
        return tuple(result)

    def _compiled(self, feeds: dict):
        flat = _flat(feeds)
        sig = tuple((n, a.shape, a.dtype.str) for n, a in sorted(flat.items()))
        for graph, compiled, bound in self._cache.get(sig, []):
            if all(np.array_equal(flat[n], v) for n, v in bound.items()):
                return graph, compiled
        shapes = {n: [a.shape for a in v] if isinstance(v, list) else None if v is None else v.shape
                  for n, v in feeds.items()}
        try:
            graph = import_onnx(self.model, shapes, input_values=feeds)
        except (UnsupportedOpError, UnsupportedDTypeError) as e:
            raise unittest.SkipTest(f"tessel does not support this: {e}") from None
        bound = {n: flat[n] for n in flat if n not in graph.inputs}
        compiled = None
        if not self.use_reference:
            from tessel.compiler.compile_api import compile as tessel_compile  # tessel.compile

            try:
                if graph.outputs:  # (a model whose outputs are all empty sequences has nothing to run)
                    compiled = tessel_compile(graph, [flat[n] for n in graph.inputs], target="cpu")
            except UnsupportedOpError as e:
                raise unittest.SkipTest(f"tessel does not support this: {e}") from None
        self._cache.setdefault(sig, []).append((graph, compiled, bound))
        return graph, compiled


def _array(v):
    """A feed as an array, or a list of arrays for a sequence."""
    if v is None:  # an empty optional
        return None
    return [np.asarray(a) for a in v] if isinstance(v, list) else np.asarray(v)


def _supported_type(t) -> bool:
    if t.HasField("optional_type"):
        return _supported_type(t.optional_type.elem_type)
    if t.HasField("sequence_type"):
        return t.sequence_type.elem_type.HasField("tensor_type")
    return t.HasField("tensor_type")


def _flat(feeds: dict) -> dict:
    """Feeds with each sequence's items under their flat names (`onnx_import.sequence_item`)."""
    from tessel.frontend.onnx_import import sequence_item

    out = {}
    for n, v in feeds.items():
        if isinstance(v, list):
            out.update({sequence_item(n, k): a for k, a in enumerate(v)})
        elif v is not None:
            out[n] = v
    return out


class TesselBackend(Backend):
    """tessel as an ONNX backend (CPU only)."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> TesselBackendRep:
        if not cls.supports_device(device):
            raise unittest.SkipTest(f"tessel's ONNX backend runs on the CPU, not on {device}")
        model, _ = load_model(model)
        for vi in list(model.graph.input) + list(model.graph.output):
            if not _supported_type(vi.type):
                raise unittest.SkipTest(f"tessel does not support this: model input/output '{vi.name}' is not a "
                                        f"tensor, a sequence of tensors or an optional of those (maps are not "
                                        f"supported)")
        return TesselBackendRep(model, use_reference=bool(kwargs.get("use_reference", False)))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        import onnx.helper as oh

        from tessel.frontend.onnx_import import elem_type_of
        from tessel.ir.dtypes import from_numpy_dtype

        arrays = [np.asarray(a) for a in inputs]
        ins = [oh.make_tensor_value_info(n, elem_type_of(from_numpy_dtype(a.dtype)), a.shape)
               for n, a in zip(node.input, arrays)]
        outs = [oh.make_tensor_value_info(o, 0, None) for o in node.output]
        model = oh.make_model(oh.make_graph([node], "node", ins, outs))
        return cls.run_model(model, arrays, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")
