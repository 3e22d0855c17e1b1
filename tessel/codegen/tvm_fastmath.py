"""float32 exp, sigmoid, tanh and erf as TIR expressions that vectorize.

LLVM turns a vector `llvm.exp` into one scalar `expf` call per lane (no vector math library is
linked), so a vectorized softmax, GELU (tanh form), SiLU or sigmoid ran at libm's scalar speed:
measured on one AVX-512 core, exp 2.65 ns, tanh 6.9 ns and sigmoid 3.4 ns per element (numpy's
exp: 1.5 ns). These are the Cephes single-precision algorithms, written as branch-free selects:

* exp(x): n = round(x / ln 2), r = x - n ln 2 (in two parts, so r is exact), exp(r) by a
  polynomial, times 2^n. Within 2 ulp of libm over the normal range; overflow gives +inf, NaN
  stays NaN. Where the host has AVX-512 (`native_ldexp`), 2^n scales by `llvm.ldexp` (one
  vscalefps, subnormal results right; 14 instructions per 16 lanes); elsewhere 2^n is built from
  its exponent bits (results below the smallest normal number are 0 or near it; 24 instructions).
* sigmoid(x) = 1 / (1 + exp(-x)).
* tanh(x): x + x^3 P(x^2) for |x| < 0.625 (no cancellation near 0), else sign(x) (1 - 2 / (exp(2|x|) + 1)).
* erf(x): x P(x^2) / Q(x^2) on x clamped to [-4, 4] (beyond, erf is +-1 in float32), the rational
  approximation of Eigen / XLA's float erf: within 7 ulp (4.2e-7 relative) of float64 erf over
  [-6, 6] and tiny arguments; NaN stays NaN. Exact GELU (x/2 (1 + erf(x/sqrt 2))) needs it: as a
  scalar libm call it was most of an MLP's first kernel (16x64 GELU: 5.2 us of 8.2).

Example:
    >>> import tvm.tirx as T
    >>> type(exp(T, T.Var("x", "float32"))).__name__  # branch-free: lets and selects, no call
    'Let'
"""

from __future__ import annotations

import functools

_LOG2E = 1.44269504088896341
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
# exp(r) = 1 + r + r^2 P6(r) on |r| <= ln2 / 2: a degree-6 fit (Lawson's iteration towards minimax
# on the relative error, 3.1e-9), within 0.98 ulp in float32 Horner form, as Cephes' degree 7 is
_EXP_P6 = (1.38146e-3, 8.36871e-3, 4.166839e-2, 1.6666521e-1, 4.9999993e-1)
_TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)
_MAX, _MIN = 88.72283935546875, -87.33654022216797  # exp overflows above, is subnormal below
_CLAMP_HI, _CLAMP_LO = 89.0, -88.0  # exp's argument clamped here (see _exp_bits)
_LDEXP_LO = -104.0  # exp(x) rounds to 0 below (see _exp_ldexp)


@functools.cache  # the host does not change while we run
def native_ldexp() -> bool:
    """Whether exp scales by 2^n with `llvm.ldexp`: where the host CPU has AVX-512 (one vscalefps).
    Elsewhere LLVM would expand a vector ldexp lane by lane, so exp builds 2^n from its bits."""
    from tessel.codegen import tvm_runtime

    return tvm_runtime.host_has_feature("avx512f")


def _c(T, v):
    return T.const(v, "float32")


def _poly(T, z, coeffs):
    acc = _c(T, coeffs[0])
    for c in coeffs[1:]:
        acc = acc * z + _c(T, c)
    return acc


def _let(T, value, body, bind=True, dtype="float32"):
    """`body(v)` with `v` bound once to `value` (a TIR Let): the polynomials use their argument many
    times, and nested calls (exp(tanh(x)), an LSTM cell's tanh(sigmoid(..) * ..)) would otherwise grow
    exponentially (a 30 MB TVMScript and minutes in TVM's passes for one LSTM kernel)."""
    if not bind or isinstance(value, (T.Var, T.FloatImm, T.IntImm)):
        return body(value)
    v = T.Var("fm", dtype)
    return T.Let(v, value, body(v))


def exp(T, x, bind=True):
    """exp(x) for a float32 TIR expression `x` (see the module docstring). `bind=False` repeats the
    argument instead of binding it (TVM's float16 legalisation copies subtrees, and a copied Let then
    binds its variable twice, which VectorizeLoop refuses)."""
    return _let(T, x, lambda x: _exp(T, x, bind), bind)


def _exp(T, x, bind=True):
    if native_ldexp():
        return _exp_ldexp(T, x, bind)
    return _exp_bits(T, x, bind)


def _exp_ldexp(T, x, bind=True):
    # p * 2^n by `llvm.ldexp`, which is one vscalefps on AVX-512: it rounds overflow to +inf and
    # underflow to a subnormal or 0 by itself, so no edge needs a select (14 instead of 24
    # instructions per 16 lanes; the softmax's exp ran at half onnxruntime's speed).
    # xl: x clamped below, keeping NaN, so NaN reaches r, p and the result. n comes from xl clamped
    # above by min, which maps NaN to the bound, so the int32 conversion never sees NaN (LLVM makes
    # that poison). Above the top clamp, r is large and positive, so p (all its coefficients
    # positive) is large and positive too, and the product overflows to +inf, as exp does.
    def clamped(xl):
        # n = round(x / ln 2) as an int32 by one vcvtps2dq (`llvm.lrint`); its float is the one
        # conversion vscalefps needs anyway, so LLVM computes it once
        ni = T.call_llvm_pure_intrin("int32", "llvm.lrint", T.min(xl, _c(T, _CLAMP_HI)) * _c(T, _LOG2E))

        def reduced(ni):
            n = T.Cast("float32", ni)

            def poly(r):
                p = _poly(T, r, _EXP_P6 + (1.0, 1.0))  # 1 + r + r^2 P(r), all by FMAs
                return T.call_llvm_pure_intrin("float32", "llvm.ldexp", p, ni)

            return _let(T, xl - n * _c(T, _LN2_HI) - n * _c(T, _LN2_LO), poly, bind)

        return _let(T, ni, reduced, bind, "int32")

    # llvm.maximum with a constant that is neither NaN nor zero is one vmaxps whose operand order
    # keeps a NaN x; a select form did the same but cost LLVM seconds in nested calls (tanh(exp(..)):
    # 0.16 -> 4.5 s, a fuzz hang)
    return _let(T, T.call_llvm_pure_intrin("float32", "llvm.maximum", x, _c(T, _LDEXP_LO)), clamped, bind)


def _exp_bits(T, x, bind=True):
    # Clamped so that the edges need no selects: above 89 (past the overflow threshold _MAX) the
    # product below overflows to +inf by itself, and at -88 (past _MIN) n = -127 makes 2^n's bit
    # pattern 0, so the result is 0; between _MIN and -87.68 (n = -126) it is the subnormal
    # p * 2^-126. Two compare-and-blend pairs fewer per vector (softmax's sum of exps: 37 -> 33
    # instructions per 16 lanes).
    xc = T.max(T.min(x, _c(T, _CLAMP_HI)), _c(T, _CLAMP_LO))

    def reduced(n):
        def poly(r):
            p = _poly(T, r, _EXP_P) * r * r + r + _c(T, 1.0)
            # 2^n from its exponent bits; n reaches 128 just below the overflow threshold, where 2^n
            # itself is not a float32: take 2^127 and double the product instead
            ni = T.Cast("int32", n)
            top = ni > T.const(127, "int32")
            ni = T.Select(top, T.const(127, "int32"), ni)
            scale = T.reinterpret("float32", T.shift_left(ni + T.const(127, "int32"), T.const(23, "int32")))
            y = T.Select(top, p * _c(T, 2.0), p) * scale
            return T.Select(T.isnan(x), x, y)

        return _let(T, xc - n * _c(T, _LN2_HI) - n * _c(T, _LN2_LO), poly, bind)

    return _let(T, T.floor(xc * _c(T, _LOG2E) + _c(T, 0.5)), reduced, bind)


def sigmoid(T, x, bind=True):
    """1 / (1 + exp(-x)) for a float32 TIR expression."""
    return _c(T, 1.0) / (_c(T, 1.0) + exp(T, _c(T, 0.0) - x, bind))


def tanh(T, x, bind=True):
    """tanh(x) for a float32 TIR expression (see the module docstring)."""
    return _let(T, x, lambda x: _tanh(T, x, bind), bind)


def _tanh(T, x, bind=True):
    def with_abs(ax):
        z = x * x
        small = x + x * z * _poly(T, z, _TANH_P)
        # big appears twice below: a Let inside it must not (VectorizeLoop refuses a variable bound twice)
        return _let(T, _c(T, 1.0) - _c(T, 2.0) / (exp(T, ax + ax, bind) + _c(T, 1.0)),
                    lambda big: T.Select(ax < _c(T, 0.625), small, T.Select(x < _c(T, 0.0), _c(T, 0.0) - big, big)),
                    bind)

    return _let(T, T.abs(x), with_abs, bind)


_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)


def erf(T, x, bind=True):
    """erf(x) for a float32 TIR expression (see the module docstring)."""
    def body(x):
        def clamped(xc):
            def squared(z):
                return xc * _poly(T, z, _ERF_P) / _poly(T, z, _ERF_Q)

            return _let(T, xc * xc, squared, bind)

        return T.Select(T.isnan(x), x, _let(T, T.max(T.min(x, _c(T, 4.0)), _c(T, -4.0)), clamped, bind))

    return _let(T, x, body, bind)
