"""Generators of valid random programs: DSL kernels and graphs of registered ops.

Two sources, both seeded (`random.Random`), both returning unscheduled IR kernels that the
verifier accepts and the interpreter runs without an out-of-bounds access or a division by zero:

- `dsl_kernel(rng)`: a chain of DSL computes over 1-3 placeholders: elementwise expressions with
  numpy broadcasting, reductions (sum / max / min), contractions (sum of products, float32
  accumulation), index arithmetic with floordiv / floormod (wrapped into range by a floormod of the
  extent, so every index is in bounds by construction), conditionals (`where` on index and value
  comparisons), and mixed dtypes (float32 / float16 / float64 / int32 with casts). Math calls take
  arguments kept in their domain (`log(abs(x) + 1)`), so NaNs are rare and come from the program,
  not from chance.
- `graph_kernels(rng)`: a random graph of ops from the op registry (`tessel.frontend.ops`); an op
  whose shape rule refuses its inputs (a TesselError) is simply not added, so validity is the
  registry's, not ours. The graph is fused and each group lowered like the model compiler does
  (`tessel.compiler.lowering.lower_group`).

`program(rng)` picks one of them. Small extents (1..16) keep the interpreter fast.

Example:
    >>> import random
    >>> from tessel.ir.verify import verify
    >>> k = dsl_kernel(random.Random(3))
    >>> verify(k) is None
    True
"""

from __future__ import annotations

import random

from tessel.errors import TesselError
from tessel.ir.nodes import Kernel

EXTENTS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)
FLOATS = ("float32", "float32", "float32", "float16", "float64")
TEMPLATE_SHARE = 0.07  # of CPU programs: one a CPU template takes (template_program)
SAFE_MATH = ("tanh", "sigmoid", "sin", "cos", "erf", "abs", "floor", "ceil", "exp", "log", "sqrt")


class _Gen:
    """One DSL program under construction: the tensors made so far and a name counter."""

    def __init__(self, rng: random.Random):
        import tessel.ir.dsl as dsl

        self.dsl = dsl
        self.rng = rng
        self.inputs: list = []
        self.tensors: list = []  # every tensor usable as an operand (inputs and computes)
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    # -- operands ------------------------------------------------------------------------------
    def shape(self, rank: int | None = None) -> tuple:
        rank = rank or self.rng.choice((1, 2, 2, 3))
        return tuple(self.rng.choice(EXTENTS) for _ in range(rank))

    def placeholder(self, shape=None, dtype=None):
        dtype = dtype or self.rng.choice(FLOATS + ("int32",))
        t = self.dsl.placeholder(shape or self.shape(), dtype, name=self.name("in"))
        self.inputs.append(t)
        self.tensors.append(t)
        return t

    def load(self, t, idx, out_shape):
        """t read at output index `idx` with broadcasting (trailing dims aligned; extent-1 dims
        read 0; a dim of another extent is wrapped by floormod), sometimes through index arithmetic."""
        rng = self.rng
        exprs = []
        off = len(idx) - t.ndim
        for d, ext in enumerate(t.shape):
            src = idx[d + off] if d + off >= 0 else None
            src_ext = out_shape[d + off] if d + off >= 0 else 1
            if ext == 1:
                exprs.append(0)
                continue
            if src is None:
                exprs.append(rng.randrange(ext))
                continue
            e = src
            if rng.random() < 0.3:  # index arithmetic: (a*i + b*j + c) // q, wrapped into range
                other = rng.choice(idx)
                e = src * rng.choice((1, 2, 3)) + other * rng.choice((0, 1, 2)) + rng.randrange(4)
                if rng.random() < 0.5:
                    e = e // rng.choice((1, 2, 3, 4))
                e = e % ext
            elif src_ext != ext:
                e = e % ext
            exprs.append(e)
        return t[tuple(exprs)]

    def leaf(self, idx, out_shape, dtype):
        rng = self.rng
        r = rng.random()
        if r < 0.15 or not self.tensors:
            if dtype.startswith("int"):
                return self.dsl.const(rng.randint(-4, 4), dtype)
            return self.dsl.const(round(rng.uniform(-2, 2), 2), dtype)
        if r < 0.22 and idx:  # an index as a value
            v = rng.choice(idx)
            return v.astype(dtype)
        t = rng.choice(self.tensors)
        e = self.load(t, idx, out_shape)
        return e if e.dtype == dtype else e.astype(dtype)

    def expr(self, idx, out_shape, dtype, depth):
        rng = self.rng
        dsl = self.dsl
        if depth <= 0 or rng.random() < 0.25:
            return self.leaf(idx, out_shape, dtype)
        r = rng.random()
        is_float = not dtype.startswith("int")
        if r < 0.45:
            a = self.expr(idx, out_shape, dtype, depth - 1)
            b = self.expr(idx, out_shape, dtype, depth - 1)
            ops = ["add", "sub", "mul", "max", "min"] + (["div"] if is_float else ["floordiv", "floormod"])
            op = rng.choice(ops)
            if op == "div":
                return a / (dsl.abs(b) + dsl.const(1.0, dtype))
            if op in ("floordiv", "floormod"):
                q = dsl.const(rng.randint(1, 5), dtype)
                return a // q if op == "floordiv" else a % q
            return {"add": a + b, "sub": a - b, "mul": a * b,
                    "max": dsl.maximum(a, b), "min": dsl.minimum(a, b)}[op]
        if r < 0.65 and is_float:
            a = self.expr(idx, out_shape, dtype, depth - 1)
            f = rng.choice(SAFE_MATH)
            if f == "exp":
                return dsl.exp(dsl.tanh(a))
            if f == "log":
                return dsl.log(dsl.abs(a) + dsl.const(1.0, dtype))
            if f == "sqrt":
                return dsl.sqrt(dsl.abs(a))
            return getattr(dsl, f)(a)
        if r < 0.85:  # conditional: on an index comparison or a value comparison
            return dsl.where(self.cond(idx, out_shape, dtype, depth), self.expr(idx, out_shape, dtype, depth - 1),
                             self.expr(idx, out_shape, dtype, depth - 1))
        other = rng.choice(("float32", "float16", "int32", "float64"))  # mixed dtypes through casts
        return self.expr(idx, out_shape, other, depth - 1).astype(dtype)

    def cond(self, idx, out_shape, dtype, depth):
        """A bool: an index comparison, a value against a threshold (fractional ones too, so a
        comparison done on truncated values differs), two values compared, or two such bools
        compared or combined (bool == bool, bool != bool, and, or)."""
        rng, dsl = self.rng, self.dsl
        r = rng.random()
        if idx and r < 0.35:
            i, j = rng.choice(idx), rng.choice(idx)
            return (i < j + rng.randrange(3)) if rng.random() < 0.5 else (i % 2).eq(0)
        if r < 0.8 or depth <= 1:
            c = self.expr(idx, out_shape, dtype, depth - 1)
            if rng.random() < 0.3:
                other = self.expr(idx, out_shape, dtype, depth - 1)
            else:
                t = rng.choice((0, 0.5, -0.5, 1.5, 0.25)) if not dtype.startswith("int") else rng.randint(-3, 3)
                other = dsl.const(t, dtype)
            op = rng.choice(("gt", "gt", "lt", "ge", "le", "eq", "ne") if dtype.startswith("int")
                            else ("gt", "gt", "lt", "ge", "le"))
            return {"gt": lambda: c > other, "lt": lambda: c < other, "ge": lambda: c >= other,
                    "le": lambda: c <= other, "eq": lambda: c.eq(other), "ne": lambda: c.ne(other)}[op]()
        a, b = self.cond(idx, out_shape, dtype, depth - 1), self.cond(idx, out_shape, dtype, depth - 1)
        op = rng.choice(("eq", "ne", "and", "or"))
        return a.eq(b) if op == "eq" else a.ne(b) if op == "ne" else (a & b) if op == "and" else (a | b)

    # -- stages -------------------------------------------------------------------------------------
    def elementwise(self):
        rng = self.rng
        base = rng.choice(self.tensors)
        shape = base.shape
        if rng.random() < 0.3 and len(shape) < 3:  # broadcast up a dimension
            shape = (rng.choice(EXTENTS),) + shape
        dtype = rng.choice(FLOATS + ("int32",)) if rng.random() < 0.3 else base.dtype
        depth = rng.randint(1, 3)

        def f(*idx):
            e = self.expr(list(idx), shape, dtype, depth)
            return e if e.dtype == dtype else e.astype(dtype)

        return self.dsl.compute(shape, f, name=self.name("e"))

    def reduction(self):
        rng = self.rng
        t = rng.choice([x for x in self.tensors if x.ndim >= 1])
        axis = rng.randrange(t.ndim)
        k = self.dsl.reduce_axis(t.shape[axis], name=self.name("k"))
        out_shape = tuple(s for d, s in enumerate(t.shape) if d != axis) or (1,)
        comb = rng.choice(("sum", "sum", "max", "min"))
        acc = "float32" if t.dtype == "float16" and comb == "sum" else t.dtype

        def f(*idx):
            idx = list(idx) if t.ndim > 1 else []
            full = idx[:axis] + [k] + idx[axis:]
            v = t[tuple(full)]
            if rng.random() < 0.3 and not acc.startswith("int"):
                v = v * self.leaf(list(idx) or [k], out_shape, t.dtype)
            v = v if v.dtype == acc else v.astype(acc)
            return getattr(self.dsl, comb)(v, axis=k)

        return self.dsl.compute(out_shape, f, name=self.name("r"))

    def contraction(self):
        rng = self.rng
        m, n, kk = (rng.choice(EXTENTS) for _ in range(3))
        dt = rng.choice(("float32", "float16"))
        a = self.placeholder((m, kk), dt)
        b = self.placeholder((kk, n), dt) if rng.random() < 0.7 else self.placeholder((n, kk), dt)
        k = self.dsl.reduce_axis(kk, name=self.name("k"))
        trans = b.shape[0] != kk or (n == kk and rng.random() < 0.5 and b.shape == (n, kk))

        def f(i, j):
            bv = b[j, k] if trans and b.shape == (n, kk) else b[k, j]
            return self.dsl.sum(a[i, k].astype("float32") * bv.astype("float32"), axis=k)

        return self.dsl.compute((m, n), f, name=self.name("c"))


def dsl_kernel(rng: random.Random, stages: int | None = None) -> Kernel:
    """A random DSL program lowered to an unscheduled kernel (see the module docstring).

    >>> import random
    >>> k = dsl_kernel(random.Random(0), stages=2)
    >>> k.target
    'cpu'
    """
    g = _Gen(rng)
    for _ in range(rng.randint(1, 3)):
        g.placeholder()
    outs = []
    for _ in range(stages or rng.randint(1, 4)):
        kind = rng.random()
        try:
            if kind < 0.5:
                t = g.elementwise()
            elif kind < 0.8:
                t = g.reduction()
            else:
                t = g.contraction()
        except TesselError:
            continue  # a combination the DSL refuses (its own checks decide): try another stage
        g.tensors.append(t)
        outs.append(t)
    if not outs:
        a = g.tensors[0]
        outs.append(g.dsl.compute(a.shape, lambda *i: a[i], name=g.name("e")))
    params = list(g.inputs) + [outs[-1]]
    if len(outs) > 1 and rng.random() < 0.3:
        params.insert(len(g.inputs), outs[0])  # an intermediate that is also an output
    used = _reachable(params[len(g.inputs):])
    params = [t for t in g.inputs if id(t) in used] + params[len(g.inputs):]
    return g.dsl.lower(params, name=f"fz{rng.randrange(10**6)}")


def _reachable(outputs) -> set:
    seen, stack = set(), list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.op is not None:
            stack.extend(t.op.inputs)
    return seen


# ---------------------------------------------------------------------------------------------
# Graphs of registered ops
# ---------------------------------------------------------------------------------------------

UNARY = ("relu", "exp", "tanh", "sigmoid", "neg", "abs", "silu", "gelu", "erf", "sin", "cos", "floor")
BINARY = ("add", "sub", "mul", "maximum", "minimum")
REDUCE = ("reduce_sum", "reduce_max", "reduce_min", "reduce_mean")


def random_graph(rng: random.Random, nodes: int | None = None):
    """A random graph of registered ops whose shape rules accepted every node.

    >>> import random
    >>> g = random_graph(random.Random(1), nodes=4)
    >>> len(g.outputs) >= 1
    True
    """
    from tessel.frontend.graph import Graph

    g = Graph(f"fzg{rng.randrange(10**6)}")
    values = []
    for i in range(rng.randint(1, 3)):
        shape = tuple(rng.choice(EXTENTS[:8]) for _ in range(rng.choice((1, 2, 2, 3))))
        values.append(g.add_input(f"x{i}", shape, "float32"))
    target = nodes or rng.randint(1, 6)
    tries = 0
    while len(g.nodes) < target and tries < 40:
        tries += 1
        r = rng.random()
        a = rng.choice(values)
        shape = g.values[a].shape
        if not shape:
            continue
        try:
            if r < 0.3:
                outs = g.add_node(rng.choice(UNARY), [a])
            elif r < 0.55:
                outs = g.add_node(rng.choice(BINARY), [a, rng.choice(values)])
            elif r < 0.7:
                axes = sorted(rng.sample(range(len(shape)), rng.randint(1, len(shape))))
                outs = g.add_node(rng.choice(REDUCE), [a], {"axes": tuple(axes), "keepdims": rng.random() < 0.5})
            elif r < 0.8:
                outs = g.add_node(rng.choice(("softmax", "log_softmax")), [a], {"axis": rng.randrange(len(shape))})
            elif r < 0.9:
                outs = g.add_node("matmul", [a, rng.choice(values)])
            else:
                perm = list(range(len(shape)))
                rng.shuffle(perm)
                outs = g.add_node("transpose", [a], {"perm": tuple(perm)})
        except TesselError:
            continue  # the op's shape rule refused these inputs
        values.extend(outs)
    last = values[-1]
    g.mark_outputs([last])
    return g


def graph_kernels(rng: random.Random, nodes: int | None = None) -> list[Kernel]:
    """The unscheduled kernels of a random graph's fused groups (as the model compiler lowers them).

    >>> import random
    >>> ks = graph_kernels(random.Random(2), nodes=3)
    >>> all(k.params for k in ks)
    True
    """
    from tessel.compiler.lowering import lower_group
    from tessel.passes.graph.fusion import fuse

    g = random_graph(rng, nodes)
    if not g.nodes:
        return []
    out = []
    for group in fuse(g):
        try:
            out.append(lower_group(g, group).ir)
        except TesselError:
            continue  # a group with nothing to compute (e.g. pure data movement the fuser left alone)
    return out


def template_program(rng: random.Random) -> Kernel:
    """A program a specific CPU template or a special path of cpu.generic takes whole (small shapes,
    tessel/fuzz/suite.py builders): a 3x3 convolution (cpu.conv: direct, Winograd where its knobs
    pick it), channels-last with the pre-transposed weight, a pointwise or strided stem
    convolution (cpu.conv_nchw), a depthwise one (cpu.depthwise), attention (cpu.attention, causal
    or not), a GEMM with transposes / batch / epilogue of sizes the register tiles do and do not
    divide, a long-row reduction (cpu_reduce's vector accumulators), a padding copy (cpu_pad).

    >>> import random
    >>> from tessel.schedules.generic import default_cpu_template
    >>> names = {default_cpu_template(template_program(random.Random(s))).name for s in range(12)}
    >>> len(names) >= 3
    True
    """
    from tessel.fuzz import suite

    r = rng.random()
    epi = rng.choice(("relu", "bias_clip", None))
    if r < 0.25:  # 3x3 convolutions (stride 1: Winograd applies when cpu.conv's knobs choose it)
        # (Winograd's register tile wants 16 output channels; its multi-image path a batch of 2)
        c, f = rng.choice((2, 4, 8)), rng.choice((8, 16, 16))
        h, w = rng.choice((4, 6, 8)), rng.choice((6, 8, 10))
        return suite.conv(rng.choice((1, 1, 2)), c, f, h, w, stride=rng.choice((1, 1, 1, 2)), epilogue=epi,
                          layout="CKF" if rng.random() < 0.3 else None)
    if r < 0.38:  # pointwise / stem convolutions
        if rng.random() < 0.5:
            return suite.conv(1, rng.choice((8, 16)), rng.choice((16, 32)), 16, 16, k=1, pad=0, epilogue=epi)
        return suite.conv(1, 3, rng.choice((8, 16)), rng.choice((12, 16)), rng.choice((12, 16)), stride=2,
                          epilogue=epi)
    if r < 0.5:  # depthwise
        c = rng.choice((4, 8, 16))
        hw = rng.choice((7, 9, 12))
        return suite.conv(1, c, c, hw, hw, stride=rng.choice((1, 2)), groups=c,
                          epilogue=rng.choice(("bias_clip", None)))
    if r < 0.6:
        lq, s_ = rng.choice((4, 8, 16)), rng.choice((4, 8, 12, 16))
        e = rng.choice((8, 16))
        return suite.attention(rng.choice((1, 2)), rng.choice((1, 2)), lq, s_, e, e, causal=rng.random() < 0.4)
    if r < 0.78:
        m, n, k = rng.choice((5, 16, 17, 24, 32)), rng.choice((16, 20, 32, 33, 48)), rng.choice((8, 16, 20, 36))
        return suite.matmul(m, n, k, "float32", a_t=rng.random() < 0.2, b_t=rng.random() < 0.3,
                            batch=rng.choice((None, None, 2)), epilogue=rng.choice((None, None, "bias_relu")))
    if r < 0.92:
        if rng.random() < 0.7:
            return suite.row_reduce(rng.randint(1, 7), rng.choice((33, 64, 100, 150, 257)),
                                    rng.choice(("sum", "max", "min")))
        return suite.column_sum(rng.choice((16, 33)), rng.choice((16, 37)))
    pads = [rng.randint(0, 2) for _ in range(4)]
    return suite.pad_stage(rng.randint(1, 2), rng.randint(1, 3), rng.randint(3, 10), rng.randint(3, 12), *pads)


def program(rng: random.Random) -> Kernel:
    """One random unscheduled kernel: a DSL program (mostly), one group of a random graph, or a
    program a CPU template takes (`template_program`).

    >>> import random
    >>> isinstance(program(random.Random(5)), Kernel)
    True
    """
    if rng.random() < TEMPLATE_SHARE:
        return template_program(rng)
    if rng.random() < 0.35:
        for _ in range(3):
            try:
                ks = graph_kernels(rng)
            except TesselError:
                continue
            if ks:
                return rng.choice(ks)
    return dsl_kernel(rng)


__all__ = ["TEMPLATE_SHARE", "dsl_kernel", "graph_kernels", "program", "random_graph", "template_program"]
