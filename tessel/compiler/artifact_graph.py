"""Graphs, op attributes and constant arrays as JSON plus raw byte blobs: the data half of a model
artifact (`tessel.compiler.artifact`). No pickle anywhere: what a file holds is data, never code.

A value is encoded as JSON where JSON has the type (None, bools, ints, strings, finite floats,
lists). Everything else is a one-key object whose key says the type: `{"t": [...]}` a tuple,
`{"d": [[key, value], ...]}` a dict (keys of any encodable type), `{"f": "nan"}` a non-finite float,
`{"n": [dtype, value]}` a numpy scalar, `{"a": blob}` a numpy array stored as a blob,
`{"dt": "float32"}` a numpy dtype. Plain JSON objects never appear untagged, so decoding is exact.

Arrays are stored as their raw C-order bytes (`Blobs`), named by their SHA-256, so a weight shared
by the source graph, the optimised graph and several specialisations is stored once; the dtype and
shape travel in the JSON.

Example:
    >>> import numpy as np
    >>> blobs = Blobs()
    >>> enc = encode({"axes": (0, 2), "eps": float("inf"), "w": np.arange(3, dtype="float32")}, blobs)
    >>> dec = decode(enc, blobs.get)
    >>> dec["axes"], dec["eps"], dec["w"].tolist()
    ((0, 2), inf, [0.0, 1.0, 2.0])
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from tessel.errors import ArtifactError
from tessel.frontend.graph import Graph, OpNode, Value


class Blobs:
    """The arrays of an artifact being written: content hash -> (raw bytes, dtype name, shape)."""

    def __init__(self):
        self.data: dict = {}

    def put(self, array) -> dict:
        """Store `array`; returns its JSON reference {"blob", "dtype", "shape"}."""
        from tessel.ir.dtypes import from_numpy_dtype

        a = np.ascontiguousarray(array) if np.ndim(array) else np.asarray(array)
        raw = a.tobytes()
        key = hashlib.sha256(raw).hexdigest()
        self.data.setdefault(key, raw)
        return {"blob": key, "dtype": from_numpy_dtype(a.dtype), "shape": list(a.shape)}

    def get(self, ref: dict):
        """The array `ref` names (for round trips in memory; the reader has its own)."""
        return array_of(self.data[ref["blob"]], ref)


def array_of(raw: bytes, ref: dict):
    """The read-only array of `raw` bytes with the dtype and shape of `ref`."""
    from tessel.ir.dtypes import numpy_dtype

    dt = numpy_dtype(ref["dtype"])
    shape = tuple(int(s) for s in ref["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != count * dt.itemsize:
        raise ValueError(f"blob {ref['blob'][:12]} holds {len(raw)} bytes; {ref['dtype']}{list(shape)} needs "
                         f"{count * dt.itemsize}")
    return np.frombuffer(raw, dtype=dt, count=count).reshape(shape)


def encode(x, blobs: Blobs, where: str = "value"):
    """`x` as tagged JSON (see the module docstring); raises ArtifactError naming `where` for a type
    it cannot hold."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return x if math.isfinite(x) else {"f": repr(x)}
    if isinstance(x, list):
        return [encode(v, blobs, where) for v in x]
    if isinstance(x, tuple):
        return {"t": [encode(v, blobs, where) for v in x]}
    if isinstance(x, dict):
        return {"d": [[encode(k, blobs, where), encode(v, blobs, where)] for k, v in x.items()]}
    if isinstance(x, np.ndarray):
        return {"a": blobs.put(x)}
    if isinstance(x, np.generic):
        return {"n": [np.asarray(x).dtype.str if x.dtype.name != "bfloat16" else "bfloat16", encode(x.item(), blobs)]}
    if isinstance(x, np.dtype):
        return {"dt": x.name}
    raise ArtifactError(f"{where}: a {type(x).__module__}.{type(x).__name__} cannot be stored in a model artifact")


def decode(x, get):
    """The value tagged JSON `x` encodes; `get(ref)` returns the array of a blob reference."""
    if isinstance(x, list):
        return [decode(v, get) for v in x]
    if not isinstance(x, dict):
        return x
    if len(x) != 1:
        raise ValueError(f"untagged object {sorted(x)[:4]}")
    (tag, v), = x.items()
    if tag == "t":
        return tuple(decode(e, get) for e in v)
    if tag == "d":
        return {_hashable(decode(k, get)): decode(e, get) for k, e in v}
    if tag == "f":
        return float(v)
    if tag == "a":
        return get(v)
    if tag == "n":
        from tessel.ir.dtypes import numpy_dtype

        dt = numpy_dtype(v[0]) if v[0] == "bfloat16" else np.dtype(v[0])
        return np.asarray(decode(v[1], get)).astype(dt)[()]
    if tag == "dt":
        return np.dtype(v)
    raise ValueError(f"unknown tag {tag!r}")


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def encode_graph(graph: Graph, blobs: Blobs, dropped: list) -> dict:
    """A graph as JSON: values (constants as blob references), nodes with their attributes, inputs,
    outputs and the importer's meta (keys that cannot be stored are appended to `dropped`)."""
    values = [[v.name, list(v.shape), v.dtype, None if v.data is None else blobs.put(v.data)]
              for v in graph.values.values()]
    nodes = [encode_node(n, blobs, graph.name) for n in graph.nodes.values()]
    meta = {}
    for key, val in getattr(graph, "meta", {}).items():
        try:
            meta[key] = _encode_meta(key, val, blobs)
        except ArtifactError:
            dropped.append(key)
    return {"name": graph.name, "values": values, "nodes": nodes, "inputs": list(graph.inputs),
            "outputs": list(graph.outputs), "meta": meta}


def _encode_meta(key: str, val, blobs: Blobs):
    if key in ("torch_out_spec", "torch_in_spec") and val is not None:
        try:
            from torch.utils._pytree import treespec_dumps

            return {"treespec": treespec_dumps(val)}
        except Exception as e:  # noqa: BLE001 - e.g. a pytree node type without a serialised name
            raise ArtifactError(f"meta '{key}': {e}") from None
    return {"value": encode(val, blobs, f"meta '{key}'")}


def decode_graph(data: dict, get) -> Graph:
    """The Graph `encode_graph` wrote; `get(ref)` returns the array of a blob reference."""
    g = Graph(data["name"])
    for name, shape, dtype, ref in data["values"]:
        g.values[name] = Value(name, tuple(int(s) for s in shape), dtype, None if ref is None else get(ref))
    for node in data["nodes"]:
        n = decode_node(node, get)
        g.nodes[n.name] = n
    g.inputs, g.outputs = list(data["inputs"]), list(data["outputs"])
    for key, val in data.get("meta", {}).items():
        if "treespec" in val:
            from torch.utils._pytree import treespec_loads

            g.meta[key] = treespec_loads(val["treespec"])
        else:
            g.meta[key] = decode(val["value"], get)
    return g


def encode_node(n: OpNode, blobs: Blobs, graph_name: str) -> list:
    """[name, op, inputs, outputs, attributes, origin] of one op node."""
    return [n.name, n.op, list(n.inputs), list(n.outputs),
            encode(n.attrs, blobs, f"graph '{graph_name}' {n.describe()} attributes"), n.origin]


def decode_node(data: list, get) -> OpNode:
    name, op, ins, outs, attrs, origin = data
    return OpNode(name, op, list(ins), list(outs), decode(attrs, get), origin)
