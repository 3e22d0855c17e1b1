"""Graph cases: the graph passes (tessel/passes/graph) under a differential oracle.

A `GraphCase` is a random op graph (tessel/fuzz/gen_graph.py), a graph-pass pipeline as data
(`[{"name", "params"}]` over `GRAPH_PASSES`, mutated like the tensor-IR pipelines: insert, delete,
swap, repeat, change a parameter), the fusion knobs, the seed of the inputs, and `compile`: also
build the rewritten graph with `tessel.compile(target="cpu")` (TVM). The oracle is in
tessel/fuzz/graph_oracle.py; the campaign target is "graph" (one of `--target all`'s mix).

`GRAPH_PASSES`: the rewriting passes the model compiler runs (`tessel.passes.graph.optimize`:
patterns, canonicalize, fold_constants, then all three again, prune, reorder), each rule of the
pattern and canonicalisation sets on its own ("rule:NAME"), and the tf32 weight layout rewrite.
`base_graph_pipeline()` is optimize's order.

The file form: `# tessel fuzz graph case v1`, JSON header lines, then the graph as one JSON object
(values with shapes and dtypes, constants with their data, nodes with attributes), so a reduced
case is readable and replays with `tessel fuzz --replay FILE` like a kernel case.

Example:
    >>> import random
    >>> from tessel.fuzz.gen_graph import graph_program
    >>> c = GraphCase(graph_program(random.Random(2)), base_graph_pipeline(), seed=5)
    >>> load_case(c.to_text()) == c
    True
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

import numpy as np

from tessel.errors import TesselError
from tessel.fuzz.case import FuzzError, split_header

HEADER = "# tessel fuzz graph case v1"
FOLD_LIMITS = (0, 1, 16, 4096, 1 << 24)


def _rules() -> dict:
    """name -> [rules] of the pattern and canonicalisation rule sets (looked up when called)."""
    from tessel.passes.graph import canonicalize, pattern

    out: dict = {}
    for r in (*pattern.DEFAULT_RULES, *canonicalize.RULES):
        out.setdefault(r.name, []).append(r)
    return out


def _run_graph_pass(name: str, graph, params: dict):
    from tessel.passes.graph import canonicalize, fold, pattern

    if name == "patterns":
        return pattern.apply_rules(graph, pattern.DEFAULT_RULES)
    if name == "canonicalize":
        return canonicalize.canonicalize(graph)
    if name == "fold_constants":
        return fold.fold_constants(graph, params.get("max_elements", fold.DEFAULT_MAX_ELEMENTS))
    if name == "prune":
        return graph.prune()
    if name == "reorder":
        return graph.reorder_topologically()
    if name == "tf32_k_major":
        from tessel.compiler import tf32_layout

        return tf32_layout.keep_tf32_weights_k_major(graph)
    if name.startswith("rule:"):
        rules = _rules().get(name[5:])
        if rules is None:
            raise FuzzError(f"graph pipeline: unknown rule {name[5:]!r}")
        return pattern.apply_rules(graph, rules)
    raise FuzzError(f"graph pipeline: unknown graph pass {name!r}")


def graph_pass_names() -> list:
    """Every graph pass a graph pipeline may name."""
    return ["patterns", "canonicalize", "fold_constants", "prune", "reorder", "tf32_k_major"] + \
        [f"rule:{n}" for n in sorted(_rules())]


def base_graph_pipeline() -> list:
    """The model compiler's graph passes, in its order (tessel.passes.graph.optimize)."""
    return [{"name": n} for n in ("patterns", "canonicalize", "fold_constants", "patterns", "canonicalize",
                                  "fold_constants", "prune", "reorder")]


def check_graph_pipeline(pipeline: list) -> None:
    names = set(graph_pass_names())
    for p in pipeline:
        if not isinstance(p, dict) or p.get("name") not in names:
            raise FuzzError(f"graph pipeline: bad entry {p!r}")
        extra = set(p.get("params", {})) - ({"max_elements"} if p["name"] == "fold_constants" else set())
        if extra:
            raise FuzzError(f"graph pipeline: pass {p['name']!r} takes no parameter(s) {sorted(extra)}")


def mutate_graph_pipeline(pipeline: list, rng: random.Random) -> tuple[list, str]:
    """One mutation of a graph pipeline: insert / delete / swap / repeat / param."""
    p = [dict(x) for x in pipeline]
    how = rng.choice(["insert", "insert", "param"] + (["delete", "swap", "repeat"] if p else []))
    if how == "insert" or (how == "param" and not any(x["name"] == "fold_constants" for x in p)):
        name = rng.choice(graph_pass_names())
        e = {"name": name}
        if name == "fold_constants" and rng.random() < 0.5:
            e["params"] = {"max_elements": rng.choice(FOLD_LIMITS)}
        p.insert(rng.randrange(len(p) + 1), e)
        how = "insert"
    elif how == "delete":
        del p[rng.randrange(len(p))]
    elif how == "swap" and len(p) > 1:
        i, j = rng.sample(range(len(p)), 2)
        p[i], p[j] = p[j], p[i]
    elif how == "param":
        i = rng.choice([k for k, x in enumerate(p) if x["name"] == "fold_constants"])
        p[i] = {"name": "fold_constants", "params": {"max_elements": rng.choice(FOLD_LIMITS)}}
    else:
        i = rng.randrange(len(p))
        p.insert(i + 1, dict(p[i]))
        how = "repeat"
    return p[:24], how


# -- the graph as JSON ---------------------------------------------------------------------------


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def graph_to_json(g) -> dict:
    vals = {}
    for v in g.values.values():
        d = {"shape": list(v.shape), "dtype": v.dtype}
        if v.is_const:
            d["data"] = np.asarray(v.data).astype(np.float64).ravel().tolist() if v.dtype.startswith(
                ("float", "bfloat")) else np.asarray(v.data).ravel().tolist()
        vals[v.name] = d
    nodes = [{"name": n.name, "op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
              "attrs": {k: list(a) if isinstance(a, tuple) else a for k, a in n.attrs.items()}}
             for n in g.nodes.values()]
    return {"name": g.name, "inputs": list(g.inputs), "outputs": list(g.outputs), "values": vals, "nodes": nodes}


def graph_from_json(d: dict):
    """The Graph of `graph_to_json` (built as stored: no shape rule runs, so a broken graph stays broken)."""
    from tessel.frontend.graph import Graph, OpNode, Value
    from tessel.ir.dtypes import numpy_dtype

    g = Graph(d["name"])
    for name, v in d["values"].items():
        data = None
        if "data" in v:
            data = np.asarray(v["data"], dtype=np.float64 if v["dtype"].startswith(("float", "bfloat")) else None)
            data = data.astype(numpy_dtype(v["dtype"])).reshape(tuple(v["shape"]))
        g.values[name] = Value(name, tuple(v["shape"]), v["dtype"], data)
    for n in d["nodes"]:
        g.nodes[n["name"]] = OpNode(n["name"], n["op"], list(n["inputs"]), list(n["outputs"]),
                                    {k: _tuples(a) for k, a in n["attrs"].items()}, "")
    g.inputs, g.outputs = list(d["inputs"]), list(d["outputs"])
    g._counter = len(g.values) + len(g.nodes)
    return g


@dataclass
class GraphCase:
    graph: object  # tessel.frontend.graph.Graph
    pipeline: list = field(default_factory=base_graph_pipeline)
    seed: int = 0
    compile: bool = False  # also tessel.compile the rewritten graph (TVM) and compare
    fuse: dict = field(default_factory=dict)  # max_group_ops / max_prologue_ops for fusion
    target: str = "graph"

    def meta(self) -> dict:
        return {"pipeline": self.pipeline, "seed": self.seed, "compile": self.compile, "fuse": self.fuse}

    def to_text(self) -> str:
        lines = [HEADER] + [f"# {k}: {json.dumps(v)}" for k, v in self.meta().items()]
        return "\n".join(lines) + "\n" + json.dumps(graph_to_json(self.graph), indent=None) + "\n"

    @staticmethod
    def from_text(text: str, where: str = "fuzz graph case") -> "GraphCase":
        meta, body = split_header(text, HEADER, "a tessel fuzz graph case", where)
        bad = set(meta) - {"pipeline", "seed", "compile", "fuse"}
        if bad:
            raise FuzzError(f"{where}: unknown header(s) {sorted(bad)}")
        try:
            graph = graph_from_json(json.loads("\n".join(body)))
        except (ValueError, KeyError, TypeError, TesselError) as e:
            raise FuzzError(f"{where}: the graph does not load: {e}") from None
        return GraphCase(graph, **meta)

    def key(self) -> str:
        return hashlib.sha256(self.to_text().encode()).hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, GraphCase) and self.to_text() == other.to_text()

    def replace(self, **changes) -> "GraphCase":
        d = {"graph": self.graph, **self.meta()}
        d.update(changes)
        return GraphCase(**d)


def load_case(text: str, where: str = "fuzz case"):
    """A kernel Case or a GraphCase, by the file's first line."""
    from tessel.fuzz.case import Case

    if text.startswith(HEADER):
        return GraphCase.from_text(text, where)
    return Case.from_text(text, where)


def fresh_graph_case(rng: random.Random, compile_rate: float = 0.1) -> GraphCase:
    from tessel.fuzz.gen_graph import graph_program

    return GraphCase(graph_program(rng), base_graph_pipeline(), rng.randrange(1 << 30),
                     compile=rng.random() < compile_rate)


def mutate_graph_case(case: GraphCase, rng: random.Random, compile_rate: float = 0.1):
    """(mutant, how): the pipeline mutated, the fusion knobs changed, or an idiom appended to the graph."""
    from tessel.compiler.model_program import copy_graph
    from tessel.fuzz.gen_graph import IDIOMS, idiom

    r = rng.random()
    if r < 0.45:
        p, how = mutate_graph_pipeline(case.pipeline, rng)
        return case.replace(pipeline=p), f"graph.pass.{how}"
    if r < 0.6:
        return case.replace(fuse={"max_group_ops": rng.choice((1, 2, 3, 32)),
                                  "max_prologue_ops": rng.choice((0, 1, 8))}), "graph.fuse"
    g = copy_graph(case.graph)
    floats = [v for v, val in g.values.items() if val.dtype == "float32" and not val.is_const]
    try:
        y = idiom(g, rng, rng.choice(floats), rng.choice(IDIOMS))
    except (TesselError, IndexError):
        return None, "graph.idiom"
    g.mark_outputs(list(dict.fromkeys(g.outputs + [y])) if rng.random() < 0.5 else [y])
    g.prune()
    return case.replace(graph=g, seed=rng.randrange(1 << 30), compile=rng.random() < compile_rate), "graph.idiom"


__all__ = ["GRAPH_PASSES", "GraphCase", "base_graph_pipeline", "fresh_graph_case", "graph_from_json",
           "graph_pass_names", "graph_to_json", "load_case", "mutate_graph_case", "mutate_graph_pipeline"]
GRAPH_PASSES = graph_pass_names  # (a function: the rule names are looked up when called)
