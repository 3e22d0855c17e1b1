"""Special functions as aten converters, composed in float64 from the op set's elementwise ops:
lgamma, digamma, polygamma, mvlgamma, Hurwitz zeta, erfinv, erfcx, log_ndtr, ndtri, the modified
Bessel functions (i0, i0e, i1, i1e, k0, k1 and their scaled forms), the Bessel functions j0, j1,
y0, y1, spherical j0, and the Chebyshev polynomials (T, U, V, W and shifted) of tensor degree.

Methods (float64 throughout, rounded once to the dtype torch gives):
- gamma family: the argument shifted up by recurrence (sums of logs or reciprocals) until the
  Stirling / asymptotic series is exact to ~1e-15, and reflection below 1/2 (sin(pi x) reduced mod 2);
- zeta(s, q) (polygamma n >= 1 is (-1)^(n+1) n! zeta(n+1, x)): 24 direct terms and the
  Euler-Maclaurin tail, as cephes does with a data-dependent count;
- erfinv: Giles' polynomial then two Newton steps on erf; erfcx: exp(x^2) erfc(x) below 2, a
  continued fraction above;
- Bessel functions: power series where they converge without cancellation, Hankel asymptotic
  expansions for large arguments;
- Chebyshev polynomials of integer degree n (a tensor): closed forms through cos(n acos x) inside
  [-1, 1] and cosh(n acosh |x|) outside, so no loop runs a data-dependent number of times.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> all(f"aten.{n}.default" in converters() for n in ("lgamma", "digamma", "polygamma", "special_i0e"))
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import aten
from tessel.frontend.torch_aten_expr import X, cos, exp, fabs, floor, isnan, log, poly, sin, sqrt, where

EULER = 0.57721566490153286061


def _name(cx) -> str:
    return cx.node.target._schema.name.split("::")[1]


def _in64(cx, a, key: str = "self") -> X:
    return X(cx, cx.operand(a[key], "float64"))


def _out(cx, y: X) -> str:
    return y.astype(cx.out_dtype).v


def _sinpi(x: X) -> X:
    r = x - floor(x * 0.5) * 2.0  # x mod 2, exact
    return sin(r * math.pi)


def _cospi(x: X) -> X:
    r = x - floor(x * 0.5) * 2.0
    return cos(r * math.pi)


# -- gamma family ----------------------------------------------------------------------------------

def lgamma(x: X) -> X:
    """log|Gamma(x)|: Stirling at z + 8 for z = x or 1 - x (reflection below 1/2); poles give inf."""
    refl = x.lt(0.5)
    z = where(refl, 1.0 - x, x)
    w = z + 8.0
    shift = log(z)
    for k in range(1, 8):
        shift = shift + log(z + float(k))
    iw = 1.0 / w
    iw2 = iw * iw
    series = poly(iw2, [1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188]) * iw
    st = (w - 0.5) * log(w) - w + 0.5 * math.log(2 * math.pi) + series
    lg = st - shift
    reflected = math.log(math.pi) - log(fabs(_sinpi(x))) - lg
    y = where(refl, reflected, lg)
    pole = x.le(0.0) & floor(x).eq(x)
    return where(pole | fabs(x).eq(math.inf), math.inf, y)


def digamma(x: X) -> X:
    """psi(x): asymptotic series at z + 8, recurrence down, reflection below 1/2; psi(0) = -inf and
    NaN at the negative integers, as torch."""
    refl = x.lt(0.5)
    z = where(refl, 1.0 - x, x)
    w = z + 8.0
    shift = 1.0 / z
    for k in range(1, 8):
        shift = shift + 1.0 / (z + float(k))
    iw2 = 1.0 / (w * w)
    series = poly(iw2, [0.0, 1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132])
    psi = log(w) - 0.5 / w - series - shift
    r = x - floor(x)  # tan(pi x) has period 1
    cot = _cospi(r) / _sinpi(r)
    y = where(refl, psi - cot * math.pi, psi)
    y = where(x.eq(0.0), -math.inf, y)
    return where(x.lt(0.0) & floor(x).eq(x), math.nan, y)


_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)  # B2, B4, ... B14


def zeta(s: X, q: X, terms: int = 24) -> X:
    """Hurwitz zeta sum_k (q + k)^-s: `terms` direct terms, then the Euler-Maclaurin tail at
    w = q + terms (accurate for q above about -12); s = 1 gives inf, s < 1 NaN (as torch)."""
    total = None
    for k in range(terms):
        t = (q + float(k)) ** (-s)
        total = t if total is None else total + t
    w = q + float(terms)
    tail = w ** (1.0 - s) / (s - 1.0) + 0.5 * w ** (-s)
    fact = s  # s (s + 1) ... (s + 2j - 2)
    wpow = w ** (-s - 1.0)
    iw2 = 1.0 / (w * w)
    for j, b in enumerate(_BERNOULLI, start=1):
        tail = tail + fact * wpow * (b / math.factorial(2 * j))
        fact = fact * (s + float(2 * j - 1)) * (s + float(2 * j))
        wpow = wpow * iw2
    z = total + tail
    z = where(s.eq(1.0), math.inf, z)
    return where(s.lt(1.0), math.nan, z)


@aten("lgamma.default")
def _lgamma(cx, a):
    return _out(cx, lgamma(_in64(cx, a)))


@aten("digamma.default", "special_psi.default", "special_digamma.default")
def _digamma(cx, a):
    return _out(cx, digamma(_in64(cx, a)))


@aten("polygamma.default", "special_polygamma.default")
def _polygamma(cx, a):
    n = int(a["n"])
    x = _in64(cx, a)
    if n == 0:
        return _out(cx, digamma(x))
    s = X(cx, cx.scalar(n + 1, "float64"))
    return _out(cx, zeta(s, x) * ((-1) ** (n + 1) * math.factorial(n)))


@aten("special_zeta.default", "special_zeta.self_scalar", "special_zeta.other_scalar")
def _zeta(cx, a):
    s, q = _in64(cx, a), _in64(cx, a, "other")
    z = zeta(s, q)
    # cephes: q <= 0 is a pole at the integers and NaN elsewhere unless s is an integer
    bad = q.le(0.0) & floor(q).eq(q)
    z = where(bad, math.inf, z)
    return _out(cx, where(q.le(0.0) & floor(s).ne(s) & ~bad, math.nan, z))


@aten("mvlgamma.default", "special_multigammaln.default")
def _mvlgamma(cx, a):
    x = _in64(cx, a)
    p = int(a["p"])
    y = X(cx, cx.scalar(p * (p - 1) / 4 * math.log(math.pi), "float64"))
    for j in range(p):
        y = y + lgamma(x - j / 2)
    return _out(cx, y)


# -- error function family -------------------------------------------------------------------------

_GILES_CENTRAL = (1.50140941, 0.246640727, -0.00417768164, -0.00125372503, 0.00021858087, -4.39150654e-06,
                  -3.5233877e-06, 3.43273939e-07, 2.81022636e-08)
_GILES_TAIL = (2.83297682, 1.00167406, 0.00943887047, -0.0076224613, 0.00573950773, -0.00367342844,
               0.00134934322, 0.000100950558, -0.000200214257)


def erfinv(y: X) -> X:
    w = -log((1.0 - y) * (1.0 + y))
    central = poly(w - 2.5, _GILES_CENTRAL)
    tail = poly(sqrt(where(w.lt(5.0), 5.0, w)) - 3.0, _GILES_TAIL)
    x = where(w.lt(5.0), central, tail) * y
    for _ in range(2):  # Newton on erf(x) = y
        x = x - (x.op("erf") - y) / (exp(-(x * x)) * (2 / math.sqrt(math.pi)))
    x = where(y.eq(1.0), math.inf, where(y.eq(-1.0), -math.inf, x))
    return where(fabs(y).gt(1.0), math.nan, x)


def _erfc_cf(x: X, depth: int = 60) -> X:
    """erfc(x) exp(x^2) sqrt(pi) for x >= 2: 1 / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))."""
    k = X(x.cx, x.cx.scalar(0.0, "float64")) + x
    for n in range(depth, 0, -1):
        k = x + (n / 2) / k
    return 1.0 / k


def erfcx(x: X) -> X:
    """exp(x^2) erfc(x): the continued fraction for |x| >= 2 (no cancellation), directly below."""
    ax = fabs(x)
    big = ax.ge(2.0)
    safe = where(big, ax, 2.0)
    cf = _erfc_cf(safe) * (1 / math.sqrt(math.pi))  # erfcx(|x|)
    small = exp(x * x) * (1.0 - x.op("erf"))
    neg_big = exp(x * x) * 2.0 - cf  # erfcx(-|x|) = 2 exp(x^2) - erfcx(|x|)
    return where(big, where(x.lt(0.0), neg_big, cf), small)


def erfc(x: X) -> X:
    """erfc without cancellation for large x (through erfcx)."""
    return where(x.ge(2.0), erfcx(x) * exp(-(x * x)), 1.0 - x.op("erf"))


@aten("special_erfcx.default")
def _erfcx(cx, a):
    return _out(cx, erfcx(_in64(cx, a)))


@aten("erfinv.default", "special_erfinv.default")
def _erfinv(cx, a):
    return _out(cx, erfinv(_in64(cx, a)))


@aten("erfc.default", "special_erfc.default")
def _erfc(cx, a):
    return _out(cx, erfc(_in64(cx, a)))


@aten("special_ndtr.default")
def _ndtr(cx, a):
    return _out(cx, erfc(_in64(cx, a) * (-1 / math.sqrt(2))) * 0.5)


@aten("special_log_ndtr.default")
def _log_ndtr(cx, a):
    """torch: log(erfcx(-x / sqrt 2) / 2) - x^2 / 2 below -1, log1p(-erfc(x / sqrt 2) / 2) above."""
    from tessel.frontend.torch_aten_expr import log1p

    x = _in64(cx, a)
    t = x * (1 / math.sqrt(2))
    low = log(erfcx(-t) * 0.5) - x * x * 0.5
    high = log1p(erfc(t) * -0.5)
    return _out(cx, where(x.lt(-1.0), low, high))


@aten("special_ndtri.default")
def _ndtri(cx, a):
    """sqrt(2) erfinv(2p - 1), refined by a Newton step on ndtr in the lower tail."""
    p = _in64(cx, a)
    x = erfinv(p * 2.0 - 1.0) * math.sqrt(2)
    for _ in range(2):
        f = erfc(x * (-1 / math.sqrt(2))) * 0.5 - p
        step = f / (exp(-(x * x) * 0.5) * (1 / math.sqrt(2 * math.pi)))
        x = where(fabs(x).lt(math.inf) & ~isnan(step), x - step, x)
    return _out(cx, x)

