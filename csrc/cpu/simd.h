// Portable SIMD building blocks on GCC/Clang vector extensions.
//
// This header is included by each instruction-set translation unit
// (isa_<name>.cpp) *after* `#pragma GCC target(...)`, inside the
// namespace of that instruction set, so the same source compiles to SSE2,
// AVX2+FMA and AVX-512 code without -march=native. EXSYNTH_VBYTES is the
// vector width in bytes (16, 32 or 64).
#ifndef EXSYNTH_VBYTES
#error "define EXSYNTH_VBYTES before including simd.h"
#endif

constexpr int kVBytes = EXSYNTH_VBYTES;

// Subnormal numbers flushed to zero, as results (FTZ) and as operands (DAZ), on the calling
// thread while the object lives (x86's MXCSR; elsewhere nothing changes). A sharp softmax's
// backward multiplies probabilities near the underflow threshold by small factors, and on x86
// every subnormal operand or result costs a microcode assist of ~100 cycles (the patch
// correlation's backward in CoCosNet training: 189 -> 37 ms per call). Only magnitudes below
// the smallest normal number (1.2e-38 in float32, 2.2e-308 in float64) change. The mode is
// per thread: the kernels create one at the top of every OpenMP parallel region.
struct SubnormalsFlushed {
#if defined(__x86_64__)
  unsigned int saved;
  SubnormalsFlushed() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~SubnormalsFlushed() { _mm_setcsr(saved); }
#else
  SubnormalsFlushed() {}
#endif
  SubnormalsFlushed(const SubnormalsFlushed&) = delete;
  SubnormalsFlushed& operator=(const SubnormalsFlushed&) = delete;
};

template <typename T> struct IntOf;
template <> struct IntOf<float> { typedef int32_t type; };
template <> struct IntOf<double> { typedef int64_t type; };

template <typename T> struct Simd {
  typedef T vec __attribute__((vector_size(kVBytes)));
  typedef typename IntOf<T>::type ivec __attribute__((vector_size(kVBytes)));
  static constexpr int W = kVBytes / int(sizeof(T));

  static inline vec load(const T* p) { vec v; std::memcpy(&v, p, sizeof(vec)); return v; }
  static inline void store(T* p, vec v) { std::memcpy(p, &v, sizeof(vec)); }
  static inline vec splat(T x) { return vec{} + x; }
  static inline vec vmax(vec a, vec b) { return a > b ? a : b; }
  static inline T hmax(vec v) {
    T m = v[0];
    for (int i = 1; i < W; ++i) m = v[i] > m ? v[i] : m;
    return m;
  }
  static inline T hsum(vec v) {
    T s = 0;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }
};

// exp(x) for x <= ~0 (softmax arguments): Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, Taylor polynomial for e^r (degree 7 for float: error < 1e-8;
// degree 13 for double: < 1e-16 relative), times 2^n built in the exponent
// bits. Arguments below the smallest normal's log return exactly 0, which is
// also what -inf (masked keys) gives.
template <typename T> struct ExpConst;
template <> struct ExpConst<float> {
  static constexpr float lo = -87.3f, hi = 88.0f, log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float magic = 12582912.0f;  // 1.5 * 2^23: round-to-nearest trick
  static constexpr int degree = 7, mant_bits = 23, bias = 127;
};
template <> struct ExpConst<double> {
  static constexpr double lo = -708.3, hi = 709.0, log2e = 1.4426950408889634074;
  static constexpr double ln2_hi = 0.693145751953125, ln2_lo = 1.42860682030941723212e-6;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr int degree = 13, mant_bits = 52, bias = 1023;
};

template <typename T>
static inline typename Simd<T>::vec vexp(typename Simd<T>::vec x) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  typedef typename S::ivec ivec;
  typedef ExpConst<T> C;
  const ivec underflow = x < S::splat(C::lo);
  x = x > S::splat(C::hi) ? S::splat(C::hi) : x;
  x = x < S::splat(C::lo) ? S::splat(C::lo) : x;
  vec n = x * C::log2e + C::magic;
  n = n - C::magic;
  vec r = x - n * C::ln2_hi;
  r = r - n * C::ln2_lo;
  // Horner on 1/k!, highest degree first.
  T coef[C::degree + 1];
  coef[0] = 1;
  for (int i = 1; i <= C::degree; ++i) coef[i] = coef[i - 1] / T(i);
  vec p = S::splat(coef[C::degree]);
  for (int i = C::degree - 1; i >= 0; --i) p = p * r + coef[i];
  ivec e = __builtin_convertvector(n, ivec);
  e = (e + C::bias) << C::mant_bits;
  vec scale;
  std::memcpy(&scale, &e, sizeof(vec));
  vec res = p * scale;
  ivec bits;
  std::memcpy(&bits, &res, sizeof(vec));
  bits = bits & ~underflow;
  std::memcpy(&res, &bits, sizeof(vec));
  return res;
}
