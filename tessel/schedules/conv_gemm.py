"""2-D convolution as an implicit GEMM on tensor cores: the mma.sync GEMM template
(tessel/schedules/gemm.py) with operand index maps that gather the convolution windows.

Y[n, k, p, q] = sum_{c, r, s} X[n, c, p * stride + r * dilation - pad, q * stride + s * dilation - pad]
* W[k, c, r, s] (zero outside X), fp16 / bf16 in, float32 accumulation, Y cast to `out_dtype`
(after an optional fused epilogue, tessel/schedules/epilogue.py, whose index is Y's own).

- NHWC (X [N, H, W, C], W [K, R, S, C] passed as [K, R S C], Y [N, P, Q, K]): GEMM rows = output pixels (M = N P Q),
  columns = output channels (K), reduction (r, s, c) with c innermost: every 16-byte copy of A
  is 8 channels of one input pixel (cp.async, zero-filled where the window lies in the padding),
  B is W as a [K, R S C] k-contiguous matrix. This is the fast layout.
- NHWC:NCHW (X [N, H, W, C], W as [K, R S C], Y [N, K, P, Q]): one GEMM per image, rows = output
  channels, columns = output pixels, B gathered as in NHWC (8 channels of one pixel per copy),
  C stored along pixels. What compiled NCHW models use, after an NCHW -> NHWC copy of X
  (`nchw_to_nhwc`) and W's reordering into that matrix (`lower_conv_group`).
- NCHW (X [N, C, H, W], W [K, C, R, S] passed as [K, C R S], Y [N, K, P, Q]): one GEMM per image (batch N), rows =
  output channels (A = W as [K, C R S]), columns = output pixels; B's window is shifted by
  s - pad along the contiguous axis, so it is loaded element by element (cp.async needs aligned
  16-byte chunks), except for 1x1 convolutions without padding or stride (then plain GEMM loads).

The knobs are the GEMM template's (`GemmKnobs`); `default_conv_knobs` picks them for the implicit
GEMM's shape.

Example:
    >>> import numpy as np; from tessel.ir.interp import run
    >>> p = ConvProblem(n=1, c=8, k=16, h=4, w=4, r=3, s=3, pad=1, layout="NHWC")
    >>> kern = conv_kernel(p, GemmKnobs(bm=16, bn=16, bk=16, warps_m=1, warps_n=1, stages=2))
    >>> [b.name for b in kern.params], p.gemm().m, p.gemm().k
    (['X', 'W', 'Y'], 16, 72)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 4, 4, 8)).astype(np.float16)
    >>> w = rng.standard_normal((16, 3, 3, 8)).astype(np.float16)
    >>> y = np.zeros((1, 4, 4, 16), np.float32); run(kern, x, w.reshape(16, 72), y)
    >>> xp = np.pad(x.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    >>> want = sum(np.einsum("npqc,kc->npqk", xp[:, r:r + 4, s:s + 4], w[:, r, s].astype(np.float32))
    ...            for r in range(3) for s in range(3))
    >>> bool(np.allclose(y, want, atol=1e-2))
    True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tessel.errors import ScheduleError
from tessel.ir.nodes import Buffer, Kernel
from tessel.schedules.epilogue import Epilogue
from tessel.schedules.gemm import GemmKnobs, GemmProblem, build_gemm_body, default_knobs

ConvKnobs = GemmKnobs  # the implicit GEMM's knobs are the GEMM template's
LAYOUTS = ("NHWC", "NCHW", "NHWC:NCHW")


@dataclass(frozen=True)
class ConvProblem:
    """One 2-D convolution (groups 1): batch n, channels c -> k, input h x w, filter r x s."""

    n: int
    c: int
    k: int
    h: int
    w: int
    r: int
    s: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    layout: str = "NHWC"
    dtype: str = "float16"
    out_dtype: str = "float32"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ScheduleError(f"conv layout {self.layout!r}: one of {', '.join(LAYOUTS)}")
        if self.dtype not in ("float16", "bfloat16"):
            raise ScheduleError(f"conv dtype {self.dtype}: the tensor-core convolution takes float16 or bfloat16")
        if min(self.n, self.c, self.k, self.h, self.w, self.r, self.s, self.stride, self.dilation) < 1 or self.pad < 0:
            raise ScheduleError(f"conv problem {self}: sizes must be positive (padding >= 0)")
        if self.p < 1 or self.q < 1:
            raise ScheduleError(f"conv problem {self}: the filter does not fit the padded input")

    @property
    def p(self) -> int:
        return (self.h + 2 * self.pad - self.dilation * (self.r - 1) - 1) // self.stride + 1

    @property
    def q(self) -> int:
        return (self.w + 2 * self.pad - self.dilation * (self.s - 1) - 1) // self.stride + 1

    @property
    def plain(self) -> bool:
        """NCHW 1x1 without padding or stride: X[n] is a [C, H W] matrix (whole-chunk copies
        along W when W allows)."""
        return self.layout == "NCHW" and self.r == self.s == 1 and self.pad == 0 and self.stride == 1

    def buffers(self) -> tuple[Buffer, Buffer, Buffer]:
        """X, W, Y. W is passed as the [K, R S C] (NHWC) or [K, C R S] (NCHW) matrix its 4-D
        tensor is in memory (a 16-byte copy may span filter taps)."""
        red = self.r * self.s * self.c
        if self.layout == "NHWC":
            shapes = (self.n, self.h, self.w, self.c), (self.k, red), (self.n, self.p, self.q, self.k)
        elif self.layout == "NHWC:NCHW":
            shapes = (self.n, self.h, self.w, self.c), (self.k, red), (self.n, self.k, self.p, self.q)
        else:
            shapes = (self.n, self.c, self.h, self.w), (self.k, red), (self.n, self.k, self.p, self.q)
        return (Buffer("X", shapes[0], self.dtype), Buffer("W", shapes[1], self.dtype),
                Buffer("Y", shapes[2], self.out_dtype))

    def gemm(self) -> GemmProblem:
        """The implicit GEMM's problem (see the module docstring)."""
        red = self.r * self.s * self.c
        if self.layout == "NHWC":
            return GemmProblem(self.n * self.p * self.q, self.k, red, self.dtype, (), True, True, self.out_dtype)
        if self.layout == "NHWC:NCHW":
            return GemmProblem(self.k, self.p * self.q, red, self.dtype, (self.n,), True, True, self.out_dtype)
        return GemmProblem(self.k, self.p * self.q, red, self.dtype, (self.n,), True, False, self.out_dtype)


def default_conv_knobs(p: ConvProblem, sms: int = 132) -> GemmKnobs:
    """The GEMM template's default knobs for the implicit GEMM's shape; in NHWC, where A is the
    gathered operand, its 256 x 128 tile becomes 128 x 256 (half the window index arithmetic per
    thread: 245 registers and no spills with nvcc 13 at C = K = 256, against 60 bytes of spills)."""
    kn = default_knobs(p.gemm(), sms)
    if p.layout == "NHWC" and (kn.bm, kn.bn, kn.warps_m, kn.warps_n) == (256, 128, 4, 2) and p.k >= 256:
        kn = dataclasses.replace(kn, bm=128, bn=256, warps_m=2, warps_n=4)
    return kn


def _pow2_divisor(x: int, cap: int = 8) -> int:
    v = 1
    while v < cap and x % (2 * v) == 0:
        v *= 2
    return v


def conv_body(p: ConvProblem, kn: GemmKnobs, x: Buffer, w: Buffer, y: Buffer, epilogue: Epilogue | None = None,
              prefix: str = "conv"):
    """(statement, Launch) of the implicit-GEMM convolution on buffers laid out as `p.buffers()`."""
    g = p.gemm()
    P, Q, S, C, R = p.p, p.q, p.s, p.c, p.r

    def window(pix_p, pix_q, r, s):
        hh = pix_p * p.stride + r * p.dilation - p.pad
        ww = pix_q * p.stride + s * p.dilation - p.pad
        return hh, ww

    def inside(hh, ww):
        return (hh >= 0) & (hh < p.h) & (ww >= 0) & (ww < p.w)

    if p.layout == "NHWC":
        def split_m(m):  # output pixel -> (n, p, q)
            return m // (P * Q), m // Q % P, m % Q

        def split_k(kk):  # reduction -> (r, s, c), c innermost
            return kk // (S * C), kk // C % S, kk % C

        def a_index(bv, m, kk):
            n_, pp, qq = split_m(m)
            r, s, c = split_k(kk)
            return (n_, *window(pp, qq, r, s), c)

        def a_valid(bv, m, kk):
            _, pp, qq = split_m(m)
            r, s, _ = split_k(kk)
            return inside(*window(pp, qq, r, s))

        def b_index(bv, col, kk):
            return (col, kk)

        def c_index(bv, m, col):
            return (*split_m(m), col)

        a_load = (a_valid if p.pad else None, _pow2_divisor(C))
        b_load = (None, _pow2_divisor(C))
    elif p.layout == "NHWC:NCHW":
        def split_k(kk):  # reduction -> (r, s, c), c innermost
            return kk // (S * C), kk // C % S, kk % C

        def a_index(bv, row, kk):
            return (row, kk)

        def b_index(bv, pix, kk):
            r, s, c = split_k(kk)
            return (bv[0], *window(pix // Q, pix % Q, r, s), c)

        def b_valid(bv, pix, kk):
            r, s, _ = split_k(kk)
            return inside(*window(pix // Q, pix % Q, r, s))

        def c_index(bv, row, pix):
            return (bv[0], row, pix // Q, pix % Q)

        a_load = (None, _pow2_divisor(C))
        b_load = (b_valid if p.pad else None, _pow2_divisor(C))
    else:
        def split_k(kk):  # reduction -> (c, r, s), W's own order
            return kk // (R * S), kk // S % R, kk % S

        def a_index(bv, row, kk):
            return (row, kk)

        def b_index(bv, pix, kk):
            if p.plain:
                return (bv[0], kk, pix // Q, pix % Q)
            c, r, s = split_k(kk)
            return (bv[0], c, *window(pix // Q, pix % Q, r, s))

        def b_valid(bv, pix, kk):
            _, r, s = split_k(kk)
            return inside(*window(pix // Q, pix % Q, r, s))

        def c_index(bv, row, pix):
            return (bv[0], row, pix // Q, pix % Q)

        a_load = (None, 8)
        b_load = (b_valid if p.pad else None, _pow2_divisor(Q) if p.plain else 1)
    a, b = (x, w) if p.layout == "NHWC" else (w, x)
    return build_gemm_body(g, kn, a, b, y, a_index, b_index, c_index, prefix=prefix, epilogue=epilogue,
                           a_load=a_load, b_load=b_load)


def conv_kernel(p: ConvProblem, kn: GemmKnobs | None = None, name: str = "conv_gemm",
                epilogue: Epilogue | None = None) -> Kernel:
    """A whole kernel with parameters (X, W, Y) as `p.buffers()` lays them out, then the buffers
    `epilogue` reads (a per-channel bias: axis -1 for NHWC, 1 for NCHW)."""
    kn = kn or default_conv_knobs(p)
    x, w, y = p.buffers()
    body, launch = conv_body(p, kn, x, w, y, epilogue)
    extra = epilogue.buffers if epilogue is not None else ()
    return Kernel(name, (x, w, y) + tuple(extra), body, target="cuda", launch=launch)


def nchw_to_nhwc(x: Buffer, target="cuda") -> Kernel:
    """A scheduled GPU kernel copying x [N, C, H, W] into `{x.name}_nhwc` [N, H, W, C] (params x, copy)."""
    from tessel.ir import dsl
    from tessel.schedules.generic_gpu import default_gpu_schedule

    X = dsl.placeholder(x.shape, x.dtype, name=x.name)
    n, c, h, w = x.shape
    Y = dsl.compute((n, h, w, c), lambda a, b, d, e: X[a, e, b, d], name=f"{x.name}_nhwc")
    return default_gpu_schedule(dsl.lower([X, Y], name=f"{x.name}_to_nhwc"), target).kernel


def weight_matrix(w: Buffer, order: str, target="cuda") -> Kernel:
    """A scheduled GPU kernel copying w [K, C, R, S] into the matrix `{w.name}_mat` [K, C R S]
    (order "crs": W's own) or [K, R S C] ("rsc": channels innermost); params w, matrix."""
    from tessel.ir import dsl
    from tessel.schedules.generic_gpu import default_gpu_schedule

    k, c, r, s = w.shape
    W = dsl.placeholder(w.shape, w.dtype, name=w.name)
    if order == "crs":
        fn = lambda i, j: W[i, j // (r * s), j // s % r, j % s]  # noqa: E731
    else:
        fn = lambda i, j: W[i, j % c, j // (s * c), j // c % s]  # noqa: E731
    Wm = dsl.compute((k, c * r * s), fn, name=f"{w.name}_mat")
    return default_gpu_schedule(dsl.lower([W, Wm], name=f"{w.name}_weights"), target).kernel


def _conv_body_for(p: ConvProblem, arch: str, knobs, x: Buffer, w: Buffer, y: Buffer, epi):
    """The convolution's (statement, Launch): on sm_90a the Hopper implicit GEMM
    (tessel/schedules/conv_hopper.py: TMA boxes + wgmma) where it applies (stride 1, C a multiple
    of 8) or where `knobs` are its HopperKnobs, else the mma.sync one with `knobs` (GemmKnobs)."""
    from tessel.schedules import conv_hopper

    if isinstance(knobs, GemmKnobs) or conv_hopper.problem_issues(p, arch):
        return conv_body(p, knobs or default_conv_knobs(p), x, w, y, epi)
    return conv_hopper.hopper_conv_body(p, knobs or conv_hopper.default_conv_knobs(p), x, w, y, epi)


def lower_conv_group(ir: Kernel, stride: int, pad: int, dilation: int, target="cuda",
                     knobs: GemmKnobs | None = None):
    """A lowered graph group [2-D NCHW conv (groups 1) + pointwise epilogue] (params X, W, the
    epilogue's inputs.., Y, as tessel.compiler.lowering makes it) as scheduled GPU kernels
    (preparations, conv). Each preparation copies a parameter into a new buffer (its params:
    (the parameter, the copy)): W into a matrix (`weight_matrix`) and, unless the convolution
    is 1x1 without padding or stride, X into NHWC (`nchw_to_nhwc`). `conv` is the implicit GEMM
    ("NHWC:NCHW", or "NCHW" for the 1x1 case; on sm_90a the Hopper one where it applies) with the
    group's epilogue fused; its params are
    X or X's copy, W's matrix, the epilogue's buffers, Y. ScheduleError when the group is not of
    that form.

    >>> import tessel as ts
    >>> X = ts.placeholder((1, 8, 4, 4), "float16", name="in0"); W = ts.placeholder((8, 8, 3, 3), "float16", name="in1")
    >>> c, r, s = (ts.reduce_axis(e, name=v) for e, v in ((8, "c"), (3, "r"), (3, "s")))
    >>> A = ts.compute((1, 8, 2, 2), lambda n, k, h, w: ts.sum(X[n, c, h + r, w + s].astype("float32") *
    ...                W[k, c, r, s].astype("float32"), axis=(c, r, s)), name="acc")
    >>> Y = ts.compute((1, 8, 2, 2), lambda *i: A[i].astype("float16"), name="out0")
    >>> prep, ck = lower_conv_group(ts.lower([X, W, Y]), 1, 0, 1, "cuda:sm_80")
    >>> [[b.name for b in k.params] for k in prep], [b.name for b in ck.params]
    ([['in1', 'in1_mat'], ['in0', 'in0_nhwc']], ['in0_nhwc', 'in1_mat', 'out0'])
    """
    from tessel.ir.nodes import Load, Store, Var, walk
    from tessel.ir.target import parse_target
    from tessel.schedules.epilogue import from_stage
    from tessel.schedules.generic import stages
    from tessel.schedules.nest import init_guards, perfect_chain

    arch = parse_target(target).arch or "sm_90a"
    if int(arch[3:].rstrip("a")) < 80:
        raise ScheduleError(f"conv: target {target} has no mma.sync (sm_80 and later)")
    x, w, out = ir.params[0], ir.params[1], ir.params[-1]
    if x.ndim != 4 or w.ndim != 4 or out.ndim != 4 or x.dtype != w.dtype:
        raise ScheduleError(f"kernel '{ir.name}': not a 2-D convolution of 4-D tensors of one dtype")
    found = stages(ir)
    reductions = [(n, nest) for n, nest in found if init_guards(nest)]
    if len(reductions) != 1:
        raise ScheduleError(f"kernel '{ir.name}': {len(reductions)} contraction stages; a convolution has one")
    acc = next(st.buffer for st in walk(reductions[0][1]) if isinstance(st, Store))
    last_name, last = found[-1]
    stores = [n for n in walk(last) if isinstance(n, Store)]
    if last_name != out.name or len(stores) != 1:
        raise ScheduleError(f"kernel '{ir.name}': the last stage does not store the output once")
    chain = perfect_chain(last)[:4]
    loop_vars = tuple(lp.var for lp in chain)
    reads = [n for n in walk(stores[0].value) if isinstance(n, Load)]
    at = next((tuple(r.indices) for r in reads if r.buffer == acc), None)
    if at is None or not all(isinstance(v, Var) for v in at) or set(at) != set(loop_vars):
        raise ScheduleError(f"kernel '{ir.name}': the output stage does not read the convolution pointwise")
    if any(r.buffer != acc and r.buffer not in ir.params for r in reads):
        raise ScheduleError(f"kernel '{ir.name}': the output stage reads a temporary other than the convolution's")
    epi = from_stage(stores[0], loop_vars, acc, at)
    (n, c, h, wd), (k, _, r, s_) = x.shape, w.shape
    p = ConvProblem(n, c, k, h, wd, r, s_, stride, pad, dilation, "NCHW", x.dtype, out.dtype)
    if tuple(out.shape) != (n, k, p.p, p.q) or w.shape[1] != c:
        raise ScheduleError(f"kernel '{ir.name}': shapes {x.shape} * {w.shape} -> {out.shape} are not this "
                            f"convolution's")
    if p.plain:
        prep = [weight_matrix(w, "crs", target)]
        xin = x
    else:
        p = dataclasses.replace(p, layout="NHWC:NCHW")
        prep = [weight_matrix(w, "rsc", target), nchw_to_nhwc(x, target)]
        xin = prep[1].params[1]
    wmat = prep[0].params[1]
    body, launch = _conv_body_for(p, arch, knobs, xin, wmat, out, epi)
    extra = tuple(b for b in epi.buffers if b not in (xin, wmat))
    conv = Kernel(ir.name, (xin, wmat) + extra + (out,), body, target="cuda", launch=launch)
    return prep, conv


__all__ = ["ConvKnobs", "ConvProblem", "LAYOUTS", "conv_body", "conv_kernel", "default_conv_knobs", "lower_conv_group",
           "nchw_to_nhwc", "weight_matrix"]
