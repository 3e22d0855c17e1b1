"""ONNX training ops of the `ai.onnx.preview.training` domain, as elementwise formulas (onnx's
reference definitions), computed in float64 and cast to each input's dtype: `Adagrad`, `Adam` and
`Momentum` (standard and Nesterov), each updating any number of tensors at once (inputs R, T, then
the tensors X..., their gradients G..., and their state V.../H...).

Example:
    >>> all(f"ai.onnx.preview.training.{op}" in CONVERTERS for op in ("Adagrad", "Adam", "Momentum"))
    True
"""

from __future__ import annotations

from tessel.frontend.onnx_ops import CONVERTERS, cast, ins, scalar  # noqa: F401 - CONVERTERS: the docstring

_DOMAIN = "ai.onnx.preview.training"


def _training(*names):
    def deco(f):
        for n in names:
            CONVERTERS[f"{_DOMAIN}.{n}"] = f
        return f

    return deco


class _F64:
    """Float64 arithmetic on Graph values and Python numbers."""

    def __init__(self, ctx):
        self.ctx = ctx

    def v(self, x):
        return scalar(self.ctx, x, "float64") if isinstance(x, (int, float)) else cast(self.ctx, x, "float64")

    def __call__(self, op, *xs):
        return self.ctx.op(op, [self.v(x) for x in xs])


def _groups(ctx, node, n_state: int):
    vals = ins(ctx, node)
    r, t, rest = vals[0], vals[1], vals[2:]
    n = len(rest) // (2 + n_state)
    if n * (2 + n_state) != len(rest) or n == 0:
        raise ctx.unsupported(f"{len(rest)} tensor inputs after R and T, expected a multiple of {2 + n_state}")
    return r, t, [rest[k * n:(k + 1) * n] for k in range(2 + n_state)]


@_training("Adagrad")
def _adagrad(ctx, node):
    r, t, (xs, gs, hs) = _groups(ctx, node, 1)
    decay, eps = float(ctx.attr(node, "decay_factor", 0.0)), float(ctx.attr(node, "epsilon", 0.0))
    norm = float(ctx.attr(node, "norm_coefficient", 0.0))
    f = _F64(ctx)
    rate = f("div", r, f("add", 1.0, f("mul", t, decay)))
    x_new, h_new = [], []
    for x, g, h in zip(xs, gs, hs):
        g_reg = f("add", f("mul", norm, x), g)
        h2 = f("add", h, f("mul", g_reg, g_reg))
        step = f("div", f("mul", rate, g_reg), f("add", f("sqrt", h2), eps))
        x_new.append(cast(ctx, f("sub", x, step), ctx.dtype(x)))
        h_new.append(cast(ctx, h2, ctx.dtype(h)))
    return x_new + h_new


@_training("Adam")
def _adam(ctx, node):
    r, t, (xs, gs, vs, hs) = _groups(ctx, node, 2)
    alpha, beta = float(ctx.attr(node, "alpha", 0.9)), float(ctx.attr(node, "beta", 0.999))
    eps, norm = float(ctx.attr(node, "epsilon", 1e-6)), float(ctx.attr(node, "norm_coefficient", 0.0))
    post = float(ctx.attr(node, "norm_coefficient_post", 0.0))
    f = _F64(ctx)
    adjusted = f("div", f("mul", r, f("sqrt", f("sub", 1.0, f("pow", beta, t)))), f("sub", 1.0, f("pow", alpha, t)))
    rate = ctx.op("where", [ctx.op("gt", [f.v(t), f.v(0.0)]), adjusted, f.v(r)])
    out_x, out_v, out_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        g_reg = f("add", f("mul", norm, x), g)
        v2 = f("add", f("mul", alpha, v), f("mul", 1.0 - alpha, g_reg))
        h2 = f("add", f("mul", beta, h), f("mul", 1.0 - beta, f("mul", g_reg, g_reg)))
        x2 = f("sub", x, f("mul", rate, f("div", v2, f("add", f("sqrt", h2), eps))))
        out_x.append(cast(ctx, f("mul", 1.0 - post, x2), ctx.dtype(x)))
        out_v.append(cast(ctx, v2, ctx.dtype(v)))
        out_h.append(cast(ctx, h2, ctx.dtype(h)))
    return out_x + out_v + out_h


@_training("Momentum")
def _momentum(ctx, node):
    r, t, (xs, gs, vs) = _groups(ctx, node, 1)
    alpha, beta = float(ctx.attr(node, "alpha")), float(ctx.attr(node, "beta"))
    norm, mode = float(ctx.attr(node, "norm_coefficient", 0.0)), ctx.attr(node, "mode", "standard")
    if mode not in ("standard", "nesterov"):
        raise ctx.unsupported(f"mode {mode!r}")
    f = _F64(ctx)
    beta_t = ctx.op("where", [ctx.op("gt", [f.v(t), f.v(0.0)]), f.v(beta), f.v(1.0)])
    out_x, out_v = [], []
    for x, g, v in zip(xs, gs, vs):
        g_reg = f("add", f("mul", norm, x), g)
        v2 = f("add", f("mul", alpha, v), f("mul", beta_t, g_reg))
        step = v2 if mode == "standard" else f("add", g_reg, f("mul", alpha, v2))
        out_x.append(cast(ctx, f("sub", x, f("mul", r, step)), ctx.dtype(x)))
        out_v.append(cast(ctx, v2, ctx.dtype(v)))
    return out_x + out_v
