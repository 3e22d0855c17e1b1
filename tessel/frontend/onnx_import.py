"""Import an ONNX model into a tessel Graph: the walk over its nodes.

`import_onnx(model_or_path, input_shapes)` loads and checks the model (`onnx_load.py`: unreadable,
truncated or malformed files, undefined values, missing external data), fixes the shapes of the
model inputs (declared dims, or `input_shapes` for dynamic `dim_param` dims; a contradiction names
the input and both shapes), then converts the nodes in order with the converters of `onnx_ops.py`.

All shapes are static, so shape computations (Shape, Size, Range, ConstantOfShape, and every op
whose inputs are all constants) fold to constants while importing, the latter through the op
references of `tessel.frontend.ops`. An op that needs a constant operand (Reshape's shape, Slice's
starts...) whose value derives from a model input raises `NotConstantError`; callers that know the
input's value (the ONNX backend, whose node tests feed shapes as inputs) pass `input_values` and
the input becomes a constant. ONNX ops defined as functions (`schema.has_function`) and not mapped
by hand are expanded into their function body.

Why not onnx's shape inference or onnx.reference: the Graph infers shapes with tessel's own op
rules (which the lowering must agree with), and folding must use tessel's references.

Example:
    >>> import onnx, onnx.helper as oh
    >>> node = oh.make_node("Relu", ["x"], ["y"])
    >>> g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", 1, ["N", 4])],
    ...                   [oh.make_tensor_value_info("y", 1, ["N", 4])])
    >>> graph = import_onnx(oh.make_model(g), input_shapes={"x": (2, 4)})
    >>> graph.values[graph.outputs[0]].shape
    (2, 4)
"""

from __future__ import annotations

from tessel.errors import DTypeError
from tessel.frontend.graph import Graph
from tessel.frontend.onnx_load import (  # noqa: F401 - re-exported: the importer's public names
    OnnxImportError, UnsupportedDTypeError, declared_shape, elem_type_of, load_model, model_inputs, onnx_dtype,
    resolve_input_shape, shapes_by_name,
)
from tessel.frontend.onnx_names import (  # noqa: F401 (sequence_item, fn_opsets: re-exported)
    sequence_item, _schema, fn_opsets, _domain, _qualified, _derived_text, _clean, _numel, _np_dtype,
)
from tessel.frontend.ops import UnsupportedOpError


class NotConstantError(OnnxImportError):
    """An operand that must be known at import time (a shape, axes, pads) derives from model inputs.

    `inputs` names those model inputs; binding them with `input_values` makes the operand constant.
    """

    def __init__(self, msg: str, inputs: frozenset):
        super().__init__(msg)
        self.inputs = inputs


FOLD_LIMIT = 1 << 22  # fold constant subgraphs whose outputs have at most this many elements


# -------------------------------------------------------------------------------------------------
# The public entry point
# -------------------------------------------------------------------------------------------------

def import_onnx(model_or_path, input_shapes: dict | None = None, *, input_values: dict | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a Graph with static shapes.

    `input_shapes` maps model input names to shapes for dynamic dims (and is checked against the
    declared ones); a list or tuple gives them in the order of the model's inputs (initializers
    listed as inputs excluded), e.g. `[x.shape for x in example_inputs]`. `input_values` maps input
    names to arrays that may be bound as constants when an op needs their value at import time
    (e.g. Reshape's shape fed as an input); inputs that are not needed that way stay graph inputs.

    >>> import onnx.helper as oh
    >>> n = oh.make_node("Add", ["a", "b"], ["c"])
    >>> vi = lambda s: oh.make_tensor_value_info(s, 1, [2])
    >>> g = import_onnx(oh.make_model(oh.make_graph([n], "g", [vi("a"), vi("b")], [vi("c")])))
    >>> [node.op for node in g.nodes.values()], g.inputs
    (['add'], ['a', 'b'])
    """
    model, base_dir = load_model(model_or_path)
    if isinstance(input_shapes, (list, tuple)):
        input_shapes = shapes_by_name(model, input_shapes)
    input_values = dict(input_values or {})
    for name, v in list(input_values.items()):  # a sequence's items are bound one by one
        if isinstance(v, (list, tuple)):
            input_values.update({sequence_item(name, k): a for k, a in enumerate(v)})
    bound: dict = {}
    while True:
        try:
            return _Importer(model, input_shapes or {}, bound, input_values).run()
        except NotConstantError as e:
            more = {n for n in e.inputs if n in input_values and n not in bound}
            if not more or not e.inputs <= (set(bound) | more):
                raise
            bound.update({n: input_values[n] for n in more})


class _Importer:
    """One import: walks the nodes, keeping the map from ONNX value names to Graph values."""

    def __init__(self, model, input_shapes: dict, bound: dict, available: dict):
        from tessel.frontend import onnx_ops

        self.model = model
        self.converters = onnx_ops.CONVERTERS
        self.opsets = {(o.domain or ""): o.version for o in model.opset_import}
        self.opsets.setdefault("", self.opsets.get("ai.onnx", 0))
        self.input_shapes = dict(input_shapes)
        self.bound = bound
        self.available = available
        self.g = Graph(model.graph.name or "onnx_model")
        self.env: dict[str, str] = {}  # ONNX value name -> Graph value name
        self.lazy: dict = {}  # initializers not added to the Graph until some node reads them
        self.derives: dict[str, frozenset] = {}  # Graph value -> model inputs it derives from
        self.functions = {(f.domain, f.name): f for f in model.functions}
        self.stack: list = []  # the node being converted (a function body pushes its nodes)

    # -- the walk ----------------------------------------------------------------------------------
    def run(self) -> Graph:
        graph = self.model.graph
        inits = {t.name for t in graph.initializer}
        unknown = set(self.input_shapes) - {i.name for i in graph.input}
        if unknown:
            raise OnnxImportError(f"input_shapes names {sorted(unknown)}, which the model does not take "
                                  f"(its inputs: {[i.name for i in graph.input if i.name not in inits]})")
        for t in graph.initializer:
            self.lazy[t.name] = t
        if graph.sparse_initializer:
            raise UnsupportedOpError(f"model '{self.g.name}': sparse initializers "
                                     f"('{graph.sparse_initializer[0].values.name}') are not supported")
        for vi in graph.input:
            if vi.name in inits:
                continue  # an initializer listed as an input (IR < 4 style): a constant
            self._add_model_input(vi)
        self._check_ops_supported(graph.node, self.opsets)
        for k, node in enumerate(graph.node):
            self.convert_node(node, k, self.opsets)
        from tessel.frontend.onnx_ops_sequence import NO_VALUE, Sequence

        outs, structure = [], []
        for o in graph.output:
            v = self.value(o.name)
            if v is NO_VALUE:  # an empty optional
                structure.append((o.name, "empty"))
                continue
            items = list(v) if isinstance(v, Sequence) else [v]
            structure.append((o.name, len(items) if isinstance(v, Sequence) else None))
            for k, x in enumerate(items):
                name = o.name if not isinstance(v, Sequence) else sequence_item(o.name, k)
                outs.append(x if x in outs else self._output_named(x, name))
        # (name, number of items for a sequence, "empty" for an empty optional, else None)
        self.g.meta["onnx_outputs"] = structure
        self.g.mark_outputs(outs)
        self.g.prune()
        return self.g

    def _output_named(self, v: str, name: str) -> str:
        """Give the node output `v` the ONNX output's name when that name is free (for readable
        graphs and error messages); inputs and constants keep theirs."""
        g = self.g
        if v == name or name in g.values or name in g.nodes or g.values[v].is_const or v in g.inputs:
            return v
        node = next((n for n in g.nodes.values() if v in n.outputs), None)
        if node is None:
            return v
        val = g.values.pop(v)
        val.name = name
        g.values[name] = val
        node.outputs = [name if o == v else o for o in node.outputs]
        g.replace_uses(v, name)
        self.derives[name] = self.derives.get(v, frozenset())
        self.env = {k: (name if x == v else x) for k, x in self.env.items()}
        return name

    def _add_model_input(self, vi) -> None:
        if vi.type.HasField("optional_type"):  # its content, or NO_VALUE when input_shapes says None
            from onnx import helper

            from tessel.frontend.onnx_ops_sequence import NO_VALUE

            if self.input_shapes.get(vi.name) is None:
                self.env[vi.name] = NO_VALUE
                return
            self._add_model_input(helper.make_value_info(vi.name, vi.type.optional_type.elem_type))
            return
        if vi.type.HasField("sequence_type") and vi.type.sequence_type.elem_type.HasField("tensor_type"):
            self._add_sequence_input(vi)
            return
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"model input '{vi.name}': only tensor inputs and sequences of tensors are "
                                     f"supported (not maps or optionals)")
        if vi.name in self.bound:
            import numpy as np

            arr = np.asarray(self.bound[vi.name])
            resolve_input_shape(vi.name, declared_shape(vi), arr.shape)  # the value must fit the declaration
            arr = arr.astype(_np_dtype(onnx_dtype(tt.elem_type, f"model input '{vi.name}'")), copy=False)
            self.lazy[vi.name] = arr
            return
        dtype = onnx_dtype(tt.elem_type, f"model input '{vi.name}'")
        shape = resolve_input_shape(vi.name, declared_shape(vi), self.input_shapes.get(vi.name))
        if 0 in shape:
            if vi.name in self.available:  # an empty tensor has no data: its value is its shape
                self.bound[vi.name] = self.available[vi.name]
                self._add_model_input(vi)
                return
            raise UnsupportedOpError(f"model input '{vi.name}' has shape {shape}: empty tensors are not supported")
        name = self.g.add_input(vi.name, shape, dtype)
        self.env[vi.name] = name
        self.derives[name] = frozenset([vi.name])

    def _add_sequence_input(self, vi) -> None:
        """A sequence of tensors: one graph input per item (named by `sequence_item`), the number
        of items and their shapes from `input_shapes` (a list of shapes)."""
        from onnx import helper

        from tessel.frontend.onnx_ops_sequence import Sequence

        shapes = self.input_shapes.get(vi.name)
        if shapes is None:
            raise OnnxImportError(f"model input '{vi.name}' is a sequence: give the shapes of its items in "
                                  f"input_shapes (a list of shapes)")
        item_type = vi.type.sequence_type.elem_type
        items = []
        for k, shape in enumerate(shapes):
            flat = sequence_item(vi.name, k)
            item = helper.make_value_info(flat, item_type)
            self.input_shapes[flat] = tuple(shape)
            self._add_model_input(item)
            items.append(self.value(flat))
        self.env[vi.name] = Sequence(items)

    def _check_ops_supported(self, nodes, opsets) -> None:
        """Name every unsupported op of the model at once (with the first node and its inputs)."""
        bad = []
        for k, node in enumerate(nodes):
            if not self._has_converter(node, opsets):
                bad.append((k, node))
        if bad:
            k, node = bad[0]
            others = sorted({n.op_type for _, n in bad[1:]} - {node.op_type})
            also = f"; the model also uses unsupported op(s) {', '.join(others)}" if others else ""
            raise UnsupportedOpError(f"unsupported ONNX op '{_qualified(node)}' at node '{node.name or f'#{k}'}'"
                                     f"{self._derived_from_onnx(nodes, node)}{also}")

    def _has_converter(self, node, opsets) -> bool:
        domain = _domain(node)
        if (node.domain, node.op_type) in self.functions:
            return True
        if domain == "" and node.op_type in self.converters:
            return True
        if domain and f"{domain}.{node.op_type}" in self.converters:  # ai.onnx.preview.training.Adam ...
            return True
        return _schema(node, opsets) is not None

    def _derived_from_onnx(self, nodes, target) -> str:
        """', derived from model input(s) ...' for an ONNX node, by walking the ONNX graph."""
        src = {n: frozenset([n]) for n in self.env}
        for name in self.lazy:
            src[name] = frozenset()
        for node in nodes:
            dep = frozenset().union(*(src.get(i, frozenset()) for i in node.input if i))
            if node is target:
                return _derived_text(dep)
            for o in node.output:
                src[o] = dep
        return ""

    def convert_node(self, node, index, opsets) -> None:
        name = node.name or f"{node.op_type}_{index}"
        self.stack.append((node, name, opsets))
        try:
            key = (node.domain, node.op_type)
            if key in self.functions:
                self._expand_function(node, self.functions[key], name, opsets)
                return
            domain = _domain(node)
            conv = self.converters.get(f"{domain}.{node.op_type}" if domain else node.op_type)
            if conv is None:
                fn = self._schema_function(node, opsets)
                if fn is None:
                    raise self.unsupported(f"domain '{node.domain}' is not supported" if domain else "no converter")
                self._expand_function(node, fn, name, fn_opsets(fn, opsets))
                return
            outs = conv(self, node)
            for onnx_name, value in zip(node.output, outs):
                if onnx_name and value is not None:
                    self.env[onnx_name] = value
            for onnx_name in node.output[len(outs):]:
                if onnx_name:
                    raise self.unsupported(f"output #{list(node.output).index(onnx_name)} ('{onnx_name}') "
                                           f"is not supported")
        finally:
            self.stack.pop()

    # -- functions ---------------------------------------------------------------------------------
    def _schema_function(self, node, opsets):
        """The FunctionProto of an ONNX op defined as a function in its schema (plain, or
        context-dependent: built for the node's attributes and input types), or None."""
        import onnx

        schema = _schema(node, opsets)
        if schema is None:
            return None
        version = opsets.get(_domain(node), 0)
        full = onnx.NodeProto()
        full.CopyFrom(node)
        given = {a.name for a in node.attribute}
        full.attribute.extend(s.default_value for a, s in schema.attributes.items()
                              if s.default_value.name and a not in given)
        fn = onnx.FunctionProto()
        if schema.has_function:
            versions = sorted(schema.function_opset_versions)
            usable = [v for v in versions if v <= version] or versions[:1]
            fn.ParseFromString(schema.get_function_with_opset_version(usable[-1]))
        else:
            versions = sorted(schema.context_dependent_function_opset_versions)
            usable = [v for v in versions if v <= version] or versions[:1]
            types = []
            for i in node.input:
                v = self.value(i)
                elem = elem_type_of(self.dtype(v)) if v is not None else 0
                types.append(onnx.helper.make_tensor_type_proto(elem, self.shape(v) if v is not None else None)
                             .SerializeToString())
            try:
                body = schema.get_context_dependent_function_with_opset_version(
                    usable[-1], full.SerializeToString(), types)
            except Exception:  # onnx refuses contexts its builder does not handle
                return None
            fn.ParseFromString(body)
            if not fn.node:
                return None
        fn.attribute_proto.extend(a for a in full.attribute if a.name not in {b.name for b in fn.attribute_proto})
        return fn

    def expand_as_function(self, node) -> list:
        """Convert `node` through its schema's function body (for converters that map only some
        attribute combinations directly); returns the Graph values of its outputs."""
        _, name, opsets = self.stack[-1]
        fn = self._schema_function(node, opsets)
        if fn is None:
            raise self.unsupported("this combination of inputs and attributes")
        self._expand_function(node, fn, name, fn_opsets(fn, opsets))
        return [self.env.get(o) if o else None for o in node.output]

    def _expand_function(self, node, fn, name, opsets) -> None:
        """Convert a function body in place of `node`, with its names prefixed to keep them apart."""
        import onnx

        prefix = f"{name}::"
        names = {formal: actual for formal, actual in zip(fn.input, node.input)}
        names.update({formal: actual for formal, actual in zip(fn.output, node.output) if actual})
        attrs = {a.name: a for a in fn.attribute_proto}
        attrs.update({a.name: a for a in node.attribute})
        from tessel.frontend.onnx_subgraph import renamed_graph

        scope = {x: names.get(x, prefix + x) for x in list(fn.input) + [o for m in fn.node for o in m.output] if x}
        body = []
        for inner in fn.node:
            n = onnx.NodeProto()
            n.CopyFrom(inner)
            n.name = prefix + (inner.name or inner.op_type)
            n.input[:] = [names.get(i, prefix + i) if i else "" for i in inner.input]
            n.output[:] = [names.get(o, prefix + o) if o else "" for o in inner.output]
            kept = []
            for a in n.attribute:
                if a.ref_attr_name:
                    if a.ref_attr_name not in attrs:
                        continue  # optional attribute not given: the inner op's default applies
                    b = onnx.AttributeProto()
                    b.CopyFrom(attrs[a.ref_attr_name])
                    b.name = a.name
                    kept.append(b)
                else:
                    kept.append(a)
            del n.attribute[:]
            n.attribute.extend(kept)
            for a in n.attribute:  # a subgraph (Scan's body, say) sees the body's names renamed
                if a.HasField("g"):
                    a.g.CopyFrom(renamed_graph(a.g, prefix, scope))
            body.append(n)
        self._check_ops_supported(body, opsets)
        for k, n in enumerate(body):
            self.convert_node(n, k, opsets)

    # -- subgraphs (If branches, Loop and Scan bodies) ---------------------------------------------
    def graph_attr(self, node, name: str):
        """The GraphProto of attribute `name` of `node` (None when absent)."""
        for a in node.attribute:
            if a.name == name and a.HasField("g"):
                return a.g
        return None

    def inline_graph(self, graph, inputs: list, prefix: str) -> list:
        """Convert the nodes of subgraph `graph` in place, its inputs bound to the Graph values
        `inputs`; returns the Graph values of its outputs. Every name the subgraph defines gets
        `prefix` (so a loop body can be inlined once per iteration); names from outer scopes stay."""
        from tessel.frontend.onnx_subgraph import renamed_graph

        g = renamed_graph(graph, prefix)
        if len(inputs) != len(g.input):
            raise OnnxImportError(f"{self.where()}: the subgraph takes {len(g.input)} input(s), got {len(inputs)}")
        for vi, v in zip(g.input, inputs):
            self.env[vi.name] = v
        for t in g.initializer:
            self.lazy[t.name] = t
        _, _, opsets = self.stack[-1]
        self._check_ops_supported(g.node, opsets)
        for k, n in enumerate(g.node):
            self.convert_node(n, k, opsets)
        return [self.value(o.name) for o in g.output]

    # -- values ------------------------------------------------------------------------------------
    def value(self, onnx_name: str) -> str | None:
        """The Graph value of an ONNX value name ('' -> None); initializers are added on first use."""
        if not onnx_name:
            return None
        if onnx_name in self.env:
            return self.env[onnx_name]
        if onnx_name in self.lazy:
            item = self.lazy.pop(onnx_name)
            arr = item if not hasattr(item, "data_type") else self._tensor_to_numpy(item)
            self.env[onnx_name] = self.const(arr, onnx_name)
            return self.env[onnx_name]
        raise OnnxImportError(f"{self.where()}: value '{onnx_name}' is not defined")

    def _tensor_to_numpy(self, tensor, what=None):
        from onnx import numpy_helper

        what = what or f"initializer '{tensor.name}'"
        dtype = onnx_dtype(tensor.data_type, what)
        try:
            arr = numpy_helper.to_array(tensor)
        except Exception as e:  # a tensor whose raw data does not match its shape, say
            raise OnnxImportError(f"{what}: cannot read its data ({type(e).__name__}: {e})") from None
        return arr.astype(_np_dtype(dtype), copy=False)

    def tensor_attr_to_numpy(self, tensor, what):
        return self._tensor_to_numpy(tensor, what)

    def const(self, arr, name: str = "const") -> str:
        """Add a constant value holding `arr` (a numpy array or scalar)."""
        import numpy as np

        arr = np.asarray(arr)
        if arr.dtype.kind in "US":
            raise UnsupportedDTypeError(f"{self.where()}: constant '{name}' of numpy dtype {arr.dtype}")
        from tessel.ir.dtypes import from_numpy_dtype

        try:
            from_numpy_dtype(arr.dtype)
        except DTypeError:
            raise UnsupportedDTypeError(f"{self.where()}: constant '{name}' has dtype {arr.dtype}, "
                                        f"which tessel has no dtype for") from None
        v = self.g.add_const(name, arr)
        self.derives[v] = frozenset()
        return v

    def try_const(self, v: str | None):
        """The numpy value of Graph value `v` when it is a constant, else None."""
        if v is None:
            return None
        return self.g.values[v].data

    def need_const(self, v: str | None, what: str):
        """The numpy value of `v`, which must be a constant (NotConstantError naming its model inputs)."""
        data = self.try_const(v)
        if data is None:
            src = self.derives.get(v, frozenset())
            raise NotConstantError(f"{self.where()}: {what} must be known at import time, but it is computed "
                                   f"at run time{_derived_text(src)}", src)
        return data

    def shape(self, v: str) -> tuple:
        return self.g.values[v].shape

    def dtype(self, v: str) -> str:
        return self.g.values[v].dtype

    # -- emitting ops ------------------------------------------------------------------------------
    def op(self, name: str, inputs: list, **attrs) -> str:
        """Add graph op `name` on Graph values `inputs`; returns its (single) output."""
        return self.op_multi(name, inputs, **attrs)[0]

    def op_multi(self, name: str, inputs: list, **attrs) -> list:
        """Add graph op `name`; folds it to constants when every input is a constant."""
        node, base, _ = self.stack[-1]
        origin = f"{base}/{node.op_type}"
        node_name = self.g.fresh(_clean(base) + "." + name)
        try:
            outs = self.g.add_node(name, inputs, attrs, name=node_name, origin=origin)
        except UnsupportedOpError:
            raise self.unsupported(f"tessel has no '{name}' op") from None
        dep = frozenset().union(*(self.derives.get(i, frozenset()) for i in inputs if i is not None))
        for o in outs:
            self.derives[o] = dep
        present = [i for i in inputs if i is not None]
        if node_name in self.g.nodes and all(self.g.values[i].is_const for i in present) and \
                sum(_numel(self.g.values[o].shape) for o in outs) <= FOLD_LIMIT:
            self._fold(node_name)
        return outs

    def _fold(self, node_name: str) -> None:
        import numpy as np

        from tessel.frontend.ops import get_op
        from tessel.ir.dtypes import numpy_dtype

        n = self.g.nodes[node_name]
        args = [self.g.values[i].data if i is not None else None for i in n.inputs]
        try:
            with np.errstate(all="ignore"):
                res = get_op(n.op, n.describe()).reference(args, n.attrs)
        except Exception:  # a reference that cannot evaluate these constants: leave the node to run
            return
        for o, r in zip(n.outputs, res):
            val = self.g.values[o]
            arr = np.asarray(r).astype(numpy_dtype(val.dtype), copy=False).reshape(val.shape)
            val.data = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # (which makes 0-d 1-d)
        self.g.remove_node(node_name)

    # -- messages ----------------------------------------------------------------------------------
    def where(self) -> str:
        if not self.stack:
            return f"model '{self.g.name}'"
        node, name, _ = self.stack[-1]
        return f"ONNX node '{name}' ({node.op_type})"

    def unsupported(self, why: str) -> UnsupportedOpError:
        node, name, _ = self.stack[-1]
        src = frozenset().union(*(self.derives.get(self.env.get(i), frozenset()) for i in node.input if i))
        return UnsupportedOpError(f"unsupported ONNX op '{_qualified(node)}' at node '{name}' ({why})"
                                  f"{_derived_text(src)}")

    def attr(self, node, name: str, default=None):
        """The value of attribute `name` of `node` (ints, floats, strings, lists, tensors as numpy)."""
        import onnx

        for a in node.attribute:
            if a.name == name:
                if a.type == onnx.AttributeProto.TENSOR:
                    return self.tensor_attr_to_numpy(a.t, f"{self.where()} attribute '{name}'")
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    raise self.unsupported(f"attribute '{name}' holds a subgraph")
                value = onnx.helper.get_attribute_value(a)
                if a.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS, onnx.AttributeProto.STRINGS):
                    return [v.decode() if isinstance(v, bytes) else v for v in value]
                return value.decode() if isinstance(value, bytes) else value
        return default

    def version(self, node) -> int:
        """The since_version of the schema that applies to `node` under the current opset."""
        import onnx

        opset = self.stack[-1][2].get("", 0) if self.stack else self.opsets[""]
        try:
            return onnx.defs.get_schema(node.op_type, opset, "").since_version
        except onnx.defs.SchemaError:
            return opset
