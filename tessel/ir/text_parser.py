"""The parser of the IR's text form: grammar tables, a regex tokenizer and a recursive-descent parser.

`tessel.ir.text` holds the printer and the public functions (`parse_kernel`, `parse_stmt`,
`parse_expr`); its docstring gives the grammar. This module is what reads text back: every error
is a ParseError naming line and column, what was expected and what was found, with the source
line and a caret under the spot.

Hand-written (no parser generator) because the grammar is small and tessel's ground floor takes
no dependencies beyond numpy.

Example:
    >>> p = Parser("(i + 1) * 2", None, None)
    >>> p.expr().op
    'mul'
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from typing import NamedTuple

from tessel.errors import ParseError, TesselError
from tessel.ir.dtypes import ALL_DTYPES, INDEX_DTYPE, is_float
from tessel.ir.nodes import (
    MATH_FUNCS,
    SCOPES,
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

# Grammar tables (the printer uses them too).
SUFFIX = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64",
          "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
          "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64"}
SUFFIX_DTYPE = {v: k for k, v in SUFFIX.items()}
INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "floormod": "%",
         "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "and": "&&", "or": "||"}
INFIX_OP = {v: k for k, v in INFIX.items()}
# Binary operators by how tightly they bind (all associate to the left).
PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "+": 4, "-": 4,
              "*": 5, "/": 5, "//": 5, "%": 5}
PLAIN_KINDS = ("serial", "parallel", "vectorized", "unrolled")
# Words a bare name may not be (they start statements or are literals); such names print quoted.
RESERVED = frozenset({"kernel", "for", "in", "if", "else", "let", "alloc", "seq", "barrier", "intrin",
                       "true", "false", "cast"})
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
SPECIAL = re.compile(r"(inf|nan)_(bf16|f16|f32|f64)")
NUMBER = re.compile(r"(\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)(bf16|f16|f32|f64|i8|i16|i32|i64|u8|u16|u32|u64)?")
TOKEN = re.compile(r"""
    (?P<skip>[ \t\r\n]+|\#[^\n]*)
  | (?P<num>(?:\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+)(?:bf16|f16|f32|f64|i8|i16|i32|i64|u8|u16|u32|u64)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<str>"(?:[^"\\\n]|\\.)*")
  | (?P<op>&&|\|\||==|!=|<=|>=|//|[-+*/%<>!()\[\]{},:=&])
""", re.VERBOSE)

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


class _Tok(NamedTuple):
    kind: str  # num, name, str, op, eof
    text: str
    line: int
    col: int


def _error(text: str, line: int, col: int, msg: str) -> ParseError:
    src = text.split("\n")[line - 1] if text else ""
    return ParseError(f"line {line}, column {col}: {msg}\n  {src}\n  {' ' * (col - 1)}^")


def _tokenize(text: str) -> list[_Tok]:
    toks, pos, line, line_start = [], 0, 1, 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            raise _error(text, line, col, f"unexpected character {text[pos]!r}")
        kind, s, end = m.lastgroup, m.group(), m.end()
        if kind == "num" and end < len(text) and (text[end].isalnum() or text[end] in "_."):
            raise _error(text, line, col, f"bad number literal starting {text[pos:end + 1]!r}")
        if kind != "skip":
            toks.append(_Tok(kind, s, line, col))
        elif "\n" in s:  # only whitespace spans lines
            line += s.count("\n")
            line_start = pos + s.rindex("\n") + 1
        pos = end
    toks.append(_Tok("eof", "", line, pos - line_start + 1))
    return toks


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def seq_of(stmts: list) -> Stmt:
    """What a block of statements means: none is Seq(()), one is itself, more are a Seq."""
    return stmts[0] if len(stmts) == 1 else Seq(tuple(stmts))


class Parser:
    """Recursive descent over the tokens of one text; `vars` / `bufs` are the names in scope."""

    def __init__(self, text: str, env: dict | None, buffers: dict | None):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.vars: dict[str, Var] = dict(env or {})
        self.bufs: dict[str, Buffer] = dict(buffers or {})

    # token helpers

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def advance(self) -> _Tok:
        t = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def error(self, msg: str, tok: _Tok | None = None) -> ParseError:
        t = tok or self.peek()
        return _error(self.text, t.line, t.col, msg)

    def expected(self, what: str, tok: _Tok | None = None) -> ParseError:
        t = tok or self.peek()
        got = "end of input" if t.kind == "eof" else repr(t.text)
        return self.error(f"expected {what}, got {got}", t)

    def at(self, text: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t.text == text and t.kind in ("op", "name")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.advance()
            return True
        return False

    def expect(self, text: str) -> _Tok:
        if not self.at(text):
            raise self.expected(f"'{text}'")
        return self.advance()

    def name(self, what: str) -> str:
        t = self.peek()
        if t.kind == "name" and t.text not in RESERVED and not SPECIAL.fullmatch(t.text):
            return self.advance().text
        if t.kind == "str":
            self.advance()
            return json.loads(t.text)
        raise self.expected(what)

    def dtype(self) -> str:
        t = self.peek()
        if t.kind != "name" or t.text not in ALL_DTYPES:
            raise self.expected(f"a dtype ({', '.join(ALL_DTYPES)})")
        return self.advance().text

    def int_lit(self) -> int:
        t = self.peek()
        if t.kind != "num" or not t.text.isdigit():
            raise self.expected("a non-negative integer")
        return int(self.advance().text)

    def items(self, open_: str, close: str, item) -> list:
        """`open_ item, item, ... close` (a trailing comma is allowed)."""
        self.expect(open_)
        out = []
        while not self.at(close):
            out.append(item())
            if not self.accept(","):
                break
        self.expect(close)
        return out

    def build(self, tok: _Tok, cls, *args):
        """Construct a node, turning a constructor's complaint into a ParseError at `tok`."""
        try:
            return cls(*args)
        except TesselError as e:
            raise self.error(str(e), tok) from None

    @contextmanager
    def bound(self, table: dict, name: str, node: Node):
        had, old = name in table, table.get(name)
        table[name] = node
        try:
            yield
        finally:
            if had:
                table[name] = old
            else:
                del table[name]

    def parse(self, rule):
        """Run `rule` (a method) over the whole text. Nesting deeper than Python's recursion limit
        allows (about 300 levels of parentheses) is a ParseError, not a crash."""
        try:
            out = rule()
        except RecursionError:
            raise self.error("the text nests too deeply to parse (Python's recursion limit)") from None
        if self.peek().kind != "eof":
            raise self.expected("end of input")
        return out

    # declarations

    def decl(self, scalar_ok: bool = False):
        """A buffer declaration; with `scalar_ok` (kernel parameters), `name: dtype` without a
        shape declares a scalar parameter (a Var)."""
        tok = self.peek()
        name = self.name("a buffer name")
        self.expect(":")
        dtype = self.dtype()
        if scalar_ok and not self.at("["):
            return self.build(tok, Var, name, dtype)
        shape = tuple(self.items("[", "]", self.dim))
        scope = "global"
        t = self.peek()
        if t.kind == "name":
            if t.text not in SCOPES:
                raise self.expected(f"a memory scope ({', '.join(SCOPES)})")
            scope = self.advance().text
        return self.build(tok, Buffer, name, shape, dtype, scope)

    def dim(self):
        """A shape or grid entry: an integer literal, or an integer expression (symbolic)."""
        t = self.peek()
        if t.kind == "num" and t.text.isdigit() and self.peek(1).text in (",", "]", ")"):
            return self.int_lit()
        return self.expr()

    def ref(self) -> tuple[Buffer, tuple]:
        if self.accept("{"):
            buf = self.decl()
            self.expect("}")
        else:
            tok = self.peek()
            name = self.name("a buffer name")
            buf = self.bufs.get(name)
            if buf is None:
                raise self.error(f"unknown buffer {name!r} (declare it as a kernel parameter, with alloc, "
                                 f"or pass it in buffers=)", tok)
        return buf, tuple(self.items("[", "]", self.expr))

    # expressions

    def expr(self, min_prec: int = 1) -> Expr:
        # Precedence climbing: one frame per nesting level, so deep printed trees parse.
        a = self.unary()
        while True:
            t = self.peek()
            prec = PRECEDENCE.get(t.text, 0) if t.kind == "op" else 0
            if prec < min_prec:
                return a
            self.advance()
            a = Binary(INFIX_OP[t.text], a, self.expr(prec + 1))

    def unary(self) -> Expr:
        if self.accept("!"):
            return Not(self.unary())
        if self.at("-"):
            self.advance()
            t = self.peek()
            if t.kind == "num" or (t.kind == "name" and SPECIAL.fullmatch(t.text)):
                return self.literal(negate=True)
            x = self.unary()
            return Not(x) if x.dtype == "bool" else Binary("sub", Const(0, x.dtype), x)
        return self.primary()

    def literal(self, negate: bool = False) -> Const:
        t = self.advance()
        special = SPECIAL.fullmatch(t.text)
        if special:
            value, dtype = (math.inf if special.group(1) == "inf" else math.nan), SUFFIX_DTYPE[special.group(2)]
        else:
            body, suffix = NUMBER.fullmatch(t.text).groups()
            is_float_text = any(c in body for c in ".eE")
            dtype = SUFFIX_DTYPE[suffix] if suffix else ("float32" if is_float_text else INDEX_DTYPE)
            if is_float(dtype):
                value = float(body)
            elif is_float_text:
                raise self.expected(f"an integer literal for dtype {dtype}", t)
            else:
                value = int(body)
        return self.build(t, Const, -value if negate else value, dtype)

    def args(self, what: str, count: int | None = None) -> list:
        tok = self.peek()
        out = self.items("(", ")", self.expr)
        if count is not None and len(out) != count:
            raise self.error(f"{what} takes {count} arguments, got {len(out)}", tok)
        return out

    def primary(self) -> Expr:
        t = self.peek()
        if t.kind == "num":
            return self.literal()
        if t.kind == "op":
            if self.accept("("):
                e = self.expr()
                self.expect(")")
                return e
            if t.text == "{":
                return Load(*self.ref())
            raise self.expected("an expression")
        if t.kind == "name":
            word = t.text
            if word in ("true", "false"):
                self.advance()
                return Const(word == "true", "bool")
            if SPECIAL.fullmatch(word):
                return self.literal()
            if word == "cast":
                self.advance()
                self.expect("<")
                dtype = self.dtype()
                self.expect(">")
                return Cast(dtype, *self.args("cast", 1))
            if self.at("(", 1):
                self.advance()
                if word in ("min", "max"):
                    return Binary(word, *self.args(word, 2))
                if word == "select":
                    return Select(*self.args("select", 3))
                if word in MATH_FUNCS:
                    return Call(word, tuple(self.args(word)))
                raise self.error(f"unknown function {word!r}; expected min, max, select, cast or one of "
                                 f"{', '.join(MATH_FUNCS)}", t)
        if t.kind in ("name", "str"):
            if self.at("[", 1):
                return Load(*self.ref())
            name = self.name("an expression")
            if self.accept(":"):
                return Var(name, self.dtype())
            return self.vars.get(name) or Var(name, INDEX_DTYPE)
        raise self.expected("an expression")

    # statements

    def stmts(self) -> list:
        out = []
        while not self.at("}") and self.peek().kind != "eof":
            out.append(self.stmt())
        return out

    def block(self) -> Stmt:
        self.expect("{")
        body = seq_of(self.stmts())
        self.expect("}")
        return body

    def stmt(self) -> Stmt:
        t = self.peek()
        word = t.text if t.kind == "name" else None
        if word == "for":
            self.advance()
            var = Var(self.name("a loop variable"), INDEX_DTYPE)
            if self.accept(":"):
                var = Var(var.name, self.dtype())
            self.expect("in")
            extent = self.expr()
            kind = "serial"
            k = self.peek()
            if k.kind == "name" and k.text in PLAIN_KINDS:
                kind = self.advance().text
            elif self.accept("bind"):
                if self.peek().text not in THREAD_AXES:
                    raise self.expected(f"a thread axis ({', '.join(THREAD_AXES)})")
                kind = self.advance().text
            elif k.kind == "name":
                raise self.expected("a loop kind (parallel, vectorized, unrolled, bind AXIS) or '{'")
            with self.bound(self.vars, var.name, var):
                return For(var, extent, self.block(), kind)
        if word == "if":
            self.advance()
            cond = self.expr()
            then = self.block()
            else_ = None
            if self.accept("else"):
                else_ = self.stmt() if self.at("if") else self.block()
            return IfThenElse(cond, then, else_)
        if word == "let":
            self.advance()
            name = self.name("a variable name")
            self.expect(":")
            var = Var(name, self.dtype())
            self.expect("=")
            value = self.expr()
            with self.bound(self.vars, name, var):
                return LetStmt(var, value, self.block())
        if word == "alloc":
            self.advance()
            buf = self.decl()
            with self.bound(self.bufs, buf.name, buf):
                return Allocate(buf, self.block())
        if word == "seq":
            self.advance()
            self.expect("{")
            body = Seq(tuple(self.stmts()))
            self.expect("}")
            return body
        if word == "barrier":
            self.advance()
            return Barrier()
        if word == "intrin":
            self.advance()
            name = self.name("an intrinsic name")
            args = self.items("(", ")", lambda: BufferRef(*self.ref()) if self.accept("&") else self.expr())
            return Intrinsic(name, tuple(args))
        if (t.kind == "name" and word not in RESERVED) or t.kind == "str" or self.at("{"):
            buf, idx = self.ref()
            self.expect("=")
            return Store(buf, idx, self.expr())
        raise self.expected("a statement (for, if, let, alloc, seq, barrier, intrin or a store)")

    def param(self):
        """A kernel parameter; a scalar one is in scope for what follows it."""
        p = self.decl(scalar_ok=True)
        if isinstance(p, Var):
            self.vars[p.name] = p
        return p

    def kernel(self) -> Kernel:
        self.expect("kernel")
        tok = self.peek()
        name = self.name("a kernel name")
        params = self.items("(", ")", self.param)
        self.expect("target")
        target = self.name("a target name")
        launch = None
        if self.accept("launch"):
            self.expect("grid")
            grid = tuple(self.items("(", ")", self.dim))
            self.expect("block")
            block = tuple(self.items("(", ")", self.int_lit))
            self.expect("shared")
            shared = self.int_lit()
            cluster = tuple(self.items("(", ")", self.int_lit)) if self.accept("cluster") else (1, 1, 1)
            launch = Launch(grid, block, shared, cluster)
        for p in params:
            if isinstance(p, Buffer):
                self.bufs[p.name] = p
        body = self.block()
        return self.build(tok, Kernel, name, tuple(params), body, target, launch)
