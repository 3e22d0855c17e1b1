"""Generator of op graphs for the graph-pass oracle (tessel/fuzz/graph_case.py).

`graph_program(rng)` is `gen.random_graph` (ops whose shape rules accepted them) with idioms the
graph passes rewrite spliced in, so that the passes have something to do, and near misses they
must leave alone:

- pattern rules (tessel/passes/graph/pattern.py): x * sigmoid(x) (either operand order),
  exact GELU as torch and ONNX spell it (x * 0.5 * (1 + erf(x / sqrt 2)), (x * (1 + erf(x * 1/sqrt 2))) * 0.5),
  the tanh GELU (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))); sometimes with a constant a
  little off, which the rules must refuse;
- canonicalisation: identity layout ops (reshape to the same shape, transpose by the identity,
  cast to the same dtype, a slice of everything, zero padding, one-input concat), reshape and
  transpose chains, cast chains that widen exactly (float16 -> float32 -> float64) and ones that
  do not (float32 -> float16 -> float32 must stay two casts), linear with a constant weight and
  bias, scalar-constant identities (x + 0, x * 1, x / 1, pow(x, 1 | 2 | 3 | 0.5), x / c);
- constant folding: a subgraph of constants feeding the rest.

Example:
    >>> import random
    >>> g = graph_program(random.Random(4))
    >>> len(g.outputs) >= 1 and all(o in g.values for o in g.outputs)
    True
"""

from __future__ import annotations

import random

import numpy as np

from tessel.errors import TesselError

IDIOMS = ("silu", "gelu_erf", "gelu_erf_onnx", "gelu_tanh", "scalar", "identity", "chain", "cast_chain",
          "linear", "const_subgraph")


def _const(g, rng, value, shape=()):
    return g.add_const("c", np.full(shape, value, np.float32))


def _near(rng, value: float) -> float:
    """`value`, or now and then one a little off (a rule must refuse it)."""
    return value if rng.random() < 0.8 else value * rng.choice((1.01, 0.99, 1.5))


def idiom(g, rng: random.Random, x: str, kind: str) -> str:
    """Append one idiom of `kind` reading value `x` (float32); returns its result value."""
    shape = g.values[x].shape
    add = g.add_node
    if kind == "silu":
        (s,) = add("sigmoid", [x])
        return add("mul", [x, s] if rng.random() < 0.5 else [s, x])[0]
    if kind in ("gelu_erf", "gelu_erf_onnx"):
        div = rng.random() < 0.5
        (sc,) = add("div" if div else "mul", [x, _const(g, rng, _near(rng, 1.4142135623730951 if div else
                                                                         0.7071067811865476))])
        (e,) = add("erf", [sc])
        (p,) = add("add", [e, _const(g, rng, _near(rng, 1.0))])
        if kind == "gelu_erf":
            (h,) = add("mul", [x, _const(g, rng, _near(rng, 0.5))])
            return add("mul", [h, p])[0]
        (h,) = add("mul", [x, p])
        return add("mul", [h, _const(g, rng, _near(rng, 0.5))])[0]
    if kind == "gelu_tanh":
        (c,) = add("pow", [x, _const(g, rng, _near(rng, 3.0))])
        (k,) = add("mul", [c, _const(g, rng, _near(rng, 0.044715))])
        (s,) = add("add", [x, k])
        (a,) = add("mul", [s, _const(g, rng, _near(rng, 0.7978845608028654))])
        (t,) = add("tanh", [a])
        (p,) = add("add", [t, _const(g, rng, 1.0)])
        (h,) = add("mul", [x, _const(g, rng, 0.5)])
        return add("mul", [h, p])[0]
    if kind == "scalar":
        op, c = rng.choice((("add", 0.0), ("sub", 0.0), ("mul", 1.0), ("div", 1.0), ("pow", 1.0), ("pow", 2.0),
                            ("pow", 3.0), ("pow", 0.5), ("div", rng.choice((3.0, 0.25, -2.5))),
                            ("mul", rng.choice((0.0, -1.0, 2.0)))))
        cshape = rng.choice(((), (1,), shape))  # a full-shape constant: not a scalar, left alone
        if op == "pow" and c == 0.5:
            (x,) = add("abs", [x])
        return add(op, [x, _const(g, rng, c, cshape)])[0]
    if kind == "identity":
        nd = len(shape)
        r = rng.randrange(6)
        if r == 0:
            return add("reshape", [x], {"shape": tuple(shape)})[0]
        if r == 1:
            return add("transpose", [x], {"perm": tuple(range(nd))})[0]
        if r == 2:
            return add("cast", [x], {"dtype": "float32"})[0]
        if r == 3 and nd:
            return add("slice", [x], {"starts": (0,) * nd, "ends": tuple(shape)})[0]
        if r == 4:
            return add("pad", [x], {"pads": (0,) * (2 * nd)})[0]
        return add("concat", [x], {"axis": 0})[0] if nd else x
    if kind == "chain":
        if rng.random() < 0.5 and len(shape) >= 2:
            a = list(range(len(shape)))
            rng.shuffle(a)
            (y,) = add("transpose", [x], {"perm": tuple(a)})
            b = list(range(len(shape)))
            rng.shuffle(b)
            return add("transpose", [y], {"perm": tuple(b)})[0]
        n = int(np.prod(shape)) if shape else 1
        (y,) = add("reshape", [x], {"shape": (n,)})
        return add("reshape", [y], {"shape": tuple(shape) if rng.random() < 0.7 else (1, n)})[0]
    if kind == "cast_chain":
        mid, last = rng.choice((("float64", "float32"), ("float16", "float32"), ("float32", "float64"),
                                ("bfloat16", "float32")))
        if mid in ("float16", "bfloat16") and rng.random() < 0.5:  # an exact widening from 16 bits
            (x,) = add("cast", [x], {"dtype": mid})
            mid = "float32"
        (y,) = add("cast", [x], {"dtype": mid})
        return add("cast", [y], {"dtype": last})[0]
    if kind == "linear":
        if not shape:
            return x
        n = rng.choice((1, 3, 4, 8))
        w = g.add_const("w", (np.random.default_rng(rng.randrange(1 << 30)).standard_normal((n, shape[-1]))
                              ).astype(np.float32))
        ins = [x, w]
        if rng.random() < 0.6:
            ins.append(g.add_const("b", np.linspace(-1, 1, n, dtype=np.float32)))
        return add("linear", ins)[0]
    if kind == "const_subgraph":
        data = np.random.default_rng(rng.randrange(1 << 30)).standard_normal(shape[-1:] or ()).astype(np.float32)
        (c,) = add(rng.choice(("exp", "tanh", "neg", "abs")), [g.add_const("k", data)])
        (c,) = add(rng.choice(("add", "mul")), [c, _const(g, rng, rng.choice((0.5, 2.0)))])
        return add(rng.choice(("add", "mul", "maximum")), [x, c])[0]
    raise ValueError(f"unknown idiom {kind!r}")


def graph_program(rng: random.Random, idioms: int | None = None):
    """A random graph with idioms spliced in (see the module docstring)."""
    from tessel.fuzz.gen import random_graph

    g = random_graph(rng)
    floats = [v for v in g.values if g.values[v].dtype == "float32" and not g.values[v].is_const]
    last = g.outputs[0] if g.outputs else floats[0]
    outs = [last] if g.nodes else []
    for _ in range(idioms if idioms is not None else rng.choice((1, 1, 2, 3))):
        x = last if rng.random() < 0.6 else rng.choice(floats)
        try:
            y = idiom(g, rng, x, rng.choice(IDIOMS))
        except TesselError:
            continue  # a shape rule refused (e.g. concat of a 0-d value)
        if g.values[y].dtype == "float32":
            floats.append(y)
            last = y
        outs.append(y)
    outs = list(dict.fromkeys(o for o in outs if o not in g.inputs)) or [last]
    if len(outs) > 1 and rng.random() < 0.5:
        outs = outs[-1:]
    g.mark_outputs(outs)
    g.prune()
    return g


__all__ = ["IDIOMS", "graph_program", "idiom"]
