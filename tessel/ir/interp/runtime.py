"""What the Python code generated from a kernel calls while it runs.

The translator (translate.py) turns a kernel into Python source; that source refers to the names
`GLOBALS` provides: poisoned allocation, the out-of-bounds and division-by-zero errors, casts
that are not plain numpy scalar conversions, and the math functions. Keeping them here, apart
from the translator, keeps each file about one idea and lets the tests call them directly.

Value representation inside generated code (the translator relies on it):
- float16 / bfloat16 / float32 / float64 values are numpy scalars of that dtype, so every
  operation rounds to its dtype exactly as CUDA `half`, `__nv_bfloat16`, `float`, `double` do;
- integers are Python ints kept inside their dtype's range (the translator inserts the
  two's-complement wrap where interval analysis cannot prove it unnecessary);
- bools are Python bools or numpy bools.

Example:
    >>> wrap_int(2**31, "int32")
    -2147483648
    >>> float(math_func("sigmoid", "float32")(np.float32(0.0)))
    0.5
"""

from __future__ import annotations

import math

import numpy as np

from tessel.errors import TesselError
from tessel.ir.dtypes import bits, is_bool, is_float, is_unsigned, numpy_dtype
from tessel.ir.dtypes import int_range as _int_range, wrap as _wrap


class ExecutionError(TesselError):
    """A kernel did something undefined while the interpreter ran it: an out-of-bounds access, an
    integer division by zero, threads of a block diverging at barriers or collectives."""


# Fill value of integer buffers a kernel allocates; truncated to each dtype (int8: -90,
# int32: -1515870810), so uninitialised reads show up as recognisable garbage.
POISON_INT = -0x5A5A5A5A5A5A5A5A


def int_range(dtype: str) -> tuple[int, int]:
    """Inclusive range of an integer dtype; bool counts as (0, 1)."""
    return _int_range(dtype)


def wrap_int(value: int, dtype: str) -> int:
    """`value` reduced to `dtype` with two's-complement wrap-around.

    >>> wrap_int(-129, "int8")
    127
    """
    return _wrap(value, dtype)


def wrap_source(src: str, dtype: str) -> str:
    """Python source that wraps the int expression `src` to `dtype` (inline, no call)."""
    n = bits(dtype)
    if is_unsigned(dtype):
        return f"(({src}) & {(1 << n) - 1})"
    return f"(((({src}) + {1 << (n - 1)}) & {(1 << n) - 1}) - {1 << (n - 1)})"


def poison_value(dtype: str):
    """The value a freshly allocated buffer of `dtype` holds: NaN, POISON_INT truncated, True."""
    if is_float(dtype):
        return float("nan")
    if is_bool(dtype):
        return True
    return wrap_int(POISON_INT, dtype)


def alloc(size: int, dtype: str) -> np.ndarray:
    """A flat, poisoned array for a buffer the kernel allocates."""
    return np.full(size, poison_value(dtype), dtype=numpy_dtype(dtype))


def shared_alloc(store: dict, name: str, size: int, dtype: str) -> np.ndarray:
    """The buffer `name` of a block (or of the whole launch): allocated, poisoned, by the first
    thread that reaches its Allocate; the other threads get the same array."""
    arr = store.get(name)
    if arr is None:
        arr = store[name] = alloc(size, dtype)
    return arr


def oob(kernel: str, what: str, buffer: str, index: tuple, shape: tuple):
    """Raise the error for an out-of-bounds load or store."""
    raise ExecutionError(f"kernel '{kernel}': {what} of buffer '{buffer}' at index {tuple(index)} is out of bounds "
                         f"for its shape {tuple(shape)}")


def floordiv(a: int, b: int, kernel: str) -> int:
    """Integer division rounding toward minus infinity; raises on division by zero."""
    if b == 0:
        raise ExecutionError(f"kernel '{kernel}': integer division by zero ({a} // 0)")
    return a // b


def floormod(a: int, b: int, kernel: str) -> int:
    """Integer remainder with the divisor's sign (Python's %); raises on division by zero."""
    if b == 0:
        raise ExecutionError(f"kernel '{kernel}': integer modulo by zero ({a} % 0)")
    return a % b


def launch_error(kernel: str, var: str, axis: str, extent: int, dim: int):
    raise ExecutionError(f"kernel '{kernel}': loop '{var}' bound to {axis} has extent {extent} but the launch "
                         f"has only {dim} along {axis}")


_BF16 = numpy_dtype("bfloat16").type


def to_bfloat16(x: float):
    """A Python float (double) rounded once to bfloat16. ml_dtypes goes through float32, which
    rounds twice; rounding to float32 *to odd* first makes the second rounding the right one.

    >>> float(to_bfloat16(1 + 2**-8 + 2**-30))  # just above a tie: rounds up
    1.0078125
    """
    f = np.float32(x)
    fx = float(f)
    if fx != x and math.isfinite(x):
        if abs(fx) > abs(x):
            f = np.nextafter(f, np.float32(0))
        f = (np.array(f).view(np.uint32) | np.uint32(1)).view(np.float32)[()]
    return _BF16(f)


def from_float(dtype: str):
    """The function that rounds a Python float (or int) once to float `dtype`."""
    return to_bfloat16 if dtype == "bfloat16" else numpy_dtype(dtype).type


def float_to_int(dtype: str):
    """Conversion float -> `dtype` truncating toward zero and saturating (NaN -> 0), as CUDA's
    cvt.rzi does; C leaves the out-of-range cases undefined."""
    lo, hi = int_range(dtype)

    def convert(x) -> int:
        v = float(x)
        if math.isnan(v):
            return 0
        if v >= hi:
            return hi
        if v <= lo:
            return lo
        return int(v)

    return convert


# ---------------------------------------------------------------------------------------------
# Math functions: computed in float64 with Python's math module, then rounded once to the
# argument dtype. The numpy fallbacks give IEEE results (inf, nan) where math raises.
# ---------------------------------------------------------------------------------------------


def _np_f64(fn, *args) -> float:
    with np.errstate(all="ignore"):
        return float(fn(*(np.float64(a) for a in args)))


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _log(x: float) -> float:
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else math.nan  # -0.0 >= 0, and sqrt(-0.0) is -0.0


def _rsqrt(x: float) -> float:
    s = _sqrt(x)
    return 1.0 / s if s != 0 else math.copysign(math.inf, s)


def _sigmoid(x: float) -> float:
    # 1 / (1 + exp(-x)), arranged so that exp never overflows.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = _exp(x)
    return e / (1.0 + e)


def _trig(fn):
    def f(x: float) -> float:
        return fn(x) if math.isfinite(x) else math.nan

    return f


def _rounding(fn):
    def f(x: float) -> float:
        if not math.isfinite(x):
            return x
        r = float(fn(x))
        return math.copysign(r, x) if r == 0 else r  # floor(-0.0) and ceil(-0.5) are -0.0

    return f


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except (OverflowError, ValueError, ZeroDivisionError):
        return _np_f64(np.power, a, b)


_MATH64 = {
    "exp": _exp, "log": _log, "sqrt": _sqrt, "rsqrt": _rsqrt, "tanh": math.tanh, "sigmoid": _sigmoid,
    "erf": math.erf, "sin": _trig(math.sin), "cos": _trig(math.cos), "floor": _rounding(math.floor),
    "ceil": _rounding(math.ceil), "pow": _pow,
}


def math_func(func: str, dtype: str):
    """The interpreter's `func` for arguments of float `dtype`: float64 math, rounded to dtype."""
    f64 = _MATH64[func]
    to = from_float(dtype)
    if func == "pow":
        return lambda a, b: to(f64(float(a), float(b)))
    return lambda x: to(f64(float(x)))


class Ref:
    """An intrinsic's buffer operand: the Buffer node, the start index and the flat array.

    `region(shape)` gives a writable numpy view of `shape` elements starting at the start index,
    checked against the buffer's bounds.
    """

    __slots__ = ("array", "buffer", "kernel", "start")

    def __init__(self, buffer, array: np.ndarray, start: tuple, kernel: str = "?"):
        self.buffer = buffer
        self.array = array
        self.start = start
        self.kernel = kernel

    def region(self, shape: tuple) -> np.ndarray:
        shape = tuple(shape)
        start, full_shape = self.start, self.buffer.shape
        if len(shape) == 1 == len(start):  # the common case (fragments): no reshape
            s, n = start[0], shape[0]
            if s < 0 or s + n > full_shape[0]:
                raise ExecutionError(f"kernel '{self.kernel}': region {shape} at {start} of buffer "
                                     f"'{self.buffer.name}' leaves its shape {full_shape}")
            return self.array[s:s + n]
        if len(shape) != len(start):
            raise ExecutionError(f"kernel '{self.kernel}': region of rank {len(shape)} asked of buffer "
                                 f"'{self.buffer.name}' indexed with {len(start)} indices")
        flat = 0  # a run along the last dimension (ones before it) is a flat slice: the fast case
        for s, n, d in zip(start, shape, full_shape):
            if s < 0 or s + n > d:
                raise ExecutionError(f"kernel '{self.kernel}': region {shape} at {start} of buffer "
                                     f"'{self.buffer.name}' leaves its shape {full_shape}")
            flat = flat * d + s
        if shape and shape[:-1] == (1,) * (len(shape) - 1):
            return self.array[flat:flat + shape[-1]].reshape(shape)
        full = self.array.reshape(full_shape)
        return full[tuple(slice(s, s + n) for s, n in zip(start, shape))]

    def __repr__(self) -> str:
        return f"Ref({self.buffer.name}, {self.start})"


_CONCRETE: dict = {}


def concrete(buffer, shape: tuple):
    """`buffer` (a symbolic-shape Buffer node) with the int `shape` of this run (cached)."""
    key = (buffer, shape)
    out = _CONCRETE.get(key)
    if out is None:
        if len(_CONCRETE) > 1024:
            _CONCRETE.clear()
        out = _CONCRETE[key] = type(buffer)(buffer.name, shape, buffer.dtype, buffer.scope)
    return out


def negative_dim(kernel: str, buffer: str, value: int):
    raise ExecutionError(f"kernel '{kernel}': buffer '{buffer}' gets a negative extent {value} from its symbolic shape")


# Names the generated code may use (the translator adds constants and per-dtype helpers).
GLOBALS = {
    "__builtins__": {"range": range, "int": int, "float": float, "abs": abs, "bool": bool},
    "_alloc": alloc, "_shared": shared_alloc, "_oob": oob, "_floordiv": floordiv, "_floormod": floormod,
    "_launch_error": launch_error, "_Ref": Ref, "_concrete": concrete, "_negative_dim": negative_dim,
}
