"""Import a PyTorch module into a tessel Graph through `torch.export`.

`import_torch(module, example_inputs)` exports the module (shapes specialised to the example
inputs), walks the exported fx graph and maps each aten op onto the op set of
`tessel.frontend.ops` (the mapping of each aten op lives in torch_aten.py and torch_aten_layout.py;
this module is the walk, the folding and the error reporting). Parameters, buffers and
lifted constants become graph constants (numpy arrays, copied). A node whose tensor inputs are all
constants (arange, masks built from arange, `full`, transposed weights ...) is folded at import time
by running it in torch eager, so only the data-dependent part of the model reaches the graph.

Why export's graph is mapped directly when possible: the exported "training IR" keeps high-level ops
(linear, layer_norm, scaled_dot_product_attention, batch_norm, conv2d ...) that map one-to-one onto
the op set, and `run_decompositions` costs as much as the export itself (seconds for a small GPT-2).
So the importer decomposes only when the exported graph holds an op it cannot map (or mutates
tensors in place); then `decomposition_table()` lowers to core ATen while keeping the high-level ops
the op set has (`decompose=True` forces this path).

Each graph node's `origin` names the fx node, its aten op and the module it came from; an aten op
with no mapping raises `UnsupportedOpError` naming the op, the fx node, its module and the model
input(s) it is computed from. The module's outputs are flattened (tuple, list, dict, transformers'
ModelOutput); `graph.meta["torch_out_spec"]` keeps the structure and `rebuild_outputs` restores it.

Example:
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> g = import_torch(m, (torch.randn(2, 4),))
    >>> [n.op for n in g.nodes.values()]
    ['linear', 'relu']
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os

from tessel.errors import ArgumentError, DTypeError, TesselError
from tessel.frontend.graph import Graph
from tessel.frontend.ops import UnsupportedOpError


class TorchImportError(TesselError):
    """torch.export could not export the module, or the importer mis-typed a node (a tessel bug)."""


# aten ops that the op set has as one op: keep them when decomposing to core ATen.
KEEP_OPS = ("scaled_dot_product_attention.default", "linear.default", "layer_norm.default", "matmul.default",
            "silu.default", "gelu.default", "rms_norm.default", "softmax.int", "log_softmax.int",
            "hardtanh.default", "leaky_relu.default")

# Ops that only check metadata or carry effects the graph does not need: skipped.
IGNORED_OPS = ("aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
               "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default",
               "aten._assert_async.msg", "aten._assert_async.default")

@functools.lru_cache(maxsize=1)
def _dtype_table() -> dict:
    import torch

    return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64",
            torch.int64: "int64", torch.int32: "int32", torch.int8: "int8", torch.bool: "bool"}


def tessel_dtype(torch_dtype, where: str = "") -> str:
    """The tessel dtype of a torch dtype; raises DTypeError for one tessel lacks (e.g. uint8).

    >>> import torch
    >>> tessel_dtype(torch.bfloat16)
    'bfloat16'
    """
    table = _dtype_table()
    if torch_dtype not in table:
        at = f" at {where}" if where else ""
        raise DTypeError(f"torch dtype {torch_dtype}{at} has no tessel counterpart")
    return table[torch_dtype]


def to_numpy(t):
    """A numpy copy of a torch tensor (bfloat16 through ml_dtypes)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def decomposition_table() -> dict:
    """torch.export's default decompositions (to core ATen) minus the ops in KEEP_OPS.

    >>> import torch
    >>> torch.ops.aten.linear.default in decomposition_table()
    False
    """
    import torch

    table = torch.export.default_decompositions()
    for name in KEEP_OPS:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet, None), overload, None)
        if op is not None:
            table.pop(op, None)
    return table


def import_torch(module, example_inputs, *, decompose: bool | None = None, name: str | None = None,
                 verbose: bool = False) -> Graph:
    """Export `module` on `example_inputs` (a tuple of tensors) and map it onto a tessel Graph.

    `decompose`: None runs `run_decompositions(decomposition_table())` only when the exported graph
    holds an op that has no direct mapping; True always; False never. `verbose`: let torch's own
    export logs and warnings through (silenced by default; also TESSEL_TORCH_LOGS=1).

    >>> import torch
    >>> g = import_torch(torch.nn.Softmax(dim=-1), (torch.randn(2, 5),))
    >>> g.nodes[next(iter(g.nodes))].attrs
    {'axis': 1}
    """
    import torch

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    for k, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor):
            raise ArgumentError(f"example input {k} of {type(module).__name__} is a {type(x).__name__}, "
                                "expected a torch.Tensor")
    try:
        with quiet_torch_logs(verbose):
            ep = torch.export.export(module, example_inputs)
    except Exception as e:  # torch raises many types; all mean the same to the user
        raise TorchImportError(f"torch.export.export failed on {type(module).__name__}: "
                               f"{type(e).__name__}: {first_line(e)}") from e
    if decompose is None:
        decompose = bool(needs_decomposition(ep))
    if decompose:
        with quiet_torch_logs(verbose):
            ep = ep.run_decompositions(decomposition_table())
    return _Importer(ep, name or type(module).__name__).run()


# torch's loggers that print tracebacks while export tries shapes (the fake-tensor log of a failing
# meta kernel, symbolic-shape guards): silenced around export unless TESSEL_TORCH_LOGS is set.
NOISY_TORCH_LOGGERS = ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes", "torch.export",
                       "torch._export", "torch._dynamo", "torch._functorch")


@contextlib.contextmanager
def quiet_torch_logs(verbose: bool = False):
    """Silence torch's export-time loggers and every Python warning raised meanwhile (they come from
    torch's tracing machinery, often attributed to stdlib frames such as copyreg), for the duration;
    `verbose=True` (or TESSEL_TORCH_LOGS=1) keeps them.

    >>> import logging
    >>> with quiet_torch_logs():
    ...     logging.getLogger("torch._subclasses.fake_tensor").error("not shown")
    """
    if verbose or os.environ.get("TESSEL_TORCH_LOGS"):
        yield
        return
    import warnings

    loggers = [logging.getLogger(n) for n in NOISY_TORCH_LOGGERS]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, was in zip(loggers, saved):
            lg.disabled = was


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (torch's run to dozens of lines), cut
    to `limit` characters; the exception's type name when it has no message.

    >>> first_line(ValueError("bad shape\\n  at frame 1\\n  at frame 2"))
    'bad shape'
    """
    lines = [x.strip() for x in str(e).strip().splitlines() if x.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reimport_for_call(module, inputs: tuple, example_inputs: tuple, verbose: bool = False) -> Graph:
    """`import_torch(module, inputs)` for a call whose shapes differ from the example inputs'; an
    export that fails becomes an ArgumentError naming the inputs whose shapes changed.

    >>> import torch
    >>> m = torch.nn.Linear(8, 4)
    >>> reimport_for_call(m, (torch.randn(3, 8),), (torch.randn(2, 8),)).inputs
    ['input']
    >>> try:
    ...     reimport_for_call(m, (torch.randn(2, 5),), (torch.randn(2, 8),))
    ... except ArgumentError as e:
    ...     print(str(e)[:81])
    Linear: input 0 ('input') has shape (2, 5), which the model cannot take (compiled
    """
    try:
        return import_torch(module, inputs, verbose=verbose)
    except TorchImportError as e:
        cause = e.__cause__ if e.__cause__ is not None else e
        names = _forward_names(module, len(inputs))
        changed = [(k, tuple(x.shape), tuple(w.shape)) for k, (x, w) in enumerate(zip(inputs, example_inputs))
                   if tuple(x.shape) != tuple(w.shape)]
        what = "; ".join(f"input {k} ('{names[k]}') has shape {got}" for k, got, _ in changed) or "the inputs"
        was = ", ".join(str(want) for _, _, want in changed)
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise ArgumentError(f"{type(module).__name__}: {what}, which the model cannot take "
                            f"(compiled for {was}): {reason}") from None


def _forward_names(module, count: int) -> list:
    """The names of `module.forward`'s first `count` positional parameters (input0, ... if unknown)."""
    import inspect

    try:
        params = [p.name for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[k] if k < len(params) else f"input{k}" for k in range(count)]


def needs_decomposition(ep) -> list:
    """The fx nodes of exported program `ep` that the importer cannot take as they are: ops with no
    mapping that are not folded (some tensor input is not constant), and in-place ops."""
    from tessel.frontend.torch_aten import FOLD_SHAPE_ONLY, converters

    const = _constant_placeholders(ep)
    bad = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        key = op_key(node.target)
        schema = getattr(node.target, "_schema", None)
        if schema is not None and schema.is_mutable:
            bad.append(node)
            continue
        if key in IGNORED_OPS:
            continue
        ins = node.all_input_nodes
        if _foldable(node) and all(i.name in const for i in ins):
            const.add(node.name)
        elif key not in converters() and key not in FOLD_SHAPE_ONLY and node.target is not operator.getitem:
            bad.append(node)
    return bad


def rebuild_outputs(graph: Graph, flat: list):
    """The module's output structure (tuple, dict, ModelOutput ...) from the graph's flat outputs.

    >>> import torch
    >>> g = import_torch(torch.nn.Identity(), (torch.ones(2),))
    >>> rebuild_outputs(g, [torch.zeros(2)]).tolist()
    [0.0, 0.0]
    """
    import torch.utils._pytree as pytree

    spec = graph.meta.get("torch_out_spec")
    consts = graph.meta.get("torch_out_consts", {})
    if spec is None:
        return list(flat)
    if not consts and len(flat) == 1 and spec.is_leaf():  # one tensor: what tree_unflatten gives, ~1 us sooner
        return flat[0]
    if len(flat) != len(graph.outputs):
        raise ArgumentError(f"graph '{graph.name}' has {len(graph.outputs)} output(s), got {len(flat)}")
    it = iter(flat)
    leaves = [consts[k] if k in consts else next(it) for k in range(spec.num_leaves)]
    return pytree.tree_unflatten(leaves, spec)


def op_key(target) -> str:
    """The name the mapping table uses for an fx call target, e.g. 'aten.add.Tensor'."""
    if target is operator.getitem:
        return "getitem"
    return str(target) if hasattr(target, "_schema") else getattr(target, "__name__", str(target))


def _foldable(node) -> bool:
    """Whether running the node in torch at import time gives the value it has at run time."""
    import torch

    tags = getattr(node.target, "tags", ())
    return torch.Tag.nondeterministic_seeded not in tags and op_key(node.target) not in IGNORED_OPS


def _constant_placeholders(ep) -> set:
    from torch.export.graph_signature import InputKind

    return {s.arg.name for s in ep.graph_signature.input_specs
            if s.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)}


class _Importer:
    """Walks an exported program's fx graph in order, filling `env` (fx node name -> graph value
    name, list of those for multi-output nodes, or a Python scalar)."""

    def __init__(self, ep, name: str):
        self.ep = ep
        self.g = Graph(name)
        self.env: dict = {}
        self.node = None  # the fx node being converted

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Graph:
        from torch.export.graph_signature import InputKind

        specs = {s.arg.name: s for s in self.ep.graph_signature.input_specs if hasattr(s.arg, "name")}
        for node in self.ep.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                spec = specs.get(node.name)
                if spec is None or spec.kind == InputKind.USER_INPUT:
                    self._user_input(node)
                elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
                    self.env[node.name] = self.g.add_const(node.name, to_numpy(self._state(spec.target)))
                else:
                    self.unsupported(f"an input of kind {spec.kind.name}")
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                self._outputs(node)
            else:
                self.unsupported(f"an fx '{node.op}' node")
        self.g.prune()
        return self.g

    def _state(self, target: str):
        ep = self.ep
        if target in ep.state_dict:
            return ep.state_dict[target]
        if target in ep.constants:
            return ep.constants[target]
        raise TorchImportError(f"exported program has no tensor for parameter/buffer '{target}'")

    def _user_input(self, node) -> None:
        import torch

        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            dtype = tessel_dtype(val.dtype, f"model input '{node.name}'")
            self.env[node.name] = self.g.add_input(node.name, tuple(int(s) for s in val.shape), dtype)
        else:  # a non-tensor input export specialised to its example value
            self.env[node.name] = val

    def _call(self, node) -> None:
        from tessel.frontend.torch_aten import FOLD_SHAPE_ONLY, converters

        key = op_key(node.target)
        if key in IGNORED_OPS:
            return
        if node.target is operator.getitem:
            self.env[node.name] = self._getitem(node)
            return
        val = node.meta.get("val")
        if isinstance(val, (int, float, bool)):  # a shape computation, static here
            self.env[node.name] = val
            return
        if _foldable(node) and all(self.is_const(i) for i in node.all_input_nodes):
            self.env[node.name] = self._fold(node, shape_only=False)
        elif key in FOLD_SHAPE_ONLY:
            self.env[node.name] = self._fold(node, shape_only=True)
        elif key in converters():
            before = len(self.g.nodes)
            out = converters()[key](self, self.bind(node))
            if isinstance(out, str):
                out = self._rename(list(self.g.nodes.values())[before:], out, node.name)
            self.env[node.name] = out
            self._check(node, out)
        else:
            self.unsupported()

    def _rename(self, created: list, out: str, name: str) -> str:
        """Give the node computing `out` (and `out`) the fx node's name; helpers keep op suffixes."""
        prod = next((n for n in created if out in n.outputs), None)
        if prod is None or name in self.g.values or name in self.g.nodes:
            return out
        val = self.g.values.pop(out)
        val.name = name
        self.g.values[name] = val
        for n in created:  # re-insert to keep the execution order with the new name
            del self.g.nodes[n.name]
            n.inputs = [name if i == out else i for i in n.inputs]
            n.outputs = [name if o == out else o for o in n.outputs]
        prod.name = name
        for n in created:
            self.g.nodes[n.name] = n
        return name

    def _getitem(self, node):
        src, k = node.args
        got = self.env[src.name]
        if not isinstance(got, (list, tuple)):
            raise TorchImportError(f"fx node '{node.name}': getitem on '{src.name}', which is not a tuple")
        if got[k] is None and node.users:  # an unused getitem (export keeps some) is harmless
            self.unsupported(f"output {k} of '{src.name}' ({op_key(src.target)}), which the op set does not compute")
        return got[k]

    def _outputs(self, node) -> None:
        from torch.export.graph_signature import OutputKind

        specs = self.ep.graph_signature.output_specs
        outs, consts = [], {}
        user = [s for s in specs if s.kind == OutputKind.USER_OUTPUT]
        for k, s in enumerate(user):
            name = getattr(s.arg, "name", None)
            if name is None or name not in self.env:  # a constant leaf (None, an int ...)
                consts[k] = getattr(s.arg, "value", None)
                continue
            v = self.env[name]
            if not isinstance(v, str):
                consts[k] = v
                continue
            outs.append(v)
        self.g.mark_outputs(outs)
        spec = self.ep.call_spec.out_spec
        if spec is not None and spec.num_leaves != len(user):  # should not happen; keep it flat then
            spec = None
        self.g.meta["torch_out_spec"] = spec
        self.g.meta["torch_out_consts"] = consts
        self.g.meta["torch_in_spec"] = self.ep.call_spec.in_spec

    # -- folding ---------------------------------------------------------------------------------
    def is_const(self, node) -> bool:
        v = self.env.get(node.name)
        if isinstance(v, str):
            return self.g.values[v].is_const
        if isinstance(v, (list, tuple)):
            return all(x is None or self.g.values[x].is_const for x in v)
        return True  # a Python scalar

    def _fold(self, node, shape_only: bool):
        """Run the node in torch on constant inputs (shape_only: tensor inputs replaced by zeros of
        their shape, for ops that read only shapes, like zeros_like) and keep the result."""
        import torch
        from torch.fx.node import map_arg

        def value(n):
            if shape_only:
                val = n.meta["val"]
                return torch.zeros(tuple(val.shape), dtype=val.dtype)
            v = self.env[n.name]
            if isinstance(v, (list, tuple)):
                return [None if x is None else torch.from_numpy(self.g.values[x].data) for x in v]
            return torch.from_numpy(self.g.values[v].data) if isinstance(v, str) else v

        args = map_arg(node.args, value)
        kwargs = map_arg(node.kwargs, value)
        try:
            with torch.no_grad():
                res = node.target(*args, **kwargs)
        except Exception as e:  # torch raises many types
            raise TorchImportError(f"fx node '{node.name}' ({op_key(node.target)}): folding it on constant "
                                   f"inputs failed: {type(e).__name__}: {first_line(e)}") from e
        return self._keep(node.name, res)

    def _keep(self, name: str, res):
        import torch

        if isinstance(res, torch.Tensor):
            tessel_dtype(res.dtype, f"fx node '{name}'")
            return self.g.add_const(name, to_numpy(res))
        if isinstance(res, (list, tuple)):
            return [self._keep(f"{name}_{k}", r) for k, r in enumerate(res)]
        return res

    # -- checks and errors -----------------------------------------------------------------------
    def _check(self, node, out) -> None:
        """The converted values must have the shape and dtype torch says the node produces."""
        import torch

        metas = node.meta.get("val")
        pairs = zip(out, metas) if isinstance(out, (list, tuple)) else [(out, metas)]
        for v, m in pairs:
            if v is None or not isinstance(m, torch.Tensor):
                continue
            got = self.g.values[v] if isinstance(v, str) else None
            want = (tuple(int(s) for s in m.shape), tessel_dtype(m.dtype, f"fx node '{node.name}'"))
            if got is None or (got.shape, got.dtype) != want:
                have = f"{got.dtype}{list(got.shape)}" if got else repr(v)
                raise TorchImportError(f"torch importer bug at {self.origin(node)}: mapped to {have}, "
                                       f"torch says {want[1]}{list(want[0])}")

    def origin(self, node=None) -> str:
        """'fx node NAME (aten op) in module PATH (Class)', for node origins and error messages."""
        node = node or self.node
        text = f"fx node '{node.name}' ({op_key(node.target)})" if node.op == "call_function" \
            else f"fx node '{node.name}'"
        stack = node.meta.get("nn_module_stack")
        if stack:
            path, cls = list(stack.values())[-1]
            cls = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
            text += f" in module '{path or '<root>'}' ({cls})"
        return text

    def model_inputs_of(self, node) -> list:
        """The model inputs (user placeholders) that `node` is computed from."""
        user = set(self.g.inputs)
        seen, stack, found = set(), [node], []
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.op == "placeholder" and n.name in user:
                found.append(n.name)
            stack.extend(n.all_input_nodes)
        return sorted(found)

    def unsupported(self, what: str | None = None):
        node = self.node
        what = what or f"op '{op_key(node.target)}'"
        ins = self.model_inputs_of(node)
        src = f"; computed from model input(s) {', '.join(repr(i) for i in ins)}" if ins else \
            "; computed from constants only"
        raise UnsupportedOpError(f"torch import of '{self.g.name}': unsupported {what} at {self.origin(node)}{src}")

    # -- helpers for the converters (torch_aten.py) ----------------------------------------------
    def bind(self, node) -> dict:
        """The node's arguments by schema name, defaults filled in (fx nodes stay fx nodes)."""
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            return {"args": node.args, **node.kwargs}
        out = {}
        for k, arg in enumerate(schema.arguments):
            if k < len(node.args) and not arg.kwarg_only:
                out[arg.name] = node.args[k]
            elif arg.name in node.kwargs:
                out[arg.name] = node.kwargs[arg.name]
            elif arg.has_default_value():
                out[arg.name] = arg.default_value
            else:
                out[arg.name] = None
        return out

    def v(self, x) -> str:
        """The graph value of fx node `x`."""
        got = self.env.get(x.name)
        if not isinstance(got, str):
            raise TorchImportError(f"at {self.origin()}: argument '{x.name}' is not a tensor value ({got!r})")
        return got

    def val(self, x):
        return self.g.values[self.v(x)]

    @property
    def out_meta(self):
        return self.node.meta["val"]

    @property
    def out_shape(self) -> tuple:
        return tuple(int(s) for s in self.node.meta["val"].shape)

    @property
    def out_dtype(self) -> str:
        return tessel_dtype(self.node.meta["val"].dtype, f"fx node '{self.node.name}'")

    def emit(self, op: str, inputs: list, **attrs) -> str:
        """Add an op for the current fx node; returns its (first) output value."""
        name = f"{self.node.name}_{op}"
        (out, *_) = self.g.add_node(op, inputs, attrs, name=name, origin=self.origin(), output_names=[name])
        return out

    def const(self, array, base: str | None = None) -> str:
        return self.g.add_const(base or f"{self.node.name}_c", array)

    def scalar(self, x, dtype: str) -> str:
        """A 0-d constant of `dtype` holding Python number `x`."""
        import numpy as np

        from tessel.ir.dtypes import numpy_dtype

        return self.const(np.array(x, dtype=numpy_dtype(dtype)))

    def cast(self, v: str, dtype: str) -> str:
        if self.g.values[v].dtype == dtype:
            return v
        return self.emit("cast", [v], dtype=dtype)

    def operand(self, x, dtype: str) -> str:
        """Tensor fx node or Python scalar `x` as a graph value of `dtype`."""
        if hasattr(x, "op") and hasattr(x, "meta"):  # an fx node
            return self.cast(self.v(x), dtype)
        return self.scalar(x, dtype)

    def reshape(self, v: str, shape) -> str:
        shape = tuple(int(s) for s in shape)
        if self.g.values[v].shape == shape:
            return v
        return self.emit("reshape", [v], shape=shape)
