"""Translation of expressions into Python source: the half of the translator that statements
(translate.py) build on, and `translate_expr`, which evaluates one expression.

An expression becomes a Python expression string plus the statements it needs first: bounds
checks of loads (skipped for dimensions that interval analysis proves in range), temporaries for
operands used twice (min / max) or nested too deeply for the parser, and an if/else for a
Select whose branches need statements of their own (so only the chosen branch runs). Values
follow runtime.py's representation: numpy scalars for floats, wrapped Python ints, bools. Each
integer expression carries its value range, which decides where a two's-complement wrap and a
bounds check are needed.

Example:
    >>> from tessel.ir.nodes import Var
    >>> print(translate_expr((Var("x") // 4) % 8).source.splitlines()[-1])  # provably in range
        return ((v_x_1 // 4) % 8)
    >>> print(translate_expr(Var("x") + 1).source.splitlines()[-1])  # may overflow: wraps
        return (((((v_x_1 + 1)) + 2147483648) & 4294967295) - 2147483648)
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from tessel.errors import DTypeError, ShapeError, VerifyError
from tessel.ir.bounds import binop_range
from tessel.ir.dtypes import is_bool, is_float, is_int, numpy_dtype
from tessel.ir.interp.runtime import GLOBALS, float_to_int, from_float, int_range, math_func, wrap_int, wrap_source
from tessel.ir.nodes import (
    COMPARE_OPS, LOGIC_OPS, MATH_FUNCS, Binary, Buffer, Call, Cast, Const, Expr, Load, Not, Select, Var, walk,
)

# An expression's Python source, its value range (ints and bools; None for floats) and how deeply
# its source nests (deep sources are moved into temporaries: the parser limits nesting).
Src = namedtuple("Src", "src rng depth")
_PY_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "floormod": "%",
           "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "and": "&", "or": "|"}
_WIDER = {("float16", "float32"), ("float16", "float64"), ("bfloat16", "float32"), ("bfloat16", "float64"),
          ("float32", "float64")}
_SIMPLE = re.compile(r"^(?:[A-Za-z_]\w*|\d+|\(-\d+\)|True|False)$")
_MAX_DEPTH = 24  # source nesting before a temporary
_MAX_NODES = 1_000_000  # expression nodes translated per kernel


@dataclass
class ExprTranslation:
    """An expression translated to a Python function of its variables' and buffers' values."""

    source: str
    fn: Callable
    vars: tuple  # free Vars, in the order fn's first argument lists their values
    buffers: tuple  # Buffers it loads from, in the order of fn's second argument


class _Fn:
    """One generated Python function: name, parameters, lines."""

    def __init__(self, name: str, params: tuple):
        self.name, self.params, self.lines, self.yields = name, params, [], False

    def source(self) -> str:
        return "\n".join([f"def {self.name}({', '.join(self.params)}):"] + (self.lines or ["    pass"]))


def _fits(rng, dtype: str) -> bool:
    lo, hi = int_range(dtype)
    return rng is not None and lo <= rng[0] and rng[1] <= hi


def _int_src(v: int) -> str:
    return str(v) if v >= 0 else f"({v})"



class ExprTranslator:
    """Translates expressions; translate.py's statement translator extends it."""

    def __init__(self, kernel: str):
        self.kernel = kernel
        self.glob = dict(GLOBALS)
        self.fns: list[_Fn] = []
        self.cur: _Fn | None = None
        self.indent = 1
        self.count = 0
        self.nodes = 0
        self.vars: dict[Var, tuple] = {}  # Var -> (python name, range)
        self.bufs: dict[str, tuple] = {}  # buffer name -> (Buffer, python name, .item name or None, hooks)
        self.sites: list[str] = []  # statement sites (race messages), numbered from 1 in the text
        self.shapes: dict[str, tuple] = {}  # symbolic buffer name -> source of each dim (names or ints)
        self._helpers: dict = {}

    # -- plumbing ------------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{re.sub(r'[^0-9A-Za-z_]', '_', base)}_{self.count}"

    def emit(self, line: str) -> None:
        self.cur.lines.append("    " * self.indent + line)

    def open_fn(self, name: str, params: tuple) -> _Fn:
        fn = _Fn(name, params)
        self.fns.append(fn)
        self.cur = fn
        return fn

    def source(self) -> str:
        return "\n\n".join(f.source() for f in self.fns) + "\n"

    def helper(self, key, make) -> str:
        """The global name under which generated code reaches `make()` (made once)."""
        name = self._helpers.get(key)
        if name is None:
            name = self._helpers[key] = self.fresh("_h_" + "_".join(str(k) for k in key))
            self.glob[name] = make()
        return name

    def error(self, cls, msg: str):
        return cls(f"kernel '{self.kernel}': {msg}")

    @contextmanager
    def bind(self, var: Var, name: str, rng):
        old = self.vars.get(var)
        self.vars[var] = (name, rng)
        try:
            yield
        finally:
            if old is None:
                del self.vars[var]
            else:
                self.vars[var] = old

    def dims(self, buf: Buffer) -> tuple:
        """The source of each dim of `buf`: ints, or names of temporaries holding a symbolic dim
        (emitted here, once per binding)."""
        out = []
        for d in buf.shape:
            if isinstance(d, Expr):
                v = self.expr(d)
                t = self.fresh(f"d_{buf.name}")
                self.emit(f"{t} = {v.src}")
                self.emit(f"if {t} < 0: _negative_dim({self.kernel!r}, {buf.name!r}, {t})")
                out.append(t)
            else:
                out.append(str(d))
        return tuple(out)

    def size_src(self, dims: tuple) -> str:
        return " * ".join(dims) or "1"

    def node(self, buf: Buffer) -> str:
        """Source of the Buffer node to hand to the runtime: the node itself, or for a symbolic
        buffer a copy with the run's int shape (`_concrete`), so Refs and shadows see ints."""
        node = self.helper(("node", buf.name, self.fresh("")), lambda b=buf: b)
        dims = self.shapes.get(buf.name)
        if dims is None:
            return node
        return f"_concrete({node}, ({''.join(d + ', ' for d in dims)}))"

    def bind_buffer(self, buf: Buffer, source: str, track: bool = False, dims: tuple | None = None) -> None:
        """Emit `name = source` for a buffer's flat array and enter it into scope; with `track`,
        also bind its race-checking hooks `(read, write) = _rc[0](array, buffer)` (race.py), which
        take the thread's actor `_act` (`_rc[1]`).
        `dims`: the dims' sources of a symbolic buffer (see `dims`)."""
        if buf.symbolic:
            self.shapes[buf.name] = dims if dims is not None else self.dims(buf)
        else:
            self.shapes.pop(buf.name, None)
        name = self.fresh("b_" + buf.name)
        self.emit(f"{name} = {source}")
        item = None
        if not is_float(buf.dtype):  # ints and bools are read as Python values
            item = name + "_item"
            self.emit(f"{item} = {name}.item")
        hooks = None
        if track:
            node = self.node(buf)
            hooks = (name + "_rd", name + "_wr")
            self.emit(f"{hooks[0]}, {hooks[1]} = _rc[0]({name}, {node})")
        self.bufs[buf.name] = (buf, name, item, hooks)

    def site(self, text: str) -> int:
        """Number a load / store site (its id in `sites`); the text is cut to a readable length."""
        if len(text) > 90:
            text = text[:87] + "..."
        self.sites.append(f"{text} (access {len(self.sites) + 1})")
        return len(self.sites) - 1

    def access_site(self, what: str, buf: Buffer, indices: tuple) -> int:
        return self.site(f"{what} {buf.name}[{', '.join(str(i) for i in indices)}]")

    def hoist(self, e: Src) -> Src:
        """`e` as a simple name or literal (a temporary when needed), safe to repeat."""
        if _SIMPLE.match(e.src):
            return e
        t = self.fresh("t")
        self.emit(f"{t} = {e.src}")
        return Src(t, e.rng, 0)

    # -- expressions ---------------------------------------------------------------------------

    def expr(self, e: Expr) -> Src:
        self.nodes += 1
        if self.nodes > _MAX_NODES:  # shared subtrees of a DAG are translated once per use
            raise self.error(VerifyError, f"expressions expand to more than {_MAX_NODES} nodes when shared "
                                          f"subexpressions are counted once per use; too large to interpret")
        if isinstance(e, Var):
            bound = self.vars.get(e)
            if bound is None:
                raise self.error(VerifyError, f"variable '{e.name}' ({e.dtype}) is used where no loop or let binds it")
            return Src(bound[0], bound[1], 0)
        if isinstance(e, Const):
            return self.const(e.value, e.dtype)
        method = {Binary: self.binary, Not: self.not_, Select: self.select, Cast: self.cast, Call: self.call,
                  Load: self.load}.get(type(e))
        if method is None:
            raise self.error(VerifyError, f"cannot interpret the expression node {type(e).__name__}")
        out = method(e)
        return self.hoist(out) if out.depth > _MAX_DEPTH else out

    def const(self, value, dtype: str) -> Src:
        if is_float(dtype):
            return Src(self.helper(("c", dtype, repr(value)), lambda: from_float(dtype)(value)), None, 0)
        if is_bool(dtype):
            return Src("True" if value else "False", (int(value), int(value)), 0)
        v = wrap_int(value, dtype)
        return Src(_int_src(v), (v, v), 0)

    def binary(self, e: Binary) -> Src:
        if e.a.dtype != e.b.dtype:
            raise self.error(DTypeError, f"operands of '{e.op}' have dtypes {e.a.dtype} and {e.b.dtype}")
        a, b = self.expr(e.a), self.expr(e.b)
        dt, op, depth = e.a.dtype, e.op, max(a.depth, b.depth) + 1
        if op in COMPARE_OPS:
            return Src(f"({a.src} {_PY_OPS[op]} {b.src})", (0, 1), depth)
        if op in LOGIC_OPS:
            if not is_bool(dt):
                raise self.error(DTypeError, f"'{op}' needs bool operands, got {dt}")
            return Src(f"({a.src} {_PY_OPS[op]} {b.src})", (0, 1), depth)
        if is_bool(dt):
            raise self.error(DTypeError, f"arithmetic '{op}' on bool operands")
        if op in ("min", "max"):
            a, b = self.hoist(a), self.hoist(b)
            cmp = "<" if op == "min" else ">"
            if is_float(dt):  # NaN propagates, as numpy.minimum / maximum do
                return Src(f"({a.src} if ({a.src} {cmp} {b.src} or {a.src} != {a.src}) else {b.src})", None, 1)
            return Src(f"({a.src} if {a.src} {cmp} {b.src} else {b.src})", binop_range(op, a.rng, b.rng), 1)
        if is_float(dt):
            return Src(f"({a.src} {_PY_OPS[op]} {b.src})", None, depth)
        if op == "div":
            raise self.error(DTypeError, f"'div' is true division, for floats; on {dt} use floordiv / floormod")
        rng = binop_range(op, a.rng, b.rng)
        if op in ("floordiv", "floormod") and not (b.rng[0] == b.rng[1] != 0):
            src = f"_{op}({a.src}, {b.src}, {self.kernel!r})"
            if rng is None and op == "floormod":
                rng = int_range(dt)
        else:
            src = f"({a.src} {_PY_OPS[op]} {b.src})"
        if not _fits(rng, dt):
            return Src(wrap_source(src, dt), int_range(dt), depth + 2)
        return Src(src, rng, depth)

    def not_(self, e: Not) -> Src:
        if not is_bool(e.a.dtype):
            raise self.error(DTypeError, f"'not' needs a bool operand, got {e.a.dtype}")
        a = self.expr(e.a)
        return Src(f"(not {a.src})", (0, 1), a.depth + 1)

    def branch(self, e: Expr):
        """Translate `e` into separate lines, one level deeper (a branch of a Select)."""
        saved = self.cur.lines
        self.cur.lines = []
        self.indent += 1
        try:
            out = self.expr(e)
            return self.cur.lines, out
        finally:
            self.cur.lines = saved
            self.indent -= 1

    def select(self, e: Select) -> Src:
        if not is_bool(e.cond.dtype):
            raise self.error(DTypeError, f"select condition has dtype {e.cond.dtype}, expected bool")
        if e.t.dtype != e.f.dtype:
            raise self.error(DTypeError, f"select branches have dtypes {e.t.dtype} and {e.f.dtype}")
        c = self.expr(e.cond)
        (tl, t), (fl, f) = self.branch(e.t), self.branch(e.f)
        rng = None if t.rng is None else (min(t.rng[0], f.rng[0]), max(t.rng[1], f.rng[1]))
        if not tl and not fl:  # only the chosen branch runs, as in C's ?:
            return Src(f"({t.src} if {c.src} else {f.src})", rng, max(c.depth, t.depth, f.depth) + 1)
        out = self.fresh("s")
        self.emit(f"if {c.src}:")
        self.cur.lines.extend(tl)
        self.emit(f"    {out} = {t.src}")
        self.emit("else:")
        self.cur.lines.extend(fl)
        self.emit(f"    {out} = {f.src}")
        return Src(out, rng, 0)

    def cast(self, e: Cast) -> Src:
        src_dt, dt = e.value.dtype, e.dtype
        v = self.expr(e.value)
        if src_dt == dt:
            return v
        if is_bool(dt):
            return Src(f"({v.src} != 0)", (0, 1), v.depth + 1)
        if is_float(dt):
            if (src_dt, dt) in _WIDER:  # exact: multiplying by one converts without a constructor call
                one = self.helper(("one", dt), lambda: numpy_dtype(dt).type(1))
                return Src(f"({v.src} * {one})", None, v.depth + 1)
            to = self.helper(("f", dt), lambda: from_float(dt))  # one rounding from a Python float
            return Src(f"{to}(float({v.src}))", None, v.depth + 1)
        if is_float(src_dt):
            conv = self.helper(("f2i", dt), lambda: float_to_int(dt))
            return Src(f"{conv}({v.src})", int_range(dt), v.depth + 1)
        src = f"int({v.src})" if is_bool(src_dt) else v.src
        if _fits(v.rng, dt):
            return Src(src, v.rng, v.depth + 1)
        return Src(wrap_source(src, dt), int_range(dt), v.depth + 2)

    def call(self, e: Call) -> Src:
        arity = MATH_FUNCS.get(e.func)
        if arity is None:
            raise self.error(VerifyError, f"unknown math function '{e.func}'")
        if len(e.args) != arity:
            raise self.error(VerifyError, f"'{e.func}' takes {arity} argument(s), got {len(e.args)}")
        dt = e.args[0].dtype
        if any(a.dtype != dt for a in e.args):
            raise self.error(DTypeError, f"arguments of '{e.func}' have dtypes {[a.dtype for a in e.args]}")
        args = [self.expr(a) for a in e.args]
        depth = max(a.depth for a in args) + 1
        if e.func == "abs" and not is_bool(dt):
            src = f"abs({args[0].src})"
            if is_float(dt):
                return Src(src, None, depth)
            lo, hi = args[0].rng
            rng = (0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
            return Src(src, rng, depth) if _fits(rng, dt) else Src(wrap_source(src, dt), int_range(dt), depth + 2)
        if not is_float(dt):
            raise self.error(DTypeError, f"'{e.func}' needs float arguments, got {dt}")
        fn = self.helper(("m", e.func, dt), lambda: math_func(e.func, dt))
        return Src(f"{fn}({', '.join(a.src for a in args)})", None, depth)

    def buffer(self, buf: Buffer) -> tuple:
        entry = self.bufs.get(buf.name)
        if entry is None:
            raise self.error(VerifyError, f"buffer '{buf.name}' is used where it is neither a parameter nor allocated")
        if entry[0] != buf:
            d = entry[0]
            raise self.error(VerifyError, f"buffer '{buf.name}' is used as {buf.shape} {buf.dtype} {buf.scope} but "
                                          f"declared as {d.shape} {d.dtype} {d.scope}")
        return entry

    def index(self, buf: Buffer, indices: tuple, what: str) -> str:
        """Source of the flat index of `buf[indices]`, after emitting the bounds check it needs."""
        if len(indices) != buf.ndim:
            raise self.error(ShapeError, f"{what} of buffer '{buf.name}' with {len(indices)} indices; it has "
                                         f"{buf.ndim} dimension(s) {buf.shape}")
        for i in indices:
            if not is_int(i.dtype):
                raise self.error(DTypeError, f"{what} of buffer '{buf.name}' with an index of dtype {i.dtype}")
        idx = [self.expr(i) for i in indices]
        dims = self.shapes.get(buf.name)
        if dims is None:  # a static shape: interval analysis may prove dims in range
            shape = [str(d) for d in buf.shape]
            unsure = [d for d, x in enumerate(idx) if not (0 <= x.rng[0] and x.rng[1] < buf.shape[d])]
            shown = repr(buf.shape)
        else:  # symbolic dims are checked at run time, except those that are ints
            shape = list(dims)
            unsure = [d for d, x in enumerate(idx) if isinstance(buf.shape[d], Expr)
                      or not (0 <= x.rng[0] and x.rng[1] < buf.shape[d])]
            shown = "(" + "".join(f"{d}, " for d in dims) + ")"
        if unsure:
            idx = [self.hoist(x) for x in idx]
            cond = " and ".join(f"0 <= {idx[d].src} < {shape[d]}" for d in unsure)
            tup = "(" + "".join(f"{x.src}, " for x in idx) + ")"
            self.emit(f"if not ({cond}): _oob({self.kernel!r}, {what!r}, {buf.name!r}, {tup}, {shown})")
        terms, stride = [], []
        for x, n in reversed(list(zip(idx, shape))):
            terms.append(" * ".join([x.src] + stride))
            stride = [n] + stride if n != "1" else stride
        if dims is None:  # fold the static strides
            terms, stride = [], 1
            for x, n in reversed(list(zip(idx, buf.shape))):
                terms.append(x.src if stride == 1 else f"{x.src} * {stride}")
                stride *= n
        return " + ".join(reversed(terms)) or "0"

    def load(self, e: Load) -> Src:
        buf, name, item, hooks = self.buffer(e.buffer)
        flat = self.index(buf, e.indices, "load")
        if hooks is not None:
            flat = self.hoist(Src(flat, None, 0)).src
            self.emit(f"{hooks[0]}({flat}, {self.access_site('load', buf, e.indices)}, _act)")
        if item is None:
            return Src(f"{name}[{flat}]", None, 1)
        return Src(f"{item}({flat})", int_range(buf.dtype), 1)

    # -- statements ----------------------------------------------------------------------------


def translate_expr(expr: Expr) -> ExprTranslation:
    """Translate an expression into `fn(values, arrays)`: `values` for its free variables, `arrays`
    (flat) for the buffers it loads from, in the orders the result lists."""
    free, bufs = {}, {}
    for n in walk(expr):
        if isinstance(n, Var):
            free[n] = None
        elif isinstance(n, Load) and bufs.setdefault(n.buffer.name, n.buffer) != n.buffer:
            raise VerifyError(f"expression uses two different buffers named '{n.buffer.name}'")
    variables = tuple(sorted(free, key=lambda v: (v.name, v.dtype)))
    buffers = tuple(bufs[k] for k in sorted(bufs))
    t = ExprTranslator("<expr>")
    t.open_fn("_expr", ("_vals", "_bufs"))
    names = {}
    for k, v in enumerate(variables):
        names[v] = t.fresh("v_" + v.name)
        t.emit(f"{names[v]} = _vals[{k}]")
        t.vars[v] = (names[v], None if is_float(v.dtype) else int_range(v.dtype))
    for k, b in enumerate(buffers):
        t.bind_buffer(b, f"_bufs[{k}]")
    out = t.expr(expr)
    t.emit(f"return {out.src}")
    source = t.source()
    return ExprTranslation(source, compile_source(source, "<expr>", t.glob, "_expr"), variables, buffers)


def compile_source(source: str, name: str, glob: dict, entry: str) -> Callable:
    code = compile(source, f"<tessel interp: {name}>", "exec")
    exec(code, glob)  # noqa: S102 - our own generated source, the point of this module
    return glob[entry]


__all__ = ["ExprTranslation", "ExprTranslator", "compile_source", "translate_expr"]
