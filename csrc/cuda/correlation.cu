// Correlation attention (CoCosNet's warp) and hard match on the GPU.
//
//   s_ij = q_i . k_j,  logits alpha s_ij,  out_i = sum_j softmax_j(alpha s_i.) v_j,
//   lse_i = logsumexp_j alpha s_ij (natural log, float64),
//   match: index_i = argmax_j s_ij (first on ties), best_i = max_j s_ij.
// Layouts (row-major, contiguous): q (B, Lq, D), k (B, Lk, D), v (B, Lk, Cv),
// out (B, Lq, Cv), lse/delta/index/best (B, Lq).
//
// Flash-attention-2 structure: the Lq x Lk matrix never exists; a block owns a
// 64-row tile and loops over 64-wide tiles of the other side, recomputing each
// 64 x 64 score tile from q and k streamed through shared memory in chunks of
// KC depth columns (so any D works). Backward (flash-attention-2 math):
//   P = exp(alpha S - lse), dP = dO V^T, dS = P (dP - delta),
//   dQ = alpha dS K, dK = alpha dS^T Q, dV = P^T dO,
// split in two kernels so that no D-wide accumulator has to live in registers:
//   (a) attn_bwd_dq_kernel, one block per 64 queries, loops over key tiles;
//   (b) attn_bwd_dkdv_kernel, one block per 64 keys, loops over query tiles.
// Each adds its 64 x N products (N = D or Cv) chunk by chunk into a float32
// accumulator in global memory that only this block touches (read-modify-write,
// no atomics); the last step writes the output dtype instead. For float32 the
// output itself is the accumulator.
//
// Arithmetic: 16-bit inputs use tensor cores through WMMA 16x16x16 fragments
// with float32 accumulators (P and dS are rounded to the input dtype before
// their GEMMs, as in flash attention). float32 inputs use plain FFMA on the
// same tiles (exact float32 products; no TF32, whose 10-bit mantissa alpha=100
// would magnify).
//
// ---- Ownership and synchronisation invariants (read these before editing) ----
//  * A block has 4 warps (128 threads). Every block-level product here has 64
//    rows, and warp w owns rows [16w, 16w + 16) of it: it alone computes, reads
//    and writes those rows of the float32 score tiles (S, dP), of the 16-bit
//    copies (P, dS), of the staging tile and of the output accumulators. So
//    row-wise work (softmax, argmax, read-modify-write to global) needs only
//    __syncwarp().
//  * Only the streamed operand tiles sA/sB are shared between warps. Every
//    write to them is preceded by __syncthreads() (all warps finished reading
//    the previous contents) and followed by __syncthreads() (the new contents
//    are visible) before any warp reads them. All loops containing
//    __syncthreads() have block-uniform trip counts.
//  * Rows or columns past the end of q/k/v/dout are loaded as zeros and their
//    probabilities are set to 0 explicitly; results of rows past the end are
//    never written.
#include <mma.h>

#include <climits>
#include <type_traits>

#include "cuda/common.cuh"

namespace exsynth {
namespace cuda {
namespace detail {
namespace attn {

using namespace nvcuda;

constexpr int TM = 64;               // rows of every tile (queries; keys in the dK/dV kernel)
constexpr int TN = 64;               // columns of the score tile (the other side)
constexpr int WARPS = 4;             // warp w owns tile rows [16w, 16w + 16)
constexpr int THREADS = WARPS * 32;
constexpr int LDS = TN + 4;          // leading dim of float32 64 x 64 tiles (S, dP, staging)
static_assert(TM == 16 * WARPS, "one 16-row strip per warp");
static_assert(TN == 64, "softmax/argmax code gives each lane columns lane and lane + 32");

template <typename T> struct Cfg {
  static constexpr bool kF32 = std::is_same<T, float>::value;
  static constexpr int KC = kF32 ? 32 : 64;   // width of a streamed chunk (depth D, or Cv)
  static constexpr int PAD = 16 / sizeof(T);  // 16 bytes of row padding (fewer bank conflicts)
  static constexpr int LDT = KC + PAD;        // leading dim of the streamed tiles sA, sB
  static constexpr int LDP = TN + PAD;        // leading dim of the T copies of P and dS
  static_assert(KC % 16 == 0 && KC <= LDS, "the staging tile holds one KC-wide chunk");
};
// float32: LDP == LDS, so P may live in place of S (same element, same lane).
static_assert(Cfg<float>::LDP == LDS, "in-place P for float32");

// ---- one warp's 16 x 16 float32 accumulator tile ---------------------------------------------

// 16-bit inputs: a WMMA accumulator fragment (layout opaque; moved through smem).
template <typename T> struct Acc {
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> f;
  __device__ __forceinline__ void zero() { wmma::fill_fragment(f, 0.0f); }
  __device__ __forceinline__ void load(const float* p, int ld) {
    wmma::load_matrix_sync(f, p, ld, wmma::mem_row_major);
  }
  __device__ __forceinline__ void store(float* p, int ld) const {
    wmma::store_matrix_sync(p, f, ld, wmma::mem_row_major);
  }
};

// float32 inputs: lane owns rows 2*(lane/4) + {0,1}, columns 4*(lane%4) + {0..3}.
template <> struct Acc<float> {
  float v[2][4];
  __device__ __forceinline__ static int row0() { return 2 * ((threadIdx.x & 31) >> 2); }
  __device__ __forceinline__ static int col0() { return 4 * (threadIdx.x & 3); }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) v[i][j] = 0.0f;
  }
  __device__ __forceinline__ void load(const float* p, int ld) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) v[i][j] = p[(row0() + i) * ld + col0() + j];
  }
  __device__ __forceinline__ void store(float* p, int ld) const {
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) p[(row0() + i) * ld + col0() + j] = v[i][j];
  }
};

// acc[j] += A[16 x kdim] * B_j^T, where A is row-major (lda) and B_j is rows
// [16j, 16j + 16) of a row-major (16 NT) x kdim matrix (ldb): "A times B
// transposed". kdim is a multiple of 16. Whole warp calls; smem operands.
template <int NT, typename T>
__device__ __forceinline__ void warp_mma_nt(Acc<T> (&acc)[NT], const T* a, int lda, const T* b,
                                            int ldb, int kdim) {
  if constexpr (std::is_same<T, float>::value) {
    const int r = Acc<float>::row0(), c = Acc<float>::col0();
    for (int kk = 0; kk < kdim; ++kk) {
      const float a0 = a[r * lda + kk], a1 = a[(r + 1) * lda + kk];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float bv = b[(16 * j + c + e) * ldb + kk];
          acc[j].v[0][e] = fmaf(a0, bv, acc[j].v[0][e]);
          acc[j].v[1][e] = fmaf(a1, bv, acc[j].v[1][e]);
        }
    }
  } else {
    for (int kk = 0; kk < kdim; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, a + kk, lda);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        // col_major matrix_b: element (k, n) at b[n * ldb + k], i.e. B_j^T.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fb, b + 16 * j * ldb + kk, ldb);
        wmma::mma_sync(acc[j].f, fa, fb, acc[j].f);
      }
    }
  }
}

// acc[j] += A[16 x kdim] * B[0:kdim, 16j:16j+16], A and B row-major. kdim % 16 == 0.
template <int NT, typename T>
__device__ __forceinline__ void warp_mma_nn(Acc<T> (&acc)[NT], const T* a, int lda, const T* b,
                                            int ldb, int kdim) {
  if constexpr (std::is_same<T, float>::value) {
    const int r = Acc<float>::row0(), c = Acc<float>::col0();
    for (int kk = 0; kk < kdim; ++kk) {
      const float a0 = a[r * lda + kk], a1 = a[(r + 1) * lda + kk];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float bv = b[kk * ldb + 16 * j + c + e];
          acc[j].v[0][e] = fmaf(a0, bv, acc[j].v[0][e]);
          acc[j].v[1][e] = fmaf(a1, bv, acc[j].v[1][e]);
        }
    }
  } else {
    for (int kk = 0; kk < kdim; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, a + kk, lda);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fb, b + kk * ldb + 16 * j, ldb);
        wmma::mma_sync(acc[j].f, fa, fb, acc[j].f);
      }
    }
  }
}

// ---- global -> shared tile copy ----------------------------------------------------------------

// dst[r * ldd + c] = src[r * lds + c] for r < rows, c < cols, and 0 for the rest of the
// ROWS x COLS tile. Whole block calls with identical arguments. 16-byte vector copies where
// the source is aligned; dst rows must be 16-byte aligned (ldd * sizeof(T) % 16 == 0).
template <typename T, int ROWS, int COLS>
__device__ __forceinline__ void load_tile(T* dst, int ldd, const T* src, int64_t lds, int64_t rows,
                                          int64_t cols) {
  constexpr int VEC = 16 / sizeof(T);
  static_assert(COLS % VEC == 0, "whole vectors per row");
  constexpr int VPR = COLS / VEC;
  for (int i = threadIdx.x; i < ROWS * VPR; i += THREADS) {
    const int r = i / VPR, c = (i % VPR) * VEC;
    T* d = dst + r * ldd + c;
    if (r < rows && c + VEC <= cols) {
      const T* s = src + r * lds + c;
      if ((reinterpret_cast<std::uintptr_t>(s) & 15) == 0) {
        *reinterpret_cast<int4*>(d) = *reinterpret_cast<const int4*>(s);
        continue;
      }
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e)
      d[e] = (r < rows && c + e < cols) ? src[r * lds + c + e] : from_f<T>(0.0f);
  }
}

// ---- block-level products ------------------------------------------------------------------------

// dst (this warp's 16 rows of a float32 64 x 64 tile, ld LDS) = A_blk * B_blk^T, where A_blk
// is rows [0, 64) of A (row stride kdim; rows >= a_rows read as 0) and B_blk likewise; the
// depth kdim (D or Cv) is streamed in KC-wide chunks through sA and sB.
// Sync: each chunk starts with __syncthreads() (previous readers of sA/sB are done) and the
// function ends without one: whoever writes sA/sB next syncs first (every loader here does).
template <typename T>
__device__ __forceinline__ void score_tile(float* dst, const T* A, int64_t a_rows, const T* B, int64_t b_rows,
                           int64_t kdim, T* sA, T* sB) {
  using C = Cfg<T>;
  const int warp = threadIdx.x >> 5;
  Acc<T> acc[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j].zero();
  for (int64_t k0 = 0; k0 < kdim; k0 += C::KC) {
    const int64_t kc = kdim - k0 < C::KC ? kdim - k0 : C::KC;
    __syncthreads();
    load_tile<T, TM, C::KC>(sA, C::LDT, A + k0, kdim, a_rows, kc);
    load_tile<T, TN, C::KC>(sB, C::LDT, B + k0, kdim, b_rows, kc);
    __syncthreads();
    warp_mma_nt<4>(acc, sA + 16 * warp * C::LDT, C::LDT, sB, C::LDT,
                   static_cast<int>(round_up(kc, 16)));
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) acc[j].store(dst + 16 * j, LDS);
}

// For this warp's 16 rows r: C[r, 0:N] (+)= Pw[r, 0:64] * B_blk[0:64, 0:N], where Pw is
// this warp's strip of a T tile (ld ldp), B_blk = rows [0, 64) of B (row stride N; rows
// >= b_rows read as 0). N is streamed in KC-wide chunks through sB; each 16 x KC product is
// staged in `stage` (this warp's 16 rows of a float32 tile, ld LDS) and then added to
// global memory by the warp's lanes (coalesced along N):
//   value = stage + (first ? 0 : acc_g[r, c]);  last ? out_g[r, c] = T(value) : acc_g[r, c] = value
// acc_g (float32) and out_g (T) have row stride N and may alias (float32 T); rows
// >= c_rows are skipped. Only this block touches these rows: no atomics needed.
// Sync: as score_tile (starts each chunk with __syncthreads(), ends without).
template <typename T>
__device__ __forceinline__ void gemm_nn_rmw(const T* Pw, int ldp, const T* B, int64_t b_rows, int64_t N,
                            float* acc_g, T* out_g, int64_t c_rows, bool first, bool last, T* sB,
                            float* stage) {
  using C = Cfg<T>;
  constexpr int NT = C::KC / 16;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t n0 = 0; n0 < N; n0 += C::KC) {
    const int64_t nc = N - n0 < C::KC ? N - n0 : C::KC;
    __syncthreads();
    load_tile<T, TN, C::KC>(sB, C::LDT, B + n0, N, b_rows, nc);
    __syncthreads();
    Acc<T> acc[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j].zero();
    warp_mma_nn<NT>(acc, Pw, ldp, sB, C::LDT, TN);
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j].store(stage + 16 * j, LDS);
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int64_t row = 16 * warp + rr;
      if (row >= c_rows) break;
      for (int c = lane; c < nc; c += 32) {
        const int64_t idx = row * N + n0 + c;
        float val = stage[rr * LDS + c];
        if (!first) val += acc_g[idx];
        if (last)
          out_g[idx] = from_f<T>(val);
        else
          acc_g[idx] = val;
      }
    }
    __syncwarp();  // the stage is rewritten by the next chunk
  }
}

// ---- shared memory layouts (computed identically on host and device) ---------------------------

template <typename T> struct FwdLayout {
  size_t a, b, s, p, o, m, l, bytes;
  __host__ __device__ explicit FwdLayout(int64_t ldo) {
    using C = Cfg<T>;
    Carve cv;
    a = cv.take<T>(TM * C::LDT);   // q chunk
    b = cv.take<T>(TN * C::LDT);   // k chunk, then v chunk
    s = cv.take<float>(TM * LDS);  // scores
    p = C::kF32 ? s : cv.take<T>(TM * C::LDP);  // probabilities (in place for float32)
    o = cv.take<float>(TM * ldo);  // output accumulator, TM x Cvp (ld ldo)
    m = cv.take<float>(TM);        // running max of the logits
    l = cv.take<float>(TM);        // running sum of exp
    bytes = cv.offset;
  }
};

template <typename T> struct BwdLayout {
  size_t a, b, s, dp, p, ds, bytes;
  __host__ __device__ BwdLayout() {
    using C = Cfg<T>;
    Carve cv;
    a = cv.take<T>(TM * C::LDT);
    b = cv.take<T>(TN * C::LDT);
    s = cv.take<float>(TM * LDS);   // scores
    dp = cv.take<float>(TM * LDS);  // dP, then the staging tile of gemm_nn_rmw
    p = C::kF32 ? s : cv.take<T>(TM * C::LDP);  // P (dK/dV kernel; in place for float32)
    ds = cv.take<T>(TM * C::LDP);   // alpha * dS
    bytes = cv.offset;
  }
};

template <typename T> struct MatchLayout {
  size_t a, b, s, best, idx, bytes;
  __host__ __device__ MatchLayout() {
    using C = Cfg<T>;
    Carve cv;
    a = cv.take<T>(TM * C::LDT);
    b = cv.take<T>(TN * C::LDT);
    s = cv.take<float>(TM * LDS);
    best = cv.take<float>(TM);
    idx = cv.take<int>(TM);
    bytes = cv.offset;
  }
};

// ---- kernels ----------------------------------------------------------------------------------------

// Grid (ceil(Lq / 64), B); block 128. Block owns queries [i0, i0 + 64) of batch b.
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    attn_fwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    T* __restrict__ out, double* __restrict__ lse, int64_t Lq, int64_t Lk,
                    int64_t D, int64_t Cv, float alpha) {
  using C = Cfg<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * TM;
  const int64_t rows = Lq - i0;  // valid query rows (>= 1; may exceed TM)
  const int64_t Cvp = round_up(Cv, 16);
  const int ldo = static_cast<int>(Cvp) + 4;
  const FwdLayout<T> lay(ldo);
  T* sA = reinterpret_cast<T*>(smem + lay.a);
  T* sB = reinterpret_cast<T*>(smem + lay.b);
  float* sS = reinterpret_cast<float*>(smem + lay.s);
  T* sP = reinterpret_cast<T*>(smem + lay.p);
  float* sO = reinterpret_cast<float*>(smem + lay.o);
  float* sM = reinterpret_cast<float*>(smem + lay.m);
  float* sL = reinterpret_cast<float*>(smem + lay.l);

  q += (b * Lq + i0) * D;
  k += b * Lk * D;
  v += b * Lk * Cv;
  out += (b * Lq + i0) * Cv;
  lse += b * Lq + i0;

  // This warp's rows of O, m, l.
  for (int i = lane; i < 16 * ldo; i += 32) sO[16 * warp * ldo + i] = 0.0f;
  if (lane < 16) {
    sM[16 * warp + lane] = -INFINITY;
    sL[16 * warp + lane] = 0.0f;
  }
  __syncwarp();

  for (int64_t j0 = 0; j0 < Lk; j0 += TN) {
    const int64_t kvalid = Lk - j0;  // valid key columns of this tile (>= 1)
    score_tile<T>(sS + 16 * warp * LDS, q, rows, k + j0 * D, kvalid, D, sA, sB);
    __syncwarp();
    // Online softmax of this warp's rows; lane handles columns lane and lane + 32.
    for (int rr = 0; rr < 16; ++rr) {
      const int row = 16 * warp + rr;
      const bool ok0 = lane < kvalid, ok1 = lane + 32 < kvalid;
      // logits rounded once (__fmul_rn: never contracted into the subtraction below), as the
      // backward rebuilds them: the largest gives exactly exp(0) = 1 in both
      const float x0 = ok0 ? __fmul_rn(alpha, sS[row * LDS + lane]) : -INFINITY;
      const float x1 = ok1 ? __fmul_rn(alpha, sS[row * LDS + lane + 32]) : -INFINITY;
      const float m_old = sM[row];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(x0, x1)));  // finite: column 0 is valid
      const float p0 = ok0 ? expf(x0 - m_new) : 0.0f;
      const float p1 = ok1 ? expf(x1 - m_new) : 0.0f;
      const float scale = expf(m_old - m_new);  // 0 on the first tile (m_old = -inf)
      sP[row * C::LDP + lane] = from_f<T>(p0);  // float32: overwrites S in place (same lane)
      sP[row * C::LDP + lane + 32] = from_f<T>(p1);
      const float psum = warp_sum(p0 + p1);
      for (int c = lane; c < Cvp; c += 32) sO[row * ldo + c] *= scale;
      __syncwarp();  // every lane has read sM[row]
      if (lane == 0) {
        sM[row] = m_new;
        sL[row] = sL[row] * scale + psum;
      }
    }
    __syncwarp();
    // O[warp rows] += P[warp rows] * V_tile, V streamed in KC-column chunks through sB.
    for (int64_t c0 = 0; c0 < Cvp; c0 += C::KC) {
      __syncthreads();  // all warps are done reading sB (k chunk or previous v chunk)
      load_tile<T, TN, C::KC>(sB, C::LDT, v + j0 * Cv + c0, Cv, kvalid, Cv - c0);
      __syncthreads();
      for (int j = 0; j < C::KC / 16 && c0 + 16 * j < Cvp; ++j) {
        // Load, accumulate and store back this warp's 16 x 16 piece of O. The store cannot
        // overtake another lane's load of the same addresses: the stored values depend on
        // every lane's loaded fragment through the warp-collective mma.
        Acc<T> o[1];
        float* po = sO + 16 * warp * ldo + c0 + 16 * j;
        o[0].load(po, ldo);
        warp_mma_nn<1>(o, sP + 16 * warp * C::LDP, C::LDP, sB + 16 * j, C::LDT, TN);
        o[0].store(po, ldo);
      }
    }
  }
  __syncwarp();
  for (int rr = 0; rr < 16; ++rr) {
    const int row = 16 * warp + rr;
    if (row >= rows) break;
    const float l = sL[row];
    const float inv = 1.0f / l;
    for (int c = lane; c < Cv; c += 32) out[row * Cv + c] = from_f<T>(sO[row * ldo + c] * inv);
    if (lane == 0) lse[row] = double(sM[row]) + log(double(l));  // float64: |lse| ~ alpha
  }
}

// dQ. Grid (ceil(Lq / 64), B); block 128. Block owns queries [i0, i0 + 64) of batch b and
// accumulates their dQ over key tiles in dq_acc (float32; may alias dq for float32).
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    attn_bwd_dq_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const double* __restrict__ lse, const float* __restrict__ delta,
                       const T* __restrict__ dout, T* dq, float* dq_acc, int64_t Lq, int64_t Lk,
                       int64_t D, int64_t Cv, float alpha) {
  using C = Cfg<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * TM;
  const int64_t rows = Lq - i0;
  const BwdLayout<T> lay;
  T* sA = reinterpret_cast<T*>(smem + lay.a);
  T* sB = reinterpret_cast<T*>(smem + lay.b);
  float* sS = reinterpret_cast<float*>(smem + lay.s);
  float* sdP = reinterpret_cast<float*>(smem + lay.dp);
  T* sdS = reinterpret_cast<T*>(smem + lay.ds);

  q += (b * Lq + i0) * D;
  dout += (b * Lq + i0) * Cv;
  lse += b * Lq + i0;
  delta += b * Lq + i0;
  dq += (b * Lq + i0) * D;
  dq_acc += (b * Lq + i0) * D;
  k += b * Lk * D;
  v += b * Lk * Cv;

  for (int64_t j0 = 0; j0 < Lk; j0 += TN) {
    const int64_t kvalid = Lk - j0;
    score_tile<T>(sS + 16 * warp * LDS, q, rows, k + j0 * D, kvalid, D, sA, sB);          // S
    score_tile<T>(sdP + 16 * warp * LDS, dout, rows, v + j0 * Cv, kvalid, Cv, sA, sB);    // dP
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int row = 16 * warp + rr;
      const bool rok = row < rows;
      // the float64 lse split hi + lo: exp(alpha s - lse) in one float32 would lose
      // log2(|lse|) ~ log2(alpha) bits
      const double lse_r = rok ? lse[row] : 0.0;
      const float hi = static_cast<float>(lse_r), lo = static_cast<float>(lse_r - double(hi));
      const float delta_r = rok ? delta[row] : 0.0f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = lane + 32 * h;
        const bool ok = rok && col < kvalid;
        const float p = ok ? expf((__fmul_rn(alpha, sS[row * LDS + col]) - hi) - lo) : 0.0f;
        const float ds = alpha * p * (sdP[row * LDS + col] - delta_r);
        sdS[row * C::LDP + col] = from_f<T>(ds);
      }
    }
    __syncwarp();
    // dQ[rows] += (alpha dS) K_tile, over D chunks; sdP's warp rows are the staging tile.
    gemm_nn_rmw<T>(sdS + 16 * warp * C::LDP, C::LDP, k + j0 * D, kvalid, D, dq_acc, dq, rows,
                   j0 == 0, j0 + TN >= Lk, sB, sdP + 16 * warp * LDS);
  }
}

// dK and dV. Grid (ceil(Lk / 64), B); block 128. Block owns keys [j0, j0 + 64) of batch b;
// tiles are transposed (rows = keys, columns = queries) so each warp owns 16 keys.
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    attn_bwd_dkdv_kernel(const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, const double* __restrict__ lse,
                         const float* __restrict__ delta, const T* __restrict__ dout, T* dk,
                         float* dk_acc, T* dv, float* dv_acc, int64_t Lq, int64_t Lk, int64_t D,
                         int64_t Cv, float alpha) {
  using C = Cfg<T>;
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.y, j0 = static_cast<int64_t>(blockIdx.x) * TM;
  const int64_t krows = Lk - j0;  // valid key rows
  const BwdLayout<T> lay;
  T* sA = reinterpret_cast<T*>(smem + lay.a);
  T* sB = reinterpret_cast<T*>(smem + lay.b);
  float* sS = reinterpret_cast<float*>(smem + lay.s);
  float* sdP = reinterpret_cast<float*>(smem + lay.dp);
  T* sP = reinterpret_cast<T*>(smem + lay.p);
  T* sdS = reinterpret_cast<T*>(smem + lay.ds);

  k += (b * Lk + j0) * D;
  v += (b * Lk + j0) * Cv;
  dk += (b * Lk + j0) * D;
  dk_acc += (b * Lk + j0) * D;
  dv += (b * Lk + j0) * Cv;
  dv_acc += (b * Lk + j0) * Cv;
  q += b * Lq * D;
  dout += b * Lq * Cv;
  lse += b * Lq;
  delta += b * Lq;

  for (int64_t i0 = 0; i0 < Lq; i0 += TN) {
    const int64_t qvalid = Lq - i0;  // valid query columns of this tile
    score_tile<T>(sS + 16 * warp * LDS, k, krows, q + i0 * D, qvalid, D, sA, sB);          // S^T
    score_tile<T>(sdP + 16 * warp * LDS, v, krows, dout + i0 * Cv, qvalid, Cv, sA, sB);    // dP^T
    // Per-column (query) statistics of this lane's columns lane and lane + 32.
    const double lse_c0 = lane < qvalid ? lse[i0 + lane] : 0.0;
    const double lse_c1 = lane + 32 < qvalid ? lse[i0 + lane + 32] : 0.0;
    const float hi0 = static_cast<float>(lse_c0), lo0 = static_cast<float>(lse_c0 - double(hi0));
    const float hi1 = static_cast<float>(lse_c1), lo1 = static_cast<float>(lse_c1 - double(hi1));
    const float delta_c0 = lane < qvalid ? delta[i0 + lane] : 0.0f;
    const float delta_c1 = lane + 32 < qvalid ? delta[i0 + lane + 32] : 0.0f;
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int row = 16 * warp + rr;
      const bool rok = row < krows;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = lane + 32 * h;
        const bool ok = rok && col < qvalid;
        const float hi = h == 0 ? hi0 : hi1, lo = h == 0 ? lo0 : lo1;
        const float delta_c = h == 0 ? delta_c0 : delta_c1;
        const float p = ok ? expf((__fmul_rn(alpha, sS[row * LDS + col]) - hi) - lo) : 0.0f;
        const float ds = alpha * p * (sdP[row * LDS + col] - delta_c);
        sP[row * C::LDP + col] = from_f<T>(p);  // float32: overwrites S in place (same lane)
        sdS[row * C::LDP + col] = from_f<T>(ds);
      }
    }
    __syncwarp();
    const bool first = i0 == 0, last = i0 + TN >= Lq;
    // dV[keys] += P^T dO_tile (over Cv chunks); dK[keys] += (alpha dS)^T Q_tile (over D chunks).
    gemm_nn_rmw<T>(sP + 16 * warp * C::LDP, C::LDP, dout + i0 * Cv, qvalid, Cv, dv_acc, dv, krows,
                   first, last, sB, sdP + 16 * warp * LDS);
    gemm_nn_rmw<T>(sdS + 16 * warp * C::LDP, C::LDP, q + i0 * D, qvalid, D, dk_acc, dk, krows,
                   first, last, sB, sdP + 16 * warp * LDS);
  }
}

// a ranks above b in torch.max's order (NaN above every number); equal ranks tie.
__device__ __forceinline__ bool match_above(float a, float b) { return a > b || (isnan(a) && !isnan(b)); }
__device__ __forceinline__ bool match_same(float a, float b) { return a == b || (isnan(a) && isnan(b)); }

// Grid (ceil(Lq / 64), B); block 128. Block owns queries [i0, i0 + 64).
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    match_kernel(const T* __restrict__ q, const T* __restrict__ k, int64_t* __restrict__ index,
                 float* __restrict__ best, int64_t Lq, int64_t Lk, int64_t D) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t b = blockIdx.y, i0 = static_cast<int64_t>(blockIdx.x) * TM;
  const int64_t rows = Lq - i0;
  const MatchLayout<T> lay;
  T* sA = reinterpret_cast<T*>(smem + lay.a);
  T* sB = reinterpret_cast<T*>(smem + lay.b);
  float* sS = reinterpret_cast<float*>(smem + lay.s);
  float* sBest = reinterpret_cast<float*>(smem + lay.best);
  int* sIdx = reinterpret_cast<int*>(smem + lay.idx);

  q += (b * Lq + i0) * D;
  k += b * Lk * D;
  index += b * Lq + i0;
  best += b * Lq + i0;
  if (lane < 16) {
    sBest[16 * warp + lane] = -INFINITY;
    sIdx[16 * warp + lane] = 0;
  }
  __syncwarp();

  for (int64_t j0 = 0; j0 < Lk; j0 += TN) {
    const int64_t kvalid = Lk - j0;
    score_tile<T>(sS + 16 * warp * LDS, q, rows, k + j0 * D, kvalid, D, sA, sB);
    __syncwarp();
    for (int rr = 0; rr < 16; ++rr) {
      const int row = 16 * warp + rr;
      const float v0 = lane < kvalid ? sS[row * LDS + lane] : -INFINITY;
      const float v1 = lane + 32 < kvalid ? sS[row * LDS + lane + 32] : -INFINITY;
      // torch.max's order: NaN above every number (a NaN query or key), first occurrence wins
      float bv = v0;
      int bi = static_cast<int>(j0) + lane;
      if (match_above(v1, bv)) {  // strict: the smaller index wins ties
        bv = v1;
        bi += 32;
      }
      // Butterfly arg-max; order: larger value, then smaller index. All lanes agree at the end.
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (match_above(ov, bv) || (match_same(ov, bv) && oi < bi)) {
          bv = ov;
          bi = oi;
        }
      }
      if (lane == 0 && match_above(bv, sBest[row])) {  // strict: earlier tiles win ties
        sBest[row] = bv;
        sIdx[row] = bi;
      }
    }
  }
  __syncwarp();
  if (lane < 16) {
    const int row = 16 * warp + lane;
    if (row < rows) {
      index[row] = sIdx[row];
      best[row] = sBest[row];
    }
  }
}

// ---- host side ------------------------------------------------------------------------------------

inline bool grid_ok(int64_t blocks_x, int64_t B) {
  return blocks_x >= 1 && blocks_x <= INT_MAX && B >= 1 && B <= 65535;
}

template <typename T>
cudaError_t forward(const void* q, const void* k, const void* v, void* out, double* lse, int64_t B,
                    int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, float alpha,
                    cudaStream_t stream) {
  const FwdLayout<T> lay(round_up(Cv, 16) + 4);
  auto kernel = attn_fwd_kernel<T>;
  cudaError_t err = allow_dynamic_smem(kernel, lay.bytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div(Lq, TM)), static_cast<unsigned>(B));
  kernel<<<grid, THREADS, lay.bytes, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
      static_cast<T*>(out), lse, Lq, Lk, D, Cv, alpha);
  return cudaGetLastError();
}

struct BwdWorkspace {
  size_t dq, dk, dv, bytes;
  BwdWorkspace(bool needed, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv) {
    Carve cv;
    dq = cv.take<float>(needed ? B * Lq * D : 0);
    dk = cv.take<float>(needed ? B * Lk * D : 0);
    dv = cv.take<float>(needed ? B * Lk * Cv : 0);
    bytes = needed ? cv.offset : 0;
  }
};

template <typename T>
cudaError_t backward(const void* q, const void* k, const void* v, const double* lse,
                     const float* delta, const void* dout, void* dq, void* dk, void* dv,
                     void* workspace, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv,
                     float alpha, cudaStream_t stream) {
  constexpr bool f32 = Cfg<T>::kF32;
  const BwdWorkspace ws(!f32, B, Lq, Lk, D, Cv);
  if (!f32 && workspace == nullptr) return cudaErrorInvalidValue;
  unsigned char* w = static_cast<unsigned char*>(workspace);
  // float32: the outputs are their own accumulators.
  float* dq_acc = f32 ? static_cast<float*>(dq) : reinterpret_cast<float*>(w + ws.dq);
  float* dk_acc = f32 ? static_cast<float*>(dk) : reinterpret_cast<float*>(w + ws.dk);
  float* dv_acc = f32 ? static_cast<float*>(dv) : reinterpret_cast<float*>(w + ws.dv);
  const BwdLayout<T> lay;

  auto kdq = attn_bwd_dq_kernel<T>;
  cudaError_t err = allow_dynamic_smem(kdq, lay.bytes);
  if (err != cudaSuccess) return err;
  kdq<<<dim3(static_cast<unsigned>(ceil_div(Lq, TM)), static_cast<unsigned>(B)), THREADS,
        lay.bytes, stream>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                             static_cast<const T*>(v), lse, delta, static_cast<const T*>(dout),
                             static_cast<T*>(dq), dq_acc, Lq, Lk, D, Cv, alpha);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;

  auto kdkdv = attn_bwd_dkdv_kernel<T>;
  err = allow_dynamic_smem(kdkdv, lay.bytes);
  if (err != cudaSuccess) return err;
  kdkdv<<<dim3(static_cast<unsigned>(ceil_div(Lk, TM)), static_cast<unsigned>(B)), THREADS,
          lay.bytes, stream>>>(static_cast<const T*>(q), static_cast<const T*>(k),
                               static_cast<const T*>(v), lse, delta, static_cast<const T*>(dout),
                               static_cast<T*>(dk), dk_acc, static_cast<T*>(dv), dv_acc, Lq, Lk,
                               D, Cv, alpha);
  return cudaGetLastError();
}

template <typename T>
cudaError_t match(const void* q, const void* k, int64_t* index, float* best, int64_t B,
                  int64_t Lq, int64_t Lk, int64_t D, cudaStream_t stream) {
  const MatchLayout<T> lay;
  auto kernel = match_kernel<T>;
  cudaError_t err = allow_dynamic_smem(kernel, lay.bytes);
  if (err != cudaSuccess) return err;
  kernel<<<dim3(static_cast<unsigned>(ceil_div(Lq, TM)), static_cast<unsigned>(B)), THREADS,
           lay.bytes, stream>>>(static_cast<const T*>(q), static_cast<const T*>(k), index, best,
                                Lq, Lk, D);
  return cudaGetLastError();
}

}  // namespace attn
}  // namespace detail

cudaError_t corr_attention_forward(DType dtype, const void* q, const void* k, const void* v,
                                   void* out, double* lse, int64_t B, int64_t Lq, int64_t Lk,
                                   int64_t D, int64_t Cv, float alpha, cudaStream_t stream) {
  using namespace detail;
  if (B == 0 || Lq == 0) return cudaSuccess;
  if (Lk < 1 || D < 1 || Cv < 1 || Cv > kMaxValueChannels ||
      !attn::grid_ok(ceil_div(Lq, attn::TM), B))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return attn::forward<T>(q, k, v, out, lse, B, Lq, Lk, D, Cv, alpha, stream);
  });
}

size_t corr_attention_backward_workspace(DType dtype, int64_t B, int64_t Lq, int64_t Lk,
                                         int64_t D, int64_t Cv) {
  return detail::attn::BwdWorkspace(dtype != DType::kFloat32, B, Lq, Lk, D, Cv).bytes;
}

cudaError_t corr_attention_backward(DType dtype, const void* q, const void* k, const void* v,
                                    const double* lse, const float* delta, const void* dout,
                                    void* dq, void* dk, void* dv, void* workspace, int64_t B,
                                    int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, float alpha,
                                    cudaStream_t stream) {
  using namespace detail;
  if (B == 0 || Lq == 0 || Lk == 0) return cudaSuccess;
  if (D < 1 || Cv < 1 || !attn::grid_ok(ceil_div(Lq, attn::TM), B) ||
      !attn::grid_ok(ceil_div(Lk, attn::TM), B))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return attn::backward<T>(q, k, v, lse, delta, dout, dq, dk, dv, workspace, B, Lq, Lk, D, Cv,
                             alpha, stream);
  });
}

cudaError_t corr_match_forward(DType dtype, const void* q, const void* k, int64_t* index,
                               float* best, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
                               cudaStream_t stream) {
  using namespace detail;
  if (B == 0 || Lq == 0) return cudaSuccess;
  // Key indices are tracked as int inside the kernel.
  if (Lk < 1 || Lk > INT_MAX - 64 || D < 1 || !attn::grid_ok(ceil_div(Lq, attn::TM), B))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return attn::match<T>(q, k, index, best, B, Lq, Lk, D, stream);
  });
}

}  // namespace cuda
}  // namespace exsynth
