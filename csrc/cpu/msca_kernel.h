// MSCA's decoupled spatial-channel attention on the CPU.
//
//   alpha[k, l] = softmax_l S[k, l]        (per batch element)
//   V[n, k]     = sum_l F[n, l] alpha[k, l]
//   beta[k, l]  = softmax_k G[k, l]
//   out[n, l]   = sum_k V[n, k] gate[k] beta[k, l]
//
// alpha and beta are never stored whole: alpha comes back from per-(b, k)
// stats (max, sum of exp) and beta is a softmax over K within one position,
// both recomputed per chunk of kMscaChunk contiguous positions. The four
// products (F alpha^T, V~ beta, and their gradients) run on the correlation
// kernel's register-blocked micro-kernel. Reductions over positions go to
// per-thread N x K accumulators summed at the end, so nothing larger than
// B x N x K is allocated besides inputs, outputs and per-thread chunk buffers.
//
// Included by isa_<name>.cpp (via instantiate.h) inside namespace exsynth::cpu::<isa>.

constexpr int64_t kMscaChunk = 256;  // positions per work item (K x chunk buffers stay in L1/L2)

// dst[i] = exp(src[i] - shift) for i < n (vectorised; dst may alias src); returns the sum.
template <typename T>
static inline T exp_shift(const T* src, T shift, T* dst, int64_t n) {
  typedef Simd<T> Sd;
  typename Sd::vec acc = Sd::splat(0);
  int64_t i = 0;
  for (; i + Sd::W <= n; i += Sd::W) {
    const typename Sd::vec e = vexp<T>(Sd::load(src + i) - shift);
    Sd::store(dst + i, e);
    acc += e;
  }
  T sum = Sd::hsum(acc);
  if (i < n) {
    T tmp[Sd::W];
    for (int j = 0; j < Sd::W; ++j) tmp[j] = i + j < n ? src[i + j] - shift : T(-1e30);
    const typename Sd::vec e = vexp<T>(Sd::load(tmp));
    for (int64_t j = 0; i + j < n; ++j) { dst[i + j] = e[j]; sum += e[j]; }
  }
  return sum;
}

template <typename T>
static inline T max_n(const T* src, int64_t n) {
  typedef Simd<T> Sd;
  T mx = src[0];
  int64_t i = 0;
  if (n >= Sd::W) {
    typename Sd::vec vm = Sd::load(src);
    for (i = Sd::W; i + Sd::W <= n; i += Sd::W) vm = Sd::vmax(vm, Sd::load(src + i));
    mx = Sd::hmax(vm);
  }
  for (; i < n; ++i) mx = std::max(mx, src[i]);
  return mx;
}

// alpha[k][i] for positions [l0, l0 + n) of one batch element.
template <typename T>
static inline void msca_alpha(const T* S, const T* stats, int64_t K, int64_t L, int64_t l0,
                              int64_t n, T* alpha) {
  for (int64_t k = 0; k < K; ++k) {
    const T inv = T(1) / stats[2 * k + 1];
    T* a = alpha + k * kMscaChunk;
    exp_shift(S + k * L + l0, stats[2 * k], a, n);
    for (int64_t i = 0; i < n; ++i) a[i] *= inv;
  }
}

// beta[k][i]: softmax over k of G[:, l0 + i].
template <typename T>
static inline void msca_beta(const T* G, int64_t K, int64_t L, int64_t l0, int64_t n, T* beta) {
  T mx[kMscaChunk], sum[kMscaChunk];
  for (int64_t i = 0; i < n; ++i) { mx[i] = G[l0 + i]; sum[i] = 0; }
  for (int64_t k = 1; k < K; ++k)
    for (int64_t i = 0; i < n; ++i) mx[i] = std::max(mx[i], G[k * L + l0 + i]);
  for (int64_t k = 0; k < K; ++k) {
    T* bk = beta + k * kMscaChunk;
    for (int64_t i = 0; i < n; ++i) bk[i] = G[k * L + l0 + i] - mx[i];
    exp_shift(bk, T(0), bk, n);
    for (int64_t i = 0; i < n; ++i) sum[i] += bk[i];
  }
  for (int64_t i = 0; i < n; ++i) sum[i] = T(1) / sum[i];
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < n; ++i) beta[k * kMscaChunk + i] *= sum[i];
}

// A pointer to MR rows of X (row stride ld) starting at row r0 and column
// c0, n columns used: X itself when all MR rows exist, else a zero-padded
// copy in `tail` (row stride kMscaChunk), so the micro-kernel never reads
// past the last row.
template <typename T>
static inline const T* rows_or_tail(const T* X, int64_t nrows, int64_t ld, int64_t r0, int64_t c0,
                                    int64_t n, T* tail, int64_t& lda) {
  constexpr int MR = Tiles<T>::MR;
  if (r0 + MR <= nrows) {
    lda = ld;
    return X + r0 * ld + c0;
  }
  lda = kMscaChunk;
  for (int r = 0; r < MR; ++r) {
    T* dst = tail + r * kMscaChunk;
    if (r0 + r < nrows) std::memcpy(dst, X + (r0 + r) * ld + c0, sizeof(T) * n);
    else std::memset(dst, 0, sizeof(T) * n);
  }
  return tail;
}

// C (rows0 x K, ldc) += X[rows, l0 : l0 + n] . E^T, where E (K x n, row stride
// kMscaChunk) is packed transposed into `et` first: V = F alpha^T and
// dVt = dout beta^T. NV vectors cover K (1 when K fits one vector).
template <typename T, int NV>
static void rows_times_kt(const T* X, int64_t nrows, int64_t ld, int64_t l0, int64_t n,
                          const T* E, int64_t K, T* et, T* tail, T* C, int64_t ldc) {
  constexpr int MR = Tiles<T>::MR, NRK = Simd<T>::W * NV;
  const int64_t KP = ceil_div(K, NRK);
  for (int64_t kp = 0; kp < KP; ++kp)
    pack_row_panel_t<T, NRK>(E, K, n, kMscaChunk, kp * NRK, et + kp * kMscaChunk * NRK);
  for (int64_t r0 = 0; r0 < nrows; r0 += MR) {
    int64_t lda;
    const T* A = rows_or_tail(X, nrows, ld, r0, l0, n, tail, lda);
    for (int64_t kp = 0; kp < KP; ++kp)
      micro_kernel<T, NV>(n, A, lda, et + kp * kMscaChunk * NRK, C + r0 * ldc + kp * NRK, ldc, true);
  }
}

// Out (rows x n, row stride ld_out) = A (padded rows x kdim, lda = kdim) . P,
// P packed in position panels [lp][kdim][NR]; rows past `rows` are dropped.
template <typename T>
static void rows_times_panels(const T* A, int64_t rows, int64_t kdim, const T* P, int64_t n,
                              T* tmp, T* out, int64_t ld_out) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  const int64_t n_lp = ceil_div(n, NR);
  for (int64_t r0 = 0; r0 < rows; r0 += MR) {
    for (int64_t lp = 0; lp < n_lp; ++lp)
      micro_kernel<T>(kdim, A + r0 * kdim, kdim, P + lp * kdim * NR, tmp + lp * NR, kMscaChunk, false);
    for (int64_t r = 0; r < std::min<int64_t>(MR, rows - r0); ++r)
      std::memcpy(out + (r0 + r) * ld_out, tmp + r * kMscaChunk, sizeof(T) * n);
  }
}

// Pack n columns starting at column c0 of X (rows x ld) into position panels.
template <typename T>
static void pack_positions(const T* X, int64_t rows, int64_t ld, int64_t n, T* P) {
  constexpr int NR = Tiles<T>::NR;
  for (int64_t lp = 0; lp * NR < n; ++lp) pack_col_panel(X, rows, ld, n, lp * NR, P + lp * rows * NR);
}

// Per-batch padded copies: rows (N padded to MR) x K of V * gate (or of a
// gradient), and its transpose (K padded to MR) x N, zeros in the padding.
template <typename T>
static void padded_and_transposed(const T* M, const T* gate, int64_t N, int64_t K, T* rows_out,
                                  T* cols_out) {
  constexpr int MR = Tiles<T>::MR;
  const int64_t Np = round_up(N, MR), Kr = round_up(K, MR);
  std::fill(rows_out, rows_out + Np * K, T(0));
  std::fill(cols_out, cols_out + Kr * N, T(0));
  for (int64_t c = 0; c < N; ++c)
    for (int64_t k = 0; k < K; ++k) {
      const T x = M[c * K + k] * (gate ? gate[k] : T(1));
      rows_out[c * K + k] = x;
      cols_out[k * N + c] = x;
    }
}

template <typename T, int NV>
void msca_forward_nv(const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats,
                     int64_t B, int64_t N, int64_t K, int64_t L, int nthreads) {
  constexpr int MR = Tiles<T>::MR, NRK = Simd<T>::W * NV;
  const int64_t CH = kMscaChunk, n_chunks = ceil_div(L, CH);
  const int64_t Kk = round_up(K, NRK), Np = round_up(N, MR), Kr = round_up(K, MR);
  // 1. stats of the spatial softmax, per (b, k).
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t bk = 0; bk < B * K; ++bk) {
    const T* s = S + bk * L;
    const T mx = max_n(s, L);
    T sum = 0, tmp[kMscaChunk];
    for (int64_t l0 = 0; l0 < L; l0 += CH) sum += exp_shift(s + l0, mx, tmp, std::min(CH, L - l0));
    stats[2 * bk] = mx;
    stats[2 * bk + 1] = sum;
  }
  // 2. V = F alpha^T, reduced over position chunks into per-thread partials.
  std::vector<std::vector<T>> acc(nthreads);
  int used = 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    acc[tid].assign(B * Np * Kk, T(0));
    std::vector<T> alpha(K * CH), at(Kk * CH), tail(MR * CH);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * CH, n = std::min(CH, L - l0);
      msca_alpha(S + b * K * L, stats + b * K * 2, K, L, l0, n, alpha.data());
      rows_times_kt<T, NV>(F + b * N * L, N, L, l0, n, alpha.data(), K, at.data(), tail.data(),
                           acc[tid].data() + b * Np * Kk, Kk);
    }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < N; ++c)
      for (int64_t k = 0; k < K; ++k) {
        T sum = 0;
        for (int t = 0; t < used; ++t) sum += acc[t][(b * Np + c) * Kk + k];
        V[(b * N + c) * K + k] = sum;
      }
  // 3. out = (V * gate) beta.
  std::vector<T> vg(B * Np * K), vgt(B * Kr * N);
  for (int64_t b = 0; b < B; ++b)
    padded_and_transposed(V + b * N * K, gate ? gate + b * K : nullptr, N, K,
                          vg.data() + b * Np * K, vgt.data() + b * Kr * N);
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> beta(K * CH), bp(K * CH), tmp(MR * CH);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * CH, n = std::min(CH, L - l0);
      msca_beta(G + b * K * L, K, L, l0, n, beta.data());
      pack_positions(beta.data(), K, CH, n, bp.data());
      rows_times_panels(vg.data() + b * Np * K, N, K, bp.data(), n, tmp.data(),
                        out + b * N * L + l0, L);
    }
  }
}

template <typename T>
void msca_forward(const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats,
                  int64_t B, int64_t N, int64_t K, int64_t L, int nthreads) {
  if (K <= Simd<T>::W) msca_forward_nv<T, 1>(F, S, G, gate, out, V, stats, B, N, K, L, nthreads);
  else msca_forward_nv<T, 2>(F, S, G, gate, out, V, stats, B, N, K, L, nthreads);
}

template <typename T, int NV>
void msca_backward_nv(const T* F, const T* S, const T* G, const T* gate, const T* V,
                      const T* stats, const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B,
                      int64_t N, int64_t K, int64_t L, int nthreads) {
  constexpr int MR = Tiles<T>::MR, NRK = Simd<T>::W * NV;
  const int64_t CH = kMscaChunk, n_chunks = ceil_div(L, CH);
  const int64_t Kk = round_up(K, NRK), Np = round_up(N, MR), Kr = round_up(K, MR);
  std::vector<T> vg(B * Np * K), vgt(B * Kr * N);
  for (int64_t b = 0; b < B; ++b)
    padded_and_transposed(V + b * N * K, gate ? gate + b * K : nullptr, N, K,
                          vg.data() + b * Np * K, vgt.data() + b * Kr * N);
  // A. dG (per position) and dVt = dout beta^T (reduced over chunks).
  std::vector<std::vector<T>> acc(nthreads);
  int used = 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    acc[tid].assign(B * Np * Kk, T(0));
    std::vector<T> beta(K * CH), bt(Kk * CH), tail(MR * CH), dop(N * CH), dbeta(Kr * CH);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * CH, n = std::min(CH, L - l0);
      msca_beta(G + b * K * L, K, L, l0, n, beta.data());
      rows_times_kt<T, NV>(dout + b * N * L, N, L, l0, n, beta.data(), K, bt.data(), tail.data(),
                           acc[tid].data() + b * Np * Kk, Kk);
      // dbeta = (V gate)^T dout over this chunk
      pack_positions(dout + b * N * L + l0, N, L, n, dop.data());
      rows_times_panels(vgt.data() + b * Kr * N, K, N, dop.data(), n, tail.data(), dbeta.data(), CH);
      T sbd[kMscaChunk];
      for (int64_t i = 0; i < n; ++i) sbd[i] = 0;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < n; ++i) sbd[i] += beta[k * CH + i] * dbeta[k * CH + i];
      for (int64_t k = 0; k < K; ++k) {
        T* dg = dG + (b * K + k) * L + l0;
        for (int64_t i = 0; i < n; ++i) dg[i] = beta[k * CH + i] * (dbeta[k * CH + i] - sbd[i]);
      }
    }
  }
  // B. gate gradient, dV = dVt * gate, and c_k = sum_n dV V.
  std::vector<T> dV(B * N * K), dVr(B * Np * K), dVc(B * Kr * N), c_k(B * K);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      T sg = 0, sc = 0;
      const T g = gate ? gate[b * K + k] : T(1);
      for (int64_t c = 0; c < N; ++c) {
        T dvt = 0;
        for (int t = 0; t < used; ++t) dvt += acc[t][(b * Np + c) * Kk + k];
        const int64_t j = (b * N + c) * K + k;
        sg += dvt * V[j];
        dV[j] = dvt * g;
        sc += dV[j] * V[j];
      }
      if (dgate) dgate[b * K + k] = sg;
      c_k[b * K + k] = sc;
    }
  for (int64_t b = 0; b < B; ++b)
    padded_and_transposed(dV.data() + b * N * K, static_cast<const T*>(nullptr), N, K,
                          dVr.data() + b * Np * K, dVc.data() + b * Kr * N);
  // C. dF = dV alpha, dS = alpha (dV^T F - c_k).
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> alpha(K * CH), ap(K * CH), fp(N * CH), dalpha(Kr * CH), tmp(MR * CH);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * CH, n = std::min(CH, L - l0);
      msca_alpha(S + b * K * L, stats + b * K * 2, K, L, l0, n, alpha.data());
      pack_positions(alpha.data(), K, CH, n, ap.data());
      rows_times_panels(dVr.data() + b * Np * K, N, K, ap.data(), n, tmp.data(), dF + b * N * L + l0, L);
      pack_positions(F + b * N * L + l0, N, L, n, fp.data());
      rows_times_panels(dVc.data() + b * Kr * N, K, N, fp.data(), n, tmp.data(), dalpha.data(), CH);
      for (int64_t k = 0; k < K; ++k) {
        T* ds = dS + (b * K + k) * L + l0;
        const T ck = c_k[b * K + k];
        for (int64_t i = 0; i < n; ++i) ds[i] = alpha[k * CH + i] * (dalpha[k * CH + i] - ck);
      }
    }
  }
}

template <typename T>
void msca_backward(const T* F, const T* S, const T* G, const T* gate, const T* V, const T* stats,
                   const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B, int64_t N, int64_t K,
                   int64_t L, int nthreads) {
  if (K <= Simd<T>::W)
    msca_backward_nv<T, 1>(F, S, G, gate, V, stats, dout, dF, dS, dG, dgate, B, N, K, L, nthreads);
  else
    msca_backward_nv<T, 2>(F, S, G, gate, V, stats, dout, dF, dS, dG, dgate, B, N, K, L, nthreads);
}
