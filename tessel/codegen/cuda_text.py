"""How the CUDA printer spells IR things in C++: types, exact literals, identifiers, intrinsic calls.

Kept apart from the printer (cuda_printer.py), which decides what code to emit, because these are
small, independent facts with their own tests:

- every tessel dtype has one C++ type (`__half`, `__nv_bfloat16`, `signed char`, ...);
- float constants are printed exactly: hex literals for float / double, bit patterns for NaN,
  infinities and half / bfloat16 (rounded once, as the interpreter rounds them), so no decimal
  round trip can change a value;
- IR names become C identifiers that never collide with C++ keywords, CUDA built-ins, math
  functions or the header's names;
- intrinsic calls come from the intrinsic table (`tessel.ir.intrinsics`), whose device header is
  pasted after ours.

Example:
    >>> ctype("bfloat16"), float_literal(0.5, "float32"), int_literal(-1, "int64")
    ('__nv_bfloat16', '0x1.0000000000000p-1f', '(-1LL)')
"""

from __future__ import annotations

import re

import numpy as np

from tessel.errors import CodegenError
from tessel.ir.dtypes import bits, is_bool

CTYPES = {"float16": "__half", "bfloat16": "__nv_bfloat16", "float32": "float", "float64": "double",
          "int8": "signed char", "int32": "int", "int64": "long long", "bool": "bool"}
LOWP = ("float16", "bfloat16")
INT_RANGE = {"int8": (-(1 << 7), (1 << 7) - 1), "int32": (-(1 << 31), (1 << 31) - 1),
             "int64": (-(1 << 63), (1 << 63) - 1), "bool": (0, 1)}

# Names generated code must not take for variables or buffers: C++ keywords, CUDA built-ins,
# math functions (a variable named `exp` would hide the function) and the header's names.
_RESERVED = frozenset("""
alignas alignof asm auto bool break case catch char class const constexpr const_cast continue decltype default delete
do double dynamic_cast else enum explicit export extern false float for friend goto if inline int long mutable
namespace new noexcept nullptr operator private protected public register reinterpret_cast return short signed sizeof
static static_assert static_cast struct switch template this thread_local throw true try typedef typeid typename union
unsigned using virtual void volatile while and or not xor
threadIdx blockIdx blockDim gridDim warpSize uint2 uint4 min max abs exp expf log logf sqrt sqrtf tanh tanhf erf erff
sin sinf cos cosf floor floorf ceil ceilf fabs fabsf pow powf fmod fmodf copysign main printf memcpy tessel
tessel_smem tessel_ws half float2 float4 int2 int4 __half __nv_bfloat16 NULL
rsqrt rsqrtf exp2 exp2f exp10 exp10f expm1 expm1f log2 log2f log10 log10f log1p log1pf tan tanf sinh sinhf
cosh coshf asin asinf acos acosf atan atanf atan2 atan2f erfc erfcf cbrt cbrtf hypot hypotf round roundf trunc
truncf rint rintf fmin fminf fmax fmaxf fma fmaf isnan isinf isfinite signbit sigmoid assert malloc free
""".split())


# The integer dtypes the CUDA printer computes in (the IR has more: int16 and the unsigned kinds
# run on the CPU; on cuda they are refused with a CodegenError naming the dtype).
CUDA_INT_DTYPES = ("int8", "int32", "int64")


def ctype(dtype: str) -> str:
    """The C++ type of a tessel dtype (CodegenError for a dtype the CUDA printer does not take).

    >>> ctype("bfloat16"), ctype("int8")
    ('__nv_bfloat16', 'signed char')
    """
    try:
        return CTYPES[dtype]
    except KeyError:
        raise CodegenError(f"dtype {dtype} has no CUDA support in tessel yet (cuda takes float16, bfloat16, "
                           f"float32, float64, {', '.join(CUDA_INT_DTYPES)} and bool)") from None


def itemsize(dtype: str) -> int:
    return bits(dtype) // 8


class Names:
    """C identifiers for the kernel's variables and buffers: the IR name when it is a valid,
    unreserved identifier, else a cleaned-up, numbered one. One name per IR name."""

    def __init__(self):
        self.map: dict[str, str] = {}
        self.used: set[str] = set(_RESERVED)

    def get(self, name: str) -> str:
        out = self.map.get(name)
        if out is None:
            base = re.sub(r"\W", "_", name) or "_"
            if base[0].isdigit():
                base = "_" + base
            if base.startswith("__") or base.startswith("tessel"):
                base = "v" + base
            out, k = base, 0
            while out in self.used:
                k += 1
                out = f"{base}_{k}"
            self.used.add(out)
            self.map[name] = out
        return out


def float_literal(value: float, dtype: str) -> str:
    """C++ source of a float constant of `dtype`, exact (hex literals, bit patterns for NaN / inf
    and for half / bfloat16).

    >>> float_literal(0.1, "float32"), float_literal(1.0, "float16")
    ('0x1.99999a0000000p-4f', 'tessel::half_bits(0x3c00)')
    """
    from tessel.ir.interp.runtime import from_float

    v = from_float(dtype)(value)
    if dtype in LOWP:
        u = int(np.array(v).view(np.uint16))
        return f"tessel::{'half' if dtype == 'float16' else 'bf16'}_bits({u:#06x})"
    if dtype == "float32":
        if not np.isfinite(v):
            return f"tessel::f32_bits({int(np.array(v, np.float32).view(np.uint32)):#010x}u)"
        s = float(v).hex() + "f"
    else:
        if not np.isfinite(v):
            return f"tessel::f64_bits({int(np.array(v, np.float64).view(np.uint64)):#018x}ull)"
        s = float(v).hex()
    return f"({s})" if s.startswith("-") else s


def int_literal(value: int, dtype: str) -> str:
    """C++ source of an integer or bool constant.

    >>> int_literal(-2**31, "int32"), int_literal(5, "int64"), int_literal(-3, "int8")
    ('(-2147483647 - 1)', '5LL', '((signed char)(-3))')
    """
    if is_bool(dtype):
        return "true" if value else "false"
    lo, _ = INT_RANGE[dtype]
    suffix = "LL" if dtype == "int64" else ""
    if value == lo and dtype != "int8":
        s = f"({lo + 1}{suffix} - 1)"
    else:
        s = f"{value}{suffix}" if value >= 0 else f"({value}{suffix})"
    return f"((signed char){s})" if dtype == "int8" else s


def lookup_intrinsic(name: str, kernel: str):
    """The intrinsic table's entry for `name` (tessel.ir.intrinsics.lookup); CodegenError when
    the table or the entry is missing."""
    table = intrinsic_table()
    if table is None:
        raise CodegenError(f"kernel '{kernel}': intrinsic '{name}' needs the intrinsic table tessel.ir.intrinsics, "
                           f"which is not available")
    try:
        entry = table.lookup(name)
    except Exception as e:  # noqa: BLE001 - the table's own error type is its business; name ours
        raise CodegenError(f"kernel '{kernel}': unknown intrinsic '{name}' ({e})") from e
    if entry is None or not (callable(getattr(entry, "cuda_text", None)) or callable(getattr(entry, "cuda", None))):
        raise CodegenError(f"kernel '{kernel}': intrinsic '{name}' has no CUDA text in the intrinsic table")
    return entry


def intrinsic_table():
    """The module tessel.ir.intrinsics, or None while it does not exist."""
    import importlib

    try:
        return importlib.import_module("tessel.ir.intrinsics")
    except ModuleNotFoundError as e:
        if e.name != "tessel.ir.intrinsics":
            raise
        return None


def intrinsic_headers(used: list[str]) -> list[str]:
    """The device-header text of the intrinsic table: its prelude and the wrapper of every entry
    (`tessel.ir.intrinsics.device_header()`), or, from a table without that function, the
    `header` of every entry (those of `used` at least), each once."""
    table = intrinsic_table()
    if table is None:
        return []
    if callable(getattr(table, "device_header", None)):
        return [table.device_header(used)]  # the prelude and the wrappers of the intrinsics used
    entries = list(getattr(table, "TABLE", {}).values()) + [table.lookup(n) for n in used]
    out: list[str] = []
    for entry in entries:
        header = getattr(entry, "header", None) or ""
        if header.strip() and header not in out:
            out.append(header)
    return out


__all__ = ["CTYPES", "INT_RANGE", "LOWP", "Names", "ctype", "float_literal", "int_literal", "intrinsic_headers",
           "intrinsic_table", "itemsize", "lookup_intrinsic"]
