// MSCA's decoupled spatial-channel attention on the CPU.
//
//   alpha[k, l] = softmax_l S[k, l]        (per batch element)
//   V[n, k]     = sum_l F[n, l] alpha[k, l]
//   beta[k, l]  = softmax_k G[k, l]
//   out[n, l]   = sum_k V[n, k] gate[k] beta[k, l]
//
// alpha and beta are never stored: alpha comes back from per-(b, k) stats
// (max, sum of exp) and beta is a softmax over K within one position. Work
// items are chunks of MC contiguous positions; reductions over positions go
// to per-thread N x K accumulators that are summed at the end, so nothing
// larger than B x N x K is allocated besides inputs and outputs.
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

// out[k] += sum_i f[i] * basis[k * kMscaChunk + i] for k < K, i < n: K dot
// products sharing f, vectorised over i with one accumulator per k (blocks
// of 8 k's stay in registers); a plain scalar reduction would not vectorise.
template <typename T>
static inline void dots_with_rows(const T* f, const T* basis, int64_t K, int64_t n, T* out) {
  typedef Simd<T> Sd;
  typedef typename Sd::vec vec;
  constexpr int KB = 8;
  const int64_t nv = n / Sd::W * Sd::W;
  for (int64_t k0 = 0; k0 < K; k0 += KB) {
    const int kb = int(std::min<int64_t>(KB, K - k0));
    vec acc[KB];
    for (int k = 0; k < KB; ++k) acc[k] = Sd::splat(0);
    for (int64_t i = 0; i < nv; i += Sd::W) {
      const vec fv = Sd::load(f + i);
#pragma GCC unroll 8
      for (int k = 0; k < KB; ++k)
        if (k < kb) acc[k] += fv * Sd::load(basis + (k0 + k) * kMscaChunk + i);
    }
    for (int k = 0; k < kb; ++k) {
      T s = Sd::hsum(acc[k]);
      for (int64_t i = nv; i < n; ++i) s += f[i] * basis[(k0 + k) * kMscaChunk + i];
      out[k0 + k] += s;
    }
  }
}

// Sum per-thread partials acc[t][0..size) into dst.
template <typename T>
static void reduce_partials(std::vector<std::vector<T>>& acc, int used, int64_t size, T* dst) {
  for (int64_t j = 0; j < size; ++j) {
    T s = 0;
    for (int t = 0; t < used; ++t) s += acc[t][j];
    dst[j] = s;
  }
}

template <typename T>
void msca_forward(const T* F, const T* S, const T* G, const T* gate, T* out, T* V, T* stats,
                  int64_t B, int64_t N, int64_t K, int64_t L, int nthreads) {
  const int64_t n_chunks = ceil_div(L, kMscaChunk);
  // 1. stats of the spatial softmax, per (b, k).
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t bk = 0; bk < B * K; ++bk) {
    const T* s = S + bk * L;
    const T mx = max_n(s, L);
    T sum = 0, tmp[kMscaChunk];
    for (int64_t l0 = 0; l0 < L; l0 += kMscaChunk)
      sum += exp_shift(s + l0, mx, tmp, std::min(kMscaChunk, L - l0));
    stats[2 * bk] = mx;
    stats[2 * bk + 1] = sum;
  }
  // 2. V = F alpha^T, reduced over position chunks.
  std::vector<std::vector<T>> acc(nthreads);
  int used = 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    acc[tid].assign(B * N * K, T(0));
    std::vector<T> alpha(K * kMscaChunk);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * kMscaChunk;
      const int64_t n = std::min(kMscaChunk, L - l0);
      msca_alpha(S + b * K * L, stats + b * K * 2, K, L, l0, n, alpha.data());
      T* Vb = acc[tid].data() + b * N * K;
      for (int64_t c = 0; c < N; ++c)
        dots_with_rows(F + (b * N + c) * L + l0, alpha.data(), K, n, Vb + c * K);
    }
  }
  reduce_partials(acc, used, B * N * K, V);
  // 3. out = (V * gate) beta.
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> beta(K * kMscaChunk), vg(N * K);
    int64_t vg_b = -1;
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * kMscaChunk;
      const int64_t n = std::min(kMscaChunk, L - l0);
      if (b != vg_b) {
        for (int64_t c = 0; c < N; ++c)
          for (int64_t k = 0; k < K; ++k)
            vg[c * K + k] = V[(b * N + c) * K + k] * (gate ? gate[b * K + k] : T(1));
        vg_b = b;
      }
      msca_beta(G + b * K * L, K, L, l0, n, beta.data());
      for (int64_t c = 0; c < N; ++c) {
        T* o = out + (b * N + c) * L + l0;
        T acc_o[kMscaChunk];
        for (int64_t i = 0; i < n; ++i) acc_o[i] = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T v = vg[c * K + k];
          const T* bk = beta.data() + k * kMscaChunk;
          for (int64_t i = 0; i < n; ++i) acc_o[i] += v * bk[i];
        }
        for (int64_t i = 0; i < n; ++i) o[i] = acc_o[i];
      }
    }
  }
}

template <typename T>
void msca_backward(const T* F, const T* S, const T* G, const T* gate, const T* V, const T* stats,
                   const T* dout, T* dF, T* dS, T* dG, T* dgate, int64_t B, int64_t N, int64_t K,
                   int64_t L, int nthreads) {
  const int64_t n_chunks = ceil_div(L, kMscaChunk);
  std::vector<T> vg(B * N * K), dVt(B * N * K), dV(B * N * K), c_k(B * K);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < N * K; ++j)
      vg[b * N * K + j] = V[b * N * K + j] * (gate ? gate[b * K + j % K] : T(1));
  // A. dG and dVt = sum_l dout beta^T, per position chunk.
  std::vector<std::vector<T>> acc(nthreads);
  int used = 1;
#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num();
#pragma omp single
    used = omp_get_num_threads();
    acc[tid].assign(B * N * K, T(0));
    std::vector<T> beta(K * kMscaChunk), dbeta(K * kMscaChunk);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * kMscaChunk;
      const int64_t n = std::min(kMscaChunk, L - l0);
      msca_beta(G + b * K * L, K, L, l0, n, beta.data());
      std::fill(dbeta.begin(), dbeta.end(), T(0));
      T* dVb = acc[tid].data() + b * N * K;
      const T* vgb = vg.data() + b * N * K;
      for (int64_t c = 0; c < N; ++c) {
        const T* go = dout + (b * N + c) * L + l0;
        dots_with_rows(go, beta.data(), K, n, dVb + c * K);
        for (int64_t k = 0; k < K; ++k) {
          const T v = vgb[c * K + k];
          T* dbk = dbeta.data() + k * kMscaChunk;
          for (int64_t i = 0; i < n; ++i) dbk[i] += v * go[i];
        }
      }
      T sbd[kMscaChunk];
      for (int64_t i = 0; i < n; ++i) sbd[i] = 0;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < n; ++i) sbd[i] += beta[k * kMscaChunk + i] * dbeta[k * kMscaChunk + i];
      for (int64_t k = 0; k < K; ++k) {
        T* dg = dG + (b * K + k) * L + l0;
        for (int64_t i = 0; i < n; ++i)
          dg[i] = beta[k * kMscaChunk + i] * (dbeta[k * kMscaChunk + i] - sbd[i]);
      }
    }
  }
  reduce_partials(acc, used, B * N * K, dVt.data());
  // B. gate gradient, dV, and c_k = sum_n dV V (the alpha-weighted mean of dalpha).
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) {
      T sg = 0, sc = 0;
      const T g = gate ? gate[b * K + k] : T(1);
      for (int64_t c = 0; c < N; ++c) {
        const int64_t j = (b * N + c) * K + k;
        sg += dVt[j] * V[j];
        dV[j] = dVt[j] * g;
        sc += dV[j] * V[j];
      }
      if (dgate) dgate[b * K + k] = sg;
      c_k[b * K + k] = sc;
    }
  // C. dF = dV alpha, dS = alpha (dV^T F - c_k).
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> alpha(K * kMscaChunk), dalpha(K * kMscaChunk);
#pragma omp for schedule(static)
    for (int64_t w = 0; w < B * n_chunks; ++w) {
      const int64_t b = w / n_chunks, l0 = (w % n_chunks) * kMscaChunk;
      const int64_t n = std::min(kMscaChunk, L - l0);
      msca_alpha(S + b * K * L, stats + b * K * 2, K, L, l0, n, alpha.data());
      std::fill(dalpha.begin(), dalpha.end(), T(0));
      const T* dVb = dV.data() + b * N * K;
      for (int64_t c = 0; c < N; ++c) {
        const T* f = F + (b * N + c) * L + l0;
        T* df = dF + (b * N + c) * L + l0;
        T acc_f[kMscaChunk];
        for (int64_t i = 0; i < n; ++i) acc_f[i] = 0;
        for (int64_t k = 0; k < K; ++k) {
          const T d = dVb[c * K + k];
          const T* ak = alpha.data() + k * kMscaChunk;
          T* dak = dalpha.data() + k * kMscaChunk;
          for (int64_t i = 0; i < n; ++i) {
            acc_f[i] += d * ak[i];
            dak[i] += d * f[i];
          }
        }
        for (int64_t i = 0; i < n; ++i) df[i] = acc_f[i];
      }
      for (int64_t k = 0; k < K; ++k) {
        T* ds = dS + (b * K + k) * L + l0;
        const T ck = c_k[b * K + k];
        for (int64_t i = 0; i < n; ++i)
          ds[i] = alpha[k * kMscaChunk + i] * (dalpha[k * kMscaChunk + i] - ck);
      }
    }
  }
}
