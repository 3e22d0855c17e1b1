// tessel_cuda.cuh: the device header every kernel tessel generates includes.
//
// It holds what the CUDA printer (tessel/codegen/cuda_printer.py) emits calls to, so that the
// generated code reproduces the reference interpreter's semantics (tessel/ir/interp/__init__.py):
//   * half / bfloat16 arithmetic: every operation rounds to its dtype. Each is computed in float and
//     rounded once; float has at least 2p+2 bits for both formats (p = 11, 8), so the double rounding
//     is innocuous and the result is the correctly rounded one, as numpy / ml_dtypes compute it;
//   * floor division and modulo with floor semantics, for integers (Python's) and floats (numpy's
//     algorithm, including signed zeros and infinities);
//   * min / max that propagate NaN (numpy.minimum / maximum);
//   * integer arithmetic that wraps (two's complement) where overflow cannot be ruled out, through
//     unsigned arithmetic (signed overflow is undefined behaviour in C++);
//   * float -> int casts that truncate and saturate, NaN giving 0;
//   * vector loads and stores of whole 2..16-byte chunks (and multiples of 16 bytes).
// The tensor-core intrinsics are not here: their text comes from the intrinsic table
// (tessel.ir.intrinsics), whose headers the printer pastes after this file.
//
// Everything is __host__ __device__, so tests can run generated code on the CPU through nvcc.
// It must compile under NVRTC, which has no C++ standard library: only builtin types are used.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define TS_HD __host__ __device__ __forceinline__

namespace tessel {

// ---- constants from bit patterns (exact NaN, infinities, and half / bfloat16 values) -----------
TS_HD float f32_bits(unsigned int u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f; __builtin_memcpy(&f, &u, sizeof(f)); return f;
#endif
}
TS_HD double f64_bits(unsigned long long u) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double((long long)u);
#else
  double d; __builtin_memcpy(&d, &u, sizeof(d)); return d;
#endif
}
TS_HD __half half_bits(unsigned short u) { __half_raw r; r.x = u; return __half(r); }
TS_HD __nv_bfloat16 bf16_bits(unsigned short u) { __nv_bfloat16_raw r; r.x = u; return __nv_bfloat16(r); }

// ---- conversions to and from float --------------------------------------------------------------
TS_HD float f32(__half x) { return __half2float(x); }
TS_HD float f32(__nv_bfloat16 x) { return __bfloat162float(x); }
TS_HD float f32(float x) { return x; }
TS_HD __half to_half(float x) { return __float2half_rn(x); }
TS_HD __nv_bfloat16 to_bf16(float x) { return __float2bfloat16_rn(x); }
TS_HD __half round_like(__half, float x) { return __float2half_rn(x); }
TS_HD __nv_bfloat16 round_like(__nv_bfloat16, float x) { return __float2bfloat16_rn(x); }

// ---- half / bfloat16 arithmetic: in float, rounded once --------------------------------------------
#define TS_LOWP_BINARY(name, op)                                                                  \
  TS_HD __half name(__half a, __half b) { return __float2half_rn(f32(a) op f32(b)); }             \
  TS_HD __nv_bfloat16 name(__nv_bfloat16 a, __nv_bfloat16 b) { return __float2bfloat16_rn(f32(a) op f32(b)); }
TS_LOWP_BINARY(add, +)
TS_LOWP_BINARY(sub, -)
TS_LOWP_BINARY(mul, *)
TS_LOWP_BINARY(div, /)
#undef TS_LOWP_BINARY

// ---- min / max ------------------------------------------------------------------------------------
// Floats: NaN in either operand gives NaN; otherwise `a < b ? a : b` (so min(0.0, -0.0) is -0.0 and
// min(-0.0, 0.0) is 0.0, as the interpreter computes).
TS_HD float fmin_nan(float a, float b) { return (a < b || a != a) ? a : b; }
TS_HD float fmax_nan(float a, float b) { return (a > b || a != a) ? a : b; }
TS_HD double fmin_nan(double a, double b) { return (a < b || a != a) ? a : b; }
TS_HD double fmax_nan(double a, double b) { return (a > b || a != a) ? a : b; }
#define TS_LOWP_MINMAX(T)                                                                          \
  TS_HD T fmin_nan(T a, T b) { float x = f32(a), y = f32(b); return (x < y || x != x) ? a : b; }     \
  TS_HD T fmax_nan(T a, T b) { float x = f32(a), y = f32(b); return (x > y || x != x) ? a : b; }
TS_LOWP_MINMAX(__half)
TS_LOWP_MINMAX(__nv_bfloat16)
#undef TS_LOWP_MINMAX
template <class T> TS_HD T imin(T a, T b) { return a < b ? a : b; }
template <class T> TS_HD T imax(T a, T b) { return a > b ? a : b; }

// ---- wrapping integer arithmetic (int and long long; int8 is computed in int, then narrowed) -------
TS_HD int wadd(int a, int b) { return (int)((unsigned int)a + (unsigned int)b); }
TS_HD int wsub(int a, int b) { return (int)((unsigned int)a - (unsigned int)b); }
TS_HD int wmul(int a, int b) { return (int)((unsigned int)a * (unsigned int)b); }
TS_HD long long wadd(long long a, long long b) { return (long long)((unsigned long long)a + (unsigned long long)b); }
TS_HD long long wsub(long long a, long long b) { return (long long)((unsigned long long)a - (unsigned long long)b); }
TS_HD long long wmul(long long a, long long b) { return (long long)((unsigned long long)a * (unsigned long long)b); }
template <class T> TS_HD T iabs(T x) { return x < 0 ? wsub(T(0), x) : x; }

// ---- floor division and modulo ------------------------------------------------------------------------
// Integers: rounded toward minus infinity (Python). INT_MIN // -1 wraps to INT_MIN. Division by
// zero gives 0 here (the interpreter raises; CUDA cannot, and C++ leaves it undefined).
template <class T> TS_HD T ifloordiv(T a, T b) {
  if (b == 0) return T(0);
  if (b == -1) return wsub(T(0), a);
  T q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;
}
template <class T> TS_HD T ifloormod(T a, T b) {
  if (b == 0 || b == -1) return T(0);
  T r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? T(r + b) : r;
}

TS_HD float m_fmod(float a, float b) { return fmodf(a, b); }
TS_HD double m_fmod(double a, double b) { return fmod(a, b); }
TS_HD float m_floor(float a) { return floorf(a); }
TS_HD double m_floor(double a) { return floor(a); }
TS_HD float m_copysign(float a, float b) { return copysignf(a, b); }
TS_HD double m_copysign(double a, double b) { return copysign(a, b); }

// Floats: numpy's npy_divmod (floor of the quotient snapped to an integer, remainder with the
// divisor's sign); x // 0 is x / 0 and x % 0 is fmod(x, 0), i.e. NaN.
template <class T> TS_HD T ffloordiv(T a, T b) {
  if (b == T(0)) return a / b;
  T mod = m_fmod(a, b);
  T div = (a - mod) / b;
  if (mod != T(0) && ((b < T(0)) != (mod < T(0)))) div -= T(1);
  if (div != T(0)) {
    T fl = m_floor(div);
    if (div - fl > T(0.5)) fl += T(1);
    return fl;
  }
  return m_copysign(T(0), a / b);
}
template <class T> TS_HD T ffloormod(T a, T b) {
  T mod = m_fmod(a, b);
  if (b == T(0)) return mod;
  if (mod != T(0)) {
    if ((b < T(0)) != (mod < T(0))) mod += b;
  } else {
    mod = m_copysign(T(0), b);
  }
  return mod;
}
TS_HD __half ffloordiv(__half a, __half b) { return to_half(ffloordiv(f32(a), f32(b))); }
TS_HD __half ffloormod(__half a, __half b) { return to_half(ffloormod(f32(a), f32(b))); }
TS_HD __nv_bfloat16 ffloordiv(__nv_bfloat16 a, __nv_bfloat16 b) { return to_bf16(ffloordiv(f32(a), f32(b))); }
TS_HD __nv_bfloat16 ffloormod(__nv_bfloat16 a, __nv_bfloat16 b) { return to_bf16(ffloormod(f32(a), f32(b))); }

// ---- float -> integer: truncate toward zero, saturate at the limits, NaN -> 0 ------------------------
template <class I> struct int_limits;
template <> struct int_limits<signed char> { static TS_HD signed char lo() { return -128; } static TS_HD signed char hi() { return 127; } };
template <> struct int_limits<int> { static TS_HD int lo() { return -2147483647 - 1; } static TS_HD int hi() { return 2147483647; } };
template <> struct int_limits<long long> {
  static TS_HD long long lo() { return -9223372036854775807LL - 1; }
  static TS_HD long long hi() { return 9223372036854775807LL; }
};
template <class I, class F> TS_HD I f2i(F x) {
  if (x != x) return I(0);
  if (x >= F(int_limits<I>::hi())) return int_limits<I>::hi();
  if (x <= F(int_limits<I>::lo())) return int_limits<I>::lo();
  return I(x);
}

// ---- math functions not in CUDA's math library ------------------------------------------------------
// sigmoid(x) = 1 / (1 + exp(-x)), evaluated so that exp never overflows (as the interpreter does).
TS_HD float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}
TS_HD double sigmoid(double x) {
  if (x >= 0.0) return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}
TS_HD __half habs(__half x) { __half_raw r = x; r.x &= 0x7fffu; return __half(r); }
TS_HD __nv_bfloat16 habs(__nv_bfloat16 x) { __nv_bfloat16_raw r = x; r.x &= 0x7fffu; return __nv_bfloat16(r); }

// ---- vector loads and stores -------------------------------------------------------------------------
// Copy N elements of T between memory and a register array in chunks of 16 bytes (or one chunk of
// 8, 4 or 2 bytes). The pointer must be aligned to the chunk size; the printer proves the index
// alignment and the runtime checks the base pointers.
template <int BYTES> struct chunk;
template <> struct chunk<2> { typedef unsigned short type; };
template <> struct chunk<4> { typedef unsigned int type; };
template <> struct chunk<8> { typedef uint2 type; };
template <> struct chunk<16> { typedef uint4 type; };

template <class T, int N> TS_HD void load_vec(T (&dst)[N], const T* src) {
  constexpr int B = N * (int)sizeof(T);
  constexpr int C = B >= 16 ? 16 : B;
  typedef typename chunk<C>::type V;
#pragma unroll
  for (int i = 0; i < B / C; ++i) reinterpret_cast<V*>(dst)[i] = reinterpret_cast<const V*>(src)[i];
}
template <class T, int N> TS_HD void store_vec(T* dst, const T (&src)[N]) {
  constexpr int B = N * (int)sizeof(T);
  constexpr int C = B >= 16 ? 16 : B;
  typedef typename chunk<C>::type V;
#pragma unroll
  for (int i = 0; i < B / C; ++i) reinterpret_cast<V*>(dst)[i] = reinterpret_cast<const V*>(src)[i];
}

}  // namespace tessel

#undef TS_HD
