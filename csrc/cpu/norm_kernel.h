// Positional normalisation (PONO) and PN-SPADE modulation on the CPU.
//
// x is (B, C, L) row-major (NCHW with L = H*W): the per-position reduction
// over channels is strided by L, so each work item is a chunk of LC
// contiguous positions x all channels of one batch element. The chunk
// (C x LC values) stays in L2 while it is swept two or three times, so every
// tensor crosses the memory bus once. Statistics are accumulated in double:
// exact enough for any C, and free next to the memory traffic.
//
// Included by isa_<name>.cpp (via instantiate.h) inside namespace exsynth::cpu::<isa>.

constexpr int64_t kNormChunk = 512;  // most positions per work item

// Positions per work item: long contiguous row segments for the prefetchers,
// while `tensors` C x chunk slices still fit in about half of a 1 MiB L2.
template <typename T>
static inline int64_t norm_chunk(int64_t C, int tensors) {
  const int64_t fit = (int64_t(512) << 10) / (C * int64_t(sizeof(T)) * tensors);
  return std::max<int64_t>(16, std::min<int64_t>(kNormChunk, fit / 16 * 16));
}

// mean and std = sqrt(unbiased var + eps) of the chunk [l0, l0 + n) of one batch element.
template <typename T>
static inline void pono_stats(const T* x, int64_t C, int64_t L, int64_t l0, int64_t n, double eps,
                              double* mean, double* rstd, double* stdv) {
  double s[kNormChunk];
  for (int64_t i = 0; i < n; ++i) s[i] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T* row = x + c * L + l0;
    for (int64_t i = 0; i < n; ++i) s[i] += row[i];
  }
  for (int64_t i = 0; i < n; ++i) { mean[i] = s[i] / C; s[i] = 0; }
  for (int64_t c = 0; c < C; ++c) {
    const T* row = x + c * L + l0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = row[i] - mean[i];
      s[i] += d * d;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    stdv[i] = std::sqrt(s[i] / (C - 1) + eps);
    rstd[i] = 1.0 / stdv[i];
  }
}

// y = (x - mean) / std, optionally out = y * (1 + gamma) + beta.
// gamma/beta: (Bg, C, L) with Bg in {1, B}, or null for plain PONO.
template <typename T>
void pono_forward(const T* x, const T* gamma, const T* beta, T* y, T* mean_out, T* std_out,
                  int64_t B, int64_t Bg, int64_t C, int64_t L, double eps, int nthreads) {
  const int64_t chunk = norm_chunk<T>(C, gamma ? 4 : 2);
  const int64_t n_chunks = ceil_div(L, chunk);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t w = 0; w < B * n_chunks; ++w) {
    const int64_t b = w / n_chunks, l0 = (w % n_chunks) * chunk;
    const int64_t n = std::min(chunk, L - l0);
    double mean[kNormChunk], rstd[kNormChunk], stdv[kNormChunk];
    const T* xb = x + b * C * L;
    pono_stats(xb, C, L, l0, n, eps, mean, rstd, stdv);
    T m[kNormChunk], r[kNormChunk];
    for (int64_t i = 0; i < n; ++i) {
      m[i] = T(mean[i]);
      r[i] = T(rstd[i]);
      mean_out[b * L + l0 + i] = T(mean[i]);
      std_out[b * L + l0 + i] = T(stdv[i]);
    }
    const int64_t gb = Bg == 1 ? 0 : b;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = c * L + l0;
      const T* xr = xb + off;
      T* yr = y + b * C * L + off;
      if (gamma) {
        const T* g = gamma + gb * C * L + off;
        const T* be = beta + gb * C * L + off;
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m[i]) * r[i] * (T(1) + g[i]) + be[i];
      } else {
        for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - m[i]) * r[i];
      }
    }
  }
}

// Gradient of PONO / PN-modulate. With y = (x - mean)/std and n = C:
//   dx = (dy - sum(dy)/n - y * sum(dy*y)/(n-1)) / std + dmean/n + dstd*y/(n-1)
// For PN-modulate (gamma != null): dy = dout * (1 + gamma), dgamma = dout*y,
// dbeta = dout, summed over the batch when Bg == 1 (then each work item owns a
// chunk of positions across all batch elements, so there is no race).
template <typename T>
void pono_backward(const T* x, const T* mean_in, const T* std_in, const T* dy_in,
                   const T* dmean, const T* dstd, const T* gamma, T* dx, T* dgamma, T* dbeta,
                   int64_t B, int64_t Bg, int64_t C, int64_t L, int nthreads) {
  const int64_t chunk = norm_chunk<T>(C, gamma ? 6 : 3);
  const int64_t n_chunks = ceil_div(L, chunk);
  // A work item owns a chunk of positions for one batch element, or for all
  // of them when gamma is shared (its gradient sums over the batch).
  const int64_t groups = (gamma && Bg == 1) ? 1 : B;
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t w = 0; w < groups * n_chunks; ++w) {
    const int64_t ch = w % n_chunks, l0 = ch * chunk, n = std::min(chunk, L - l0);
    const int64_t b_begin = groups == 1 ? 0 : w / n_chunks, b_end = groups == 1 ? B : b_begin + 1;
    for (int64_t b = b_begin; b < b_end; ++b) {
      const T* xb = x + b * C * L;
      const T* dyb = dy_in ? dy_in + b * C * L : nullptr;
      const int64_t gb = Bg == 1 ? 0 : b;
      const T* gb_ptr = gamma ? gamma + gb * C * L : nullptr;
      T m[kNormChunk], r[kNormChunk];
      double sdy[kNormChunk], sdyy[kNormChunk];
      for (int64_t i = 0; i < n; ++i) {
        m[i] = mean_in[b * L + l0 + i];
        r[i] = T(1) / std_in[b * L + l0 + i];
        sdy[i] = 0;
        sdyy[i] = 0;
      }
      if (dyb) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t off = c * L + l0;
          for (int64_t i = 0; i < n; ++i) {
            const T yv = (xb[off + i] - m[i]) * r[i];
            const T d = gb_ptr ? dyb[off + i] * (T(1) + gb_ptr[off + i]) : dyb[off + i];
            sdy[i] += d;
            sdyy[i] += d * yv;
          }
        }
      }
      T a[kNormChunk], s[kNormChunk], e[kNormChunk];
      for (int64_t i = 0; i < n; ++i) {
        // dx = dy*r + a + s*y with a, s per position
        const T dm = dmean ? dmean[b * L + l0 + i] : T(0);
        const T ds = dstd ? dstd[b * L + l0 + i] : T(0);
        a[i] = T(-sdy[i] / C) * r[i] + dm / T(C);
        s[i] = T(-sdyy[i] / (C - 1)) * r[i] + ds / T(C - 1);
        e[i] = r[i];
      }
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = c * L + l0;
        T* dxr = dx + b * C * L + off;
        for (int64_t i = 0; i < n; ++i) {
          const T yv = (xb[off + i] - m[i]) * e[i];
          T d = T(0);
          if (dyb) d = gb_ptr ? dyb[off + i] * (T(1) + gb_ptr[off + i]) : dyb[off + i];
          dxr[i] = d * e[i] + a[i] + s[i] * yv;
        }
        if (gb_ptr) {
          T* dg = dgamma + gb * C * L + off;
          T* db = dbeta + gb * C * L + off;
          const T* go = dyb + off;
          if (Bg == 1 && b > 0) {
            for (int64_t i = 0; i < n; ++i) {
              dg[i] += go[i] * (xb[off + i] - m[i]) * e[i];
              db[i] += go[i];
            }
          } else {
            for (int64_t i = 0; i < n; ++i) {
              dg[i] = go[i] * (xb[off + i] - m[i]) * e[i];
              db[i] = go[i];
            }
          }
        }
      }
    }
  }
}
