"""Small helpers of the ONNX importer: flat names of sequence items, op schemas and domains, and
the wording of error messages about where a value comes from.

>>> _clean("conv/1:0")
'conv_1_0'
"""

from __future__ import annotations


def sequence_item(name: str, k: int) -> str:
    """The flat name of item k of sequence `name` (a graph input or output).

    >>> sequence_item("seq", 2)
    'seq.2'
    """
    return f"{name}.{k}"


def _schema(node, opsets):
    """The schema of an ONNX op (of the default domain or another one onnx defines, such as
    ai.onnx.preview) that has a function body (plain or context-dependent), or None."""
    import onnx

    domain = _domain(node)
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1 if domain else 0), domain)
    except onnx.defs.SchemaError:
        return None
    return schema if schema.has_function or schema.has_context_dependent_function else None


def fn_opsets(fn, outer: dict) -> dict:
    ops = dict(outer)
    ops.update({(o.domain or ""): o.version for o in fn.opset_import})
    return ops


def _domain(node) -> str:
    return "" if node.domain in ("", "ai.onnx") else node.domain


def _qualified(node) -> str:
    return node.op_type if _domain(node) == "" else f"{node.domain}.{node.op_type}"


def _derived_text(src) -> str:
    if not src:
        return " (it depends only on constants)"
    return ", derived from model input(s) " + ", ".join(f"'{s}'" for s in sorted(src))


def _clean(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_")
    return out or "node"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _np_dtype(dtype: str):
    from tessel.ir.dtypes import numpy_dtype

    return numpy_dtype(dtype)
