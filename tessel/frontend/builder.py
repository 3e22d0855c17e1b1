"""GraphBuilder: build a tessel Graph in Python, one op call at a time.

Each method adds one op of the op set (tessel/frontend/ops.py) and returns a `Sym`, a handle on the
value it produced, with `.shape`, `.dtype` and arithmetic operators (`+ - * / @ **`, unary `-`).
Arguments may be Syms, numpy arrays (added as constants) or Python numbers (scalar constants of the
other operand's dtype). Axes may be negative (they are normalised, as the op set requires), and
`reshape` accepts one -1. The common ops have explicit signatures; every other registered op is
reachable as `b.<op>(*inputs, **attrs)` or `b.op(name, *inputs, **attrs)`.

Example:
    >>> import numpy as np
    >>> b = GraphBuilder("mlp")
    >>> x = b.input("x", (8, 16))
    >>> w, bias = np.ones((32, 16), np.float32), np.zeros(32, np.float32)
    >>> h = b.relu(b.linear(x, b.const(w), b.const(bias)))
    >>> b.output(h)
    >>> h.shape, len(b.graph.nodes)
    ((8, 32), 2)
"""

from __future__ import annotations

import math
from numbers import Number

from tessel.errors import ShapeError, TesselError
from tessel.frontend.graph import Graph


class Sym:
    """A value of the graph being built (the result of `input`, `const` or an op)."""

    __array_priority__ = 1000  # numpy_array + sym calls Sym.__radd__

    def __init__(self, builder: "GraphBuilder", name: str):
        self.builder = builder
        self.name = name

    @property
    def shape(self) -> tuple:
        return self.builder.graph.values[self.name].shape

    @property
    def dtype(self) -> str:
        return self.builder.graph.values[self.name].dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"Sym({self.name!r}, {self.dtype}{list(self.shape)})"

    def __add__(self, o): return self.builder.add(self, o)
    def __radd__(self, o): return self.builder.add(o, self)
    def __sub__(self, o): return self.builder.sub(self, o)
    def __rsub__(self, o): return self.builder.sub(o, self)
    def __mul__(self, o): return self.builder.mul(self, o)
    def __rmul__(self, o): return self.builder.mul(o, self)
    def __truediv__(self, o): return self.builder.div(self, o)
    def __rtruediv__(self, o): return self.builder.div(o, self)
    def __matmul__(self, o): return self.builder.matmul(self, o)
    def __rmatmul__(self, o): return self.builder.matmul(o, self)
    def __pow__(self, o): return self.builder.pow(self, o)
    def __neg__(self): return self.builder.neg(self)

    @property
    def T(self) -> "Sym":  # noqa: N802 - numpy's name
        return self.builder.transpose(self, tuple(reversed(range(self.ndim))))


class GraphBuilder:
    """Builds `self.graph` (a tessel Graph); see the module docstring."""

    def __init__(self, name: str = "graph"):
        self.graph = Graph(name)

    # -- values ----------------------------------------------------------------------------------
    def input(self, name: str, shape, dtype: str = "float32") -> Sym:
        """A model input of a static shape."""
        return Sym(self, self.graph.add_input(name, shape, dtype))

    def const(self, data, name: str = "const", dtype: str | None = None) -> Sym:
        """A constant (a numpy array or a number; `dtype` converts it)."""
        import numpy as np

        from tessel.ir.dtypes import numpy_dtype

        arr = np.asarray(data)
        if dtype is not None:
            arr = arr.astype(numpy_dtype(dtype))
        elif arr.dtype == np.float64:
            arr = arr.astype(np.float32)  # Python floats: float32 unless asked otherwise
        elif arr.dtype == np.int32 and not isinstance(data, np.ndarray):
            arr = arr.astype(np.int64)
        return Sym(self, self.graph.add_const(name, arr))

    def output(self, *values) -> None:
        """Mark the model outputs (in order); may be called once with all of them."""
        flat = []
        for v in values:
            flat.extend(v if isinstance(v, (list, tuple)) else [v])
        self.graph.mark_outputs([self._sym(v).name for v in flat])

    # -- the generic op ----------------------------------------------------------------------------
    def op(self, name: str, *inputs, **attrs):
        """Add op `name` on `inputs` (Syms, arrays, numbers, or None for an absent optional input)
        with `attrs`; returns a Sym, or a tuple of them for a multi-output op."""
        like = next((x for x in inputs if isinstance(x, Sym)), None)
        names = [None if x is None else self._sym(x, like).name for x in inputs]
        outs = self.graph.add_node(name, names, attrs)
        syms = tuple(Sym(self, o) for o in outs)
        return syms[0] if len(syms) == 1 else syms

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        from tessel.frontend.ops import all_ops

        if name in all_ops():
            return lambda *inputs, **attrs: self.op(name, *inputs, **attrs)
        raise AttributeError(f"GraphBuilder has no method {name!r} and no op {name!r} is registered")

    def __dir__(self):
        from tessel.frontend.ops import all_ops

        return sorted(set(super().__dir__()) | set(all_ops()))

    def _sym(self, x, like: Sym | None = None) -> Sym:
        if isinstance(x, Sym):
            if x.builder is not self:
                raise TesselError(f"value '{x.name}' belongs to another GraphBuilder")
            return x
        if isinstance(x, Number) and like is not None:
            return self.const(x, name="scalar", dtype=like.dtype)
        try:
            return self.const(x)
        except (TypeError, ValueError):
            raise TesselError(f"cannot use a {type(x).__name__} as a graph value") from None

    # -- elementwise ---------------------------------------------------------------------------------
    def add(self, a, b) -> Sym: return self.op("add", a, b)
    def sub(self, a, b) -> Sym: return self.op("sub", a, b)
    def mul(self, a, b) -> Sym: return self.op("mul", a, b)
    def div(self, a, b) -> Sym: return self.op("div", a, b)
    def pow(self, a, b) -> Sym: return self.op("pow", a, b)
    def maximum(self, a, b) -> Sym: return self.op("maximum", a, b)
    def minimum(self, a, b) -> Sym: return self.op("minimum", a, b)
    def where(self, cond, a, b) -> Sym: return self.op("where", cond, a, b)
    def neg(self, x) -> Sym: return self.op("neg", x)
    def exp(self, x) -> Sym: return self.op("exp", x)
    def log(self, x) -> Sym: return self.op("log", x)
    def sqrt(self, x) -> Sym: return self.op("sqrt", x)
    def rsqrt(self, x) -> Sym: return self.op("rsqrt", x)
    def tanh(self, x) -> Sym: return self.op("tanh", x)
    def sigmoid(self, x) -> Sym: return self.op("sigmoid", x)
    def erf(self, x) -> Sym: return self.op("erf", x)
    def relu(self, x) -> Sym: return self.op("relu", x)
    def silu(self, x) -> Sym: return self.op("silu", x)

    def gelu(self, x, approximate: str = "none") -> Sym:
        """GELU, exact (`approximate="none"`) or with the tanh approximation."""
        return self.op("gelu", x, approximate=approximate)

    def leaky_relu(self, x, alpha: float = 0.01) -> Sym:
        return self.op("leaky_relu", x, alpha=float(alpha))

    def clip(self, x, min=None, max=None) -> Sym:  # noqa: A002 - torch's names
        return self.op("clip", x, min=min, max=max)

    def cast(self, x, dtype: str) -> Sym:
        return self.op("cast", x, dtype=dtype)

    def batch_norm(self, x, scale, bias, mean, var, eps: float = 1e-5) -> Sym:
        """Inference batch norm over channel axis 1."""
        return self.op("batch_norm", x, scale, bias, mean, var, eps=float(eps))

    # -- contractions ------------------------------------------------------------------------------
    def matmul(self, a, b) -> Sym:
        """numpy matmul semantics (batch broadcasting)."""
        return self.op("matmul", a, b)

    def linear(self, x, w, b=None) -> Sym:
        """x @ w.T + b, with w of shape (out, in) as in torch."""
        return self.op("linear", x, w, b) if b is not None else self.op("linear", x, w)

    def conv(self, x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Sym:
        """Convolution over the trailing 1 or 2 dims of x (N, C, *spatial), w (F, C/groups, *k).
        `padding` is an int, one int per spatial dim (both sides), or (begin..., end...)."""
        x, w = self._sym(x), self._sym(w)
        nd = x.ndim - 2
        if nd not in (1, 2):
            raise ShapeError(f"conv: input '{x.name}' has shape {x.shape}; expected (N, C, L) or (N, C, H, W)")
        stride, dilation = _per_dim(stride, nd, "stride"), _per_dim(dilation, nd, "dilation")
        pad = _per_dim(padding, nd, "padding", allow_2n=True)
        pad = pad if len(pad) == 2 * nd else pad + pad
        args = [x, w] + ([b] if b is not None else [])
        return self.op("conv", *args, stride=stride, padding=pad, dilation=dilation, groups=int(groups))

    def conv1d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Sym:
        return self.conv(x, w, b, stride, padding, dilation, groups)

    def conv2d(self, x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1) -> Sym:
        return self.conv(x, w, b, stride, padding, dilation, groups)

    # -- reductions --------------------------------------------------------------------------------
    def _axes(self, x, axes) -> tuple:
        x = self._sym(x)
        if axes is None:
            return tuple(range(x.ndim))
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        return tuple(sorted(_axis(a, x.ndim, "axes") for a in axes))

    def reduce_sum(self, x, axes=None, keepdims: bool = False) -> Sym:
        return self.op("reduce_sum", x, axes=self._axes(x, axes), keepdims=bool(keepdims))

    def reduce_mean(self, x, axes=None, keepdims: bool = False) -> Sym:
        return self.op("reduce_mean", x, axes=self._axes(x, axes), keepdims=bool(keepdims))

    def reduce_max(self, x, axes=None, keepdims: bool = False) -> Sym:
        return self.op("reduce_max", x, axes=self._axes(x, axes), keepdims=bool(keepdims))

    def reduce_min(self, x, axes=None, keepdims: bool = False) -> Sym:
        return self.op("reduce_min", x, axes=self._axes(x, axes), keepdims=bool(keepdims))

    sum = reduce_sum
    mean = reduce_mean

    def argmax(self, x, axis: int = -1, keepdims: bool = False) -> Sym:
        x = self._sym(x)
        return self.op("argmax", x, axis=_axis(axis, x.ndim, "axis"), keepdims=bool(keepdims))

    def argmin(self, x, axis: int = -1, keepdims: bool = False) -> Sym:
        x = self._sym(x)
        return self.op("argmin", x, axis=_axis(axis, x.ndim, "axis"), keepdims=bool(keepdims))

    def softmax(self, x, axis: int = -1) -> Sym:
        x = self._sym(x)
        return self.op("softmax", x, axis=_axis(axis, x.ndim, "axis"))

    def log_softmax(self, x, axis: int = -1) -> Sym:
        x = self._sym(x)
        return self.op("log_softmax", x, axis=_axis(axis, x.ndim, "axis"))

    def layer_norm(self, x, weight=None, bias=None, axes=-1, eps: float = 1e-5) -> Sym:
        """Layer norm over `axes` (default the last), with optional affine weight and bias."""
        args = [x, weight] + ([bias] if bias is not None else [])
        return self.op("layer_norm", *args, axes=self._axes(x, axes), eps=float(eps))

    def rms_norm(self, x, weight=None, axes=-1, eps: float = 1e-6) -> Sym:
        return self.op("rms_norm", x, weight, axes=self._axes(x, axes), eps=float(eps))

    def max_pool(self, x, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> Sym:
        return self._pool("max_pool", x, kernel, stride, padding, dilation, ceil_mode, False)

    def avg_pool(self, x, kernel, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> Sym:
        return self._pool("avg_pool", x, kernel, stride, padding, 1, ceil_mode, count_include_pad)

    def _pool(self, op, x, kernel, stride, padding, dilation, ceil_mode, count_include_pad) -> Sym:
        x = self._sym(x)
        nd = 2 if x.ndim >= 4 else 1
        kernel = _per_dim(kernel, nd, "kernel")
        pad = _per_dim(padding, nd, "padding", allow_2n=True)
        return self.op(op, x, kernel=kernel, stride=_per_dim(stride if stride is not None else kernel, nd, "stride"),
                       padding=pad if len(pad) == 2 * nd else pad + pad, dilation=_per_dim(dilation, nd, "dilation"),
                       ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))

    # -- layout ------------------------------------------------------------------------------------
    def reshape(self, x, shape) -> Sym:
        """Reshape; one extent may be -1 (inferred)."""
        x = self._sym(x)
        return self.op("reshape", x, shape=_resolve_shape(tuple(shape), x.shape))

    def flatten(self, x, start: int = 1) -> Sym:
        x = self._sym(x)
        start = _axis(start, x.ndim, "start")
        return self.reshape(x, x.shape[:start] + (math.prod(x.shape[start:]),))

    def unsqueeze(self, x, axis: int) -> Sym:
        x = self._sym(x)
        axis = _axis(axis, x.ndim + 1, "axis")
        return self.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])

    def squeeze(self, x, axis: int) -> Sym:
        x = self._sym(x)
        axis = _axis(axis, x.ndim, "axis")
        if x.shape[axis] != 1:
            raise ShapeError(f"squeeze: dim {axis} of '{x.name}' {x.shape} is not 1")
        return self.reshape(x, x.shape[:axis] + x.shape[axis + 1:])

    def transpose(self, x, perm=None) -> Sym:
        x = self._sym(x)
        perm = tuple(reversed(range(x.ndim))) if perm is None else tuple(_axis(p, x.ndim, "perm") for p in perm)
        return self.op("transpose", x, perm=perm)

    def permute(self, x, *perm) -> Sym:
        return self.transpose(x, perm[0] if len(perm) == 1 and isinstance(perm[0], (list, tuple)) else perm)

    def expand(self, x, shape) -> Sym:
        return self.op("expand", x, shape=tuple(int(s) for s in shape))

    def concat(self, values, axis: int = 0) -> Sym:
        syms = [self._sym(v) for v in values]
        return self.op("concat", *syms, axis=_axis(axis, syms[0].ndim, "axis"))

    def slice(self, x, starts, ends, axes=None, steps=None) -> Sym:
        """numpy-style slicing along `axes` (default 0, 1, ...); ends are clamped to the extent."""
        x = self._sym(x)
        starts, ends = list(starts), list(ends)
        axes = list(range(len(starts))) if axes is None else [_axis(a, x.ndim, "axes") for a in axes]
        steps = [1] * len(starts) if steps is None else list(steps)
        s2, e2 = [], []
        for s, e, a, st in zip(starts, ends, axes, steps):
            n = x.shape[a]
            s2.append(_clamp_index(s, n, st))
            e2.append(_clamp_index(e, n, st, end=True))
        return self.op("slice", x, starts=tuple(s2), ends=tuple(e2), axes=tuple(axes), steps=tuple(steps))

    def gather(self, data, indices, axis: int = 0) -> Sym:
        data = self._sym(data)
        return self.op("gather", data, indices, axis=_axis(axis, data.ndim, "axis"))

    def embedding(self, weight, indices) -> Sym:
        return self.gather(weight, indices, 0)

    def pad(self, x, pads, value: float = 0.0) -> Sym:
        """Constant padding; `pads` is (begin..., end...) over all dims, as in ONNX."""
        return self.op("pad", x, pads=tuple(int(p) for p in pads), value=float(value))

    # -- opaque ------------------------------------------------------------------------------------
    def sdpa(self, q, k, v, mask=None, is_causal: bool = False, scale: float | None = None) -> Sym:
        """Scaled dot-product attention, (batch..., L, E) layout as torch's."""
        args = [q, k, v] + ([mask] if mask is not None else [])
        return self.op("sdpa", *args, is_causal=bool(is_causal), scale=None if scale is None else float(scale))

    def rfft(self, x, n: int | None = None, axis: int = -1) -> Sym:
        """Real FFT along `axis` -> (..., n//2+1, 2) real/imag pairs."""
        x = self._sym(x)
        axis = _axis(axis, x.ndim, "axis")
        return self.op("rfft", x, n=int(n if n is not None else x.shape[axis]), axis=axis)

    def irfft(self, x, n: int, axis: int | None = None) -> Sym:
        """Inverse of rfft: input (..., m, 2) -> (..., n) along `axis` (default: the one before the pair)."""
        x = self._sym(x)
        axis = x.ndim - 2 if axis is None else _axis(axis, x.ndim, "axis")
        return self.op("irfft", x, n=int(n), axis=axis)


def _axis(a: int, ndim: int, what: str) -> int:
    a = int(a)
    if not -ndim <= a < max(ndim, 1):
        raise ShapeError(f"{what} {a} is out of range for {ndim} dimension(s)")
    return a % ndim if ndim else 0


def _per_dim(v, nd: int, what: str, allow_2n: bool = False) -> tuple:
    if isinstance(v, int):
        return (v,) * nd
    v = tuple(int(x) for x in v)
    if len(v) == nd or (allow_2n and len(v) == 2 * nd):
        return v
    raise ShapeError(f"{what} {v} must have {nd} value(s){' or ' + str(2 * nd) if allow_2n else ''}")


def _resolve_shape(shape: tuple, src: tuple) -> tuple:
    total = math.prod(src)
    unknown = [i for i, s in enumerate(shape) if s == -1]
    if len(unknown) > 1:
        raise ShapeError(f"reshape to {shape}: at most one extent may be -1")
    if unknown:
        rest = math.prod(s for s in shape if s != -1)
        if rest == 0 or total % rest:
            raise ShapeError(f"reshape of {src} to {shape}: {total} elements do not fit")
        shape = tuple(total // rest if s == -1 else s for s in shape)
    if math.prod(shape) != total:
        raise ShapeError(f"reshape of {src} ({total} elements) to {shape} ({math.prod(shape)} elements)")
    return tuple(int(s) for s in shape)


def _clamp_index(i: int, n: int, step: int, end: bool = False) -> int:
    i = int(i)
    if i < 0:
        i += n
    if step > 0:
        return max(0, min(i, n))
    return max(-1, min(i, n - 1)) if end else max(0, min(i, n - 1))
