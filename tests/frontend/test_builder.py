"""GraphBuilder: models built in Python compile and compute what numpy computes.

Properties: an MLP, a pre-norm transformer block (attention through sdpa and through
matmul+softmax; layer norm; GELU MLP; residuals) and a long-convolution block (a conv1d with a
kernel as long as the sequence, and the same convolution through rfft * rfft -> irfft) built with
the builder compile to models that agree with the graph reference and with independent numpy code;
the builder normalises axes, resolves -1 in reshapes, turns arrays and numbers into constants of
the right dtype, reaches every registered op, and reports misuse.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessel.compiler.model import compile_graph
from tessel.errors import ShapeError, TesselError
from tessel.frontend.builder import GraphBuilder
from tessel.frontend.reference import run_graph


@pytest.fixture(autouse=True)
def _cache_and_debug(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("TESSEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tessel-cache"))
    monkeypatch.setenv("TESSEL_DEBUG", "1")


def _w(rng, *shape, scale=None):
    scale = 1 / math.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check(b, inputs, want, rtol=1e-4, atol=1e-5):
    cm = compile_graph(b.graph)
    got = cm(*inputs)
    ref = run_graph(b.graph, inputs)[0]
    np.testing.assert_allclose(ref, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return cm


def _erf(x):
    return np.vectorize(math.erf)(x)


def _layer_norm(x, w, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + bias


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_mlp():
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = _w(rng, 32, 16), _w(rng, 32), _w(rng, 8, 32), _w(rng, 8)
    b = GraphBuilder("mlp")
    x = b.input("x", (8, 16))
    h = b.relu(b.linear(x, b.const(w1), b.const(b1)))
    b.output(b.linear(h, w2, b2))  # arrays become constants
    xs = _w(rng, 8, 16, scale=1.0)
    want = np.maximum(xs @ w1.T + b1, 0) @ w2.T + b2
    cm = _check(b, [xs], want)
    assert [s.group.describe() for s in cm.steps] == ["matmul+add+relu", "matmul+add"]


B, S, D, H = 2, 8, 32, 4


def _block_params(rng):
    return {"ln1": (1 + _w(rng, D), _w(rng, D)), "qkv": (_w(rng, 3 * D, D), _w(rng, 3 * D)),
            "out": (_w(rng, D, D), _w(rng, D)), "ln2": (1 + _w(rng, D), _w(rng, D)),
            "fc1": (_w(rng, 4 * D, D), _w(rng, 4 * D)), "fc2": (_w(rng, D, 4 * D), _w(rng, D))}


def _build_block(b, x, p, attention):
    hd = D // H
    h = b.layer_norm(x, *p["ln1"], eps=1e-5)
    qkv = b.linear(h, *p["qkv"])  # (B, S, 3D)
    qkv = b.transpose(b.reshape(qkv, (B, S, 3, H, hd)), (2, 0, 3, 1, 4))  # (3, B, H, S, hd)
    q, k, v = (b.reshape(b.slice(qkv, [i], [i + 1], [0]), (B, H, S, hd)) for i in range(3))
    if attention == "sdpa":
        a = b.sdpa(q, k, v, is_causal=True)
    else:
        s = b.matmul(q, b.transpose(k, (0, 1, 3, 2))) * (1 / math.sqrt(hd))
        mask = np.triu(np.full((S, S), -1e9, np.float32), 1)
        a = b.matmul(b.softmax(s + mask, axis=-1), v)
    a = b.reshape(b.transpose(a, (0, 2, 1, 3)), (B, S, D))
    x = x + b.linear(a, *p["out"])
    h = b.gelu(b.linear(b.layer_norm(x, *p["ln2"]), *p["fc1"]))
    return x + b.linear(h, *p["fc2"])


def _numpy_block(x, p):
    hd = D // H
    h = _layer_norm(x, *p["ln1"])
    qkv = (h @ p["qkv"][0].T + p["qkv"][1]).reshape(B, S, 3, H, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
    a = (_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(B, S, D)
    x = x + a @ p["out"][0].T + p["out"][1]
    h = _layer_norm(x, *p["ln2"]) @ p["fc1"][0].T + p["fc1"][1]
    h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
    return x + h @ p["fc2"][0].T + p["fc2"][1]


@pytest.mark.parametrize("attention", ["sdpa", "matmul_softmax"])
def test_transformer_block(attention):
    rng = np.random.default_rng(1)
    layers = [_block_params(rng), _block_params(rng)]
    b = GraphBuilder("block")
    x = b.input("x", (B, S, D))
    y = x
    for p in layers:
        y = _build_block(b, y, p, attention)
    b.output(y)
    xs = _w(rng, B, S, D, scale=1.0)
    want = xs.astype(np.float64)
    for p in layers:
        want = _numpy_block(want, p)
    cm = _check(b, [xs], want, rtol=1e-4, atol=1e-4)
    assert len(cm.kernels) < len(cm.steps)  # the two layers share their kernels
    assert any("gelu" in s.group.describe() and "matmul" in s.group.describe() for s in cm.steps)


L = 64


def _long_conv_numpy(x, k, bias):
    """Causal depthwise-free long convolution: y[n, f, t] = sum_c sum_j k[f, c, j] x[n, c, t - j]."""
    n, c, length = x.shape
    y = np.zeros((n, k.shape[0], length))
    for j in range(k.shape[2]):
        y[:, :, j:] += np.einsum("fc,nct->nft", k[:, :, j], x[:, :, : length - j])
    return y + bias[None, :, None]


def test_long_convolution_block_conv1d():
    rng = np.random.default_rng(2)
    C = 4
    k, bias = _w(rng, C, C, L, scale=0.1), _w(rng, C)
    b = GraphBuilder("longconv")
    x = b.input("x", (2, C, L))
    # causal: pad L-1 zeros on the left; flipping the kernel turns cross-correlation into convolution
    y = b.conv1d(x, k[:, :, ::-1].copy(), bias, padding=(L - 1, 0))
    b.output(b.gelu(y) + x)
    xs = _w(rng, 2, C, L, scale=1.0)
    ref = _long_conv_numpy(xs.astype(np.float64), k, bias)
    want = 0.5 * ref * (1 + _erf(ref / math.sqrt(2))) + xs
    cm = _check(b, [xs], want, rtol=1e-4, atol=1e-4)
    assert cm.steps[0].group.describe().startswith("conv")


def test_long_convolution_block_fft():
    """The same causal long convolution through FFTs of length 2L (no wrap-around), channel by
    channel: irfft(rfft(x) * rfft(k)) with the complex product spelled out on (re, im) pairs."""
    rng = np.random.default_rng(3)
    C = 4
    k = _w(rng, C, L, scale=0.1)
    b = GraphBuilder("fftconv")
    x = b.input("x", (2, C, L))
    xf = b.rfft(b.pad(x, (0, 0, 0, 0, 0, L)), n=2 * L, axis=2)  # (2, C, L+1, 2)
    kf = np.fft.rfft(k, n=2 * L, axis=1)
    kre, kim = kf.real.astype(np.float32)[..., None], kf.imag.astype(np.float32)[..., None]
    xre = b.slice(xf, [0], [1], [3])
    xim = b.slice(xf, [1], [2], [3])
    yf = b.concat([xre * kre - xim * kim, xre * kim + xim * kre], axis=3)
    y = b.slice(b.irfft(yf, n=2 * L, axis=2), [0], [L], [2])
    b.output(y + x)
    xs = _w(rng, 2, C, L, scale=1.0)
    want = np.stack([[np.convolve(xs[n, c].astype(np.float64), k[c])[:L] for c in range(C)] for n in range(2)]) + xs
    _check(b, [xs], want, rtol=1e-4, atol=1e-4)


# -- the builder itself ----------------------------------------------------------------------------


def test_axes_shapes_constants_and_generic_ops():
    b = GraphBuilder("misc")
    x = b.input("x", (2, 3, 4))
    assert b.reshape(x, (-1, 4)).shape == (6, 4)
    assert b.graph.nodes[next(reversed(b.graph.nodes))].attrs["shape"] == (6, 4)
    s = b.softmax(x, axis=-1)
    assert b.graph.nodes[b.graph.producer(s.name).name].attrs["axis"] == 2
    r = b.reduce_sum(x, axes=[-1, 0], keepdims=True)
    assert r.shape == (1, 3, 1) and b.graph.producer(r.name).attrs["axes"] == (0, 2)
    assert b.transpose(x).shape == (4, 3, 2) and x.T.shape == (4, 3, 2)
    assert b.flatten(x).shape == (2, 12) and b.unsqueeze(x, -1).shape == (2, 3, 4, 1)
    h = b.input("h", (4,), "float16")
    y = 2 * h + 1  # numbers take the other operand's dtype
    assert y.dtype == "float16"
    assert b.graph.values[b.graph.producer(y.name).inputs[0]].dtype == "float16"
    z = b.abs(x)  # not spelled out in the builder: reached through the registry
    assert z.shape == x.shape and b.graph.producer(z.name).op == "abs"
    assert "abs" in dir(b) and "reciprocal" in dir(b)


def test_misuse_is_reported():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    with pytest.raises(ShapeError, match=r"reshape of \(2, 3\) \(6 elements\) to \(4, 2\)"):
        b.reshape(x, (4, 2))
    with pytest.raises(ShapeError, match="out of range"):
        b.softmax(x, axis=2)
    with pytest.raises(AttributeError, match="no op 'frobnicate'"):
        b.frobnicate(x)
    other = GraphBuilder().input("y", (2, 3))
    with pytest.raises(TesselError, match="belongs to another GraphBuilder"):
        b.add(x, other)
    with pytest.raises(ShapeError):
        b.add(x, b.input("z", (4,)))
