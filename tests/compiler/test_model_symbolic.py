"""One compiled program for every size of a torch.export Dim range (issue 12 item 4).

A model compiled with one (or two) dynamic dimensions is lowered and scheduled at three primes of each range
and its kernels generalised into kernels of a scalar size (`tessel.compiler.model_symbolic`):
calls at fresh random sizes in the range then compile and export nothing (both are made to fail
after the compile) and match torch eager; out-of-range calls still raise ArgumentError; kernels
whose schedule does not generalise are compiled per shape, and say so; two dynamic dimensions share
one program; models that cannot be generalised say why and keep compiling per shape. The formula
fitter, the generaliser and the tail peeling are checked on their own.
"""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.compiler.symbolic_ir import _fit, generalize, instantiate
from tessel.errors import ArgumentError
from tessel.ir.nodes import Buffer, Const, For, Store, Var

torch = pytest.importorskip("torch")
from torch.export import Dim  # noqa: E402

RNG = np.random.default_rng()


class Mlp(torch.nn.Module):
    """matmul with symbolic rows, gelu, layer norm and softmax over a static last axis, a mean."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.norm = torch.nn.Linear(16, 24), torch.nn.Linear(24, 8), torch.nn.LayerNorm(8)

    def forward(self, x, y):
        h = self.norm(self.b(torch.nn.functional.gelu(self.a(x))))
        return torch.softmax(h, -1) * y + x.mean(-1, keepdim=True), h.reshape(-1, 2, 4).sum(1)


class SeqSoftmax(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x * 3.0, dim=1) - x.amax(1, keepdim=True)  # reductions over the dynamic axis


def _close(got, want):
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=1e-4, atol=1e-5)


def _no_more_compiling(monkeypatch):
    import tessel.compiler.driver as driver

    def refuse(*a, **k):
        raise AssertionError("a call inside the range must not compile or export")

    monkeypatch.setattr(driver, "build", refuse)
    monkeypatch.setattr(torch.export, "export", refuse)


@pytest.fixture(scope="module")
def mlp():
    m = Mlp().eval()
    batch = Dim("batch", min=1, max=48)
    cm = ts.compile(m, (torch.randn(2, 5, 16), torch.randn(2, 5, 8)), target="cpu",
                    dynamic_shapes={"x": {1: batch}, "y": {1: batch}})
    return m, cm


def test_one_program_serves_fresh_sizes_in_the_range_without_compiling(mlp, monkeypatch):
    m, cm = mlp
    assert cm.symbolic is not None, cm.symbolic_reason
    assert set(cm.symbolic.kinds.values()) == {"symbolic"}, cm.symbolic.describe()
    _no_more_compiling(monkeypatch)
    for b in [int(v) for v in RNG.choice(np.arange(1, 49), size=4, replace=False)] + [48, 1]:
        x, y = torch.randn(2, b, 16), torch.randn(2, b, 8)
        _close(cm(x, y), m(x, y))
    assert len(cm.specializations) == 1  # only the example's own program
    with pytest.raises(ArgumentError, match=r"input 'x' dimension 1 is 49, outside the range \[1, 48\] of 'batch'"):
        cm(torch.randn(2, 49, 16), torch.randn(2, 49, 8))
    with pytest.raises(ArgumentError, match=r"input 'y' dimension 1 is 6 but input 'x' dimension 1 is 5"):
        cm(torch.randn(2, 5, 16), torch.randn(2, 6, 8))


def test_the_summary_names_the_symbolic_kernels(mlp):
    _, cm = mlp
    b = int(RNG.integers(6, 40))
    text = cm.summary(torch.randn(2, b, 16), torch.randn(2, b, 8))
    assert "symbolic: one program for every size of 'batch' in [" in text and f"batch={b}" in text


def test_reductions_over_the_dynamic_axis_of_an_exported_program(monkeypatch):
    m = SeqSoftmax()
    ep = torch.export.export(m, (torch.randn(3, 7, 5),), dynamic_shapes=({1: Dim("seq", min=2)},))
    cm = ts.compile(ep, target="cpu")
    assert cm.symbolic is not None and set(cm.symbolic.kinds.values()) == {"symbolic"}, cm.symbolic_reason
    _no_more_compiling(monkeypatch)
    for n in [2] + [int(v) for v in RNG.choice(np.arange(3, 300), size=3, replace=False)]:
        x = torch.randn(3, n, 5)
        _close(cm(x), m(x))
    with pytest.raises(ArgumentError, match=r"dimension 1 is 1, outside the range \[2, inf\)"):
        cm(torch.randn(3, 1, 5))


def test_a_kernel_whose_schedule_does_not_generalise_compiles_per_shape_and_says_so(tmp_path):
    class Last(torch.nn.Module):  # the dynamic axis is the vectorized one: the schedule peels n % 16
        def forward(self, x):
            return torch.relu(x) * 2.0 + x.sum(0)

    m = Last()
    cm = ts.compile(m, (torch.randn(2, 40),), target="cpu", dynamic_shapes=({1: Dim("n", max=200)},))
    assert cm.symbolic is not None and "per-shape" in cm.symbolic.kinds.values(), cm.symbolic_reason
    assert "its schedule differs between sizes" in cm.symbolic.describe()
    for n in [int(v) for v in RNG.choice(np.arange(1, 201), size=3, replace=False)]:
        x = torch.randn(2, n)
        _close(cm(x), m(x))
    assert len(cm.specializations) == 1  # per-shape kernels, not per-shape models: nothing re-exported
    loaded = ts.load(cm.save(tmp_path / "last.tsl"))  # per-shape kernels would compile: not saved, and it says so
    assert loaded.symbolic is None
    with pytest.raises(ArgumentError, match=r"one program for every size of 'n' in \[0, 200\], whose per-shape "
                                            r"kernels an artifact cannot hold"):
        loaded(torch.randn(2, 41))


def test_two_dynamic_dimensions_share_one_program(monkeypatch):
    class Rows(torch.nn.Module):  # batch and sequence dynamic: linear over the last axis, mean over the sequence
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 6)

        def forward(self, x):
            h = torch.relu(self.fc(x))
            return h - h.mean(1, keepdim=True)

    m = Rows().eval()
    cm = ts.compile(m, (torch.randn(3, 5, 8),), target="cpu",
                    dynamic_shapes=({0: Dim("b", min=1, max=12), 1: Dim("s", min=1, max=40)},))
    assert cm.symbolic is not None, cm.symbolic_reason
    assert [d.label for d in cm.symbolic.dims] == ["b", "s"] and "symbolic" in cm.symbolic.kinds.values()

    def no_export(*a, **k):  # the matmul over b * s rows may be a per-shape kernel: compiling is allowed here
        raise AssertionError("a call inside the ranges must not export")

    monkeypatch.setattr(torch.export, "export", no_export)
    for b, n in [(1, 1), (12, 40)] + [(int(RNG.integers(1, 13)), int(RNG.integers(1, 41))) for _ in range(3)]:
        x = torch.randn(b, n, 8)
        _close(cm(x), m(x))
    assert len(cm.specializations) == 1


def test_three_dynamic_dimensions_fall_back_to_per_shape_visibly():
    class Twice(torch.nn.Module):
        def forward(self, x):
            return x * 2.0

    cm = ts.compile(Twice(), (torch.randn(3, 4, 6),), target="cpu",
                    dynamic_shapes=({0: Dim("a", max=9), 1: Dim("b", max=90), 2: Dim("c", max=9)},))
    assert cm.symbolic is None and "3 dynamic dimensions (a, b, c)" in cm.symbolic_reason
    x = torch.randn(4, 41, 5)
    _close(cm(x), x * 2)
    assert len(cm.specializations) == 2


def test_the_program_for_the_range_is_compiled_on_first_use_only(tmp_path):
    class Half(torch.nn.Module):
        def forward(self, x):
            return x * 0.5

    cm = ts.compile(Half(), (torch.randn(3, 8),), target="cpu", dynamic_shapes=({0: Dim("b", max=64)},))
    x = torch.randn(3, 8)
    _close(cm(x), x * 0.5)  # the example's shape: its own program, nothing more compiled
    assert cm._symbolic_pending and cm._symbolic is None
    loaded = ts.load(cm.save(tmp_path / "half.tsl"))
    with pytest.raises(ArgumentError, match=r"had not compiled its program for its input ranges yet .* read "
                                            r"cm.symbolic"):
        loaded(torch.randn(5, 8))
    y = torch.randn(int(RNG.integers(4, 65)), 8)
    _close(cm(y), y * 0.5)  # a new shape: the symbolic program is compiled now
    assert not cm._symbolic_pending and cm._symbolic is not None and len(cm.specializations) == 1


# -- the generaliser on its own -----------------------------------------------------------------


def test_the_fitter_prefers_what_splits_produce():
    sizes = [31, 29, 23]
    ceil8 = tuple((p + 7) // 8 for p in sizes)
    assert _fit(ceil8, sizes, {8, 4}) == (1, 7, 8)  # not n // 7 or (n - 7) // 5, which also fit
    assert _fit(tuple(4 * p - 1 for p in sizes), sizes) == (4, -1, 1)
    assert _fit((3, 9, 2), sizes) is None


def test_generalize_substitutes_sizes_and_refuses_other_differences():
    n = Var("n")

    def kern(p, extra=0):
        i = Var("i")
        A = Buffer("A", (p, 4))
        return For(i, (p + 3) // 4 + extra, Store(A, (i, Const(0)), Const(1.0 / p, "float32")))

    sizes = [97, 89, 83]
    g = generalize([kern(p) for p in sizes], sizes, n)
    for m in [int(v) for v in RNG.integers(1, 500, size=3)]:
        inst = instantiate(g, n, m)
        assert inst.extent == Const((m + 3) // 4) and inst.body.buffer.shape == (m, 4)
        assert inst.body.value.dtype == "float32" and abs(inst.body.value.value - 1.0 / m) < 1e-6 / m
    why: list = []
    assert generalize([kern(97), kern(89, extra=5), kern(83)], sizes, n, why) is None and why


def test_an_onnx_model_with_one_named_symbolic_dim_compiles_once(monkeypatch):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["c"]), helper.make_node("Softmax", ["c"], ["y"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "one", [x], [y], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 13)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cm = ts.compile(model, example_inputs=(RNG.standard_normal((5, 16)).astype(np.float32),), target="cpu")
    assert cm.symbolic is not None and set(cm.symbolic.kinds.values()) == {"symbolic"}, cm.symbolic_reason
    _no_more_compiling(monkeypatch)
    for n in [1] + [int(v) for v in RNG.choice(np.arange(2, 400), size=3, replace=False)]:
        a = RNG.standard_normal((n, 16)).astype(np.float32)
        np.testing.assert_allclose(cm(a), sess.run(None, {"x": a})[0], rtol=1e-5, atol=1e-6)
    assert len(cm.specializations) == 1


def test_peeling_the_guarded_tail_keeps_the_results_and_drops_the_full_tiles_guards():
    from tessel.compiler.symbolic_tail import peel_tails
    from tessel.ir.interp import run
    from tessel.ir.nodes import Allocate, IfThenElse, Kernel, Seq, walk
    from tessel.ir.verify import verify

    n = Var("n")
    A, B, C = Buffer("A", (n, 6)), Buffer("B", (6, 5)), Buffer("C", (n, 5))
    acc = Buffer("acc", (4, 5), scope="local")
    o, k = Var("o"), Var("k")
    r, j = [Var(f"r{x}") for x in range(3)], [Var(f"j{x}") for x in range(3)]
    row = [o * 4 + x for x in r]
    body = For(o, (n + 3) // 4, Allocate(acc, Seq((
        For(r[0], 4, For(j[0], 5, IfThenElse(row[0] < n, Store(acc, (r[0], j[0]), Const(0.0, "float32"))))),
        For(k, 6, For(r[1], 4, For(j[1], 5, IfThenElse(row[1] < n, Store(
            acc, (r[1], j[1]), acc[r[1], j[1]] + A[row[1], k] * B[k, j[1]]))))),
        For(r[2], 4, For(j[2], 5, IfThenElse(row[2] < n, Store(C, (row[2], j[2]), acc[r[2], j[2]]))))))), "parallel")
    kern = Kernel("mm", (A, B, C, n), body)
    peeled = peel_tails(kern)
    verify(peeled)  # names stay unique: the tail's loops and buffer are renamed
    full, tail = peeled.body.stmts
    assert not any(isinstance(x, IfThenElse) for x in walk(full)) and any(isinstance(x, IfThenElse) for x in walk(tail))
    b = RNG.standard_normal((6, 5)).astype(np.float32)
    for m in [4, 1] + [int(v) for v in RNG.integers(2, 40, size=3)]:
        a = RNG.standard_normal((m, 6)).astype(np.float32)
        want, got = np.full((m, 5), np.nan, np.float32), np.full((m, 5), np.nan, np.float32)
        run(kern, a, b, want, m)
        run(peeled, a, b, got, m)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_onnx_dims_named_question_mark_are_independent():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", "?"])  # Paddle's exporter writes "?" for any
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "q", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    cm = ts.compile(model, example_inputs=(RNG.standard_normal((2, 3)).astype(np.float32),), target="cpu")
    assert cm.input_ranges.describe() == "x: (x.0 in [0, inf), x.1 in [0, inf))"
    a = RNG.standard_normal((int(RNG.integers(4, 9)), int(RNG.integers(9, 20)))).astype(np.float32)
    np.testing.assert_array_equal(cm(a), np.maximum(a, 0))


def test_a_symbolic_kernel_out_of_bounds_at_small_sizes_becomes_per_shape():
    # what the sample primes 61, 59, 53 give for a loop of n // 16 whole vectors: the constant 3
    from types import SimpleNamespace

    from tessel.compiler.model_symbolic import Dim, SymbolicProgram, _Step, _SymbolicKernel, check_bounds
    from tessel.frontend.graph import Graph
    from tessel.ir.nodes import Kernel, Seq

    n = Var("n")
    A = Buffer("A", (n,))
    o, v, t, i = Var("o"), Var("v"), Var("t"), Var("i")
    one = Const(1.0, "float32")
    vectors = Seq((For(o, 3, For(v, 16, Store(A, (o * 16 + v,), one), "vectorized")),
                   For(t, n - 48, Store(A, (t + 48,), one))))
    compiled = SimpleNamespace(ir=Kernel("fill", (A, n), vectors))
    naive = Kernel("fill", (A, n), For(i, n, Store(A, (i,), one)))
    kern = _SymbolicKernel("fill", compiled, (n,), naive)
    group = SimpleNamespace(outputs=[])
    sym = SymbolicProgram(Graph("g"), Graph("g"), [Dim("n", 1, 64, [(0, 0)], n)], {}, [_Step(kern, group, [])],
                          {"fill": "symbolic"}, 0.0)
    check_bounds(sym)
    assert sym.kinds == {"fill": "per-shape"} and "fails the bounds check at sizes (1,)" in sym.describe()
