"""CPU convolutions through the default path (lowering + cpu.generic + TVM), against the ops' numpy
reference and torch, on fresh random inputs: both loop forms of the lowering (NCHW with a padded copy,
vectorized along output rows; channels-last accumulation, vectorized along output channels, for
strided or narrow outputs), grouped/depthwise, 1-D, with and without bias; and the properties the
speed relies on (no guard in the contraction, its inner loop vectorized along the right axis)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from tessel.compiler.model import compile_graph
from tessel.frontend.builder import GraphBuilder
from tessel.ir.nodes import For, IfThenElse, Load, Select, Store, walk


def _conv_model(cin, cout, size, k=3, stride=1, padding=1, groups=1, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    g = GraphBuilder("conv")
    shape = (2, cin) + tuple(size)
    x = g.input("x", shape)
    w = g.const(rng.standard_normal((cout, cin // groups) + (k,) * len(size)).astype("f4"), "w")
    args = [x, w] + ([g.const(rng.standard_normal(cout).astype("f4"), "b")] if bias else [])
    y = g.relu(g.op("conv", *args, stride=stride, padding=padding, groups=groups))
    g.output(y)
    return compile_graph(g.graph), shape


CASES = {
    "nchw_wide_rows": dict(cin=3, cout=8, size=(6, 32)),
    "channels_last_odd_rows": dict(cin=3, cout=8, size=(5, 40)),
    "channels_last_stride2": dict(cin=4, cout=16, size=(9, 9), stride=2),
    "channels_last_narrow": dict(cin=5, cout=16, size=(5, 7), bias=False),
    "grouped": dict(cin=4, cout=8, size=(7, 7), groups=2),
    "depthwise_stride2": dict(cin=8, cout=8, size=(9, 9), groups=8, stride=2),
    "conv1d_channels_last": dict(cin=3, cout=8, size=(11,), k=3, stride=2, padding=2),
    "pointwise": dict(cin=6, cout=16, size=(4, 4), k=1, padding=0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_matches_reference_on_fresh_inputs(name):
    cm, shape = _conv_model(**CASES[name])
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # hash() of a str changes per process
    for _ in range(2):  # the second call runs through the bound (argument-packed-once) path
        x = rng.standard_normal(shape).astype("f4")
        got, want = cm(x), cm.run_reference(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_conv_matches_torch():
    torch = pytest.importorskip("torch")
    cm, shape = _conv_model(4, 16, (9, 9), stride=2, seed=3)
    x = np.random.default_rng(5).standard_normal(shape).astype("f4")
    rng = np.random.default_rng(3)  # the same draws as _conv_model's weights and bias
    wt = rng.standard_normal((16, 4, 3, 3)).astype("f4")
    b = rng.standard_normal(16).astype("f4")
    want = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b),
                                                 stride=2, padding=1)).numpy()
    np.testing.assert_allclose(cm(x), want, rtol=1e-4, atol=1e-4)


def _contraction_stage(kernel):
    """The loop nest that accumulates (a store whose value reads the stored buffer)."""
    for st in walk(kernel.ir.body):
        if isinstance(st, Store) and any(isinstance(n, Load) and n.buffer.name == st.buffer.name
                                         for n in walk(st.value)):
            return st
    raise AssertionError("no accumulating store")


@pytest.mark.parametrize("name,axis", [("nchw_wide_rows", "rows"), ("channels_last_stride2", "channels")])
def test_contraction_has_no_guard_and_vectorizes(name, axis):
    cm, _ = _conv_model(**CASES[name])
    (kernel,) = [k for k in cm.kernels if "conv" in k.name]
    acc = _contraction_stage(kernel)
    # the padded copy carries the bounds test, not the contraction
    assert not any(isinstance(n, Select) for n in walk(acc.value))
    loops = [n for n in walk(kernel.ir.body) if isinstance(n, For)]
    vec = [lp for lp in loops if lp.kind == "vectorized" and any(n is acc for n in walk(lp.body))]
    assert vec, "the accumulation is not inside a vectorized loop"
    assert not any(isinstance(n, IfThenElse) for lp in vec for n in walk(lp.body))
    last = acc.indices[-1]  # the accumulator's last index runs along the vectorized loop
    assert any(v == vec[-1].var for v in walk(last))
    if axis == "channels":  # channels-last: a (rows, channels) accumulator, channels innermost
        assert acc.buffer.shape[-1] % 8 == 0


def test_constant_weight_is_transposed_once_at_compile_time():
    """canonicalize's conv_weight_channels_last rule: a channels-last conv's constant weight is
    transposed (and folded) at compile time, so the kernel copies no weight per call; results stay right."""
    from tessel.ir.text import to_text

    cm, shape = _conv_model(**CASES["channels_last_stride2"])
    assert cm.report["canonicalize"].get("conv_weight_channels_last") == 1
    (kernel,) = cm.kernels
    assert "_wt" not in to_text(kernel.ir)  # no per-call transposed copy
    (w,) = [p for p in kernel.ir.params if len(p.shape) == 4 and p.shape[-1] == 16]  # (C, kh, kw, F)
    assert tuple(w.shape) == (4, 3, 3, 16)
    x = np.random.default_rng(11).standard_normal(shape).astype("f4")
    want = cm.run_reference(x)
    np.testing.assert_allclose(cm(x), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
