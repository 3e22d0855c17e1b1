"""Bessel functions and Chebyshev polynomials as aten converters, composed in float64 (see
torch_aten_special.py for the gamma and error-function families).

- Modified Bessel I0, I1 (i0, special_i0e, special_i1, special_i1e, modified_bessel_i0/i1): the power
  series (positive terms, no cancellation) up to |x| = 30, the asymptotic expansion beyond.
- K0, K1 (and their exp(x)-scaled forms): the series with the logarithm up to x = 8 (at most 7 of
  the 16 digits cancel), the asymptotic expansion beyond; 0 gives inf, negative x NaN.
- Bessel J0, J1, Y0, Y1: the alternating series up to |x| = 20, Hankel's expansions beyond.
- Chebyshev T, U, V, W (and shifted: of 2x - 1) of degree n, a tensor: closed forms through
  cos((n + c) acos x) inside [-1, 1] and cosh/sinh((n + c) acosh |x|) outside, the values torch
  special-cases at x = +-1, and 0 for n < 0; n is truncated to an integer as torch does.

Example:
    >>> from tessel.frontend.torch_aten import converters
    >>> names = ("bessel_j0", "modified_bessel_k1", "chebyshev_polynomial_t")
    >>> all(f"aten.special_{n}.default" in converters() for n in names)
    True
"""

from __future__ import annotations

import math

from tessel.frontend.torch_aten import CONVERTERS
from tessel.frontend.torch_aten_expr import X, cos, exp, fabs, floor, log, poly, sin, sqrt, trunc, where
from tessel.frontend.torch_aten_math import _acosh, _asin

EULER = 0.57721566490153286061


def _in64(cx, a, key: str = "self") -> X:
    return X(cx, cx.operand(a[key], "float64"))


def _out(cx, y: X) -> str:
    return y.astype(cx.out_dtype).v


def _series(nu: int, alternating: bool, n: int = 60) -> list:
    """Coefficients of t^k in sum_k (+-t)^k / (k! (k + nu)!)."""
    return [(-1) ** k * 1.0 / (math.factorial(k) * math.factorial(k + nu)) if alternating else
            1.0 / (math.factorial(k) * math.factorial(k + nu)) for k in range(n)]


def _harmonic(k: int) -> float:
    return sum(1.0 / j for j in range(1, k + 1))


def _psi1(k: int) -> float:
    """psi(k + 1) = H_k - gamma."""
    return _harmonic(k) - EULER


def _asym(nu: int, n: int) -> list:
    """a_k(nu) = prod_{j=1..k} (4 nu^2 - (2j - 1)^2) / (k! 8^k), k < n."""
    out, acc = [], 1.0
    for k in range(n):
        if k:
            acc *= (4 * nu * nu - (2 * k - 1) ** 2) / (k * 8)
        out.append(acc)
    return out


def _clamp(x: X, hi: float) -> X:
    return x.op("clip", max=hi)


def bessel_i(x: X, nu: int, scaled: bool) -> X:
    """I_nu(x) (scaled: exp(-|x|) I_nu(x)) for nu in (0, 1)."""
    ax = fabs(x)
    small = _clamp(ax, 30.0)
    t = small * small * 0.25
    s = poly(t, _series(nu, False))
    if nu:
        s = s * small * 0.5
    if scaled:
        s = s * exp(-small)
    big = where(ax.gt(30.0), ax, 30.0)
    a = [(-1) ** k * c for k, c in enumerate(_asym(nu, 14))]
    asym = poly(1.0 / big, a) / sqrt(big * (2 * math.pi))
    if not scaled:
        asym = asym * exp(big)
    y = where(ax.gt(30.0), asym, s)
    return where(x.lt(0.0), -y, y) if nu else y


def bessel_k(x: X, nu: int, scaled: bool) -> X:
    """K_nu(x) (scaled: exp(x) K_nu(x)), x > 0, for nu in (0, 1)."""
    small = x.op("clip", min=1e-300, max=8.0)
    t = small * small * 0.25
    i = bessel_i(small, nu, False)
    lg = log(small * 0.5)
    if nu == 0:
        s = -(lg + EULER) * i + poly(t, [_harmonic(k) / math.factorial(k) ** 2 for k in range(50)])
    else:
        c = [(_psi1(k) + _psi1(k + 1)) / (math.factorial(k) * math.factorial(k + 1)) for k in range(50)]
        s = 1.0 / small + lg * i - small * 0.25 * poly(t, c)
    if scaled:
        s = s * exp(small)
    big = where(x.gt(8.0), x, 8.0)
    asym = poly(1.0 / big, _asym(nu, 16)) * sqrt(math.pi / 2 / big)
    if not scaled:
        asym = asym * exp(-big)
    y = where(x.gt(8.0), asym, s)
    y = where(x.eq(0.0), math.inf, y)
    return where(x.lt(0.0), math.nan, y)


def _hankel(ax: X, nu: int, want_y: bool) -> X:
    """Hankel's expansions of J_nu / Y_nu for large ax."""
    a = _asym(nu, 20)
    inv = 1.0 / ax
    inv2 = inv * inv
    p = poly(inv2, [(-1) ** k * a[2 * k] for k in range(10)])
    q = poly(inv2, [(-1) ** k * a[2 * k + 1] for k in range(10)]) * inv
    chi = ax - (nu / 2 + 0.25) * math.pi
    amp = sqrt(2 / math.pi * inv)
    return amp * (p * sin(chi) + q * cos(chi)) if want_y else amp * (p * cos(chi) - q * sin(chi))


def bessel_j(x: X, nu: int) -> X:
    ax = fabs(x)
    small = _clamp(ax, 20.0)
    t = small * small * 0.25
    s = poly(t, _series(nu, True))
    if nu:
        s = s * small * 0.5
    big = where(ax.gt(20.0), ax, 20.0)
    y = where(ax.gt(20.0), _hankel(big, nu, False), s)
    return where(x.lt(0.0), -y, y) if nu else y


def bessel_y(x: X, nu: int) -> X:
    small = x.op("clip", min=1e-300, max=20.0)
    t = small * small * 0.25
    j = bessel_j(small, nu)
    lg = log(small * 0.5)
    if nu == 0:
        c = [(-1) ** (k + 1) * _harmonic(k) / math.factorial(k) ** 2 for k in range(60)]
        s = (lg + EULER) * j * (2 / math.pi) + poly(t, c) * (2 / math.pi)
    else:
        c = [(-1) ** k * (_psi1(k) + _psi1(k + 1)) / (math.factorial(k) * math.factorial(k + 1)) for k in range(60)]
        s = lg * j * (2 / math.pi) - (2 / math.pi) / small - small * 0.5 * poly(t, c) * (1 / math.pi)
    big = where(x.gt(20.0), x, 20.0)
    y = where(x.gt(20.0), _hankel(big, nu, True), s)
    y = where(x.eq(0.0), -math.inf, y)
    return where(x.lt(0.0), math.nan, y)


_BESSEL = {
    "i0": lambda x: bessel_i(x, 0, False), "special_i0e": lambda x: bessel_i(x, 0, True),
    "special_i1": lambda x: bessel_i(x, 1, False), "special_i1e": lambda x: bessel_i(x, 1, True),
    "special_modified_bessel_i0": lambda x: bessel_i(x, 0, False),
    "special_modified_bessel_i1": lambda x: bessel_i(x, 1, False),
    "special_modified_bessel_k0": lambda x: bessel_k(x, 0, False),
    "special_modified_bessel_k1": lambda x: bessel_k(x, 1, False),
    "special_scaled_modified_bessel_k0": lambda x: bessel_k(x, 0, True),
    "special_scaled_modified_bessel_k1": lambda x: bessel_k(x, 1, True),
    "special_bessel_j0": lambda x: bessel_j(x, 0), "special_bessel_j1": lambda x: bessel_j(x, 1),
    "special_bessel_y0": lambda x: bessel_y(x, 0), "special_bessel_y1": lambda x: bessel_y(x, 1),
    "special_spherical_bessel_j0": lambda x: where(x.eq(0.0), 1.0, sin(x) / x),
    "special_i0": lambda x: bessel_i(x, 0, False),
}


def _bessel(cx, a):
    name = cx.node.target._schema.name.split("::")[1]
    return _out(cx, _BESSEL[name](_in64(cx, a, "self" if "self" in a else "x")))


for _n in _BESSEL:
    CONVERTERS[f"aten.{_n}.default"] = _bessel


# -- Chebyshev polynomials -------------------------------------------------------------------------

def _odd(n: X) -> X:
    return (n - floor(n * 0.5) * 2.0).eq(1.0)


def chebyshev(kind: str, x: X, n: X) -> X:
    """T/U/V/W_n(x) for integer n >= 0 (0 below), with torch's values at x = +-1."""
    n = trunc(n)
    inside = fabs(x).lt(1.0)
    xi = x.op("clip", min=-1.0, max=1.0)
    theta = (math.pi / 2) - _asin(xi)
    ax = where(inside, 2.0, fabs(x))
    phi = _acosh(ax)
    sign = where(_odd(n) & x.lt(0.0), -1.0, 1.0, like=x)
    if kind == "t":
        y_in = cos(n * theta)
        y_out = _cosh(n * phi) * sign
        at1 = where(x.gt(0.0), 1.0, where(_odd(n), -1.0, 1.0, like=x))
    elif kind == "u":
        y_in = sin((n + 1.0) * theta) / sin(theta)
        y_out = _sinh((n + 1.0) * phi) / _sinh(phi) * sign
        at1 = where(x.gt(0.0), n + 1.0, where(_odd(n), -(n + 1.0), n + 1.0))
    else:
        half = n + 0.5
        v_in = cos(half * theta) / cos(theta * 0.5)
        w_in = sin(half * theta) / sin(theta * 0.5)
        v_pos = _cosh(half * phi) / _cosh(phi * 0.5)  # for x > 1
        w_pos = _sinh(half * phi) / _sinh(phi * 0.5)
        if kind == "v":  # V_n(-y) = (-1)^n W_n(y)
            y_in, y_out = v_in, where(x.gt(0.0), v_pos, w_pos * sign)
            at1 = where(x.gt(0.0), 1.0, where(_odd(n), -(n * 2.0 + 1.0), n * 2.0 + 1.0))
        else:
            y_in, y_out = w_in, where(x.gt(0.0), w_pos, v_pos * sign)
            at1 = where(x.gt(0.0), n * 2.0 + 1.0, where(_odd(n), -1.0, 1.0, like=x))
    y = where(inside, y_in, y_out)
    y = where(fabs(x).eq(1.0), at1, y)
    return where(n.lt(0.0), 0.0, y)


def _cosh(z: X) -> X:
    return (exp(z) + exp(-z)) * 0.5


def _sinh(z: X) -> X:
    return (exp(z) - exp(-z)) * 0.5


def _chebyshev(cx, a):
    name = cx.node.target._schema.name.split("::")[1]
    kind = name[-1]
    x, n = _in64(cx, a, "x"), _in64(cx, a, "n")
    if "shifted" in name:
        x = x * 2.0 - 1.0
    return _out(cx, chebyshev(kind, x, n))


for _k in "tuvw":
    for _pre in ("", "shifted_"):
        for _ov in ("default", "x_scalar", "n_scalar"):
            CONVERTERS[f"aten.special_{_pre}chebyshev_polynomial_{_k}.{_ov}"] = _chebyshev
