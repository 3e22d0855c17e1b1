"""Constant folding: evaluate ops whose inputs are all constants, once, at compile time.

Each such node runs through its op's numpy `reference` and its outputs become constants (the
values keep their names, so nothing downstream changes). This is what pre-transposes constant
weights after canonicalisation turns `linear` into `matmul(x, transpose(w))`.

Bounds, so that folding never costs more than it saves:
- `max_elements`: a node whose inputs or outputs hold more elements than this is left alone
  (evaluating it would materialise a second copy of a huge constant at compile time);
- a node whose output is much larger than all of its inputs together (`expand` of a scalar,
  broadcasting) is left alone too: the small form fuses into its consumers for free, the folded
  one would be read from memory.

Example:
    >>> import numpy as np
    >>> from tessel.frontend.graph import Graph
    >>> g = Graph()
    >>> x = g.add_input("x", (2,), "float32")
    >>> c = g.add_const("c", np.array([1.0, 2.0], np.float32))
    >>> (d,) = g.add_node("mul", [c, c])
    >>> (y,) = g.add_node("add", [x, d])
    >>> g.mark_outputs([y])
    >>> fold_constants(g)
    1
    >>> g.values[d].data.tolist()
    [1.0, 4.0]
"""

from __future__ import annotations

from tessel.errors import TesselError
from tessel.frontend.graph import Graph

DEFAULT_MAX_ELEMENTS = 1 << 24  # 64 MiB of float32
_GROWTH = 4  # outputs up to this many times the inputs' size still fold
_SMALL = 4096  # ... and outputs this small always fold


def fold_constants(graph: Graph, max_elements: int = DEFAULT_MAX_ELEMENTS) -> int:
    """Fold every node whose inputs are all constants (within the bounds above), in place;
    returns how many nodes were folded."""
    import numpy as np

    from tessel.frontend.ops import get_op
    from tessel.ir.dtypes import numpy_dtype

    folded = 0
    for node in graph.topo_order():
        ins = [graph.values[v] for v in node.inputs if v is not None]
        if not ins or not all(v.is_const for v in ins):
            continue
        outs = [graph.values[v] for v in node.outputs]
        in_size = sum(_size(v.shape) for v in ins)
        out_size = sum(_size(v.shape) for v in outs)
        if max(in_size, out_size) > max_elements or (out_size > _GROWTH * in_size and out_size > _SMALL):
            continue
        args = [graph.values[v].data if v is not None else None for v in node.inputs]
        try:
            results = get_op(node.op, node.describe()).reference(args, node.attrs)
        except TesselError:
            raise
        except Exception as e:  # noqa: BLE001 - a reference that cannot run here: keep the node
            raise TesselError(f"constant folding {node.describe()}: its numpy reference failed: {e}") from e
        for v, arr in zip(outs, results):
            arr = np.asarray(arr).astype(numpy_dtype(v.dtype), copy=False).reshape(v.shape)
            v.data = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # (keeps 0-d arrays 0-d)
        graph.remove_node(node.name)
        folded += 1
    if folded:
        graph.prune()
    return folded


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
