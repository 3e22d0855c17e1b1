"""A model's symbolic program (one program for every size of a range, `tessel.compiler.model_symbolic`)
in a model artifact (`tessel.compiler.artifact`), written and read back without compiling.

The manifest's `model.symbolic` entry holds the dynamic dimensions and one entry per part (size
bucket, `tessel.compiler.model_symbolic_parts`); a part's entry holds, per dynamic dimension, its
label, range, where it sits in the inputs and its size parameter (name, dtype); then the source and
optimised graphs (their value shapes at the first sample size; `shapes` gives each value's shape
with its symbolic entries as IR text, e.g. `(n_batch + 7) // 8`), the kernel kinds and the steps.
Symbolic kernels are stored like every other CPU kernel (IR text, TVMScript, shared library). A
program holding per-shape kernels (compiled for each new size) is not stored: a loaded model does
not compile. Its absence is noted, and a loaded model's error for a size it cannot serve says so.

Example (see tests/compiler/test_model_symbolic.py for a round trip):
    >>> symbolic_entry(None, None, {}, {}, [])
"""

from __future__ import annotations

from tessel.compiler.artifact_graph import decode_graph, decode_node, encode_graph, encode_node


def symbolic_entry(parts, blobs, files: dict, kernels: dict, dropped: list, encode_kernel=None):
    """The manifest entry of a model's SymbolicParts (None when there are none or they hold per-shape
    kernels); `encode_kernel(kernel, index, files)` stores a compiled kernel (artifact._encode_kernel)."""
    if parts is None or any(k.kind != "symbolic" for k in parts.kernels):
        return None
    return {"parts": [_program_entry(p, blobs, files, kernels, dropped, encode_kernel) for p in parts.parts],
            "dims": [_dim_entry(d) for d in parts.dims]}


def _dim_entry(d) -> dict:
    return {"label": d.label, "lo": d.lo, "hi": d.hi, "where": [list(w) for w in d.where],
            "var": [d.var.name, d.var.dtype]}


def _dim_of(d: dict):
    from tessel.compiler.model_symbolic import Dim
    from tessel.ir.nodes import Var

    return Dim(d["label"], int(d["lo"]), d["hi"], [tuple(w) for w in d["where"]], Var(d["var"][0], d["var"][1]))


def read_parts(data: dict, get, load_kernel, kernels: dict):
    """The SymbolicParts of a manifest entry (see `read_symbolic`)."""
    from tessel.compiler.model_symbolic_parts import SymbolicParts

    return SymbolicParts([read_symbolic(p, get, load_kernel, kernels) for p in data["parts"]],
                         [_dim_of(d) for d in data["dims"]])


def _program_entry(sym, blobs, files: dict, kernels: dict, dropped: list, encode_kernel):
    from tessel.ir.text import to_text

    steps = []
    for step in sym.steps:
        compiled = step.kernel.compiled
        if id(compiled) not in kernels:
            kernels[id(compiled)] = encode_kernel(compiled, len(kernels), files)
        g = step.group
        steps.append({"kernel": kernels[id(compiled)], "name": step.kernel.name, "args": list(step.args),
                      "group": {"id": g.id, "nodes": [encode_node(x, blobs, sym.graph.name) for x in g.nodes],
                                "anchor": None if g.anchor is None else g.anchor.name,
                                "inputs": list(g.inputs), "outputs": list(g.outputs)}})
    shapes = {name: [d if isinstance(d, int) else to_text(d) for d in shape] for name, shape in sym.shapes.items()}
    return {"dims": [_dim_entry(d) for d in sym.dims], "source": encode_graph(sym.source, blobs, dropped),
            "graph": encode_graph(sym.graph, blobs, dropped), "shapes": shapes, "steps": steps,
            "kinds": dict(sym.kinds), "compile_seconds": sym.compile_seconds}


def read_symbolic(data: dict, get, load_kernel, kernels: dict):
    """The SymbolicProgram of a manifest entry; `load_kernel(kref)` binds a stored kernel, `kernels`
    caches them by library entry (shared with the per-shape programs)."""
    from tessel.compiler.model_symbolic import SymbolicProgram, _Step, _SymbolicKernel
    from tessel.ir.text import parse_expr
    from tessel.passes.graph.fusion import Group

    dims = [_dim_of(d) for d in data["dims"]]
    env = {d.var.name: d.var for d in dims}
    scalars = tuple(d.var for d in dims)
    shapes = {name: tuple(d if isinstance(d, int) else parse_expr(d, env=env) for d in shape)
              for name, shape in data["shapes"].items()}
    steps, wrapped = [], {}
    for s in data["steps"]:
        key = s["kernel"]["library"]
        if key not in kernels:
            kernels[key] = load_kernel(s["kernel"])
        if key not in wrapped:
            wrapped[key] = _SymbolicKernel(s["name"], kernels[key], scalars)
        g = s["group"]
        nodes = [decode_node(x, get) for x in g["nodes"]]
        anchor = next((x for x in nodes if x.name == g["anchor"]), None)
        steps.append(_Step(wrapped[key], Group(g["id"], nodes, anchor, list(g["inputs"]), list(g["outputs"])),
                           list(s["args"])))
    return SymbolicProgram(decode_graph(data["graph"], get), decode_graph(data["source"], get), dims, shapes, steps,
                           dict(data["kinds"]), float(data["compile_seconds"]))
