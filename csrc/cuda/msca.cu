// MSCA's decoupled spatial-channel attention on the GPU.
//
//   alpha[k, l] = softmax_l S[k, l]   (per b, k; stats = [max_l S, sum_l exp(S - max)])
//   V[n, k]     = sum_l F[n, l] alpha[k, l]            (float32, before gating)
//   beta[k, l]  = softmax_k G[k, l]   (per b, l; cst = [max_k G, sum_k exp(G - max)])
//   out[n, l]   = sum_k V[n, k] gate[k] beta[k, l]
// Backward:
//   dVt[n, k] = sum_l dout[n, l] beta[k, l];  dbeta[k, l] = sum_n V[n, k] gate[k] dout[n, l]
//   dG = beta (dbeta - sum_k beta dbeta);     dgate[k] = sum_n dVt V;  dV = dVt gate
//   c[k] = sum_n dV V;  dF[n, l] = sum_k dV[n, k] alpha[k, l]
//   dalpha[k, l] = sum_n dV[n, k] F[n, l];    dS = alpha (dalpha - c[k])
// Layouts: F, out (B, N, L); S, G (B, K, L); gate (B, K); V (B, N, K); stats (B, K, 2).
//
// alpha and beta are never stored: with the small statistics (stats, and cst of size
// B x 2 x L in the workspace) each is a pointwise function of its logit, recomputed
// where needed (SpatialProb / ChannelProb below). Any N, K, L.
//
// Kernels (generic over the probability P in {alpha, beta}):
//   spatial_stats   per (b, k) block: online max / sum-exp over l.
//   channel_stats   thread per (b, l): online max / sum-exp over k.
//   xp_partial      R_part[b, chunk, n, k] = sum_{l in chunk} X[n, l] P[k, l]; a block owns
//                   (chunk, 32 n, 16 k), so partials are race-free; reduce_chunks then sums
//                   the chunks in a fixed order (deterministic, no atomics).
//   wp              Y[n, l] = sum_k W[n, k] scale[k] P[k, l]; a block owns (32 l, 64 n).
//   logit_grad      dlogit[k, l] = P[k, l] (sum_n W[n, k] scale[k] X[n, l] - c), c = c[k]
//                   (spatial) or c = sum_k P dP (channel, per position); a block owns 32
//                   positions and every k.
//   gate_grad       thread per (b, k): dgate, c, dV.
// Every reduction accumulates in float32.
#include "cuda/common.cuh"

namespace exsynth {
namespace cuda {
namespace detail {
namespace msca {

constexpr int THREADS = 256;
constexpr int64_t CHUNK = 512;  // positions per xp_partial block
constexpr int XP_N = 32;        // n rows per xp_partial block
constexpr int XP_K = 16;        // k columns per xp_partial block
constexpr int XP_LT = 64;       // positions per shared-memory step of xp_partial
constexpr int LANES = 32;       // positions per wp / logit_grad block (one per lane)
constexpr int GROUPS = 8;       // warps per wp / logit_grad block
constexpr int WP_N = 64;        // n rows per wp block (8 per thread)
constexpr int KCH = 32;         // k chunk of wp / logit_grad (4 per thread in logit_grad)
constexpr int NCH = 32;         // n chunk of logit_grad
static_assert(CHUNK % XP_LT == 0, "whole steps per chunk");
static_assert(THREADS == LANES * GROUPS, "block shapes");
static_assert(XP_N * XP_K == 2 * THREADS, "two xp_partial outputs per thread");

// alpha[b, k, l] = exp(S - max_l S) / sum_l exp(S - max).
template <typename T> struct SpatialProb {
  const T* S;
  const float* stats;  // (B, K, 2)
  int64_t K, L;
  __device__ __forceinline__ float operator()(int64_t b, int64_t k, int64_t l) const {
    const float* st = stats + (b * K + k) * 2;
    return expf(to_f(S[(b * K + k) * L + l]) - st[0]) / st[1];
  }
};

// beta[b, k, l] = exp(G - max_k G) / sum_k exp(G - max).
template <typename T> struct ChannelProb {
  const T* G;
  const float* cst;  // (B, 2, L): [max_k, sum_k]
  int64_t K, L;
  __device__ __forceinline__ float operator()(int64_t b, int64_t k, int64_t l) const {
    const float* c = cst + b * 2 * L;
    return expf(to_f(G[(b * K + k) * L + l]) - c[l]) / c[L + l];
  }
};

// Online softmax statistics: (m, s) represents sum_i exp(x_i) = s exp(m); empty = (-inf, 0).
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
  if (x > m) {
    s = s * expf(m - x) + 1.0f;  // exp(-inf) = 0 when empty
    m = x;
  } else {
    s += expf(x - m);
  }
}
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = s * expf(m - mn) + s2 * expf(m2 - mn);
  m = mn;
}

// Grid (B * K); block 256. stats[bk] = [max_l S[bk, l], sum_l exp(S[bk, l] - max)].
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    spatial_stats_kernel(const T* __restrict__ S, float* __restrict__ stats, int64_t L) {
  __shared__ float sm[THREADS / 32], ss[THREADS / 32];
  const int64_t bk = blockIdx.x;
  const T* row = S + bk * L;
  float m = -INFINITY, s = 0.0f;
  for (int64_t l = threadIdx.x; l < L; l += THREADS) online_add(m, s, to_f(row[l]));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, off);
    online_merge(m, s, m2, s2);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < THREADS / 32; ++w) online_merge(m, s, sm[w], ss[w]);
    stats[bk * 2] = m;
    stats[bk * 2 + 1] = s;
  }
}

// Grid (ceil(L / 256), B); block 256: thread per position. cst[b, 0, l] = max_k G,
// cst[b, 1, l] = sum_k exp(G - max).
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    channel_stats_kernel(const T* __restrict__ G, float* __restrict__ cst, int64_t K, int64_t L) {
  const int64_t b = blockIdx.y;
  const int64_t l = static_cast<int64_t>(blockIdx.x) * THREADS + threadIdx.x;
  if (l >= L) return;
  float m = -INFINITY, s = 0.0f;
  for (int64_t k = 0; k < K; ++k) online_add(m, s, to_f(G[(b * K + k) * L + l]));
  cst[b * 2 * L + l] = m;
  cst[b * 2 * L + L + l] = s;
}

// Grid (nchunks, ceil(N / 32), B * ceil(K / 16)); block 256. Thread t owns the outputs
// (n0 + t / 8, k0 + 2 (t % 8) + {0, 1}) of its block's 32 x 16 tile.
// part[b, chunk, n, k] = sum_{l in chunk} X[b, n, l] P[b, k, l].
template <typename T, typename Prob>
__global__ void __launch_bounds__(THREADS, 2)
    xp_partial_kernel(const T* __restrict__ X, Prob P, float* __restrict__ part, int64_t N,
                      int64_t K, int64_t L, int64_t nkb) {
  __shared__ float sX[XP_N][XP_LT + 1];
  __shared__ float sP[XP_K][XP_LT + 1];
  const int64_t chunk = blockIdx.x, nchunks = gridDim.x;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * XP_N;
  const int64_t b = blockIdx.z / nkb, k0 = (blockIdx.z % nkb) * XP_K;
  const int64_t l_begin = chunk * CHUNK;
  const int64_t l_end = l_begin + CHUNK < L ? l_begin + CHUNK : L;
  const int t = threadIdx.x, nl = t >> 3, kl = 2 * (t & 7);
  float acc0 = 0.0f, acc1 = 0.0f;
  for (int64_t l0 = l_begin; l0 < l_end; l0 += XP_LT) {  // block-uniform
    __syncthreads();  // previous step's readers are done
    for (int i = t; i < XP_N * XP_LT; i += THREADS) {
      const int r = i / XP_LT, c = i % XP_LT;
      const int64_t n = n0 + r, l = l0 + c;
      sX[r][c] = (n < N && l < l_end) ? to_f(X[(b * N + n) * L + l]) : 0.0f;
    }
    for (int i = t; i < XP_K * XP_LT; i += THREADS) {
      const int r = i / XP_LT, c = i % XP_LT;
      const int64_t k = k0 + r, l = l0 + c;
      sP[r][c] = (k < K && l < l_end) ? P(b, k, l) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < XP_LT; ++c) {
      const float x = sX[nl][c];
      acc0 = fmaf(x, sP[kl][c], acc0);
      acc1 = fmaf(x, sP[kl + 1][c], acc1);
    }
  }
  const int64_t n = n0 + nl, k = k0 + kl;
  if (n < N) {
    float* dst = part + ((b * nchunks + chunk) * N + n) * K;
    if (k < K) dst[k] = acc0;
    if (k + 1 < K) dst[k + 1] = acc1;
  }
}

// out[b, j] = sum_c part[b, c, j] for j < NK (= N K), c < nchunks, in order. Thread per output.
__global__ void __launch_bounds__(THREADS, 2)
    reduce_chunks_kernel(const float* __restrict__ part, float* __restrict__ out, int64_t B,
                         int64_t nchunks, int64_t NK) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * THREADS + threadIdx.x;
  if (i >= B * NK) return;
  const int64_t b = i / NK, j = i % NK;
  const float* p = part + b * nchunks * NK + j;
  float s = 0.0f;
  for (int64_t c = 0; c < nchunks; ++c) s += p[c * NK];
  out[i] = s;
}

// Grid (ceil(L / 32), ceil(N / 64), B); block (32, 8). Thread (lane, g) owns position
// l0 + lane and rows n0 + g + 8 i, i < 8.
// Y[b, n, l] = sum_k W[b, n, k] scale[b, k] P[b, k, l]   (scale null = 1).
template <typename T, typename Prob>
__global__ void __launch_bounds__(THREADS, 2)
    wp_kernel(const float* __restrict__ W, const T* __restrict__ scale, Prob P, T* __restrict__ Y,
              int64_t N, int64_t K, int64_t L) {
  __shared__ float sW[WP_N][KCH + 1];
  __shared__ float sP[KCH][LANES];
  const int lane = threadIdx.x, g = threadIdx.y, t = g * LANES + lane;
  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * LANES;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * WP_N;
  const int64_t b = blockIdx.z;
  constexpr int PER = WP_N / GROUPS;
  float acc[PER];
#pragma unroll
  for (int i = 0; i < PER; ++i) acc[i] = 0.0f;
  for (int64_t kc0 = 0; kc0 < K; kc0 += KCH) {  // block-uniform
    __syncthreads();
    for (int i = t; i < WP_N * KCH; i += THREADS) {
      const int r = i / KCH, c = i % KCH;
      const int64_t n = n0 + r, k = kc0 + c;
      float w = 0.0f;
      if (n < N && k < K) {
        w = W[(b * N + n) * K + k];
        if (scale != nullptr) w *= to_f(scale[b * K + k]);
      }
      sW[r][c] = w;
    }
    for (int i = t; i < KCH * LANES; i += THREADS) {
      const int r = i / LANES, c = i % LANES;
      const int64_t k = kc0 + r, l = l0 + c;
      sP[r][c] = (k < K && l < L) ? P(b, k, l) : 0.0f;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < KCH; ++kk) {
      const float p = sP[kk][lane];
#pragma unroll
      for (int i = 0; i < PER; ++i) acc[i] = fmaf(sW[g + GROUPS * i][kk], p, acc[i]);
    }
  }
  const int64_t l = l0 + lane;
  if (l >= L) return;
#pragma unroll
  for (int i = 0; i < PER; ++i) {
    const int64_t n = n0 + g + GROUPS * i;
    if (n < N) Y[(b * N + n) * L + l] = from_f<T>(acc[i]);
  }
}

enum class Centre { kPerK, kPerPosition };

constexpr int LG_PER = KCH / GROUPS;  // k values per thread per chunk in logit_grad

// d[i] = sum_n W[b, n, k] scale[b, k] X[b, n, l] for k = kc0 + g + 8 i and this thread's
// position l = l0 + lane (0 where k >= K). Whole block calls (contains __syncthreads():
// it starts each n chunk with one, so earlier readers of sX/sW are done).
template <typename T>
__device__ __forceinline__ void logit_grad_chunk(float (&d)[LG_PER], float (*sX)[LANES],
                                                 float (*sW)[KCH + 1], const float* W,
                                                 const T* scale, const T* X, int64_t b,
                                                 int64_t l0, int64_t kc0, int64_t N, int64_t K,
                                                 int64_t L) {
  const int lane = threadIdx.x, g = threadIdx.y, t = g * LANES + lane;
#pragma unroll
  for (int i = 0; i < LG_PER; ++i) d[i] = 0.0f;
  for (int64_t nc0 = 0; nc0 < N; nc0 += NCH) {  // block-uniform
    __syncthreads();
    for (int i = t; i < NCH * LANES; i += THREADS) {
      const int r = i / LANES, c = i % LANES;
      const int64_t n = nc0 + r, l = l0 + c;
      sX[r][c] = (n < N && l < L) ? to_f(X[(b * N + n) * L + l]) : 0.0f;
    }
    for (int i = t; i < NCH * KCH; i += THREADS) {
      const int r = i / KCH, c = i % KCH;
      const int64_t n = nc0 + r, k = kc0 + c;
      float w = 0.0f;
      if (n < N && k < K) {
        w = W[(b * N + n) * K + k];
        if (scale != nullptr) w *= to_f(scale[b * K + k]);
      }
      sW[r][c] = w;
    }
    __syncthreads();
#pragma unroll 4
    for (int nn = 0; nn < NCH; ++nn) {
      const float x = sX[nn][lane];
#pragma unroll
      for (int i = 0; i < LG_PER; ++i) d[i] = fmaf(sW[nn][g + GROUPS * i], x, d[i]);
    }
  }
}

// Grid (ceil(L / 32), B); block (32, 8). Thread (lane, g) owns position l = l0 + lane and,
// within each 32-wide k chunk, k = kc0 + g + 8 i, i < 4.
//   D[k, l] = sum_n W[b, n, k] scale[b, k] X[b, n, l]
//   out[b, k, l] = P[k, l] (D[k, l] - c),  c = cvec[b, k] (kPerK) or
//                  c = sum_k P[k, l] D[k, l] (kPerPosition: a second sweep over the k chunks,
//                  recomputing D unless K fits one chunk).
template <typename T, typename Prob, Centre MODE>
__global__ void __launch_bounds__(THREADS, 2)
    logit_grad_kernel(const float* __restrict__ W, const T* __restrict__ scale,
                      const T* __restrict__ X, Prob P, const float* __restrict__ cvec,
                      T* __restrict__ out, int64_t N, int64_t K, int64_t L) {
  __shared__ float sX[NCH][LANES];
  __shared__ float sW[NCH][KCH + 1];
  __shared__ float red[GROUPS][LANES + 1];
  const int lane = threadIdx.x, g = threadIdx.y;
  const int64_t l0 = static_cast<int64_t>(blockIdx.x) * LANES;
  const int64_t b = blockIdx.y;
  const int64_t l = l0 + lane;
  const bool lok = l < L;
  const int64_t nkc = ceil_div(K, KCH);
  float d[LG_PER];

  if constexpr (MODE == Centre::kPerK) {
    for (int64_t kc = 0; kc < nkc; ++kc) {
      logit_grad_chunk<T>(d, sX, sW, W, scale, X, b, l0, kc * KCH, N, K, L);
#pragma unroll
      for (int i = 0; i < LG_PER; ++i) {
        const int64_t k = kc * KCH + g + GROUPS * i;
        if (lok && k < K)
          out[(b * K + k) * L + l] = from_f<T>(P(b, k, l) * (d[i] - cvec[b * K + k]));
      }
    }
  } else {
    float part = 0.0f;  // this thread's share of sum_k P D at position l
    for (int64_t kc = 0; kc < nkc; ++kc) {
      logit_grad_chunk<T>(d, sX, sW, W, scale, X, b, l0, kc * KCH, N, K, L);
#pragma unroll
      for (int i = 0; i < LG_PER; ++i) {
        const int64_t k = kc * KCH + g + GROUPS * i;
        if (lok && k < K) part += P(b, k, l) * d[i];
      }
    }
    red[g][lane] = part;
    __syncthreads();
    float c = 0.0f;
#pragma unroll
    for (int gg = 0; gg < GROUPS; ++gg) c += red[gg][lane];  // fixed order
    for (int64_t kc = 0; kc < nkc; ++kc) {
      // With one chunk, d[] still holds it; otherwise recompute (block-uniform condition).
      if (nkc > 1) logit_grad_chunk<T>(d, sX, sW, W, scale, X, b, l0, kc * KCH, N, K, L);
#pragma unroll
      for (int i = 0; i < LG_PER; ++i) {
        const int64_t k = kc * KCH + g + GROUPS * i;
        if (lok && k < K) out[(b * K + k) * L + l] = from_f<T>(P(b, k, l) * (d[i] - c));
      }
    }
  }
}

// Thread per (b, k): dgate = sum_n dVt V; dV = dVt gate; c = sum_n dV V.
template <typename T>
__global__ void __launch_bounds__(THREADS, 2)
    gate_grad_kernel(const float* __restrict__ dVt, const float* __restrict__ V,
                     const T* __restrict__ gate, T* __restrict__ dgate, float* __restrict__ dV,
                     float* __restrict__ cvec, int64_t B, int64_t N, int64_t K) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * THREADS + threadIdx.x;
  if (i >= B * K) return;
  const int64_t b = i / K, k = i % K;
  const float gk = gate != nullptr ? to_f(gate[i]) : 1.0f;
  float sg = 0.0f, sc = 0.0f;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t j = (b * N + n) * K + k;
    const float v = V[j];
    const float dv = dVt[j] * gk;
    sg += dVt[j] * v;
    sc += dv * v;
    dV[j] = dv;
  }
  if (dgate != nullptr) dgate[i] = from_f<T>(sg);
  cvec[i] = sc;
}

// ---- host side ----------------------------------------------------------------------------------

struct Workspace {
  size_t cst, part, dvt, dv, cvec, bytes;
  int64_t nchunks;
  Workspace(int64_t B, int64_t N, int64_t K, int64_t L, bool backward) {
    nchunks = ceil_div(L, CHUNK);
    Carve cv;
    cst = cv.take<float>(B * 2 * L);
    part = cv.take<float>(B * nchunks * N * K);
    dvt = cv.take<float>(backward ? B * N * K : 0);
    dv = cv.take<float>(backward ? B * N * K : 0);
    cvec = cv.take<float>(backward ? B * K : 0);
    bytes = cv.offset;
  }
};

inline bool sizes_ok(int64_t B, int64_t N, int64_t K, int64_t L) {
  const int64_t nkb = ceil_div(K, XP_K);
  return B >= 1 && N >= 1 && K >= 1 && L >= 1 && B * nkb <= 65535 &&
         ceil_div(N, WP_N) <= 65535 && ceil_div(N, XP_N) <= 65535 && B * K <= 0x7fffffff &&
         ceil_div(L, CHUNK) <= 0x7fffffff && ceil_div(L, LANES) <= 0x7fffffff &&
         ceil_div(B * N * K, THREADS) <= 0x7fffffff;
}

// R (B, N, K) float32 = sum_l X P^T, through the chunk partials in the workspace.
template <typename T, typename Prob>
cudaError_t xp_reduce(const T* X, Prob P, float* part, float* R, int64_t B, int64_t N, int64_t K,
                      int64_t L, int64_t nchunks, cudaStream_t stream) {
  const int64_t nkb = ceil_div(K, XP_K);
  xp_partial_kernel<T, Prob><<<dim3(static_cast<unsigned>(nchunks),
                                    static_cast<unsigned>(ceil_div(N, XP_N)),
                                    static_cast<unsigned>(B * nkb)),
                               THREADS, 0, stream>>>(X, P, part, N, K, L, nkb);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  reduce_chunks_kernel<<<static_cast<unsigned>(ceil_div(B * N * K, THREADS)), THREADS, 0,
                         stream>>>(part, R, B, nchunks, N * K);
  return cudaGetLastError();
}

template <typename T, typename Prob>
cudaError_t wp(const float* W, const T* scale, Prob P, T* Y, int64_t B, int64_t N, int64_t K,
               int64_t L, cudaStream_t stream) {
  wp_kernel<T, Prob><<<dim3(static_cast<unsigned>(ceil_div(L, LANES)),
                            static_cast<unsigned>(ceil_div(N, WP_N)), static_cast<unsigned>(B)),
                       dim3(LANES, GROUPS), 0, stream>>>(W, scale, P, Y, N, K, L);
  return cudaGetLastError();
}

template <typename T, typename Prob, Centre MODE>
cudaError_t logit_grad(const float* W, const T* scale, const T* X, Prob P, const float* cvec,
                       T* out, int64_t B, int64_t N, int64_t K, int64_t L, cudaStream_t stream) {
  logit_grad_kernel<T, Prob, MODE><<<dim3(static_cast<unsigned>(ceil_div(L, LANES)),
                                          static_cast<unsigned>(B)),
                                     dim3(LANES, GROUPS), 0, stream>>>(W, scale, X, P, cvec, out,
                                                                       N, K, L);
  return cudaGetLastError();
}

#define EXSYNTH_TRY(expr)                 \
  do {                                    \
    const cudaError_t e_ = (expr);        \
    if (e_ != cudaSuccess) return e_;     \
  } while (0)

template <typename T>
cudaError_t forward(const T* F, const T* S, const T* G, const T* gate, T* out, float* V,
                    float* stats, void* workspace, int64_t B, int64_t N, int64_t K, int64_t L,
                    cudaStream_t stream) {
  const Workspace ws(B, N, K, L, false);
  unsigned char* w = static_cast<unsigned char*>(workspace);
  float* cst = reinterpret_cast<float*>(w + ws.cst);
  float* part = reinterpret_cast<float*>(w + ws.part);

  spatial_stats_kernel<T><<<static_cast<unsigned>(B * K), THREADS, 0, stream>>>(S, stats, L);
  EXSYNTH_TRY(cudaGetLastError());
  channel_stats_kernel<T><<<dim3(static_cast<unsigned>(ceil_div(L, THREADS)),
                                 static_cast<unsigned>(B)),
                            THREADS, 0, stream>>>(G, cst, K, L);
  EXSYNTH_TRY(cudaGetLastError());
  const SpatialProb<T> alpha{S, stats, K, L};
  const ChannelProb<T> beta{G, cst, K, L};
  EXSYNTH_TRY(xp_reduce(F, alpha, part, V, B, N, K, L, ws.nchunks, stream));  // V = F alpha^T
  return wp(V, gate, beta, out, B, N, K, L, stream);                            // out = (V gate) beta
}

template <typename T>
cudaError_t backward(const T* F, const T* S, const T* G, const T* gate, const float* V,
                     const float* stats, const T* dout, T* dF, T* dS, T* dG, T* dgate,
                     void* workspace, int64_t B, int64_t N, int64_t K, int64_t L,
                     cudaStream_t stream) {
  const Workspace ws(B, N, K, L, true);
  unsigned char* w = static_cast<unsigned char*>(workspace);
  float* cst = reinterpret_cast<float*>(w + ws.cst);
  float* part = reinterpret_cast<float*>(w + ws.part);
  float* dVt = reinterpret_cast<float*>(w + ws.dvt);
  float* dV = reinterpret_cast<float*>(w + ws.dv);
  float* cvec = reinterpret_cast<float*>(w + ws.cvec);

  channel_stats_kernel<T><<<dim3(static_cast<unsigned>(ceil_div(L, THREADS)),
                                 static_cast<unsigned>(B)),
                            THREADS, 0, stream>>>(G, cst, K, L);
  EXSYNTH_TRY(cudaGetLastError());
  const SpatialProb<T> alpha{S, stats, K, L};
  const ChannelProb<T> beta{G, cst, K, L};
  // dVt = dout beta^T
  EXSYNTH_TRY(xp_reduce(dout, beta, part, dVt, B, N, K, L, ws.nchunks, stream));
  // dgate, dV = dVt gate, c = sum_n dV V
  gate_grad_kernel<T><<<static_cast<unsigned>(ceil_div(B * K, THREADS)), THREADS, 0, stream>>>(
      dVt, V, gate, dgate, dV, cvec, B, N, K);
  EXSYNTH_TRY(cudaGetLastError());
  // dG = beta (dbeta - sum_k beta dbeta), dbeta = (V gate)^T dout
  EXSYNTH_TRY((logit_grad<T, ChannelProb<T>, Centre::kPerPosition>(V, gate, dout, beta, nullptr,
                                                                   dG, B, N, K, L, stream)));
  // dF = dV alpha
  EXSYNTH_TRY(wp<T>(dV, nullptr, alpha, dF, B, N, K, L, stream));
  // dS = alpha (dV^T F - c)
  return logit_grad<T, SpatialProb<T>, Centre::kPerK>(dV, nullptr, F, alpha, cvec, dS, B, N, K,
                                                      L, stream);
}

#undef EXSYNTH_TRY

}  // namespace msca
}  // namespace detail

size_t msca_workspace(int64_t B, int64_t N, int64_t K, int64_t L, bool backward) {
  return detail::msca::Workspace(B, N, K, L, backward).bytes;
}

cudaError_t msca_forward(DType dtype, const void* F, const void* S, const void* G,
                         const void* gate, void* out, float* V, float* stats, void* workspace,
                         int64_t B, int64_t N, int64_t K, int64_t L, cudaStream_t stream) {
  using namespace detail;
  if (!msca::sizes_ok(B, N, K, L) || workspace == nullptr) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return msca::forward<T>(static_cast<const T*>(F), static_cast<const T*>(S),
                            static_cast<const T*>(G), static_cast<const T*>(gate),
                            static_cast<T*>(out), V, stats, workspace, B, N, K, L, stream);
  });
}

cudaError_t msca_backward(DType dtype, const void* F, const void* S, const void* G,
                          const void* gate, const float* V, const float* stats, const void* dout,
                          void* dF, void* dS, void* dG, void* dgate, void* workspace, int64_t B,
                          int64_t N, int64_t K, int64_t L, cudaStream_t stream) {
  using namespace detail;
  if (!msca::sizes_ok(B, N, K, L) || workspace == nullptr || (gate == nullptr && dgate != nullptr))
    return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    return msca::backward<T>(static_cast<const T*>(F), static_cast<const T*>(S),
                             static_cast<const T*>(G), static_cast<const T*>(gate), V, stats,
                             static_cast<const T*>(dout), static_cast<T*>(dF),
                             static_cast<T*>(dS), static_cast<T*>(dG), static_cast<T*>(dgate),
                             workspace, B, N, K, L, stream);
  });
}

}  // namespace cuda
}  // namespace exsynth
