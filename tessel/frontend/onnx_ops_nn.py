"""ONNX contraction, pooling, softmax and reduction converters (into onnx_ops.CONVERTERS).

Conv and pooling resolve `auto_pad` into explicit per-side pads here (shapes are static); the norms
are in onnx_ops_norm.py. Reductions the op set lacks (L1, L2, log-sum-exp, sum of squares) are compositions.

Example:
    >>> from tessel.frontend.onnx_ops import CONVERTERS
    >>> all(op in CONVERTERS for op in ("Gemm", "Conv", "MaxPool", "ReduceMean", "Softmax"))
    True
"""

from __future__ import annotations

import numpy as np

from tessel.errors import ShapeError
from tessel.frontend.onnx_ops import cast, const_ints, converter, ins, norm_axis, opt, reshape, scalar
from tessel.frontend.onnx_ops_tensor import take


# -- contractions ------------------------------------------------------------------------------------------

@converter("MatMul")
def _matmul(ctx, node):
    a, b = ins(ctx, node)
    return [ctx.op("matmul", [a, b])]


@converter("Gemm")
def _gemm(ctx, node):
    vals = ins(ctx, node)
    a, b, c = vals[0], vals[1], opt(vals, 2)
    alpha, beta = float(ctx.attr(node, "alpha", 1.0)), float(ctx.attr(node, "beta", 1.0))
    ta, tb = int(ctx.attr(node, "transA", 0)), int(ctx.attr(node, "transB", 0))
    dt = ctx.dtype(a)
    n = ctx.shape(b)[0 if tb else 1]
    if tb and not ta and alpha == 1.0 and (c is None or (beta == 1.0 and ctx.shape(c) == (n,))):
        return [ctx.op("linear", [a, b] + ([c] if c is not None else []))]  # what nn.Linear exports
    if ta:
        a = ctx.op("transpose", [a], perm=(1, 0))
    if tb:
        b = ctx.op("transpose", [b], perm=(1, 0))
    y = ctx.op("matmul", [a, b])
    if alpha != 1.0:
        y = ctx.op("mul", [y, scalar(ctx, alpha, dt)])
    if c is not None and beta != 0.0:
        if beta != 1.0:
            c = ctx.op("mul", [c, scalar(ctx, beta, dt)])
        y = ctx.op("add", [y, c])
    return [y]


def _spatial_pads(ctx, node, in_sp, kernel, strides, dilations) -> list:
    """Per-side pads (begin..., end...) from `pads` or `auto_pad`."""
    nd = len(in_sp)
    auto = ctx.attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = ctx.attr(node, "pads") or [0] * (2 * nd)
        if len(pads) != 2 * nd:
            raise ShapeError(f"{ctx.where()}: {len(pads)} pads for {nd} spatial dims")
        return list(pads)
    if auto == "VALID":
        return [0] * (2 * nd)
    begin, end = [], []
    for d, k, s, dl in zip(in_sp, kernel, strides, dilations):
        out = -(-d // s)
        total = max(0, (out - 1) * s + (k - 1) * dl + 1 - d)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - small if auto == "SAME_UPPER" else small)
    return begin + end


@converter("Conv")
def _conv(ctx, node):
    vals = ins(ctx, node)
    return [conv(ctx, node, vals[0], vals[1], opt(vals, 2))]


def conv(ctx, node, x, w, b=None) -> str:
    """The convolution of Graph values x and w (and bias b) with the Conv attributes of `node`."""
    xs, ws = ctx.shape(x), ctx.shape(w)
    nd = len(xs) - 2
    if nd not in (1, 2):
        raise ctx.unsupported(f"{nd} spatial dims (tessel's conv takes 1 or 2)")
    kernel = ctx.attr(node, "kernel_shape") or list(ws[2:])
    strides = ctx.attr(node, "strides") or [1] * nd
    dilations = ctx.attr(node, "dilations") or [1] * nd
    pads = _spatial_pads(ctx, node, xs[2:], kernel, strides, dilations)
    args = [x, w] + ([b] if b is not None else [])
    return ctx.op("conv", args, stride=tuple(strides), padding=tuple(pads), dilation=tuple(dilations),
                  groups=int(ctx.attr(node, "group", 1)))


@converter("ConvTranspose")
def _conv_transpose(ctx, node):
    """A convolution of the input with zeros inserted between its elements (stride - 1 per gap),
    padded by dilation * (kernel - 1) - pads (plus output_padding at the end), with the weight's
    in/out channels swapped per group and its kernel flipped."""
    vals = ins(ctx, node)
    x, w, b = vals[0], vals[1], opt(vals, 2)
    xs, ws = ctx.shape(x), ctx.shape(w)
    nd = len(xs) - 2
    if nd not in (1, 2):
        raise ctx.unsupported(f"{nd} spatial dims (tessel's conv takes 1 or 2)")
    g = int(ctx.attr(node, "group", 1))
    kernel = list(ctx.attr(node, "kernel_shape") or ws[2:])
    strides = ctx.attr(node, "strides") or [1] * nd
    dil = ctx.attr(node, "dilations") or [1] * nd
    out_pad = ctx.attr(node, "output_padding") or [0] * nd
    full = [s * (i - 1) + op + (k - 1) * d + 1 for s, i, op, k, d in zip(strides, xs[2:], out_pad, kernel, dil)]
    out_shape, auto = ctx.attr(node, "output_shape"), ctx.attr(node, "auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER") and out_shape is None:
        out_shape = [i * s for i, s in zip(xs[2:], strides)]
    if out_shape is not None:
        total = [f - o for f, o in zip(full, out_shape[-nd:])]
        upper = auto == "SAME_UPPER"
        begin = [t // 2 if upper else t - t // 2 for t in total]
        pads = begin + [t - bg for t, bg in zip(total, begin)]
    elif auto == "VALID":
        pads = [0] * (2 * nd)
    else:
        pads = ctx.attr(node, "pads") or [0] * (2 * nd)
    # zeros between elements: (N, C, H, W) -> (N, C, H, 1, W, 1) -> pad to (N, C, H, s, W, s) -> (N, C, H*s, W*s)
    y = x
    if any(s > 1 for s in strides):
        inter = list(xs[:2]) + [v for i in xs[2:] for v in (i, 1)]
        zpads = [0] * len(inter) + [0, 0] + [v for s in strides for v in (0, s - 1)]
        y = ctx.op("pad", [reshape(ctx, x, inter)], pads=tuple(zpads), value=0.0)
        y = reshape(ctx, y, list(xs[:2]) + [i * s for i, s in zip(xs[2:], strides)])
    begin = [d * (k - 1) - p for d, k, p in zip(dil, kernel, pads[:nd])]
    end = [d * (k - 1) - p + op - (s - 1) for d, k, p, op, s in zip(dil, kernel, pads[nd:], out_pad, strides)]
    if any(begin) or any(end):
        y = ctx.op("pad", [y], pads=tuple([0, 0] + begin + [0, 0] + end), value=0.0)
    # weight (C_in, C_out/g, *k) -> (C_out, C_in/g, *k), kernel flipped
    cin, coutg = ws[0], ws[1]
    wt = reshape(ctx, w, (g, cin // g, coutg) + tuple(ws[2:]))
    wt = ctx.op("transpose", [wt], perm=(0, 2, 1) + tuple(range(3, 3 + nd)))
    wt = reshape(ctx, wt, (g * coutg, cin // g) + tuple(ws[2:]))
    for d in range(nd):
        wt = take(ctx, wt, np.arange(ws[2 + d] - 1, -1, -1), 2 + d)
    args = [y, wt] + ([b] if b is not None else [])
    return [ctx.op("conv", args, stride=(1,) * nd, padding=(0,) * (2 * nd), dilation=tuple(dil), groups=g)]


@converter("MaxPool", "AveragePool")
def _pool(ctx, node):
    (x,) = ins(ctx, node)
    xs = ctx.shape(x)
    nd = len(xs) - 2
    if nd not in (1, 2, 3):
        raise ctx.unsupported(f"{nd} spatial dims (tessel's pools take 1 to 3)")
    kernel = ctx.attr(node, "kernel_shape")
    strides = ctx.attr(node, "strides") or [1] * nd
    dilations = ctx.attr(node, "dilations") or [1] * nd
    pads = _spatial_pads(ctx, node, xs[2:], kernel, strides, dilations)
    attrs = dict(kernel=tuple(kernel), stride=tuple(strides), padding=tuple(pads), dilation=tuple(dilations),
                 ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)))
    if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1]:
        from tessel.frontend.onnx_ops_extra import max_pool_with_indices

        return max_pool_with_indices(ctx, node, x, kernel, strides, dilations, pads, attrs["ceil_mode"])
    if node.op_type == "MaxPool":
        return [_pool_op(ctx, "max_pool", x, count_include_pad=False, **attrs)]
    return [_pool_op(ctx, "avg_pool", x, count_include_pad=bool(ctx.attr(node, "count_include_pad", 0)), **attrs)]


def _pool_op(ctx, op: str, x: str, **attrs) -> str:
    """A 1-D or 2-D pool op; a 3-D one as a 2-D pool over (H, W) then a 1-D pool over D. Box windows
    separate: the max over a (d, h, w) box is the max over d of the max over (h, w), and the number
    of cells an average counts is the product of the per-axis counts (padding and ceil_mode act per
    axis), so the mean is the mean over d of the means over (h, w)."""
    xs = ctx.shape(x)
    if len(xs) - 2 < 3:
        return ctx.op(op, [x], **attrs)
    n, c, d, h, w = xs
    k, st, dl, p = attrs["kernel"], attrs["stride"], attrs["dilation"], attrs["padding"]
    rest = dict(ceil_mode=attrs["ceil_mode"], count_include_pad=attrs["count_include_pad"])
    hw = ctx.op(op, [reshape(ctx, x, (n, c * d, h, w))], kernel=k[1:], stride=st[1:], dilation=dl[1:],
                padding=(p[1], p[2], p[4], p[5]), **rest)
    ho, wo = ctx.shape(hw)[2:]
    t = ctx.op("transpose", [reshape(ctx, hw, (n, c, d, ho * wo))], perm=(0, 1, 3, 2))
    dd = ctx.op(op, [reshape(ctx, t, (n, c * ho * wo, d))], kernel=k[:1], stride=st[:1], dilation=dl[:1],
                padding=(p[0], p[3]), **rest)
    do = ctx.shape(dd)[2]
    return ctx.op("transpose", [reshape(ctx, dd, (n, c, ho, wo, do))], perm=(0, 1, 4, 2, 3))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node):
    (x,) = ins(ctx, node)
    op = "reduce_mean" if node.op_type == "GlobalAveragePool" else "reduce_max"
    return [ctx.op(op, [x], axes=tuple(range(2, len(ctx.shape(x)))), keepdims=True)]


# -- softmax ---------------------------------------------------------------------------------------------

@converter("Softmax", "LogSoftmax", "Hardmax")
def _softmax(ctx, node):
    (x,) = ins(ctx, node)
    shape = ctx.shape(x)
    rank = len(shape)
    if ctx.version(node) >= 13:
        axis = norm_axis(ctx, ctx.attr(node, "axis", -1), rank)
        return [_softmax_axis(ctx, node.op_type, x, axis)]
    # before opset 13 the input is coerced to 2-D: (prod(shape[:axis]), prod(shape[axis:]))
    axis = norm_axis(ctx, ctx.attr(node, "axis", 1), rank)
    flat = reshape(ctx, x, (int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))))
    return [reshape(ctx, _softmax_axis(ctx, node.op_type, flat, 1), shape)]


def _softmax_axis(ctx, op_type, x, axis) -> str:
    if op_type == "Softmax":
        return ctx.op("softmax", [x], axis=axis)
    if op_type == "LogSoftmax":
        return ctx.op("log_softmax", [x], axis=axis)
    shape = ctx.shape(x)
    idx = ctx.op("argmax", [x], axis=axis, keepdims=True)
    iota = np.arange(shape[axis], dtype=np.int64).reshape([shape[axis] if i == axis else 1 for i in range(len(shape))])
    return cast(ctx, ctx.op("eq", [idx, ctx.const(iota, "iota")]), ctx.dtype(x))


# -- reductions ------------------------------------------------------------------------------------------

_AXES_INPUT_SINCE = {"ReduceSum": 13}  # the other Reduce* ops took axes as an input from opset 18


@converter("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceProd")
def _reduce(ctx, node):
    vals = ins(ctx, node)
    x = vals[0]
    rank = len(ctx.shape(x))
    keep = bool(ctx.attr(node, "keepdims", 1))
    if ctx.version(node) >= _AXES_INPUT_SINCE.get(node.op_type, 18):
        axes = const_ints(ctx, vals[1], "axes") if opt(vals, 1) is not None else []
    else:
        axes = ctx.attr(node, "axes") or []
    if not axes:
        if int(ctx.attr(node, "noop_with_empty_axes", 0)):
            return [x]
        axes = list(range(rank))
    axes = tuple(sorted({norm_axis(ctx, a, rank) for a in axes}))
    kind = node.op_type[len("Reduce"):]
    c = ctx.try_const(x)
    if c is not None and c.size == 0:
        return [_reduce_empty(ctx, kind, c, axes, keep)]

    def red(op, v, keepdims=keep):
        return ctx.op(op, [v], axes=axes, keepdims=keepdims)

    if kind == "Prod":
        return [log_domain_product(ctx, x, lambda v: red("reduce_sum", v))]
    if kind in ("Sum", "Mean", "Max", "Min"):
        return [red("reduce_" + kind.lower(), x)]
    if kind == "L1":
        return [red("reduce_sum", ctx.op("abs", [x]))]
    if kind in ("L2", "SumSquare"):
        s = red("reduce_sum", ctx.op("mul", [x, x]))
        return [ctx.op("sqrt", [s]) if kind == "L2" else s]
    if kind == "LogSum":
        return [ctx.op("log", [red("reduce_sum", x)])]
    # LogSumExp, shifted by the max so that exp does not overflow (an infinite max shifts by 0)
    dt = ctx.dtype(x)
    m = red("reduce_max", x, True)
    m = ctx.op("where", [ctx.op("eq", [ctx.op("abs", [m]), scalar(ctx, np.inf, dt)]), scalar(ctx, 0, dt), m])
    s = ctx.op("log", [red("reduce_sum", ctx.op("exp", [ctx.op("sub", [x, m])]))])
    return [ctx.op("add", [s, m if keep else reshape(ctx, m, ctx.shape(s))])]


def log_domain_product(ctx, x: str, summed) -> str:
    """A product as exp(sum log|x|) with the sign from the count of negative factors, in float64 (the
    op set has no product reduction). `summed(v)` sums `v` the way the product multiplies (over axes,
    or cumulatively). A zero factor gives log 0 = -inf, so exp gives 0 exactly; integer results are
    rounded to the nearest integer (exact while |product| < 2**53)."""
    dt = ctx.dtype(x)
    x64 = cast(ctx, x, "float64")
    mag = ctx.op("exp", [summed(ctx.op("log", [ctx.op("abs", [x64])]))])
    negs = summed(cast(ctx, ctx.op("lt", [x64, scalar(ctx, 0, "float64")]), "float64"))
    half = ctx.op("mul", [negs, scalar(ctx, 0.5, "float64")])
    odd = ctx.op("ne", [ctx.op("floor", [half]), half])
    prod = ctx.op("where", [odd, ctx.op("neg", [mag]), mag])
    if dt.startswith("float"):
        return cast(ctx, prod, dt)
    nudge = ctx.op("where", [odd, scalar(ctx, -0.5, "float64"), scalar(ctx, 0.5, "float64")])
    return cast(ctx, ctx.op("add", [prod, nudge]), dt)  # cast truncates toward zero: round half away


def _reduce_empty(ctx, kind, c, axes, keep) -> str:
    """A reduction of an empty constant is the reduction's identity (ONNX: -inf for max, ...)."""
    shape = tuple(1 if d in axes else s for d, s in enumerate(c.shape)) if keep else \
        tuple(s for d, s in enumerate(c.shape) if d not in axes)
    if kind in ("Max", "Min", "LogSumExp", "LogSum"):
        lo = kind != "Min"
        if c.dtype == np.bool_:
            ident = not lo
        elif np.issubdtype(c.dtype, np.integer):
            ident = np.iinfo(c.dtype).min if lo else np.iinfo(c.dtype).max
        else:
            ident = -np.inf if lo else np.inf
    else:
        ident = {"Prod": 1, "Mean": np.nan}.get(kind, 0)
    return ctx.const(np.full(shape, ident, c.dtype), "reduced")


@converter("ArgMax", "ArgMin")
def _arg(ctx, node):
    (x,) = ins(ctx, node)
    shape = ctx.shape(x)
    axis = norm_axis(ctx, ctx.attr(node, "axis", 0), len(shape))
    keep = bool(ctx.attr(node, "keepdims", 1))
    op = "argmax" if node.op_type == "ArgMax" else "argmin"
    if not int(ctx.attr(node, "select_last_index", 0)):
        return [ctx.op(op, [x], axis=axis, keepdims=keep)]
    # the last extreme index: the first one of the reversed axis, mapped back
    n = shape[axis]
    flipped = take(ctx, x, np.arange(n - 1, -1, -1), axis)
    idx = ctx.op(op, [flipped], axis=axis, keepdims=keep)
    return [ctx.op("sub", [scalar(ctx, n - 1, "int64"), idx])]



# -- attention -------------------------------------------------------------------------------------------

_PLAIN_ATTENTION_ATTRS = {"is_causal", "kv_num_heads", "q_num_heads", "qk_matmul_output_mode", "scale", "softcap",
                          "softmax_precision"}


@converter("Attention")
def _attention(ctx, node):
    """ONNX Attention (opset 23) as one sdpa op when it is plain attention (no past key/value, no
    softcap, no windows, no bool mask, no extra outputs; causal only with as many keys as queries,
    where ONNX's and torch's alignments agree); anything else expands into its ONNX function body."""
    vals = ins(ctx, node)
    q, k, v, mask = vals[0], vals[1], vals[2], opt(vals, 3)
    plain = (all(opt(vals, i) is None for i in (4, 5, 6)) and not any(node.output[1:])
             and {a.name for a in node.attribute} <= _PLAIN_ATTENTION_ATTRS
             and float(ctx.attr(node, "softcap", 0.0)) == 0.0 and int(ctx.attr(node, "qk_matmul_output_mode", 0)) == 0
             and (mask is None or ctx.dtype(mask) != "bool"))  # ONNX gives 0, not NaN, for a fully masked row
    rank = len(ctx.shape(q))
    if rank == 3:
        hq, hkv = ctx.attr(node, "q_num_heads"), ctx.attr(node, "kv_num_heads")
        plain = plain and hq is not None and hkv is not None
    if plain:
        q4, k4, v4 = q, k, v
        if rank == 3:
            q4, k4, v4 = (_heads(ctx, t, h) for t, h in ((q, hq), (k, hkv), (v, hkv)))
        (b, h, L, _), S = ctx.shape(q4), ctx.shape(k4)[2]
        causal = bool(ctx.attr(node, "is_causal", 0))
        if mask is not None and ctx.shape(mask)[-1] != S or causal and L != S or h % ctx.shape(k4)[1]:
            plain = False
    if not plain:
        return ctx.expand_as_function(node)
    g = h // ctx.shape(k4)[1]
    if g > 1:  # grouped-query attention: query head i reads key/value head i // g
        k4, v4 = (_repeat_heads(ctx, t, g) for t in (k4, v4))
    args = [q4, k4, v4] + ([mask] if mask is not None else [])
    y = ctx.op("sdpa", args, is_causal=causal, scale=ctx.attr(node, "scale"))
    if rank == 3:  # (B, H, L, Ev) -> (B, L, H * Ev)
        y = ctx.op("transpose", [y], perm=(0, 2, 1, 3))
        y = reshape(ctx, y, (b, L, h * ctx.shape(y)[3]))
    return [y]


def _heads(ctx, t, heads: int) -> str:
    """(B, S, H * E) -> (B, H, S, E)."""
    b, s, he = ctx.shape(t)
    return ctx.op("transpose", [reshape(ctx, t, (b, s, int(heads), he // int(heads)))], perm=(0, 2, 1, 3))


def _repeat_heads(ctx, t, g: int) -> str:
    """(B, H, S, E) -> (B, H * g, S, E), each head repeated g times in a row."""
    b, h, s, e = ctx.shape(t)
    t = ctx.op("expand", [reshape(ctx, t, (b, h, 1, s, e))], shape=(b, h, g, s, e))
    return reshape(ctx, t, (b, h * g, s, e))


@converter("LpPool")
def _lp_pool(ctx, node):
    """(sum over the window of |x|^p)^(1/p): an avg_pool counting the zero padding, times the window size."""
    (x,) = ins(ctx, node)
    xs = ctx.shape(x)
    nd = len(xs) - 2
    if nd not in (1, 2, 3):
        raise ctx.unsupported(f"{nd} spatial dims (tessel's pools take 1 to 3)")
    p = float(ctx.attr(node, "p", 2))
    kernel = ctx.attr(node, "kernel_shape")
    strides = ctx.attr(node, "strides") or [1] * nd
    dilations = ctx.attr(node, "dilations") or [1] * nd
    pads = _spatial_pads(ctx, node, xs[2:], kernel, strides, dilations)
    dt = ctx.dtype(x)
    xp = ctx.op("pow", [ctx.op("abs", [x]), scalar(ctx, p, dt)])
    avg = _pool_op(ctx, "avg_pool", xp, kernel=tuple(kernel), stride=tuple(strides), padding=tuple(pads),
                   dilation=tuple(dilations), ceil_mode=bool(ctx.attr(node, "ceil_mode", 0)), count_include_pad=True)
    total = ctx.op("mul", [avg, scalar(ctx, float(np.prod(kernel)), dt)])
    return [ctx.op("pow", [total, scalar(ctx, 1.0 / p, dt)])]


# -- einsum ---------------------------------------------------------------------------------------------

@converter("Einsum")
def _einsum(ctx, node):
    """Einsum as transposes, reshapes, reduce_sums and batched matmuls: each operand first loses its
    diagonals (a repeated letter) and the letters no one else needs; operands then combine pairwise,
    batch letters first, contracted letters as the matmul's K."""
    xs = ins(ctx, node)
    eq = ctx.attr(node, "equation").replace(" ", "")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise ShapeError(f"{ctx.where()}: equation '{eq}' names {len(terms)} operands, the node has {len(xs)}")
    spare = iter(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq)
    n_ell = max((len(ctx.shape(x)) - len(t) + 3 for t, x in zip(terms, xs) if "..." in t), default=0)
    ell = "".join(next(spare) for _ in range(n_ell))
    terms = [t.replace("...", ell[n_ell - (len(ctx.shape(x)) - len(t) + 3):]) for t, x in zip(terms, xs)]
    if out is None:
        counts = "".join(terms)
        out = ell + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and c not in ell))
    out = out.replace("...", ell)
    ops = []
    for t, x in zip(terms, xs):
        if len(t) != len(ctx.shape(x)):
            raise ShapeError(f"{ctx.where()}: term '{t}' has {len(t)} letters for an operand of shape {ctx.shape(x)}")
        ops.append(_einsum_diagonals(ctx, x, t))
    x, t = ops[0]
    for k, (y, u) in enumerate(ops[1:], start=1):
        later = out + "".join(s for _, s in ops[k + 1:])
        x, t = _einsum_pair(ctx, x, t, y, u, later)
    x, t = _einsum_sum(ctx, x, t, out)
    perm = tuple(t.index(c) for c in out)
    return [x if perm == tuple(range(len(perm))) else ctx.op("transpose", [x], perm=perm)]


def _einsum_diagonals(ctx, x, t: str):
    """Take the diagonal for each letter repeated in term `t`: move the pair last, flatten it, step n + 1."""
    while len(set(t)) != len(t):
        c = next(c for c in t if t.count(c) > 1)
        p, q = t.index(c), t.index(c, t.index(c) + 1)
        rest = [i for i in range(len(t)) if i not in (p, q)]
        x = ctx.op("transpose", [x], perm=tuple(rest + [p, q]))
        n = ctx.shape(x)[-1]
        x = reshape(ctx, x, ctx.shape(x)[:-2] + (n * n,))
        x = take(ctx, x, np.arange(n) * (n + 1), len(rest))
        t = "".join(t[i] for i in rest) + c
    return x, t


def _einsum_sum(ctx, x, t: str, keep: str):
    """Sum over the letters of `t` that are not in `keep`."""
    axes = tuple(i for i, c in enumerate(t) if c not in keep)
    if not axes:
        return x, t
    return ctx.op("reduce_sum", [x], axes=axes, keepdims=False), "".join(c for c in t if c in keep)


def _einsum_pair(ctx, a, ta: str, b, tb: str, later: str):
    a, ta = _einsum_sum(ctx, a, ta, tb + later)
    b, tb = _einsum_sum(ctx, b, tb, ta + later)
    batch = [c for c in ta if c in tb and c in later]
    inner = [c for c in ta if c in tb and c not in later]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    size = {c: max(ctx.shape(a)[ta.index(c)] if c in ta else 1, ctx.shape(b)[tb.index(c)] if c in tb else 1)
            for c in ta + tb}

    def arrange(v, tv, order, groups):
        v = ctx.op("transpose", [v], perm=tuple(tv.index(c) for c in order)) if list(tv) != order else v
        full = tuple(size[c] if c in batch else ctx.shape(v)[k] for k, c in enumerate(order))
        if full != ctx.shape(v):  # a batch letter of extent 1 here broadcasts against the other operand
            v = ctx.op("expand", [v], shape=full)
        return reshape(ctx, v, [int(np.prod([size[c] for c in g], dtype=np.int64)) for g in groups])

    a3 = arrange(a, ta, batch + left + inner, [batch, left, inner])
    b3 = arrange(b, tb, batch + inner + right, [batch, inner, right])
    y = ctx.op("matmul", [a3, b3])
    t = "".join(batch + left + right)
    return reshape(ctx, y, [size[c] for c in t]), t
