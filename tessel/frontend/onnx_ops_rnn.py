"""ONNX recurrent ops, unrolled over the (static) sequence: `RNN`, `GRU` and `LSTM`, forward,
reverse or bidirectional, layouts 0 and 1, optional biases, initial states and LSTM peepholes,
`clip`, and the activations of the spec. The input projection of every step is one matmul over
the whole sequence; each step adds its recurrent matmul and the gate arithmetic.

Example:
    >>> all(op in CONVERTERS for op in ("RNN", "GRU", "LSTM"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.frontend.onnx_ops import CONVERTERS, converter, ins, opt, reshape, scalar  # noqa: F401
from tessel.frontend.onnx_ops_tensor import take

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# activation -> (number of parameters it takes from activation_alpha/beta, default alpha, beta)
_ACT_PARAMS = {"Relu": (0, None, None), "Tanh": (0, None, None), "Sigmoid": (0, None, None),
               "Softsign": (0, None, None), "Softplus": (0, None, None), "Affine": (2, 1.0, 0.0),
               "LeakyRelu": (1, 0.01, None), "ThresholdedRelu": (1, 1.0, None), "ScaledTanh": (2, 1.0, 1.0),
               "HardSigmoid": (2, 0.2, 0.5), "Elu": (1, 1.0, None)}


def _activation(ctx, name: str, alpha, beta):
    dt_scalar = lambda v, x: scalar(ctx, v, ctx.dtype(x))  # noqa: E731

    def f(x):
        if name in ("Relu", "Tanh", "Sigmoid"):
            return ctx.op(name.lower(), [x])
        if name == "Softsign":
            return ctx.op("div", [x, ctx.op("add", [dt_scalar(1.0, x), ctx.op("abs", [x])])])
        if name == "Softplus":
            return ctx.op("log", [ctx.op("add", [dt_scalar(1.0, x), ctx.op("exp", [x])])])
        if name == "Affine":
            return ctx.op("add", [ctx.op("mul", [x, dt_scalar(alpha, x)]), dt_scalar(beta, x)])
        if name == "LeakyRelu":
            return ctx.op("leaky_relu", [x], alpha=float(alpha))
        if name == "ThresholdedRelu":
            return ctx.op("where", [ctx.op("gt", [x, dt_scalar(alpha, x)]), x, dt_scalar(0.0, x)])
        if name == "ScaledTanh":
            return ctx.op("mul", [ctx.op("tanh", [ctx.op("mul", [x, dt_scalar(beta, x)])]), dt_scalar(alpha, x)])
        if name == "HardSigmoid":
            y = ctx.op("add", [ctx.op("mul", [x, dt_scalar(alpha, x)]), dt_scalar(beta, x)])
            return ctx.op("clip", [y], min=0.0, max=1.0)
        # Elu
        neg = ctx.op("mul", [ctx.op("sub", [ctx.op("exp", [x]), dt_scalar(1.0, x)]), dt_scalar(alpha, x)])
        return ctx.op("where", [ctx.op("lt", [x, dt_scalar(0.0, x)]), neg, x])

    return f


def _activations(ctx, node, kind: str, num_dir: int) -> list:
    """Per direction, the list of activation functions (f, g[, h])."""
    names = ctx.attr(node, "activations") or _DEFAULT_ACTS[kind] * num_dir
    per = len(_DEFAULT_ACTS[kind])
    if len(names) != per * num_dir:
        raise ctx.unsupported(f"{len(names)} activations for {num_dir} direction(s)")
    alphas = list(ctx.attr(node, "activation_alpha") or [])
    betas = list(ctx.attr(node, "activation_beta") or [])
    fns = []
    for name in names:
        if name not in _ACT_PARAMS:
            raise ctx.unsupported(f"activation '{name}'")
        n, a, b = _ACT_PARAMS[name]
        if n >= 1 and alphas:
            a = alphas.pop(0)
        if n >= 2 and betas:
            b = betas.pop(0)
        fns.append(_activation(ctx, name, a, b))
    return [fns[d * per:(d + 1) * per] for d in range(num_dir)]


def _part(ctx, v, k: int, hidden: int):
    """Gate k of `v` (its last axis holds the gates one after another)."""
    return take(ctx, v, np.arange(k * hidden, (k + 1) * hidden), len(ctx.shape(v)) - 1)


def _stack(ctx, values: list, axis: int):
    shape = ctx.shape(values[0])
    parts = [reshape(ctx, v, shape[:axis] + (1,) + shape[axis:]) for v in values]
    return parts[0] if len(parts) == 1 else ctx.op("concat", parts, axis=axis)


@converter("RNN", "GRU", "LSTM")
def _recurrent(ctx, node):
    kind = node.op_type
    vals = ins(ctx, node)
    x, w, r = vals[:3]
    bias, seq_lens, h0 = opt(vals, 3), opt(vals, 4), opt(vals, 5)
    c0, peep = (opt(vals, 6), opt(vals, 7)) if kind == "LSTM" else (None, None)
    layout = int(ctx.attr(node, "layout", 0))
    direction = ctx.attr(node, "direction", "forward")
    num_dir = 2 if direction == "bidirectional" else 1
    hidden = int(ctx.attr(node, "hidden_size") or ctx.shape(r)[-1])
    gates = _GATES[kind]
    clip = ctx.attr(node, "clip")
    if kind == "LSTM" and int(ctx.attr(node, "input_forget", 0)):
        raise ctx.unsupported("input_forget=1")
    if len(ctx.shape(x)) != 3:
        from tessel.errors import ShapeError

        raise ShapeError(f"{ctx.where()}: input X must have 3 dimensions, got shape {ctx.shape(x)}")
    if layout:
        x = ctx.op("transpose", [x], perm=(1, 0, 2))
        h0 = None if h0 is None else ctx.op("transpose", [h0], perm=(1, 0, 2))
        c0 = None if c0 is None else ctx.op("transpose", [c0], perm=(1, 0, 2))
    seq, batch, _ = ctx.shape(x)
    if seq_lens is not None:
        lens = ctx.need_const(seq_lens, "sequence_lens")
        if not np.all(np.asarray(lens) == seq):
            raise ctx.unsupported("sequence_lens shorter than the sequence")
    dt = ctx.dtype(x)
    acts = _activations(ctx, node, kind, num_dir)
    ys, hs, cs = [], [], []
    for d in range(num_dir):
        # `clip` bounds the gates' pre-activations; onnxruntime leaves the LSTM's cell state unclipped
        # before its output activation h(C), so the third LSTM activation takes C as it is.
        fns = [(lambda v, f=f: f(ctx.op("clip", [v], min=-float(clip), max=float(clip))))
               if clip and not (kind == "LSTM" and i == 2) else f for i, f in enumerate(acts[d])]
        f, g = fns[0], fns[-1] if kind == "RNN" else fns[1]
        wd = reshape(ctx, take(ctx, w, [d], 0), ctx.shape(w)[1:])
        rd_t = ctx.op("transpose", [reshape(ctx, take(ctx, r, [d], 0), ctx.shape(r)[1:])], perm=(1, 0))
        xw = ctx.op("matmul", [x, ctx.op("transpose", [wd], perm=(1, 0))])  # (seq, batch, G*H)
        rb = None
        if bias is not None:
            bd = reshape(ctx, take(ctx, bias, [d], 0), (2 * gates * hidden,))
            wb = take(ctx, bd, np.arange(gates * hidden), 0)
            rb = take(ctx, bd, np.arange(gates * hidden, 2 * gates * hidden), 0)
            xw = ctx.op("add", [xw, wb])
        zero = ctx.const(np.zeros((batch, hidden), np.dtype(dt)), "zero_state")
        h = zero if h0 is None else reshape(ctx, take(ctx, h0, [d], 0), (batch, hidden))
        c = zero if c0 is None else reshape(ctx, take(ctx, c0, [d], 0), (batch, hidden))
        pd = None if peep is None else reshape(ctx, take(ctx, peep, [d], 0), (3 * hidden,))
        steps = range(seq) if (direction == "forward" or (direction == "bidirectional" and d == 0)) \
            else range(seq - 1, -1, -1)
        out = [None] * seq
        for t in steps:
            xt = reshape(ctx, take(ctx, xw, [t], 0), (batch, gates * hidden))
            hr = ctx.op("matmul", [h, rd_t])  # (batch, G*H)
            if rb is not None and kind != "GRU":
                hr = ctx.op("add", [hr, rb])
            if kind == "RNN":
                h = f(ctx.op("add", [xt, hr]))
            elif kind == "GRU":
                h = _gru_step(ctx, node, xt, hr, h, rb, rd_t, hidden, f, g)
            else:
                h, c = _lstm_step(ctx, xt, hr, c, pd, hidden, f, g, fns[2])
            out[t] = h
        ys.append(_stack(ctx, out, 0))  # (seq, batch, H)
        hs.append(h)
        cs.append(c)
    y = _stack(ctx, ys, 1)  # (seq, num_dir, batch, H)
    yh, yc = _stack(ctx, hs, 0), _stack(ctx, cs, 0)  # (num_dir, batch, H)
    if layout:
        y = ctx.op("transpose", [y], perm=(2, 0, 1, 3))
        yh, yc = (ctx.op("transpose", [v], perm=(1, 0, 2)) for v in (yh, yc))
    return [y, yh, yc][:len(node.output)]


def _gru_step(ctx, node, xt, hr, h, rb, rd_t, hidden, f, g):
    """z = f(xz + hz), r = f(xr + hr), n = g(xn + (r * h) Rn^T + Rbn) (or r * (h Rn^T + Rbn) with
    linear_before_reset), h' = (1 - z) * n + z * h; hr holds h R^T (no recurrent bias yet)."""
    if rb is not None:
        hr = ctx.op("add", [hr, rb])
    z = f(ctx.op("add", [_part(ctx, xt, 0, hidden), _part(ctx, hr, 0, hidden)]))
    rg = f(ctx.op("add", [_part(ctx, xt, 1, hidden), _part(ctx, hr, 1, hidden)]))
    if int(ctx.attr(node, "linear_before_reset", 0)):
        inner = ctx.op("mul", [rg, _part(ctx, hr, 2, hidden)])
    else:
        rn_t = _part(ctx, rd_t, 2, hidden)  # (H, H): the columns of the candidate gate
        inner = ctx.op("matmul", [ctx.op("mul", [rg, h]), rn_t])
        if rb is not None:
            inner = ctx.op("add", [inner, _part(ctx, rb, 2, hidden)])
    n = g(ctx.op("add", [_part(ctx, xt, 2, hidden), inner]))
    one = scalar(ctx, 1.0, ctx.dtype(h))
    return ctx.op("add", [ctx.op("mul", [ctx.op("sub", [one, z]), n]), ctx.op("mul", [z, h])])


def _lstm_step(ctx, xt, hr, c, pd, hidden, f, g, h_act):
    """Gates i, o, f, c (ONNX order); peepholes P = (Pi, Po, Pf) read C_{t-1} (i, f) and C_t (o)."""
    pre = ctx.op("add", [xt, hr])
    gi, go, gf, gc = (_part(ctx, pre, k, hidden) for k in range(4))
    if pd is not None:
        gi = ctx.op("add", [gi, ctx.op("mul", [_part(ctx, pd, 0, hidden), c])])
        gf = ctx.op("add", [gf, ctx.op("mul", [_part(ctx, pd, 2, hidden), c])])
    c_new = ctx.op("add", [ctx.op("mul", [f(gf), c]), ctx.op("mul", [f(gi), g(gc)])])
    if pd is not None:
        go = ctx.op("add", [go, ctx.op("mul", [_part(ctx, pd, 1, hidden), c_new])])
    return ctx.op("mul", [f(go), h_act(c_new)]), c_new
