"""The device header's shared part: includes and the small helpers the intrinsic wrappers use.

Each intrinsic's own wrapper lives in its registry entry (`IntrinsicDef.header`); the full header
the CUDA printer prepends is this prelude followed by the wrappers of the intrinsics a kernel
calls (`tessel.ir.intrinsics.device_header`). Everything sits in `namespace tessel` behind an
include guard, so pasting the header twice is harmless, and it uses no standard-library header
(NVRTC has none without an include path): plain `unsigned` is 32 bits on every CUDA target.

Why pack and unpack 16-bit values by hand instead of reinterpret_cast on the fragment arrays:
casting a `half*` fragment to `unsigned*` takes its address as a different type, which can push a
register array into local memory; moving bits between scalars keeps everything in registers.

Example:
    >>> "namespace tessel" in PRELUDE and "smem_addr" in PRELUDE
    True
"""

from __future__ import annotations

GUARD = "TESSEL_DEVICE_HEADER_INCLUDED"

PRELUDE = r"""#include <cuda_fp16.h>
#include <cuda_bf16.h>

namespace tessel {

// 16-bit values as raw bits and back (fragments of half or bfloat16).
__device__ __forceinline__ unsigned short bits16(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned short bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
template <typename T> __device__ __forceinline__ T from_bits16(unsigned short b);
template <> __device__ __forceinline__ __half from_bits16<__half>(unsigned short b) { return __ushort_as_half(b); }
template <> __device__ __forceinline__ __nv_bfloat16 from_bits16<__nv_bfloat16>(unsigned short b) {
  return __ushort_as_bfloat16(b);
}

// Two 16-bit values in one 32-bit register: `lo` in bits 0-15 (the lower-numbered element).
template <typename T> __device__ __forceinline__ unsigned pack2(T lo, T hi) {
  return (unsigned)bits16(lo) | ((unsigned)bits16(hi) << 16);
}
template <typename T> __device__ __forceinline__ void unpack2(unsigned r, T* out) {
  out[0] = from_bits16<T>((unsigned short)(r & 0xffffu));
  out[1] = from_bits16<T>((unsigned short)(r >> 16));
}

// The 32-bit shared-state-space address PTX instructions on shared memory take.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

}  // namespace tessel
"""


def assemble(parts: list[str]) -> str:
    """The header text: guard, prelude, then each wrapper once, in the given order.

    >>> text = assemble(["namespace tessel { }", "namespace tessel { }"])
    >>> text.count("namespace tessel { }")
    1
    """
    seen, body = set(), []
    for p in parts:
        for block in _blocks(p):  # entries share blocks (a family's common helpers): each once
            if block not in seen:
                seen.add(block)
                body.append(block)
    return "\n".join([f"#ifndef {GUARD}", f"#define {GUARD}", PRELUDE.rstrip("\n"), "", *body,
                      f"#endif  // {GUARD}", ""])


_END = "}  // namespace tessel"


def _blocks(part: str) -> list[str]:
    """A wrapper text cut into its `namespace tessel { ... }  // namespace tessel` blocks."""
    chunks = part.split(_END)
    out = [c.strip("\n") + "\n" + _END for c in chunks[:-1] if c.strip()]  # each closed by the marker
    if chunks[-1].strip():
        out.append(chunks[-1].strip("\n"))
    return out


__all__ = ["GUARD", "PRELUDE", "assemble"]
