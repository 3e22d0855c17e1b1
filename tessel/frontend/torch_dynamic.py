"""Dynamic shapes of torch models: the ranges `torch.export.Dim` gives each input dimension.

`export_dynamic(module, example_inputs, dynamic_shapes)` runs `torch.export.export` with the user's
`dynamic_shapes` (torch's own format: per input a dict {dim: Dim} or a list, keyed by argument
name or by position), and `input_ranges(ep)` reads what it decided: per user input, per dimension,
a fixed size, a range `(name, low, high)` (high None when unbounded) of a symbol torch kept
dynamic, or "derived" for a dimension that is an expression of others (`2 * batch`). Names are
the user's `Dim` names where they are known, torch's symbols (`s17`) otherwise.

What tessel does with them (`tessel.compiler.compile_api`): the model is compiled for the example
shapes and, with one or two dynamic dimensions on the CPU, once for the whole ranges
(`tessel.compiler.model_symbolic`: kernels with the size as a scalar parameter); other new shapes
inside the ranges are exported and compiled once each and cached; a call outside them raises
ArgumentError naming the input, the dimension and the range, before any export.

Example:
    >>> import torch
    >>> from torch.export import Dim
    >>> m = torch.nn.Linear(8, 4)
    >>> ep = export_dynamic(m, (torch.randn(3, 8),), {"input": {0: Dim("batch", min=1, max=64)}})
    >>> input_ranges(ep, {"input": {0: Dim("batch", min=1, max=64)}}, m)
    [('input', [('batch', 1, 64), 8])]
"""

from __future__ import annotations

from tessel.frontend.torch import TorchImportError, first_line, quiet_torch_logs


def export_dynamic(module, example_inputs: tuple, dynamic_shapes, verbose: bool = False):
    """`torch.export.export(module, example_inputs, dynamic_shapes=...)`, torch's logs silenced
    (unless `verbose`); a failure is one TorchImportError line."""
    import torch

    try:
        with quiet_torch_logs(verbose):
            return torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    except Exception as e:  # torch raises many types (UserError for a bad Dim spec, constraint violations)
        raise TorchImportError(f"torch.export.export with dynamic_shapes failed on {type(module).__name__}: "
                               f"{type(e).__name__}: {first_line(e)}") from e


def input_ranges(ep, dynamic_shapes=None, module=None) -> list:
    """[(input name, [dim, ...]), ...] for the user inputs of exported program `ep`; each dim an int,
    (name, low, high or None) or "derived" (see the module docstring). `dynamic_shapes` and `module`
    (whose forward's argument names key a dict spec) only supply the `Dim` names."""
    import torch
    from torch.export.graph_signature import InputKind

    names = _dim_names(dynamic_shapes, module)
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    out = []
    for k, name in enumerate(user):
        val = nodes[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue  # a non-tensor input: export specialised it
        dims = []
        for d, size in enumerate(val.shape):
            if isinstance(size, int):
                dims.append(int(size))
                continue
            expr = size.node.expr
            vr = ep.range_constraints.get(expr)
            if vr is None or not getattr(expr, "is_Symbol", False):
                dims.append("derived")
                continue
            dims.append((names.get((k, d), str(expr)), int(vr.lower), _bound(vr.upper)))
        out.append((name, dims))
    return out


def _bound(upper):
    """An int, or None for torch's unbounded (int_oo / oo)."""
    try:
        return int(upper) if bool(upper.is_finite) else None
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None


def _dim_names(dynamic_shapes, module) -> dict:
    """(input position, dimension) -> the user's Dim name, from a dynamic_shapes spec."""
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, dict):
        params = _forward_params(module)
        per_input = [dynamic_shapes.get(p) for p in params] if params else list(dynamic_shapes.values())
    else:
        per_input = list(dynamic_shapes)
    found = {}
    for k, spec in enumerate(per_input):
        items = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, (list, tuple)) else ()
        for d, dim in items:
            label = getattr(dim, "__name__", None)
            if isinstance(label, str) and label:
                found[(k, int(d))] = label
    return found


def _forward_params(module) -> list:
    import inspect

    try:
        return [p.name for p in inspect.signature(module.forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError, AttributeError):
        return []


def example_inputs_of(ep):
    """The example inputs an ExportedProgram was made with (positional tensors), or None."""
    ex = getattr(ep, "example_inputs", None)
    if not ex:
        return None
    args, kwargs = ex
    return None if kwargs else tuple(args)
