"""The readable text form of the tensor IR, and its parser.

Every node prints (`to_text`, which `str(node)` calls) and kernels, statements and expressions parse
back to structurally equal nodes: `parse_kernel(to_text(k)) == k`. The text is also the fuzz-corpus
format, so it is exact: floats print with repr() and a dtype suffix (`2.0f32`, `-0.0f16`, `inf_f32`,
`nan_bf16`), integers of other dtypes than int32 with one (`7i64`, `-3i8`), bools as `true`/`false`.

    kernel S(A: float32[4, 8] global, S: float32[4] global) target cpu {
      for i in 4 parallel {
        for k in 8 {
          if (k == 0) {
            S[i] = 0.0f32
          }
          S[i] = (S[i] + A[i, k])
        }
      }
    }

Grammar, informally (`#` starts a comment; newlines are not significant):

    kernel := 'kernel' NAME '(' [param {',' param}] ')' 'target' NAME [launch] block
    param  := decl | NAME ':' DTYPE   (a scalar parameter: int32 or int64)
    launch := 'launch' 'grid' '(' expr, ... ')' 'block' '(' INT, ... ')' 'shared' INT ['cluster' '(' INT, ... ')']
    decl   := NAME ':' DTYPE '[' [dim {',' dim}] ']' [global | shared | local]   (dim := INT | expr)
    block  := '{' {stmt} '}'      -- no statement: Seq(()); one: itself; more: a Seq of them
    stmt   := 'for' NAME [':' DTYPE] 'in' expr [serial | parallel | vectorized | unrolled
                                               | 'bind' AXIS] block
            | 'if' expr block ['else' (block | stmt-if)]   | 'let' NAME ':' DTYPE '=' expr block
            | 'alloc' decl block  | 'seq' block  (a Seq exactly as written)  | 'barrier'
            | 'intrin' NAME '(' [arg {',' arg}] ')'  (arg := '&' ref | expr)  | ref '=' expr
    ref    := (NAME | '{' decl '}') '[' [expr {',' expr}] ']'
    expr   := binary operators, loosest first: || ; && ; == != < <= > >= ; + - ; * / // % ;
              then unary ! and -, then literals, NAME [':' DTYPE], ref, '(' expr ')',
              min(a, b), max(a, b), select(c, t, f), cast<DTYPE>(x), exp(x), pow(x, y), ...

Names are identifiers (dots allowed inside, as in `threadIdx.x`); other names and keywords print
as JSON strings (`"for"`). Variables and buffers are known by name: the parser resolves a name to
the innermost declaration (a loop, let, alloc or kernel parameter, then `env` / `buffers`); an
unknown variable is int32. So the printer writes a bare name whenever that resolves to the same
node, and otherwise spells the node out: `x:float32` for a variable, `{A: float16[8] local}` for
a buffer. That keeps even malformed IR (what a fuzzer or a buggy pass makes) exact. A loose
statement or expression prints its free variables and buffers bare: pass them to `parse_stmt` /
`parse_expr` as `env` / `buffers`.

Typed input may be looser than printed text: unsuffixed literals are int32 (`3`) or float32
(`2.5`), `-x` means `(0 - x)`, and precedence makes parentheses optional. What the parser refuses
even though nodes can hold it: dtypes, scopes, loop kinds and math functions outside the IR's
lists (ALL_DTYPES, SCOPES, LOOP_KINDS, MATH_FUNCS, BINARY_OPS), and DSL-only nodes such as Reduce, which print
readably but not parseably.

The printer lives here; the tokenizer and recursive-descent parser live in `text_parser`.

Example:
    >>> from tessel.ir.nodes import Var, Const
    >>> e = parse_expr("i * 2 + 1")
    >>> to_text(e), e == (Var("i") * 2 + 1)
    ('((i * 2) + 1)', True)
    >>> to_text(Const(float("-inf"), "float16"))
    '-inf_f16'
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

from tessel.ir.dtypes import INDEX_DTYPE, is_int
from tessel.ir.nodes import (
    THREAD_AXES,
    Allocate,
    Barrier,
    Binary,
    Buffer,
    BufferRef,
    Call,
    Cast,
    Const,
    Expr,
    For,
    IfThenElse,
    Intrinsic,
    Kernel,
    Launch,
    LetStmt,
    Load,
    Node,
    Not,
    Select,
    Seq,
    Stmt,
    Store,
    Var,
)
from tessel.ir.text_parser import IDENT, INFIX, RESERVED, SPECIAL, SUFFIX, Parser, seq_of

# ---------------------------------------------------------------------------------------------
# Printer
# ---------------------------------------------------------------------------------------------


def _name(name: str) -> str:
    if IDENT.fullmatch(name) and name not in RESERVED and not SPECIAL.fullmatch(name):
        return name
    return json.dumps(name)


def _const(c: Const) -> str:
    v, dt = c.value, c.dtype
    if dt == "bool":
        return "true" if v else "false"
    if is_int(dt):
        return str(v) if dt == INDEX_DTYPE else f"{v}{SUFFIX[dt]}"
    suffix = SUFFIX[dt]
    if math.isnan(v):
        return f"nan_{suffix}"
    if math.isinf(v):
        return f"{'-' if v < 0 else ''}inf_{suffix}"
    return repr(v) + suffix


def _decl(b: Buffer, printer: "_Printer | None" = None) -> str:
    """`name: dtype[dims] scope`; symbolic dims print as expressions (in `printer`'s scope)."""
    p = printer or _Printer(False)
    dims = ", ".join(p.expr(s) if isinstance(s, Expr) else str(s) for s in b.shape)
    return f"{_name(b.name)}: {b.dtype}[{dims}] {b.scope}"


def _param(p, printer: "_Printer | None" = None) -> str:
    """A kernel parameter: a buffer declaration, or `name: dtype` for a scalar parameter."""
    if isinstance(p, Var):
        return f"{_name(p.name)}: {p.dtype}"
    return _decl(p, printer)


def _launch(launch: Launch, printer: "_Printer | None" = None) -> str:
    p = printer or _Printer(False)

    def dims(t):
        return ", ".join(p.expr(x) if isinstance(x, Expr) else str(x) for x in t)

    text = f"launch grid({dims(launch.grid)}) block({dims(launch.block)}) shared {launch.shared_bytes}"
    if tuple(launch.cluster) != (1, 1, 1):
        text += f" cluster({dims(launch.cluster)})"
    return text


class _Printer:
    """Prints with the scope the parser will see: names bound by loops, lets, allocs and params.
    `strict` (kernels) spells out undeclared buffers and non-int32 variables too; for a loose
    statement or expression they are left to the caller's `env` / `buffers`."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.vars: dict[str, Var] = {}
        self.bufs: dict[str, Buffer] = {}
        self.lines: list[str] = []

    @contextmanager
    def bound(self, table: dict, name: str, node: Node):
        old = table.get(name)
        table[name] = node
        try:
            yield
        finally:
            if old is None:
                del table[name]
            else:
                table[name] = old

    # expressions

    def expr(self, e: Node) -> str:
        if isinstance(e, Var):
            bound = self.vars.get(e.name)
            if bound == e or (bound is None and (not self.strict or e.dtype == INDEX_DTYPE)):
                return _name(e.name)
            return f"{_name(e.name)}:{e.dtype}"
        if isinstance(e, Const):
            return _const(e)
        if isinstance(e, Binary):
            a, b = self.expr(e.a), self.expr(e.b)
            if e.op in INFIX:
                return f"({a} {INFIX[e.op]} {b})"
            return f"{e.op}({a}, {b})"  # min / max (others do not parse: not an op)
        if isinstance(e, Not):
            return "!" + self.expr(e.a)
        if isinstance(e, Select):
            return f"select({self.expr(e.cond)}, {self.expr(e.t)}, {self.expr(e.f)})"
        if isinstance(e, Cast):
            return f"cast<{e.dtype}>({self.expr(e.value)})"
        if isinstance(e, Call):
            return f"{e.func}({', '.join(self.expr(a) for a in e.args)})"
        if isinstance(e, (Load, BufferRef)):
            ref = f"{self.buffer(e.buffer)}[{', '.join(self.expr(i) for i in e.indices)}]"
            return "&" + ref if isinstance(e, BufferRef) else ref
        return self.generic(e)

    def buffer(self, b: Buffer) -> str:
        bound = self.bufs.get(b.name)
        if bound == b or (bound is None and not self.strict):
            return _name(b.name)
        return "{" + _decl(b, self) + "}"

    def generic(self, n) -> str:
        """Nodes the grammar does not cover (e.g. the DSL's Reduce) print readably, not parseably."""
        if isinstance(n, tuple):
            return "(" + ", ".join(self.generic(x) for x in n) + ")"
        if isinstance(n, (Var, Const, Binary, Not, Select, Cast, Call, Load, BufferRef)):
            return self.expr(n)
        if isinstance(n, Buffer):
            return _decl(n)
        if isinstance(n, Node):
            fields = getattr(n, "__dataclass_fields__", {})
            return f"{type(n).__name__}({', '.join(f'{f}={self.generic(getattr(n, f))}' for f in fields)})"
        return repr(n)

    # statements

    def block(self, s: Stmt, ind: int) -> None:
        """The contents of `{ ... }`: a Seq of other than one statement prints as its statements."""
        if isinstance(s, Seq) and len(s.stmts) != 1:
            for x in s.stmts:
                self.stmt(x, ind)
        else:
            self.stmt(s, ind)

    def stmt(self, s: Stmt, ind: int) -> None:
        pad = "  " * ind
        out = self.lines.append
        if isinstance(s, For):
            kind = "" if s.kind == "serial" else f" bind {s.kind}" if s.kind in THREAD_AXES else f" {s.kind}"
            var = _name(s.var.name) + ("" if s.var.dtype == INDEX_DTYPE else f": {s.var.dtype}")
            out(f"{pad}for {var} in {self.expr(s.extent)}{kind} {{")
            with self.bound(self.vars, s.var.name, s.var):
                self.block(s.body, ind + 1)
        elif isinstance(s, Store):
            out(f"{pad}{self.expr(Load(s.buffer, s.indices))} = {self.expr(s.value)}")
            return
        elif isinstance(s, Allocate):
            out(f"{pad}alloc {_decl(s.buffer, self)} {{")
            with self.bound(self.bufs, s.buffer.name, s.buffer):
                self.block(s.body, ind + 1)
        elif isinstance(s, Seq):  # reached only for a Seq that a block cannot express implicitly
            out(f"{pad}seq {{")
            for x in s.stmts:
                self.stmt(x, ind + 1)
        elif isinstance(s, IfThenElse):
            out(f"{pad}if {self.expr(s.cond)} {{")
            self.block(s.then, ind + 1)
            e = s.else_
            while isinstance(e, IfThenElse):  # else-if chains stay flat
                out(f"{pad}}} else if {self.expr(e.cond)} {{")
                self.block(e.then, ind + 1)
                e = e.else_
            if e is not None:
                out(f"{pad}}} else {{")
                self.block(e, ind + 1)
        elif isinstance(s, LetStmt):
            out(f"{pad}let {_name(s.var.name)}: {s.var.dtype} = {self.expr(s.value)} {{")
            with self.bound(self.vars, s.var.name, s.var):
                self.block(s.body, ind + 1)
        elif isinstance(s, Barrier):
            out(f"{pad}barrier")
            return
        elif isinstance(s, Intrinsic):
            out(f"{pad}intrin {_name(s.name)}({', '.join(self.expr(a) for a in s.args)})")
            return
        else:
            out(pad + self.generic(s))
            return
        out(pad + "}")

    def kernel(self, k: Kernel) -> str:
        params = []
        for p in k.params:  # scalar parameters are in scope for the declarations after them
            params.append(_param(p, self))
            if isinstance(p, Var):
                self.vars[p.name] = p
        head = f"kernel {_name(k.name)}({', '.join(params)}) target {_name(k.target)}"
        if k.launch is not None:
            head += " " + _launch(k.launch, self)
        self.lines.append(head + " {")
        for p in k.params:
            if isinstance(p, Buffer):
                self.bufs[p.name] = p  # a later parameter of the same name shadows, as in the parser
        self.block(k.body, 1)
        self.lines.append("}")
        return "\n".join(self.lines)


def to_text(node: Node) -> str:
    """The text form of any IR node (Kernel, Stmt, Expr, Buffer, BufferRef, Launch).

    >>> from tessel.ir.nodes import Buffer, Var
    >>> A = Buffer("A", (8,), "float16")
    >>> to_text(A[Var("i") + 1] * 2.0)
    '(A[(i + 1)] * 2.0f16)'
    >>> to_text(A)
    'A: float16[8] global'
    """
    if isinstance(node, Kernel):
        return _Printer(strict=True).kernel(node)
    p = _Printer(strict=False)
    if isinstance(node, Stmt):
        if isinstance(node, Seq) and not node.stmts:
            return "seq {\n}"
        p.block(node, 0)
        return "\n".join(p.lines)
    if isinstance(node, Buffer):
        return _decl(node)
    if isinstance(node, Launch):
        return _launch(node)
    if isinstance(node, (Expr, BufferRef)):
        return p.expr(node)
    return p.generic(node)


def parse_kernel(text: str) -> Kernel:
    """Parse the text form of a kernel (what `to_text(kernel)` prints).

    >>> k = parse_kernel("kernel f(A: float32[4] global) target cpu { for i in 4 { A[i] = 1.5f32 } }")
    >>> print(k.body)
    for i in 4 {
      A[i] = 1.5f32
    }
    """
    p = Parser(text, None, None)
    return p.parse(p.kernel)


def parse_stmt(text: str, env: dict[str, Var] | None = None, buffers: dict[str, Buffer] | None = None) -> Stmt:
    """Parse statements: none gives Seq(()), one gives itself, more give a Seq of them. `env` and
    `buffers` declare the free variables and buffers by name.

    >>> from tessel.ir.nodes import Buffer
    >>> s = parse_stmt("B[0] = 2i8\\nbarrier", buffers={"B": Buffer("B", (2,), "int8")})
    >>> [type(x).__name__ for x in s.stmts]
    ['Store', 'Barrier']
    """
    p = Parser(text, env, buffers)
    return p.parse(lambda: seq_of(p.stmts()))


def parse_expr(text: str, env: dict[str, Var] | None = None, buffers: dict[str, Buffer] | None = None) -> Expr:
    """Parse an expression. `env` maps free variable names to Vars (an unknown name is an int32
    Var); `buffers` maps buffer names to Buffers.

    >>> from tessel.ir.nodes import Var
    >>> parse_expr("x * 2.0f32 < 1.0f32", env={"x": Var("x", "float32")}).dtype
    'bool'
    """
    p = Parser(text, env, buffers)
    return p.parse(p.expr)


__all__ = ["parse_expr", "parse_kernel", "parse_stmt", "to_text"]
