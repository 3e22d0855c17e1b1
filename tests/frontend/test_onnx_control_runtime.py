"""ONNX If and Loop whose condition or trip count is a run-time value run as control flow in the
compiled model (tessel.compiler.model_control), checked against onnxruntime on fresh random inputs
with every branch and several trip counts taken; nothing compiles after `compile` returns."""

from __future__ import annotations

import numpy as np
import pytest

import tessel as ts
from tessel.errors import ArgumentError, TesselError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
oh, nh = onnx.helper, onnx.numpy_helper
F, I64, B = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL


def _vi(name, elem, shape):
    return oh.make_tensor_value_info(name, elem, shape)


def _model(graph):
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _ort(model):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _compiled(model, inputs, monkeypatch):
    """tessel.compile, then any later kernel build fails the test (every part compiles up front)."""
    cm = ts.compile(model, example_inputs=inputs, target="cpu")
    from tessel.compiler import lowering

    def no_build(*a, **k):
        raise AssertionError("a kernel was built after compile returned")

    monkeypatch.setattr(lowering, "build_kernel", no_build)
    return cm


def _same(got, want, what):
    got = [got] if len(want) == 1 else list(got)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape and g.dtype == w.dtype, what
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-5, err_msg=what)


def _fixed(seed, shape):
    """Weights of the model (the inputs are the fresh random part)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _if_model():
    """y = If(sum(x * w) > t) then relu(x @ w) + b, else (nested If on c) tanh(x) * 2 or x @ w - x."""
    then_g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Relu", ["m"], ["r"]),
                            oh.make_node("Add", ["r", "b"], ["t_out"])], "then", [], [_vi("t_out", F, [3, 4])])
    inner_then = oh.make_graph([oh.make_node("Tanh", ["x"], ["th"]), oh.make_node("Mul", ["th", "two"], ["it"])],
                               "inner_then", [], [_vi("it", F, [3, 4])],
                               initializer=[nh.from_array(np.float32(2.0), "two")])
    inner_else = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["m2"]), oh.make_node("Sub", ["m2", "x"], ["ie"])],
                               "inner_else", [], [_vi("ie", F, [3, 4])])
    else_g = oh.make_graph([oh.make_node("If", ["c"], ["e_out"], then_branch=inner_then, else_branch=inner_else)],
                           "else", [], [_vi("e_out", F, [3, 4])])
    nodes = [oh.make_node("MatMul", ["x", "w"], ["xw"]), oh.make_node("ReduceSum", ["xw"], ["s"], keepdims=0),
             oh.make_node("Greater", ["s", "t"], ["cond"]),
             oh.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)]
    g = oh.make_graph(nodes, "if_rt", [_vi("x", F, [3, 4]), _vi("t", F, []), _vi("c", B, [])], [_vi("y", F, [3, 4])],
                      initializer=[nh.from_array(_fixed(5, (4, 4)), "w"), nh.from_array(_fixed(6, (4,)), "b")])
    return _model(g)


def test_if_on_run_time_values_takes_every_branch(monkeypatch):
    model = _if_model()
    sess = _ort(model)
    rng = np.random.default_rng()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    cm = _compiled(model, (x, np.array(0, np.float32), np.array(True)), monkeypatch)
    assert [n.op for n in cm.graph.nodes.values()].count("if") == 1
    taken = set()
    for _ in range(3):
        for c in (True, False):
            x = rng.standard_normal((3, 4)).astype(np.float32)
            s = float((x @ nh.to_array(model.graph.initializer[0])).sum())
            for t in (np.array(s - 1, np.float32), np.array(s + 1, np.float32)):  # both sides of the threshold
                feeds = {"x": x, "t": t, "c": np.array(c)}
                _same(cm(*feeds.values()), sess.run(None, feeds), f"c={c}, sum-t={s - t:.2f}")
                taken.add((bool(s > t), c if s <= t else None))
    assert taken == {(True, None), (False, True), (False, False)}
    feeds = {"x": x, "t": np.array(0, np.float32), "c": np.array(False)}
    _same(cm.run_reference(*feeds.values()), sess.run(None, feeds), "the reference path")


def _loop_feeds(rng, m=None, hi=30.0) -> dict:
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    f = {"x": f32(rng.standard_normal((2, 3))), "y0": f32(rng.standard_normal((2, 3))),
         "z0": f32(rng.standard_normal()), "limit": f32(rng.uniform(5, hi))}
    if m is not None:
        f["M"] = np.array(m, np.int64)
    return f


def _loop_model(with_cond: bool, with_trip: bool = True):
    """Loop(M, c0, y0, z0): y <- 0.9 y + x * i, z <- z + sum(y); with_cond: go on while sum(|y|) < limit."""
    body_nodes = [oh.make_node("Cast", ["i"], ["fi"], to=F), oh.make_node("Mul", ["x", "fi"], ["xi"]),
                  oh.make_node("Mul", ["y_in", "k"], ["yk"]), oh.make_node("Add", ["yk", "xi"], ["y_out"]),
                  oh.make_node("ReduceSum", ["y_out"], ["ys"], keepdims=0),
                  oh.make_node("Add", ["z_in", "ys"], ["z_out"])]
    if with_cond:
        body_nodes += [oh.make_node("Abs", ["y_out"], ["ya"]), oh.make_node("ReduceSum", ["ya"], ["yas"], keepdims=0),
                       oh.make_node("Less", ["yas", "limit"], ["c_out"])]
    else:
        body_nodes += [oh.make_node("Identity", ["c_in"], ["c_out"])]
    body = oh.make_graph(body_nodes, "body", [_vi("i", I64, []), _vi("c_in", B, []), _vi("y_in", F, [2, 3]),
                                              _vi("z_in", F, [])],
                         [_vi("c_out", B, []), _vi("y_out", F, [2, 3]), _vi("z_out", F, [])],
                         initializer=[nh.from_array(np.float32(0.9), "k")])
    inputs = [_vi("x", F, [2, 3]), _vi("y0", F, [2, 3]), _vi("z0", F, []), _vi("limit", F, [])]
    if with_trip:
        inputs.append(_vi("M", I64, []))
    node = oh.make_node("Loop", ["M" if with_trip else "", "c0" if with_cond else "", "y0", "z0"], ["y", "z"],
                        body=body)
    inits = [nh.from_array(np.array(True), "c0")] if with_cond else []
    g = oh.make_graph([node], "loop_rt", inputs, [_vi("y", F, [2, 3]), _vi("z", F, [])], initializer=inits)
    return _model(g)


@pytest.mark.parametrize("with_cond", [False, True])
def test_loop_with_a_run_time_trip_count(with_cond, monkeypatch):
    model = _loop_model(with_cond)
    sess = _ort(model)
    rng = np.random.default_rng()

    cm = _compiled(model, tuple(_loop_feeds(rng, 3).values()), monkeypatch)
    assert [n.op for n in cm.graph.nodes.values()] == ["loop"]
    for m in (0, 1, 4, 9, 4):
        f = _loop_feeds(rng, m)
        _same(cm(*f.values()), sess.run(None, f), f"M={m}")


def test_while_loop_without_a_trip_count(monkeypatch):
    model = _loop_model(with_cond=True, with_trip=False)
    sess = _ort(model)
    rng = np.random.default_rng()
    first = None
    for k in range(4):
        f = _loop_feeds(rng)
        if first is None:
            first = _compiled(model, tuple(f.values()), monkeypatch)
        _same(first(*f.values()), sess.run(None, f), f"run {k}")


def test_loop_whose_condition_becomes_run_time_after_unrolled_iterations(monkeypatch):
    """A constant trip count and initial condition: the first iteration unrolls, then the body's
    condition is data: the rest runs as a loop whose iteration numbers go on from 1."""
    model = _loop_model(with_cond=True)
    g = model.graph
    g.input.pop()  # M becomes a constant
    g.initializer.append(nh.from_array(np.array(12, np.int64), "M"))
    sess = _ort(model)
    rng = np.random.default_rng()
    first = _loop_feeds(rng, hi=40.0)
    cm = _compiled(model, tuple(first.values()), monkeypatch)
    (loop,) = [n for n in cm.graph.nodes.values() if n.op == "loop"]
    assert loop.attrs["start"] == 1
    for feeds in [first] + [_loop_feeds(rng, hi=40.0) for _ in range(4)]:
        _same(cm(*feeds.values()), sess.run(None, feeds), "constant trip count, data condition")


def test_scan_outputs_of_a_run_time_loop_are_refused_naming_why():
    body = oh.make_graph([oh.make_node("Identity", ["c_in"], ["c_out"]),
                          oh.make_node("Add", ["y_in", "y_in"], ["y_out"]),
                          oh.make_node("Identity", ["y_out"], ["scan"])], "body",
                         [_vi("i", I64, []), _vi("c_in", B, []), _vi("y_in", F, [2])],
                         [_vi("c_out", B, []), _vi("y_out", F, [2]), _vi("scan", F, [2])])
    g = oh.make_graph([oh.make_node("Loop", ["M", "", "y0"], ["y", "ys"], body=body)], "loop",
                      [_vi("M", I64, []), _vi("y0", F, [2])], [_vi("y", F, [2]), _vi("ys", F, ["n", 2])])
    with pytest.raises(TesselError, match=r"Loop's trip count \(not run as control flow: it has 1 scan output.*'M'"):
        ts.compile(_model(g), example_inputs=(np.array(3, np.int64), np.ones(2, np.float32)), target="cpu")


def test_branches_of_different_shapes_are_refused_naming_why():
    then_g = oh.make_graph([oh.make_node("Identity", ["x"], ["t"])], "then", [], [_vi("t", F, [2, 3])])
    else_g = oh.make_graph([oh.make_node("Transpose", ["x"], ["e"])], "else", [], [_vi("e", F, [3, 2])])
    g = oh.make_graph([oh.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], "if",
                      [_vi("x", F, [2, 3]), _vi("c", B, [])], [_vi("y", F, None)])
    with pytest.raises(TesselError, match=r"If's condition \(not run as control flow: its branches give outputs of "
                                          r"different shapes.*float32\[2, 3\], else float32\[3, 2\]"):
        ts.compile(_model(g), example_inputs=(np.ones((2, 3), np.float32), np.array(True)), target="cpu")


def test_a_branch_that_cannot_run_for_these_shapes_fails_only_when_taken():
    """As in onnxruntime: a branch whose ops do not fit the input shapes is an error when taken."""
    then_g = oh.make_graph([oh.make_node("Neg", ["x"], ["t"])], "then", [], [_vi("t", F, [2, 3])])
    else_g = oh.make_graph([oh.make_node("MatMul", ["x", "x"], ["e"])], "else", [], [_vi("e", F, [2, 3])])
    g = oh.make_graph([oh.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)], "if",
                      [_vi("x", F, [2, 3]), _vi("c", B, [])], [_vi("y", F, [2, 3])])
    x = np.random.default_rng().standard_normal((2, 3)).astype(np.float32)
    cm = ts.compile(_model(g), example_inputs=(x, np.array(True)), target="cpu")
    np.testing.assert_array_equal(cm(x, np.array(True)), -x)
    with pytest.raises(ArgumentError, match=r"took its else branch, which cannot run for these input shapes: .*matmul"):
        cm(x, np.array(False))


def test_saving_a_model_with_control_flow_is_refused_clearly(tmp_path):
    x = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
    cm = ts.compile(_if_model(), example_inputs=(x, np.array(0, np.float32), np.array(True)), target="cpu")
    with pytest.raises(TesselError, match=r"cannot be stored|control flow"):
        cm.save(tmp_path / "m.tsl")


# -- long loops and scans iterate one compiled body instead of unrolling ---------------------------


@pytest.mark.parametrize("reverse", [0, 1])
def test_long_scan_iterates_one_compiled_body(reverse, monkeypatch):
    """A 150-step Scan (an RNN-like state update, scan output on axis 1, optionally reversed) is a
    loop node, not 150 inlined bodies, and matches onnxruntime."""
    steps = 150
    body = oh.make_graph([oh.make_node("MatMul", ["x_t", "w"], ["xw"]), oh.make_node("Add", ["s_in", "xw"], ["pre"]),
                          oh.make_node("Tanh", ["pre"], ["s_out"]), oh.make_node("Mul", ["s_out", "s_out"], ["o"])],
                         "body", [_vi("s_in", F, [2, 4]), _vi("x_t", F, [2, 3])],
                         [_vi("s_out", F, [2, 4]), _vi("o", F, [2, 4])],
                         initializer=[nh.from_array(_fixed(7, (3, 4)), "w")])
    node = oh.make_node("Scan", ["s0", "x"], ["s", "os"], body=body, num_scan_inputs=1, scan_input_axes=[1],
                        scan_input_directions=[reverse], scan_output_axes=[1], scan_output_directions=[reverse])
    model = _model(oh.make_graph([node], "scan", [_vi("s0", F, [2, 4]), _vi("x", F, [2, steps, 3])],
                                 [_vi("s", F, [2, 4]), _vi("os", F, [2, steps, 4])]))
    rng = np.random.default_rng()
    feeds = lambda: {"s0": rng.standard_normal((2, 4)).astype(np.float32),  # noqa: E731
                     "x": rng.standard_normal((2, steps, 3)).astype(np.float32)}
    first = feeds()
    cm = _compiled(model, tuple(first.values()), monkeypatch)
    assert [n.op for n in cm.graph.nodes.values()].count("loop") == 1 and len(cm.graph.nodes) < 10
    sess = _ort(model)
    for f in (first, feeds()):
        _same(cm(*f.values()), sess.run(None, f), f"reverse={reverse}")


def test_loop_longer_than_the_unroll_limit_runs_with_scan_outputs(monkeypatch):
    """5000 iterations (more than import-time unrolling takes) with a scan output of every step."""
    model = _loop_model(with_cond=False)
    g = model.graph
    g.input.pop()  # M becomes a constant
    g.initializer.append(nh.from_array(np.array(5000, np.int64), "M"))
    body = g.node[0].attribute[0].g
    body.node.append(oh.make_node("ReduceMax", ["y_out"], ["ymax"], keepdims=0))
    body.output.append(_vi("ymax", F, []))
    g.node[0].output.append("ymaxes")
    g.output.append(_vi("ymaxes", F, [5000]))
    rng = np.random.default_rng()
    f = _loop_feeds(rng)
    f["x"] *= np.float32(1e-3)
    cm = _compiled(model, tuple(f.values()), monkeypatch)
    assert [n.op for n in cm.graph.nodes.values()] == ["loop"]
    _same(cm(*f.values()), _ort(model).run(None, f), "5000 iterations")



def test_if_on_the_iteration_number_inside_a_run_time_loop(monkeypatch):
    """A loop body with an If on i % 3 == 0 (a run-time If nested in a run-time loop: the body is
    itself compiled with a control step)."""
    then_g = oh.make_graph([oh.make_node("Mul", ["y_in", "k"], ["t"])], "then", [], [_vi("t", F, [2, 3])])
    else_g = oh.make_graph([oh.make_node("Add", ["y_in", "x"], ["e0"]), oh.make_node("Sin", ["e0"], ["e"])], "else", [],
                           [_vi("e", F, [2, 3])])
    body = oh.make_graph([oh.make_node("Mod", ["i", "three"], ["r"]), oh.make_node("Equal", ["r", "zero"], ["c"]),
                          oh.make_node("If", ["c"], ["y_out"], then_branch=then_g, else_branch=else_g),
                          oh.make_node("Identity", ["c_in"], ["c_out"])], "body",
                         [_vi("i", I64, []), _vi("c_in", B, []), _vi("y_in", F, [2, 3])],
                         [_vi("c_out", B, []), _vi("y_out", F, [2, 3])],
                         initializer=[nh.from_array(np.array(3, np.int64), "three"),
                                      nh.from_array(np.array(0, np.int64), "zero"),
                                      nh.from_array(np.float32(-0.5), "k")])
    g = oh.make_graph([oh.make_node("Loop", ["M", "", "y0"], ["y"], body=body)], "nested",
                      [_vi("M", I64, []), _vi("y0", F, [2, 3]), _vi("x", F, [2, 3])], [_vi("y", F, [2, 3])])
    model = _model(g)
    sess = _ort(model)
    rng = np.random.default_rng()
    feeds = lambda m: {"M": np.array(m, np.int64), "y0": rng.standard_normal((2, 3)).astype(np.float32),  # noqa: E731
                       "x": rng.standard_normal((2, 3)).astype(np.float32)}
    cm = _compiled(model, tuple(feeds(2).values()), monkeypatch)
    for m in (1, 2, 7):
        f = feeds(m)
        _same(cm(*f.values()), sess.run(None, f), f"M={m}")


def test_run_time_control_flow_on_a_cuda_target_is_refused_naming_the_node():
    x = np.random.default_rng().standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(TesselError, match=r"run-time control flow \(.*if.*\) runs on the CPU only, not on cuda"):
        ts.compile(_if_model(), example_inputs=(x, np.array(0, np.float32), np.array(True)), target="cuda:sm_90a")
