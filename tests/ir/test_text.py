"""The text form of the IR round-trips exactly, parses what people type, and reports bad text well.

Properties: `parse_kernel(to_text(k)) == k` for DSL-lowered kernels and hand-built kernels using
every statement kind, loop kind, scope and dtype; constants keep their exact bits (inf, nan, -0.0,
the extremes of every integer dtype); random expression trees round-trip (hypothesis); printing
the parsed node gives the same text; precedence lets `a + b * c` parse as arithmetic does; errors
are ParseErrors naming line and column. Also checks the numpy references of `dsl_programs`
against second, loop-level computations, since other tests trust them.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessel.errors import ParseError, TesselError
from tessel.ir.dsl import lower
from tessel.ir.dtypes import ALL_DTYPES, FLOAT_DTYPES, INT_DTYPES, int_range
from tessel.ir.nodes import (
    BINARY_OPS,
    LOOP_KINDS,
    MATH_FUNCS,
    SCOPES,
    Allocate,
    Barrier,
    Binary,
    Buffer,
    BufferRef,
    Call,
    Cast,
    Const,
    For,
    IfThenElse,
    Intrinsic,
    Kernel,
    Launch,
    LetStmt,
    Load,
    Not,
    Select,
    Seq,
    Store,
    Var,
)
from tessel.ir.text import parse_expr, parse_kernel, parse_stmt, to_text
from tests.ir import dsl_programs

i, j, k = Var("i"), Var("j"), Var("k")
A = Buffer("A", (4, 8), "float32")
H = Buffer("H", (16, 16), "float16", "shared")
F = Buffer("F", (8,), "float32", "local")


def roundtrip_kernel(kern: Kernel) -> str:
    text = to_text(kern)
    back = parse_kernel(text)
    assert back == kern, text
    assert to_text(back) == text
    return text


def roundtrip_expr(e, env=None, buffers=None) -> str:
    text = to_text(e)
    back = parse_expr(text, env=env, buffers=buffers)
    assert back == e, text
    assert to_text(back) == text
    return text


def same_bits(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


# ---------------------------------------------------------------------------------------------
# Kernels lowered from DSL programs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(dsl_programs.PROGRAMS))
def test_dsl_kernels_roundtrip(name):
    tensors, _ = dsl_programs.PROGRAMS[name]()
    kern = lower(tensors)
    text = roundtrip_kernel(kern)
    assert text.startswith(f"kernel {kern.name}(")
    assert all(f"{p.name}: {p.dtype}[" in text.splitlines()[0] for p in kern.params)


def test_gemm_fp16_text_is_readable():
    kern = lower(dsl_programs.gemm(2, 3, 4, in_dtype="float16")[0])
    text = roundtrip_kernel(kern)
    assert text.splitlines() == [
        "kernel C(A: float16[2, 4] global, B: float16[4, 3] global, C: float32[2, 3] global) target cpu {",
        "  for i in 2 {",
        "    for j in 3 {",
        "      for k in 4 {",
        "        if (k == 0) {",
        "          C[i, j] = 0.0f32",
        "        }",
        "        C[i, j] = (C[i, j] + (cast<float32>(A[i, k]) * cast<float32>(B[k, j])))",
        "      }",
        "    }",
        "  }",
        "}",
    ]


def test_softmax_and_layernorm_temporaries_are_allocs():
    for program in (dsl_programs.softmax, dsl_programs.layernorm):
        text = roundtrip_kernel(lower(program()[0]))
        assert "alloc " in text and " global {" in text


# ---------------------------------------------------------------------------------------------
# Hand-built kernels: every statement kind, loop kind, scope; launch info
# ---------------------------------------------------------------------------------------------


def every_statement_kernel() -> Kernel:
    x = Var("x", "float32")
    tx = Var("tx")
    store = Store(F, (j,), Load(A, (i, j)) * x)
    body = Allocate(H, Allocate(F, Seq((
        For(tx, 32, Seq((
            LetStmt(x, Load(A, (i, tx % 8)), store),
            Barrier(),
            Intrinsic("mma_sync", (BufferRef(F, (0,)), BufferRef(H, (tx // 2, Const(0))), Const(16), tx.eq(tx))),
            Intrinsic("commit_group", ()),
            IfThenElse(tx.eq(0), Barrier()),
            IfThenElse(tx < 3, store, IfThenElse(tx < 9, Seq(()), Barrier())),
        )), "threadIdx.x"),
        Seq(()),
        Seq((Barrier(),)),
        Seq((Barrier(), Seq((Barrier(), store)))),
    ))))
    body = For(i, 4, For(j, Var("n") + 1, body, "threadIdx.y"), "blockIdx.x")
    return Kernel("every", (A, Buffer("O", (3,), "int64")), body, "cuda", Launch((2, 1, 1), (128, 4, 1), 4096))


def test_every_statement_kind_roundtrips():
    text = roundtrip_kernel(every_statement_kernel())
    for piece in ("launch grid(2, 1, 1) block(128, 4, 1) shared 4096", "bind threadIdx.x", "let x: float32 = ",
                  "intrin mma_sync(&F[0], &H[(tx // 2), 0], 16, (tx == tx))", "intrin commit_group()", "barrier",
                  "} else if (tx < 9) {", "} else {", "alloc H: float16[16, 16] shared {", "seq {"):
        assert piece in text, piece


@pytest.mark.parametrize("kind", LOOP_KINDS)
def test_every_loop_kind_roundtrips(kind):
    kern = Kernel("k", (A,), For(i, 4, For(j, 8, Store(A, (i, j), Const(1.0, "float32")), kind)))
    text = roundtrip_kernel(kern)
    assert ("for j in 8 {" if kind == "serial" else kind) in text


@pytest.mark.parametrize("scope", SCOPES)
def test_allocate_in_every_scope_roundtrips(scope):
    T = Buffer("T", (2, 3), "bfloat16", scope)
    kern = Kernel("k", (), Allocate(T, Store(T, (1, 2), Const(0.5, "bfloat16"))), "cuda", Launch())
    assert f"alloc T: bfloat16[2, 3] {scope} {{" in roundtrip_kernel(kern)


@pytest.mark.parametrize("body", [Seq(()), Seq((Barrier(),)), Seq((Seq(()), Seq((Barrier(),)), Barrier())),
                                  Seq((Barrier(), Barrier())), Barrier(), IfThenElse(i < 1, Seq(()), Seq(()))])
def test_seq_structure_is_kept_exactly(body):
    roundtrip_kernel(Kernel("k", (), body))
    assert parse_stmt(to_text(body)) == body


def test_statements_roundtrip_alone_with_buffers_given():
    kern = every_statement_kernel()
    bufs = {p.name: p for p in kern.params}
    stmts = [kern.body, kern.body.body, Store(A, (i, 0), Const(2.0, "float32")), Barrier(),
             LetStmt(Var("y", "int8"), Const(-3, "int8"), Store(A, (0, 0), Cast("float32", Var("y", "int8"))))]
    for s in stmts:  # x is used outside its let in kern.body, so it needs env
        assert parse_stmt(to_text(s), env={"x": Var("x", "float32")}, buffers=bufs) == s
    assert to_text(Launch((1, 2, 3), (4, 5, 6), 7)) == "launch grid(1, 2, 3) block(4, 5, 6) shared 7"
    assert to_text(Launch((4, 2, 1), (128, 1, 1), 0, (2, 1, 1))) == \
        "launch grid(4, 2, 1) block(128, 1, 1) shared 0 cluster(2, 1, 1)"
    assert to_text(F) == "F: float32[8] local"
    assert to_text(BufferRef(H, (i, 0))) == "&H[i, 0]"
    assert str(Store(A, (i, j), Const(1.0, "float32"))) == "A[i, j] = 1.0f32"  # Node.__str__ prints text


def test_kernel_with_zero_dim_buffer_and_no_params():
    S = Buffer("S", (), "float64")
    roundtrip_kernel(Kernel("scalar", (), Allocate(S, Store(S, (), Load(S, ()) + 1.0)), "cpu"))


def test_names_that_are_keywords_or_not_identifiers_are_quoted():
    odd = Buffer("for", (2,), "int32")
    v = Var("my var")
    kern = Kernel("kernel", (odd,), For(v, 2, Store(odd, (v,), Var("true") + Var("inf_f32"))), target="llvm -x")
    text = roundtrip_kernel(kern)
    assert '"for"["my var"] = ("true" + "inf_f32")' in text


def test_mismatched_and_undeclared_nodes_are_spelled_out():
    # A load whose buffer differs from the declaration of its name, a buffer no one declared, a
    # float variable no one bound, and a variable that shadows one of another dtype.
    A_other = Buffer("A", (4, 8), "float32", "shared")
    Z = Buffer("Z", (2,), "int8", "local")
    xf, jf = Var("x", "float32"), Var("j", "float32")
    body = For(i, 4, For(j, 8, Seq((
        Store(A, (i, j), Load(A_other, (i, j)) + xf),
        Store(Z, (0,), Const(1, "int8")),
        LetStmt(jf, Const(1.0, "float32"), Store(A, (i, j), jf + Cast("float32", j))),
    ))))
    text = roundtrip_kernel(Kernel("k", (A,), body))
    assert "{A: float32[4, 8] shared}[i, j]" in text and "{Z: int8[2] local}[0] = 1i8" in text
    assert "x:float32" in text and "cast<float32>(j:int32)" in text


# ---------------------------------------------------------------------------------------------
# Constants of every dtype, bit-exact
# ---------------------------------------------------------------------------------------------

FLOAT_VALUES = [0.0, -0.0, 1.5, -2.5, 0.1, 1 / 3, 1e-300, 5e-324, 1.7976931348623157e308, 65504.0, 1e16,
                float("inf"), float("-inf"), float("nan"), 123456789.125]
INT_VALUES = {"int8": [0, 1, -1, 127, -128], "int16": [0, -1, 2**15 - 1, -(2**15)],
              "int32": [0, 7, -3, 2**31 - 1, -(2**31)], "int64": [0, -1, 2**40 + 3, 2**63 - 1, -(2**63)],
              "uint8": [0, 1, 255], "uint16": [0, 7, 2**16 - 1], "uint32": [0, 2**31, 2**32 - 1],
              "uint64": [0, 2**63, 2**64 - 1]}
CONSTS = ([Const(v, dt) for dt in FLOAT_DTYPES for v in FLOAT_VALUES]
          + [Const(v, dt) for dt in INT_DTYPES for v in INT_VALUES[dt]] + [Const(True, "bool"), Const(False, "bool")])


@pytest.mark.parametrize("c", CONSTS, ids=lambda c: f"{c.dtype}:{c.value!r}")
def test_constants_roundtrip_bit_exactly(c):
    text = roundtrip_expr(c)
    back = parse_expr(text)
    assert back.dtype == c.dtype and type(back.value) is type(c.value)
    if c.dtype in FLOAT_DTYPES:
        assert same_bits(back.value, c.value), text
    else:
        assert back.value == c.value
    # ... and inside a kernel, as a stored value
    B = Buffer("B", (1,), c.dtype)
    roundtrip_kernel(Kernel("k", (B,), Store(B, (0,), c)))


def test_constant_spellings():
    assert to_text(Const(3)) == "3" and to_text(Const(-3)) == "-3"
    assert to_text(Const(2.0, "float32")) == "2.0f32" and to_text(Const(1.5, "float16")) == "1.5f16"
    assert to_text(Const(7, "int64")) == "7i64" and to_text(Const(-0.0, "bfloat16")) == "-0.0bf16"
    assert to_text(Const(float("-inf"), "float64")) == "-inf_f64" and to_text(Const(math.nan, "float32")) == "nan_f32"
    assert to_text(Const(True, "bool")) == "true"
    assert math.copysign(1.0, parse_expr("-0.0f32").value) == -1.0
    assert parse_expr("1e-05f16") == Const(1e-05, "float16")
    assert parse_expr("2.5") == Const(2.5, "float32") and parse_expr("4i32") == Const(4)  # unsuffixed defaults


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


def test_every_expression_kind_roundtrips():
    x, y, b = Var("x", "float32"), Var("y", "float32"), Var("b", "bool")
    env = {v.name: v for v in (x, y, b)}
    exprs = [Binary(op, x, y) for op in BINARY_OPS if op not in ("floordiv", "floormod", "and", "or")]
    exprs += [Binary(op, i, j) for op in ("floordiv", "floormod")] + [Binary(op, b, b) for op in ("and", "or")]
    exprs += [Call(f, (x,) * n) for f, n in MATH_FUNCS.items()] + [Call("abs", (i,))]
    exprs += [Cast(dt, x) for dt in ALL_DTYPES] + [Not(b), Not(Not(b)), Not(x < y), Select(b, x, y)]
    exprs += [Load(A, (i, (j + 1))), Load(A, (Load(Buffer("I", (3,), "int32"), (k,)), 0)), -x, Const(-3) * i]
    for e in exprs:
        roundtrip_expr(e, env, {"A": A, "I": Buffer("I", (3,), "int32")})


def test_expression_spellings():
    x = Var("x", "float16")
    assert to_text((j * 2) + 1) == "((j * 2) + 1)"
    assert to_text(Binary("min", i, j)) == "min(i, j)" and to_text(Binary("max", i, 3)) == "max(i, 3)"
    assert to_text(Not(i < j)) == "!(i < j)" and to_text(Binary("and", i < j, Not(Var("c", "bool")))) == \
        "((i < j) && !c)"
    assert to_text(Select(i < 2, x, Cast("float16", i))) == "select((i < 2), x, cast<float16>(i))"
    assert to_text(Call("pow", (x, Const(2.0, "float16")))) == "pow(x, 2.0f16)"
    assert to_text(Load(A, (i, j + 1))) == "A[i, (j + 1)]"


def test_precedence_and_associativity_of_typed_input():
    a, b, c, d = (Var(n) for n in "abcd")
    assert parse_expr("a + b * c") == a + b * c
    assert parse_expr("a - b - c") == (a - b) - c
    assert parse_expr("a // b % c + d") == ((a // b) % c) + d
    assert parse_expr("a < b && c >= d || !(a == b)") == Binary(
        "or", Binary("and", a < b, c >= d), Not(a.eq(b)))
    assert parse_expr("a != b == (c <= d)") == Binary("eq", a.ne(b), c <= d)
    assert parse_expr("-a * 2") == Binary("mul", Binary("sub", Const(0), a), Const(2))
    assert parse_expr("a - -3") == a - Const(-3)
    assert parse_expr("max(a, min(b, 4))   # comment\n") == Binary("max", a, Binary("min", b, Const(4)))


def test_env_gives_free_variables_their_dtype():
    x = Var("x", "float32")
    assert parse_expr("x * 2.0f32", env={"x": x}) == x * 2.0
    assert parse_expr("x") == Var("x", "int32")  # unknown names are int32
    assert parse_expr("x:float64") == Var("x", "float64")  # an annotation wins


# Random expression trees: a name and a buffer per dtype, expressions built by dtype.
ENV = {f"v_{dt}": Var(f"v_{dt}", dt) for dt in ALL_DTYPES} | {"i": i}
BUFS = {f"B_{dt}": Buffer(f"B_{dt}", (3, 5), dt, "local" if dt == "int8" else "global") for dt in ALL_DTYPES}
FLOAT_FUNCS = sorted(MATH_FUNCS)


def const_of(dtype: str):
    if dtype == "bool":
        return st.booleans().map(lambda v: Const(v, "bool"))
    if dtype in INT_DTYPES:
        lo, hi = int_range(dtype)
        return st.integers(lo, hi).map(lambda v: Const(v, dtype))
    return st.floats(allow_nan=True, allow_infinity=True).map(lambda v: Const(v, dtype))


@st.composite
def exprs(draw, dtype: str, depth: int = 3):
    leaves = [const_of(dtype), st.just(ENV[f"v_{dtype}"])]
    if dtype == "int32":
        leaves.append(st.just(i))
    if depth <= 0:
        return draw(st.one_of(*leaves))

    def sub(dt):
        return exprs(dt, depth - 1)

    kind = draw(st.sampled_from(["leaf", "binary", "select", "cast", "call", "load", "not"]))
    if kind == "leaf":
        return draw(st.one_of(*leaves))
    if kind == "select":
        return Select(draw(sub("bool")), draw(sub(dtype)), draw(sub(dtype)))
    if kind == "cast":
        return Cast(dtype, draw(sub(draw(st.sampled_from(ALL_DTYPES)))))
    if kind == "load":
        return Load(BUFS[f"B_{dtype}"], (draw(sub("int32")), draw(sub("int32"))))
    if dtype == "bool":
        if kind == "not":
            return Not(draw(sub("bool")))
        op = draw(st.sampled_from(BINARY_OPS[8:]))  # comparisons and logic
        operand = "bool" if op in ("and", "or") else draw(st.sampled_from(ALL_DTYPES[:-1]))
        return Binary(op, draw(sub(operand)), draw(sub(operand)))
    if kind == "call":
        if dtype in FLOAT_DTYPES:
            f = draw(st.sampled_from(FLOAT_FUNCS))
            return Call(f, tuple(draw(sub(dtype)) for _ in range(MATH_FUNCS[f])))
        return Call("abs", (draw(sub(dtype)),))
    ops = ["add", "sub", "mul", "min", "max"] + (["div"] if dtype in FLOAT_DTYPES else ["floordiv", "floormod"])
    return Binary(draw(st.sampled_from(ops)), draw(sub(dtype)), draw(sub(dtype)))


@settings(deadline=None, max_examples=150)
@given(st.sampled_from(ALL_DTYPES).flatmap(lambda dt: exprs(dt)))
def test_random_expressions_roundtrip(e):
    roundtrip_expr(e, ENV, BUFS)
    # The same tree stored inside a kernel needs no env: the printer spells out free variables.
    out = Buffer("out", (1,), e.dtype)
    roundtrip_kernel(Kernel("k", (out, *BUFS.values()), Store(out, (0,), e)))


# Random statements: names come from small pools, so loops, lets and allocs shadow variables and
# buffers of other dtypes, which the printer must then spell out.
@st.composite
def stmts(draw, depth: int = 3):
    kind = draw(st.sampled_from(["store", "barrier", "intrin"] + (
        ["for", "alloc", "seq", "if", "let"] if depth > 0 else [])))
    sub = stmts(depth - 1)
    dtype = draw(st.sampled_from(ALL_DTYPES))
    if kind == "store":
        return Store(BUFS[f"B_{dtype}"], (draw(exprs("int32", 1)), draw(exprs("int32", 1))), draw(exprs(dtype, 2)))
    if kind == "barrier":
        return Barrier()
    if kind == "intrin":
        ref = BufferRef(BUFS[f"B_{dtype}"], (draw(exprs("int32", 1)), Const(0)))
        return Intrinsic(draw(st.sampled_from(["mma.sync", "cp_async", "x"])), (ref, draw(exprs(dtype, 1))))
    if kind == "for":
        var = Var(draw(st.sampled_from(["i", "j", "v_int64"])), draw(st.sampled_from(["int32", "int32", "int64"])))
        return For(var, draw(exprs(var.dtype, 1)), draw(sub), draw(st.sampled_from(LOOP_KINDS)))
    if kind == "alloc":
        shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
        buf = Buffer(draw(st.sampled_from(["T", "B_float32", "B_int32"])), shape, dtype, draw(st.sampled_from(SCOPES)))
        return Allocate(buf, draw(sub))
    if kind == "seq":
        return Seq(tuple(draw(st.lists(sub, max_size=3))))
    if kind == "if":
        return IfThenElse(draw(exprs("bool", 1)), draw(sub), draw(st.none() | sub))
    var = Var(draw(st.sampled_from(["t", "i", "v_float32"])), dtype)
    return LetStmt(var, draw(exprs(dtype, 1)), draw(sub))


@settings(deadline=None, max_examples=100)
@given(stmts(), st.none() | st.builds(Launch, st.tuples(*[st.integers(1, 9)] * 3), st.tuples(*[st.integers(1, 9)] * 3),
                                      st.integers(0, 2**16), st.tuples(*[st.integers(1, 4)] * 3)))
def test_random_kernels_roundtrip(body, launch):
    roundtrip_kernel(Kernel("fuzz", tuple(BUFS.values()), body, "cuda" if launch else "cpu", launch))
    text = to_text(body)
    assert parse_stmt(text, env=ENV, buffers=BUFS) == body, text


# ---------------------------------------------------------------------------------------------
# Parse errors name line and column
# ---------------------------------------------------------------------------------------------

GOOD = """kernel k(A: float32[4] global) target cpu {
  for i in 4 {
    A[i] = (A[i] + 1.0f32)
  }
}"""


def parse_error(text: str, parse=parse_kernel) -> str:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert isinstance(info.value, TesselError)
    return str(info.value)


def test_good_text_parses():
    assert parse_kernel(GOOD) == Kernel("k", (Buffer("A", (4,), "float32"),), For(
        Var("i"), 4, Store(Buffer("A", (4,), "float32"), (Var("i"),),
                           Load(Buffer("A", (4,), "float32"), (Var("i"),)) + 1.0)))


def test_truncated_text_is_a_parse_error():
    for cut in range(0, len(GOOD) - 1, 3):
        msg = parse_error(GOOD[:cut])
        assert msg.startswith("line ") and ", column " in msg
    assert "line 4, column 4: expected '}', got end of input" in parse_error(GOOD[:GOOD.rindex("}") - 1])


def test_unknown_buffer_is_named_with_its_position():
    msg = parse_error(GOOD.replace("A[i] = ", "Q[i] = "))
    assert msg.startswith("line 3, column 5: unknown buffer 'Q'")
    assert "unknown buffer 'A'" in parse_error("A[0] = 1.0f32", parse_stmt)
    assert parse_stmt("A[0] = 1.0f32", buffers={"A": A}) == Store(A, (0,), Const(1.0, "float32"))


@pytest.mark.parametrize("bad, where, what", [
    (GOOD.replace("+ 1.0f32", "$ 1.0f32"), "line 3, column 18", "unexpected character '$'"),
    (GOOD.replace("float32[4]", "float33[4]"), "line 1, column 13", "expected a dtype"),
    (GOOD.replace("in 4 {", "in 4 sideways {"), "line 2, column 14", "expected a loop kind"),
    (GOOD.replace("global", "globul"), "line 1, column 24", "expected a memory scope"),
    (GOOD.replace("1.0f32", "1.0q32"), "line 3, column 20", "bad number literal"),
    (GOOD.replace("(A[i] + 1.0f32)", "foo(A[i])"), "line 3, column 12", "unknown function 'foo'"),
    (GOOD.replace("(A[i] + 1.0f32)", "min(A[i])"), "line 3, column 15", "min takes 2 arguments, got 1"),
    (GOOD.replace("1.0f32", "1.5i8"), "line 3, column 20", "expected an integer literal for dtype int8"),
    (GOOD + " }", "line 5, column 3", "expected end of input, got '}'"),
    (GOOD.replace("A[i] = ", "for = "), "line 3, column 9", "expected a loop variable"),
    (GOOD.replace("cpu {", "cpu launch grid(1) {"), "line 1, column 58", "expected 'block'"),
])
def test_bad_tokens_name_line_and_column(bad, where, what):
    msg = parse_error(bad)
    assert msg.startswith(where + ": " + what), msg
    assert msg.rstrip().endswith("^")  # the source line and a caret under the spot


def test_deep_nesting_parses_or_is_a_parse_error():
    x = Var("x", "float32")
    e = x
    for n in range(200):  # a long chain of additions, as unrolled reductions make
        e = e + Const(float(n), "float32")
    roundtrip_expr(e, {"x": x})
    assert "nests too deeply" in parse_error("(" * 5000 + "x" + ")" * 5000, parse_expr)


def test_expression_errors():
    assert parse_error("", parse_expr).startswith("line 1, column 1: expected an expression, got end of input")
    assert parse_error("(i + 1", parse_expr).startswith("line 1, column 7: expected ')'")
    assert parse_error("i j", parse_expr).startswith("line 1, column 3: expected end of input, got 'j'")
    assert "expected a dtype" in parse_error("cast<int4>(i)", parse_expr)


# ---------------------------------------------------------------------------------------------
# The numpy references of dsl_programs (other tests trust them)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(dsl_programs.PROGRAMS))
def test_program_references_match_their_tensors(name):
    tensors, ref = dsl_programs.PROGRAMS[name]()
    inputs = dsl_programs.random_inputs(tensors, np.random.default_rng(1))
    outs = ref(*inputs)
    computed = [t for t in tensors if not t.is_placeholder]
    assert len(outs) == len(computed) and len(inputs) == len(tensors) - len(computed)
    for t, o in zip(computed, outs, strict=True):
        assert o.shape == t.shape and o.dtype.name == t.dtype and np.all(np.isfinite(o)) and np.any(o != 0)


def test_program_references_against_loop_computations():
    rng = np.random.default_rng(2)
    tensors, ref = dsl_programs.conv2d(2, 3, 5, 4, 2)
    x, w = dsl_programs.random_inputs(tensors, rng)
    want = np.zeros((2, 2, 5, 4))
    for b, f, y, xx, c, dy, dx in np.ndindex(2, 2, 5, 4, 3, 3, 3):
        sy, sx = y + dy - 1, xx + dx - 1
        if 0 <= sy < 5 and 0 <= sx < 4:
            want[b, f, y, xx] += float(x[b, c, sy, sx]) * float(w[f, c, dy, dx])
    np.testing.assert_allclose(ref(x, w)[0], want, rtol=1e-5, atol=1e-6)

    tensors, ref = dsl_programs.softmax(3, 6)
    (a,) = dsl_programs.random_inputs(tensors, rng)
    (y,) = ref(a)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(y[:, 0] / y[:, 1], np.exp(a[:, 0].astype(float) - a[:, 1]), rtol=1e-5)

    tensors, ref = dsl_programs.layernorm(3, 8)
    x, g, b = dsl_programs.random_inputs(tensors, rng)
    (y,) = ref(x, np.ones_like(g), np.zeros_like(b))
    np.testing.assert_allclose(y.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.var(axis=1), 1.0, rtol=1e-3)  # eps makes it a little below 1

    tensors, ref = dsl_programs.gemm(3, 4, 5, in_dtype="float16")
    a, b = dsl_programs.random_inputs(tensors, rng)
    want = [[sum(float(a[r, t]) * float(b[t, c]) for t in range(5)) for c in range(4)] for r in range(3)]
    np.testing.assert_allclose(ref(a, b)[0], want, rtol=1e-6)
    assert ref(a, b)[0].dtype == np.float32

    for name, pick in (("reduction_sum", sum), ("reduction_max", max), ("reduction_min", min)):
        tensors, ref = dsl_programs.PROGRAMS[name]()
        (a,) = dsl_programs.random_inputs(tensors, rng)
        np.testing.assert_allclose(ref(a)[0], [pick(float(v) for v in row) for row in a], rtol=1e-6)

    tensors, ref = dsl_programs.elementwise_broadcast(3, 5)
    a, b, d = dsl_programs.random_inputs(tensors, rng)
    want = [[(float(a[r, c]) - float(d[r, 0])) * float(b[c]) + 0.5 for c in range(5)] for r in range(3)]
    np.testing.assert_allclose(ref(a, b, d)[0], want, rtol=1e-6)


def test_cluster_launch_roundtrips_and_old_text_still_parses():
    body = For(Var("b"), 4, Store(Buffer("O", (4,)), (Var("b"),), Const(1.0, "float32")), "blockIdx.x")
    k = Kernel("cl", (Buffer("O", (4,)),), body, "cuda", Launch((4, 1, 1), (32, 1, 1), 0, (2, 1, 1)))
    assert "cluster(2, 1, 1)" in to_text(k)
    roundtrip_kernel(k)
    old = parse_kernel(to_text(k).replace(" cluster(2, 1, 1)", ""))
    assert old.launch.cluster == (1, 1, 1) and old.launch == Launch((4, 1, 1), (32, 1, 1), 0)
