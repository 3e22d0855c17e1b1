"""The scalar types of the tensor IR and their numpy counterparts.

A dtype is a plain string; this module is the one place that knows which strings are valid and how
each maps to numpy (bfloat16 comes from `ml_dtypes`, which TVM and JAX also use).

Example:
    >>> check_dtype("float16")
    'float16'
    >>> is_float("bfloat16"), is_int("int8"), bits("int64")
    (True, True, 64)
"""

from __future__ import annotations

from tessel.errors import DTypeError

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
SIGNED_DTYPES = ("int8", "int16", "int32", "int64")
UNSIGNED_DTYPES = ("uint8", "uint16", "uint32", "uint64")
INT_DTYPES = SIGNED_DTYPES + UNSIGNED_DTYPES
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + ("bool",)

_BITS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64, "int8": 8, "int16": 16, "int32": 32, "int64": 64,
         "uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64, "bool": 8}

# The dtype that index arithmetic and loop variables use.
INDEX_DTYPE = "int32"


def check_dtype(dtype: object, what: str = "dtype") -> str:
    """Return `dtype` as a valid dtype string, or raise DTypeError naming `what`."""
    if hasattr(dtype, "name") and not isinstance(dtype, str):  # numpy dtype objects
        dtype = dtype.name
    if dtype not in ALL_DTYPES:
        raise DTypeError(f"{what}: unknown dtype {dtype!r}; expected one of {', '.join(ALL_DTYPES)}")
    return dtype


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def is_unsigned(dtype: str) -> bool:
    return dtype in UNSIGNED_DTYPES


def int_range(dtype: str) -> tuple[int, int]:
    """The inclusive value range of an integer dtype (bool: (0, 1)).

    >>> int_range("int8"), int_range("uint16")
    ((-128, 127), (0, 65535))
    """
    if dtype == "bool":
        return 0, 1
    b = _BITS[dtype]
    if dtype in UNSIGNED_DTYPES:
        return 0, (1 << b) - 1
    return -(1 << (b - 1)), (1 << (b - 1)) - 1


def wrap(v: int, dtype: str) -> int:
    """`v` reduced modulo 2**bits into the range of integer `dtype` (two's complement for signed
    types), as the hardware does.

    >>> wrap(130, "int8"), wrap(-1, "uint8"), wrap(256, "uint8")
    (-126, 255, 0)
    """
    lo, hi = int_range(dtype)
    return ((int(v) - lo) % (hi - lo + 1)) + lo


def is_bool(dtype: str) -> bool:
    return dtype == "bool"


def bits(dtype: str) -> int:
    return _BITS[dtype]


def numpy_dtype(dtype: str):
    """The numpy dtype object for a tessel dtype (bfloat16 through ml_dtypes)."""
    import numpy as np

    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(check_dtype(dtype))


def from_numpy_dtype(np_dtype) -> str:
    """The tessel dtype string of a numpy dtype; raises DTypeError for unsupported ones."""
    import numpy as np

    name = np.dtype(np_dtype).name
    return check_dtype(name, "numpy dtype")


def min_value(dtype: str):
    """The smallest value of a dtype (-inf for floats), used as the identity of max-reductions."""
    import numpy as np

    if is_float(dtype):
        return float("-inf")
    if dtype == "bool":
        return False
    return int(np.iinfo(dtype).min)


def max_value(dtype: str):
    """The largest value of a dtype (+inf for floats), used as the identity of min-reductions."""
    import numpy as np

    if is_float(dtype):
        return float("inf")
    if dtype == "bool":
        return True
    return int(np.iinfo(dtype).max)
