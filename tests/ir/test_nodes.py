"""IR nodes: structural equality and hashing, generic children, and the rewrite engine."""

import pytest

from tessel.errors import DTypeError
from tessel.ir.nodes import (
    Binary, Buffer, Call, Const, For, Load, Pat, Rule, RuleSet, Seq, Store, Var, as_expr, collect, free_vars, rewrite,
    seq, substitute, walk,
)


def test_structural_equality_and_hash():
    i = Var("i")
    A = Buffer("A", (8,), "float32")
    a = For(i, 8, Store(A, (i,), Load(A, (i,)) + 1.0))
    b = For(Var("i"), 8, Store(Buffer("A", (8,)), (Var("i"),), Load(Buffer("A", (8,)), (Var("i"),)) + 1.0))
    assert a == b and hash(a) == hash(b) and a is not b
    assert a != For(i, 8, Store(A, (i,), Load(A, (i,)) + 2.0))
    assert {a: 1}[b] == 1


def test_constants_of_different_dtype_or_zero_sign_differ():
    assert Const(1, "int32") != Const(1, "int64")
    assert Const(0.0, "float32") != Const(-0.0, "float32")
    assert Const(float("nan"), "float32") == Const(float("nan"), "float32")
    with pytest.raises(DTypeError):
        Const(1.5, "int32")


def test_operators_build_nodes_and_check_dtypes():
    x = Var("x", "float32")
    e = x * 2.0 + 1.0
    assert isinstance(e, Binary) and e.op == "add" and e.dtype == "float32"
    assert (x < 1.0).dtype == "bool" and (x.eq(1.0)).op == "eq"
    with pytest.raises(DTypeError):
        x + Var("y", "float16")
    with pytest.raises(DTypeError):
        Var("i") * 0.5  # a float constant with an int operand


def test_children_and_with_children_round_trip():
    i = Var("i")
    A = Buffer("A", (4, 4))
    st = Store(A, (i, i + 1), Load(A, (i, i)))
    kids = st.children()
    assert kids[0] == A and len(kids) == 4
    assert st.with_children(kids) is st
    swapped = st.with_children([A, i + 1, i, kids[3]])
    assert swapped.indices == (i + 1, i)


def test_rewrite_bottom_up_to_fixpoint():
    x = Var("x")
    zero = Const(0)
    rules = [Rule(Pat(Binary, op="add", a=Pat(name="a"), b=Pat(Const, value=0)), lambda a, **_: a),
             Rule(Pat(Binary, op="mul", a=Pat(name="a"), b=Pat(Const, value=1)), lambda a, **_: a)]
    e = ((x + zero) * Const(1) + zero) * Const(1)
    assert rewrite(e, rules) == x
    assert rewrite(e, RuleSet(rules)) == x


def test_pattern_repeated_capture_requires_equal_nodes():
    x, y = Var("x"), Var("y")
    same = Pat(Binary, op="sub", a=Pat(name="v"), b=Pat(name="v"))
    assert same.match(x - x) == {"v": x}
    assert same.match(x - y) is None


def test_pattern_value_types_must_agree():
    assert Pat(Const, value=2.0).match(Const(2, "int32")) is None
    assert Pat(Const, value=2).match(Const(2, "int32")) is not None


def test_substitute_free_vars_and_collect():
    i, j = Var("i"), Var("j")
    A = Buffer("A", (4,))
    loop = For(i, 4, Store(A, (i,), Load(A, (j,))))
    assert free_vars(loop) == {j}
    assert free_vars(substitute(loop, {j: Const(0)})) == set()
    assert len(collect(loop, Load)) == 1
    assert sum(1 for _ in walk(loop)) > 5


def test_seq_flattens_and_unwraps():
    A = Buffer("A", (2,))
    s1, s2 = Store(A, (0,), Const(1.0, "float32")), Store(A, (1,), Const(2.0, "float32"))
    assert seq(s1) is s1
    assert seq(seq(s1, s2), None, Seq(())) == Seq((s1, s2))


def test_call_and_as_expr():
    x = Var("x", "float16")
    assert Call("exp", (x,)).dtype == "float16"
    assert as_expr(3, like=x).dtype == "float16"
    assert as_expr(True).dtype == "bool"


def test_pickled_nodes_compare_equal_in_another_process():
    """The cached structural hash is salted per process: pickling drops it, so a node rebuilt in a
    child process (another salt) still equals the one built there."""
    import pickle
    import subprocess
    import sys

    from tessel.ir.nodes import Buffer, For, Kernel, Store, Var

    i = Var("i")
    k = Kernel("k", (Buffer("A", (4,)),), For(i, 4, Store(Buffer("A", (4,)), (i,), Var("i").astype("float32"))))
    hash(k)
    assert "_hash" not in pickle.loads(pickle.dumps(k)).__dict__
    code = ("import pickle, sys; from tessel.ir.nodes import *; i = Var('i'); A = Buffer('A', (4,)); "
            "k = Kernel('k', (A,), For(i, 4, Store(A, (i,), i.astype('float32')))); "
            "print(pickle.loads(sys.stdin.buffer.read()) == k)")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(k), capture_output=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}, check=True)
    assert out.stdout.strip() == b"True"
