// The GEMM building blocks every CPU kernel shares: block sizes, one
// register-blocked micro-kernel (MR x NR tile, B operand packed in NR-wide
// panels) and the packing routines that feed it.
//
// Included by instantiate.h inside namespace exsynth::cpu::<isa> after simd.h.

template <typename T> struct Tiles {
  static constexpr int W = Simd<T>::W;
  static constexpr int NV = 2;            // vectors per micro-tile row
  static constexpr int NR = W * NV;       // micro-tile columns
  static constexpr int MR = 6;            // micro-tile rows (12 accumulators + 2 B vectors fit 16 regs)
  static constexpr int64_t BM = 10 * MR;  // query rows per block (one parallel work item)
  static constexpr int64_t BN = 256;      // keys per block (multiple of every NR)
  static constexpr int64_t KC = 256;      // depth chunk: a KC x NR panel stays in L1
};

static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

// C[MR x NR] (+)= A[MR x kdim] (row stride lda) * Bp[kdim x NR] (packed),
// NR = NV vectors. NV = 2 for the correlation GEMMs; msca's narrow K x chunk
// products use NV = 1 when K fits one vector.
template <typename T, int NV = Tiles<T>::NV>
static inline void micro_kernel(int64_t kdim, const T* __restrict A, int64_t lda,
                                const T* __restrict Bp, T* __restrict C, int64_t ldc,
                                bool accumulate) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  constexpr int MR = Tiles<T>::MR, W = S::W, NR = W * NV;
  vec c[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      c[r][v] = accumulate ? S::load(C + r * ldc + v * W) : S::splat(0);
  for (int64_t p = 0; p < kdim; ++p) {
    vec b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = S::load(Bp + p * NR + v * W);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * lda + p];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) S::store(C + r * ldc + v * W, c[r][v]);
}

// Pack columns [c0, c0 + NR) of a rows x ld row-major matrix X into a
// rows x NR panel, zero-filling columns >= ncols.
template <typename T, int NR = Tiles<T>::NR>
static void pack_col_panel(const T* X, int64_t rows, int64_t ld, int64_t ncols, int64_t c0, T* P) {
  const int64_t w = std::min<int64_t>(NR, ncols - c0);
  for (int64_t r = 0; r < rows; ++r) {
    T* dst = P + r * NR;
    const T* src = X + r * ld + c0;
    int64_t c = 0;
    for (; c < w; ++c) dst[c] = src[c];
    for (; c < NR; ++c) dst[c] = 0;
  }
}

// Pack the transpose of rows [r0, r0 + NR) of X (rows of `cols` values, row
// stride ld) as a cols x NR panel: P[c][t] = X[r0 + t][c], zero for rows >= nrows.
template <typename T, int NR = Tiles<T>::NR>
static void pack_row_panel_t(const T* X, int64_t nrows, int64_t cols, int64_t ld, int64_t r0, T* P) {
  for (int t = 0; t < NR; ++t) {
    const int64_t r = r0 + t;
    if (r < nrows) {
      const T* src = X + r * ld;
      for (int64_t c = 0; c < cols; ++c) P[c * NR + t] = src[c];
    } else {
      for (int64_t c = 0; c < cols; ++c) P[c * NR + t] = 0;
    }
  }
}
