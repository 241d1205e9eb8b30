// Fused correlation attention on the CPU: out = softmax_j(alpha * q_i . k_j) v_j
// with an online (flash-attention style) softmax over key blocks, so the
// Lq x Lk matrix never exists; backward recomputes the score blocks from the
// saved log-sum-exp. Everything is a GEMM on small blocks done by one
// register-blocked micro-kernel (MR x NR tile, B operand packed in NR-wide
// panels), plus a vectorised exp.
//
// Included by isa_<name>.cpp (via instantiate.h) inside namespace exsynth::cpu::<isa>
// after simd.h and gemm.h. Layouts (all row-major, contiguous):
//   q (B, Lq, D), k (B, Lk, D), v (B, Lk, Cv), out (B, Lq, Cv), lse (B, Lq) float64.

// Per-batch packings of k (and v) shared by all query blocks.
template <typename T> struct KeyPanels {
  int64_t Lk, D, Cv, n_kpan, Lkr;
  // kt: keys as B operand of q.k^T: [key panel][D][NR]
  // vt: v^T as B operand of dO.v^T: [key panel][Cv][NR]
  // vc: v as B operand of P.v: [value panel][Lkr][NR]
  // kc: k as B operand of dS.k: [depth panel][Lkr][NR]
  std::vector<T> kt, vt, vc, kc;
};

template <typename T>
static void pack_keys(const T* k, const T* v, int64_t Lk, int64_t D, int64_t Cv,
                      bool for_backward, KeyPanels<T>& kp) {
  constexpr int NR = Tiles<T>::NR;
  kp.Lk = Lk; kp.D = D; kp.Cv = Cv;
  kp.n_kpan = ceil_div(Lk, NR);
  kp.Lkr = round_up(Lk, Tiles<T>::BN) + Tiles<T>::MR;  // room for zero tail rows
  kp.kt.assign(kp.n_kpan * D * NR, T(0));
  if (v) kp.vc.assign(ceil_div(Cv, NR) * kp.Lkr * NR, T(0));
  if (for_backward) {
    kp.vt.assign(kp.n_kpan * Cv * NR, T(0));
    kp.kc.assign(ceil_div(D, NR) * kp.Lkr * NR, T(0));
  }
  for (int64_t p = 0; p < kp.n_kpan; ++p) {
    pack_row_panel_t(k, Lk, D, D, p * NR, kp.kt.data() + p * D * NR);
    if (for_backward) pack_row_panel_t(v, Lk, Cv, Cv, p * NR, kp.vt.data() + p * Cv * NR);
  }
  if (v)
    for (int64_t p = 0; p * NR < Cv; ++p)
      pack_col_panel(v, Lk, Cv, Cv, p * NR, kp.vc.data() + p * kp.Lkr * NR);
  if (for_backward)
    for (int64_t p = 0; p * NR < D; ++p)
      pack_col_panel(k, Lk, D, D, p * NR, kp.kc.data() + p * kp.Lkr * NR);
}

// S[BM x n_pan*NR] = Qb[mt*MR x D] . K[j0 : j0 + n_pan*NR]^T, depth tiled by KC.
template <typename T>
static void score_block(const T* Qb, int64_t mt, const KeyPanels<T>& kp, int64_t j0,
                        int64_t n_pan, T* Sb) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  constexpr int64_t BN = Tiles<T>::BN, KC = Tiles<T>::KC;
  const int64_t D = kp.D;
  const T* kt = kp.kt.data() + (j0 / NR) * D * NR;
  for (int64_t d0 = 0; d0 < D; d0 += KC) {
    const int64_t kc = std::min(KC, D - d0);
    for (int64_t jp = 0; jp < n_pan; ++jp)
      for (int64_t it = 0; it < mt; ++it)
        micro_kernel<T>(kc, Qb + it * MR * D + d0, D, kt + jp * D * NR + d0 * NR,
                        Sb + it * MR * BN + jp * NR, BN, d0 > 0);
  }
}

// Copy `rows` rows of X (ld = cols) into a zero-padded (mt*MR) x cols block.
template <typename T>
static void copy_rows_padded(const T* X, int64_t rows, int64_t cols, int64_t padded_rows, T* dst) {
  std::memcpy(dst, X, sizeof(T) * rows * cols);
  std::memset(dst + rows * cols, 0, sizeof(T) * (padded_rows - rows) * cols);
}

// Online-softmax update of one query row for a small value width CV: the
// exponentials are multiplied into v^T on the fly (no P store, no GEMM padded
// to NR columns, which would cost NR/CV times the useful flops).
// s: the row's scores for ncol keys (masked tail = -inf); vt: v^T rows of
// length ldv starting at this block's first key, zero past Lk.
template <typename T>
static inline void scale_row(T* s, int64_t ncol, T alpha) {
  // The logits alpha*s, rounded and stored once: forward and backward subtract the row max
  // from the same numbers (no FMA contracts the product into the subtraction), so the
  // largest logit gives exactly exp(0) = 1 in both and a one-hot row stays exactly one-hot.
  typedef Simd<T> S;
  for (int64_t j = 0; j < ncol; j += S::W) S::store(s + j, S::load(s + j) * alpha);
}

template <typename T, int CV>
static inline void softmax_row_small_cv(T* s, int64_t ncol, T alpha, const T* vt, int64_t ldv,
                                        T& m, T& l, T* o) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  constexpr int W = S::W;
  scale_row(s, ncol, alpha);
  vec vm = S::load(s);
  for (int64_t j = W; j < ncol; j += W) vm = S::vmax(vm, S::load(s + j));
  const T m_new = std::max(m, S::hmax(vm));
  vec vs = S::splat(0), acc[CV];
  for (int c = 0; c < CV; ++c) acc[c] = S::splat(0);
  for (int64_t j = 0; j < ncol; j += W) {
    const vec p = vexp<T>(S::load(s + j) - m_new);
    vs += p;
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) acc[c] += p * S::load(vt + c * ldv + j);
  }
  const T rescale = std::exp(m - m_new);
  for (int c = 0; c < CV; ++c) o[c] = o[c] * rescale + S::hsum(acc[c]);
  l = l * rescale + S::hsum(vs);
  m = m_new;
}

template <typename T>
using SmallCvRow = void (*)(T*, int64_t, T, const T*, int64_t, T&, T&, T*);

template <typename T>
static SmallCvRow<T> small_cv_row(int64_t Cv) {
  switch (Cv) {
    case 1: return softmax_row_small_cv<T, 1>;
    case 2: return softmax_row_small_cv<T, 2>;
    case 3: return softmax_row_small_cv<T, 3>;
    case 4: return softmax_row_small_cv<T, 4>;
    case 5: return softmax_row_small_cv<T, 5>;
    case 6: return softmax_row_small_cv<T, 6>;
    case 7: return softmax_row_small_cv<T, 7>;
    case 8: return softmax_row_small_cv<T, 8>;
    default: return nullptr;
  }
}

// v (B, Lk, Cv) -> v^T (B, Cv, Lkb), zero past Lk: the small-Cv paths read
// whole vectors of keys, so the tail must be finite.
template <typename T>
static std::vector<T> transpose_values(const T* v, int64_t B, int64_t Lk, int64_t Cv, int64_t Lkb) {
  std::vector<T> vt(B * Cv * Lkb, T(0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < Lk; ++j)
      for (int64_t c = 0; c < Cv; ++c) vt[(b * Cv + c) * Lkb + j] = v[(b * Lk + j) * Cv + c];
  return vt;
}

// Backward of one query row for a small value width CV, fused: P, dP - delta, alpha dS =
// alpha P (dP - delta) into ds, and dv^T += dO^T P into dvt, with no GEMM padded to NR
// columns and no transposed copy of P. P = exp((alpha s - lse_hi) - lse_lo) with the
// float64 log-sum-exp split into two parts: exp(alpha s - lse) in one rounded float
// would lose log2(|lse|) ~ log2(alpha) bits. dP_j - delta is formed as dO . (v_j - out)
// + dlse, which is exactly 0 where a row is one-hot (v_j == out), as the oracle's softmax
// backward is; dO . v_j - dO . out would leave alpha times a rounding error there.
template <typename T, int CV>
static inline void backward_row_small_cv(T* s, T* ds, int64_t ncol, T alpha, T lse_hi, T lse_lo,
                                         T dlse, const T* dO, const T* out, const T* vt, T* dvt,
                                         int64_t ldv) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  scale_row(s, ncol, alpha);
  for (int64_t j = 0; j < ncol; j += S::W) {
    const vec p = vexp<T>((S::load(s + j) - lse_hi) - lse_lo);
    vec dp = S::splat(dlse);
#pragma GCC unroll 8
    for (int c = 0; c < CV; ++c) {
      dp += dO[c] * (S::load(vt + c * ldv + j) - out[c]);
      S::store(dvt + c * ldv + j, S::load(dvt + c * ldv + j) + p * dO[c]);
    }
    S::store(ds + j, p * dp * alpha);
  }
}

template <typename T>
using SmallCvBackwardRow = void (*)(T*, T*, int64_t, T, T, T, T, const T*, const T*, const T*, T*,
                                    int64_t);

template <typename T>
static SmallCvBackwardRow<T> small_cv_backward_row(int64_t Cv) {
  switch (Cv) {
    case 1: return backward_row_small_cv<T, 1>;
    case 2: return backward_row_small_cv<T, 2>;
    case 3: return backward_row_small_cv<T, 3>;
    case 4: return backward_row_small_cv<T, 4>;
    case 5: return backward_row_small_cv<T, 5>;
    case 6: return backward_row_small_cv<T, 6>;
    case 7: return backward_row_small_cv<T, 7>;
    case 8: return backward_row_small_cv<T, 8>;
    default: return nullptr;
  }
}

// One key block of the forward's online softmax for `rows` query rows. Sb (row stride ldS)
// holds the rows' scores before alpha for ncol keys (masked keys -inf, ncol a multiple of
// NR); m, l, O (row stride Cvp) are the running max, sum and unnormalised output. Small Cv:
// vtb is v^T at this block's first key (row stride ldv). Otherwise vcb is v packed as the
// B operand of P.v at this block's first key (panel stride vc_pstride) and kdim the keys
// the product runs over (P is 0 past them); Sb is overwritten with P.
template <typename T>
static void online_softmax_block(T* Sb, int64_t ldS, int64_t rows, int64_t mt, int64_t ncol,
                                 T alpha, SmallCvRow<T> small_row, const T* vtb, int64_t ldv,
                                 const T* vcb, int64_t vc_pstride, int64_t kdim, int64_t n_vpan,
                                 T* Ob, int64_t Cvp, T* m, T* l) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR, W = S::W;
  if (small_row) {
    for (int64_t r = 0; r < rows; ++r)
      small_row(Sb + r * ldS, ncol, alpha, vtb, ldv, m[r], l[r], Ob + r * Cvp);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    T* s = Sb + r * ldS;
    scale_row(s, ncol, alpha);
    vec vm = S::load(s);
    for (int64_t j = W; j < ncol; j += W) vm = S::vmax(vm, S::load(s + j));
    const T m_new = std::max(m[r], S::hmax(vm));
    vec vs = S::splat(0);
    for (int64_t j = 0; j < ncol; j += W) {
      const vec p = vexp<T>(S::load(s + j) - m_new);
      S::store(s + j, p);
      vs += p;
    }
    const T rescale = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first block
    T* o = Ob + r * Cvp;
    for (int64_t c = 0; c < Cvp; ++c) o[c] *= rescale;
    l[r] = l[r] * rescale + S::hsum(vs);
    m[r] = m_new;
  }
  for (int64_t cp = 0; cp < n_vpan; ++cp)
    for (int64_t it = 0; it < mt; ++it)
      micro_kernel<T>(kdim, Sb + it * MR * ldS, ldS, vcb + cp * vc_pstride,
                      Ob + it * MR * Cvp + cp * NR, Cvp, true);
}

// delta_r = dO_r . out_r - dlse_r for the backward's GEMM path (the small-Cv path forms
// dP - delta itself), computed by the same micro-kernel as dP = dO . v^T, with the tile's out
// rows as the panel's columns: where a row is one-hot (out == v_j bitwise) delta then equals
// that dP_j bitwise and dS_j is exactly 0, as in the oracle's softmax backward. NR may be
// smaller than MR (float64 on 16-byte vectors: NR = 4, MR = 6): the tile's rows go into the
// panel NR at a time, row r0 + c into column c. outP: Cv x NR scratch, dOut: MR x NR.
template <typename T>
static void softmax_delta(const T* dOb, const T* out_b, const T* dlse_b, int64_t rows, int64_t mt,
                          int64_t Cv, T* outP, T* dOut, T* delta_b) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  for (int64_t it = 0; it < mt; ++it)
    for (int r0 = 0; r0 < MR; r0 += NR) {
      std::fill(outP, outP + Cv * NR, T(0));
      for (int c = 0; c < NR && r0 + c < MR && it * MR + r0 + c < rows; ++c)
        for (int64_t ch = 0; ch < Cv; ++ch) outP[ch * NR + c] = out_b[(it * MR + r0 + c) * Cv + ch];
      micro_kernel<T>(Cv, dOb + it * MR * Cv, Cv, outP, dOut, NR, false);
      for (int c = 0; c < NR && r0 + c < MR && it * MR + r0 + c < rows; ++c)
        delta_b[it * MR + r0 + c] = dOut[(r0 + c) * NR + c] - dlse_b[it * MR + r0 + c];
    }
}

// The backward's softmax rows for one key block: Sb holds the scores before alpha (masked keys
// -inf), rows >= `rows` up to BMr are zeroed. GEMM path: dPb holds dP = dO . v^T on entry;
// on exit Sb holds P and dPb alpha * dS = alpha P (dP - delta). Small Cv: dPb gets alpha * dS
// and dv^T (dvtb, row stride ldv, at this block's first key) accumulates dO^T P.
template <typename T>
static void softmax_backward_block(T* Sb, T* dPb, int64_t ldS, int64_t rows, int64_t BMr,
                                   int64_t ncol, T alpha, const T* lse_hi, const T* lse_lo,
                                   const T* dlse_b, const T* delta_b,
                                   SmallCvBackwardRow<T> small_row, const T* dOb, const T* out_b,
                                   int64_t Cv, const T* vtb, T* dvtb, int64_t ldv) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  constexpr int W = S::W;
  for (int64_t r = 0; r < BMr; ++r) {
    T* s = Sb + r * ldS;
    T* dp = dPb + r * ldS;
    if (r >= rows) {
      std::fill(s, s + ncol, T(0));
      std::fill(dp, dp + ncol, T(0));
      continue;
    }
    if (small_row) {
      small_row(s, dp, ncol, alpha, lse_hi[r], lse_lo[r], dlse_b[r], dOb + r * Cv, out_b + r * Cv,
                vtb, dvtb, ldv);
      continue;
    }
    scale_row(s, ncol, alpha);
    const T hi = lse_hi[r], lo = lse_lo[r], dr = delta_b[r];
    for (int64_t j = 0; j < ncol; j += W) {
      const vec p = vexp<T>((S::load(s + j) - hi) - lo);
      S::store(s + j, p);
      S::store(dp + j, p * (S::load(dp + j) - dr) * alpha);
    }
  }
}

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, T* out, double* lse, int64_t B,
                       int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  constexpr int64_t BM = Tiles<T>::BM, BN = Tiles<T>::BN;
  const int64_t Cvp = round_up(Cv, NR), n_vpan = Cvp / NR;
  const int64_t n_qblk = ceil_div(Lq, BM);

  const SmallCvRow<T> small_row = small_cv_row<T>(Cv);
  // v^T (B, Cv, Lkb), zero past Lk, for the small-Cv path.
  const int64_t Lkb = round_up(Lk, BN);
  const std::vector<T> vt = small_row ? transpose_values(v, B, Lk, Cv, Lkb) : std::vector<T>();
  std::vector<KeyPanels<T>> panels(B);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    pack_keys(k + b * Lk * D, small_row ? nullptr : v + b * Lk * Cv, Lk, D, Cv, false, panels[b]);

#pragma omp parallel num_threads(nthreads)
  {
    const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
    std::vector<T> Qb(BM * D), Sb(BM * BN), Ob(BM * Cvp), m(BM), l(BM);
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < B * n_qblk; ++w) {
      const int64_t b = w / n_qblk, i0 = (w % n_qblk) * BM;
      const int64_t rows = std::min(BM, Lq - i0), mt = ceil_div(rows, MR);
      const KeyPanels<T>& kp = panels[b];
      copy_rows_padded(q + (b * Lq + i0) * D, rows, D, mt * MR, Qb.data());
      std::fill(Ob.begin(), Ob.end(), T(0));
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      for (int64_t j0 = 0; j0 < Lk; j0 += BN) {
        const int64_t nb = std::min(BN, Lk - j0), n_pan = ceil_div(nb, NR), ncol = n_pan * NR;
        score_block(Qb.data(), mt, kp, j0, n_pan, Sb.data());
        for (int64_t r = 0; r < rows; ++r)
          std::fill(Sb.data() + r * BN + nb, Sb.data() + r * BN + ncol, -std::numeric_limits<T>::infinity());
        // Rows past `rows` in the last tile hold finite scores of zero-padded queries; their
        // outputs are never written back.
        online_softmax_block(Sb.data(), BN, rows, mt, ncol, alpha, small_row,
                             small_row ? vt.data() + b * Cv * Lkb + j0 : nullptr, Lkb,
                             kp.vc.data() + j0 * NR, kp.Lkr * NR, nb, n_vpan, Ob.data(), Cvp,
                             m.data(), l.data());
      }
      for (int64_t r = 0; r < rows; ++r) {
        const T inv = T(1) / l[r];
        T* dst = out + (b * Lq + i0 + r) * Cv;
        for (int64_t c = 0; c < Cv; ++c) dst[c] = Ob[r * Cvp + c] * inv;
        // in float64: |lse| ~ alpha, and the backward rebuilds P from it
        lse[b * Lq + i0 + r] = double(m[r]) + std::log(double(l[r]));
      }
    }
  }
}

// out: the forward's output; lse: its float64 log-sum-exp; dlse: the gradient arriving on
// lse (zeros when only out is differentiated).
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const double* lse,
                        const T* dlse, const T* dout, T* dq, T* dk, T* dv, int64_t B, int64_t Lq,
                        int64_t Lk, int64_t D, int64_t Cv, T alpha, int nthreads) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  constexpr int64_t BM = Tiles<T>::BM, BN = Tiles<T>::BN;
  const int64_t Dp = round_up(D, NR), Cvp = round_up(Cv, NR);
  const int64_t n_qblk = ceil_div(Lq, BM);
  const int64_t BNt = BN + MR;  // transposed blocks get a zero tail to a multiple of MR

  const SmallCvBackwardRow<T> small_row = small_cv_backward_row<T>(Cv);
  const int64_t Lkb = round_up(Lk, BN);
  const std::vector<T> vt = small_row ? transpose_values(v, B, Lk, Cv, Lkb) : std::vector<T>();
  std::vector<KeyPanels<T>> panels(B);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    pack_keys(k + b * Lk * D, v + b * Lk * Cv, Lk, D, Cv, true, panels[b]);

  const int64_t Lkr = panels.empty() ? 0 : panels[0].Lkr;
  // Small Cv: dv accumulates transposed, (Cv, Lkb) per thread.
  const int64_t dv_size = small_row ? Cv * Lkb : Lkr * Cvp;
  // dk and dv are sums over query blocks: each thread accumulates its own and
  // they are reduced at the end (memory: threads x Lk x (D + Cv)). The query
  // blocks are split statically, so every run sums in the same order: gradients
  // are bitwise reproducible for a given thread count (a resumed training run
  // retraces the uninterrupted one).
  std::vector<std::vector<T>> dk_acc(nthreads), dv_acc(nthreads);

  for (int64_t b = 0; b < B; ++b) {
    const KeyPanels<T>& kp = panels[b];
    int used_threads = 1;
#pragma omp parallel num_threads(nthreads)
    {
      const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
      const int tid = omp_get_thread_num();
#pragma omp single
      used_threads = omp_get_num_threads();
      std::vector<T>& dkt = dk_acc[tid];
      std::vector<T>& dvt = dv_acc[tid];
      dkt.assign(Lkr * Dp, T(0));
      dvt.assign(dv_size, T(0));
      std::vector<T> Qb(BM * D), dOb(BM * Cv), Qd(Dp * BM), dOd(Cvp * BM), dQb(BM * Dp);
      std::vector<T> Sb(BM * BN), dPb(BM * BN), dSt(BNt * BM), Pt(BNt * BM);
      std::vector<T> lse_hi(BM), lse_lo(BM), dlse_b(BM), delta_b(BM), out_b(BM * Cv);
      std::vector<T> outP(small_row ? 0 : Cv * NR), dOut(MR * NR);
#pragma omp for schedule(static)
      for (int64_t qb = 0; qb < n_qblk; ++qb) {
        const int64_t i0 = qb * BM;
        const int64_t rows = std::min(BM, Lq - i0), mt = ceil_div(rows, MR), BMr = mt * MR;
        copy_rows_padded(q + (b * Lq + i0) * D, rows, D, BMr, Qb.data());
        copy_rows_padded(dout + (b * Lq + i0) * Cv, rows, Cv, BMr, dOb.data());
        for (int64_t p = 0; p * NR < D; ++p) pack_col_panel(Qb.data(), BMr, D, D, p * NR, Qd.data() + p * BMr * NR);
        for (int64_t p = 0; p * NR < Cv; ++p) pack_col_panel(dOb.data(), BMr, Cv, Cv, p * NR, dOd.data() + p * BMr * NR);
        copy_rows_padded(out + (b * Lq + i0) * Cv, rows, Cv, rows, out_b.data());
        for (int64_t r = 0; r < rows; ++r) {
          const double L = lse[b * Lq + i0 + r];
          lse_hi[r] = T(L);
          lse_lo[r] = T(L - double(lse_hi[r]));
          dlse_b[r] = dlse[b * Lq + i0 + r];
        }
        if (!small_row)
          softmax_delta(dOb.data(), out_b.data(), dlse_b.data(), rows, mt, Cv, outP.data(),
                        dOut.data(), delta_b.data());
        std::fill(dQb.begin(), dQb.end(), T(0));
        for (int64_t j0 = 0; j0 < Lk; j0 += BN) {
          const int64_t nb = std::min(BN, Lk - j0), n_pan = ceil_div(nb, NR), ncol = n_pan * NR;
          const int64_t jt = ceil_div(nb, MR);
          score_block(Qb.data(), mt, kp, j0, n_pan, Sb.data());
          for (int64_t r = 0; r < rows; ++r)
            std::fill(Sb.data() + r * BN + nb, Sb.data() + r * BN + ncol, -std::numeric_limits<T>::infinity());
          if (!small_row)  // dP = dO . v^T
            for (int64_t jp = 0; jp < n_pan; ++jp)
              for (int64_t it = 0; it < mt; ++it)
                micro_kernel<T>(Cv, dOb.data() + it * MR * Cv, Cv,
                                kp.vt.data() + (j0 / NR + jp) * Cv * NR,
                                dPb.data() + it * MR * BN + jp * NR, BN, false);
          softmax_backward_block(Sb.data(), dPb.data(), BN, rows, BMr, ncol, alpha, lse_hi.data(),
                                 lse_lo.data(), dlse_b.data(), delta_b.data(), small_row,
                                 dOb.data(), out_b.data(), Cv,
                                 small_row ? vt.data() + b * Cv * Lkb + j0 : nullptr,
                                 small_row ? dvt.data() + j0 : nullptr, Lkb);
          // dQ += dS . k
          for (int64_t dpn = 0; dpn * NR < D; ++dpn)
            for (int64_t it = 0; it < mt; ++it)
              micro_kernel<T>(nb, dPb.data() + it * MR * BN, BN,
                              kp.kc.data() + dpn * kp.Lkr * NR + j0 * NR,
                              dQb.data() + it * MR * Dp + dpn * NR, Dp, true);
          // Transposes of dS (and P, unless small Cv), zero past nb up to jt*MR rows.
          for (int64_t j = 0; j < jt * MR; ++j) {
            T* ds_row = dSt.data() + j * BMr;
            T* p_row = Pt.data() + j * BMr;
            if (j < nb) {
              for (int64_t i = 0; i < BMr; ++i) ds_row[i] = dPb[i * BN + j];
              if (!small_row)
                for (int64_t i = 0; i < BMr; ++i) p_row[i] = Sb[i * BN + j];
            } else {
              std::fill(ds_row, ds_row + BMr, T(0));
              std::fill(p_row, p_row + BMr, T(0));
            }
          }
          // dk += dS^T . q ; dv += P^T . dO
          for (int64_t dpn = 0; dpn * NR < D; ++dpn)
            for (int64_t it = 0; it < jt; ++it)
              micro_kernel<T>(BMr, dSt.data() + it * MR * BMr, BMr, Qd.data() + dpn * BMr * NR,
                              dkt.data() + (j0 + it * MR) * Dp + dpn * NR, Dp, true);
          for (int64_t cp = 0; !small_row && cp * NR < Cv; ++cp)
            for (int64_t it = 0; it < jt; ++it)
              micro_kernel<T>(BMr, Pt.data() + it * MR * BMr, BMr, dOd.data() + cp * BMr * NR,
                              dvt.data() + (j0 + it * MR) * Cvp + cp * NR, Cvp, true);
        }
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(dq + (b * Lq + i0 + r) * D, dQb.data() + r * Dp, sizeof(T) * D);
      }
      // Reduce the per-thread partial sums (implicit barrier after omp for).
#pragma omp for schedule(static)
      for (int64_t j = 0; j < Lk; ++j) {
        T* dkr = dk + (b * Lk + j) * D;
        T* dvr = dv + (b * Lk + j) * Cv;
        // dv partials are (Lkr, Cvp) row-major, or (Cv, Lkb) for small Cv.
        const int64_t dv_j = small_row ? j : j * Cvp, dv_c = small_row ? Lkb : 1;
        for (int64_t d = 0; d < D; ++d) dkr[d] = dk_acc[0][j * Dp + d];
        for (int64_t c = 0; c < Cv; ++c) dvr[c] = dv_acc[0][dv_j + c * dv_c];
        for (int t = 1; t < used_threads; ++t) {
          for (int64_t d = 0; d < D; ++d) dkr[d] += dk_acc[t][j * Dp + d];
          for (int64_t c = 0; c < Cv; ++c) dvr[c] += dv_acc[t][dv_j + c * dv_c];
        }
      }
    }
  }
}

// Best key per query: index = argmax_j q_i . k_j (first on ties), best = the max.
template <typename T>
void match_forward(const T* q, const T* k, int64_t* index, T* best, int64_t B, int64_t Lq,
                   int64_t Lk, int64_t D, int nthreads) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  constexpr int64_t BM = Tiles<T>::BM, BN = Tiles<T>::BN;
  (void)NR;
  const int64_t n_qblk = ceil_div(Lq, BM);
  std::vector<KeyPanels<T>> panels(B);
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    pack_keys<T>(k + b * Lk * D, nullptr, Lk, D, 0, false, panels[b]);
#pragma omp parallel num_threads(nthreads)
  {
    const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
    std::vector<T> Qb(BM * D), Sb(BM * BN), mx(BM);
    std::vector<int64_t> arg(BM);
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < B * n_qblk; ++w) {
      const int64_t b = w / n_qblk, i0 = (w % n_qblk) * BM;
      const int64_t rows = std::min(BM, Lq - i0), mt = ceil_div(rows, MR);
      copy_rows_padded(q + (b * Lq + i0) * D, rows, D, mt * MR, Qb.data());
      std::fill(mx.begin(), mx.end(), -std::numeric_limits<T>::infinity());
      std::fill(arg.begin(), arg.end(), int64_t(0));
      for (int64_t j0 = 0; j0 < Lk; j0 += BN) {
        const int64_t nb = std::min(BN, Lk - j0);
        score_block(Qb.data(), mt, panels[b], j0, ceil_div(nb, Tiles<T>::NR), Sb.data());
        for (int64_t r = 0; r < rows; ++r) {
          const T* s = Sb.data() + r * BN;
          // torch.max's order: NaN above every number, the first NaN (or maximum) wins
          for (int64_t j = 0; j < nb; ++j)
            if (s[j] > mx[r] || (s[j] != s[j] && mx[r] == mx[r])) { mx[r] = s[j]; arg[r] = j0 + j; }
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        index[b * Lq + i0 + r] = arg[r];
        best[b * Lq + i0 + r] = mx[r];
      }
    }
  }
}
