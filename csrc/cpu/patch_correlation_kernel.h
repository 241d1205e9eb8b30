// correlation_warp / cycle_warp / correlation_match with k x k patches (k > 1) at the cost of
// a pixel Gram matrix, never unfolding the (L, C k^2) patch vectors.
//
// With zero padding, centring by the patch mean m_u and the norm, the patch dot product is
//   <f_u - m_u, g_v - n_v> = sum_delta G(u + delta, v + delta) - D m_u n_v,
//   G(a, b) = sum_c x_c(a) y_c(b)  (zero where a or b leaves the image),  D = C k^2,
// so the logit is t_uv = a_u b_v (P_uv - D m_u n_v) with P_uv = sum_delta G(u+delta, v+delta)
// and a_u = 1 / (|f_u - m_u| + eps) (b_v likewise). The per-position scalars a, m, b, n come
// from the caller (box sums, O(L C)); m = n = 0 without centring.
//
// Both grids are cut into 2-D tiles. A (query tile x key tile) block of P needs G only on the
// tiles widened by the k/2 halo ("extended" tiles: a GEMM at depth C), then k^2 shifted adds.
// The softmax is the online one of correlation_kernel.h; the backward recomputes the block
// from the log-sum-exp and spreads w = dt * a b over the k^2 diagonals of dG, then
// dX_q = dG . Y and dY_k = dG^T . X at depth C (the extended tiles overlap: each thread
// accumulates into its own zero-padded gradient grid, reduced in a fixed order at the end).
//
// Key tiles are laid out with their columns padded to the vector width (cells of a tile: th x
// twp, padding cells masked) so that a key row of the tile is whole vectors. Query tiles are
// th x tw cells. Cells outside the image: query rows computed but never written, key columns
// masked to -inf.
//
// Layouts: xq (B, Hq, Wq, C), xk (B, Hk, Wk, C) channels last; v (B, Hk Wk, Cv);
// aq, mq (B, Hq Wq); ak, mk (B, Hk Wk); out (B, Hq Wq, Cv); lse (B, Hq Wq) float64.

struct PatchTiling {
  int64_t H, W, p;       // grid, halo k / 2
  int64_t th, tw, twp;   // tile rows, columns, columns padded (keys) or not (queries)
  int64_t nty, ntx;      // tiles down, across
  int64_t eh, ew;        // extended tile: th + 2p rows, tw + 2p columns

  PatchTiling(int64_t H_, int64_t W_, int64_t k, int64_t col_multiple, int64_t max_cells)
      : H(H_), W(W_), p(k / 2) {
    // balanced tile sizes: tiles of at most 16 columns and max_cells cells
    ntx = ceil_div(W, 16);
    tw = ceil_div(W, ntx);
    twp = round_up(tw, col_multiple);
    const int64_t th_max = std::max<int64_t>(1, max_cells / twp);
    nty = ceil_div(H, th_max);
    th = ceil_div(H, nty);
    ntx = ceil_div(W, tw);
    nty = ceil_div(H, th);
    eh = th + 2 * p;
    ew = tw + 2 * p;
  }
  int64_t tiles() const { return nty * ntx; }
  int64_t cells() const { return th * twp; }
  int64_t ext() const { return eh * ew; }
  // the zero-padded gradient grid covering every extended tile
  int64_t grid_h() const { return nty * th + 2 * p; }
  int64_t grid_w() const { return ntx * tw + 2 * p; }
  // flattened image position of cell c of tile t, or -1 (outside the image, padding column)
  int64_t position(int64_t t, int64_t c) const {
    const int64_t cy = c / twp, cx = c % twp;
    const int64_t y = (t / ntx) * th + cy, x = (t % ntx) * tw + cx;
    return (cx < tw && y < H && x < W) ? y * W + x : -1;
  }
  // grid row of extended-tile row e of tile t
  int64_t grid_row(int64_t t, int64_t e) const {
    return ((t / ntx) * th + e / ew) * grid_w() + (t % ntx) * tw + e % ew;
  }
};

// The two grids' tilings: query tiles of up to 256 cells (16 x 16); key tiles likewise, their
// columns padded to whole vectors.
template <typename T> static PatchTiling query_tiling(int64_t H, int64_t W, int64_t k) {
  return PatchTiling(H, W, k, 1, 256);
}
template <typename T> static PatchTiling key_tiling(int64_t H, int64_t W, int64_t k) {
  return PatchTiling(H, W, k, Simd<T>::W, 256);
}

// Rows of extended tile t of x (H, W, C) into dst (rows_padded x C), zero outside the image
// and past the tile.
template <typename T>
static void gather_extended(const T* x, const PatchTiling& g, int64_t t, int64_t C,
                            int64_t rows_padded, T* dst) {
  const int64_t y0 = (t / g.ntx) * g.th - g.p, x0 = (t % g.ntx) * g.tw - g.p;
  for (int64_t r = 0; r < g.eh; ++r)
    for (int64_t c = 0; c < g.ew; ++c) {
      const int64_t y = y0 + r, xx = x0 + c;
      T* d = dst + (r * g.ew + c) * C;
      if (y >= 0 && y < g.H && xx >= 0 && xx < g.W)
        std::memcpy(d, x + (y * g.W + xx) * C, sizeof(T) * C);
      else
        std::memset(d, 0, sizeof(T) * C);
    }
  std::memset(dst + g.ext() * C, 0, sizeof(T) * (rows_padded - g.ext()) * C);
}

// Per-batch packing of the key side, one entry per key tile.
template <typename T> struct PatchKeys {
  PatchTiling g;
  int64_t C, Cv, ncol, ext_pan, ldg;
  // ye_t: extended key rows as B operand of Xe . Ye^T: [tile][ext panel][C][NR]
  // ye_c: extended key rows as B operand of dGe . Ye: [tile][C panel][ext][NR]  (backward)
  // vc: values as B operand of P . v: [tile][value panel][ncol][NR]
  // vt: v^T as B operand of dO . v^T: [tile][cell panel][Cv][NR]             (backward)
  // vtt: v^T for the small-Cv rows: [Cv][tile * ncol]
  // b, n: per-cell scalars (0 on masked cells); mask: 0 or -inf; pos: image position or -1
  std::vector<T> ye_t, ye_c, vc, vt, vtt, b, n, mask;
  std::vector<int64_t> pos;
  explicit PatchKeys(const PatchTiling& g_)
      : g(g_), C(0), Cv(0), ncol(round_up(g.cells(), Tiles<T>::NR)), ext_pan(ceil_div(g.ext(), Tiles<T>::NR)),
        // the shifted reads of a key row run up to twp - tw past the extended tile
        ldg(round_up(g.ext() + g.twp, Tiles<T>::NR)) {}
};

template <typename T>
static void pack_patch_keys(const T* xk, const T* v, const T* ak, const T* mk, int64_t C,
                            int64_t Cv, bool small_cv, bool for_backward, PatchKeys<T>& kp) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  const PatchTiling& g = kp.g;
  const int64_t nt = g.tiles(), ext = g.ext(), cells = g.cells();
  kp.C = C;
  kp.Cv = Cv;
  const int64_t ncol = kp.ncol, n_cpan = ceil_div(C, NR), n_vpan = ceil_div(Cv, NR);
  kp.ye_t.assign(nt * kp.ext_pan * C * NR, T(0));
  if (for_backward) kp.ye_c.assign(nt * n_cpan * ext * NR, T(0));
  if (v && !small_cv) kp.vc.assign(nt * n_vpan * ncol * NR, T(0));
  if (v && !small_cv && for_backward) kp.vt.assign(nt * (ncol / NR) * Cv * NR, T(0));
  if (v && small_cv) kp.vtt.assign(Cv * nt * ncol, T(0));
  kp.b.assign(nt * ncol, T(0));
  kp.n.assign(nt * ncol, T(0));
  kp.mask.assign(nt * ncol, -std::numeric_limits<T>::infinity());
  kp.pos.assign(nt * ncol, -1);
  std::vector<T> Ye(round_up(ext, MR) * C), Vt(v ? ncol * Cv : 0);
  for (int64_t t = 0; t < nt; ++t) {
    gather_extended(xk, g, t, C, round_up(ext, MR), Ye.data());
    for (int64_t p = 0; p < kp.ext_pan; ++p)
      pack_row_panel_t(Ye.data(), ext, C, C, p * NR, kp.ye_t.data() + (t * kp.ext_pan + p) * C * NR);
    if (for_backward)
      for (int64_t p = 0; p < n_cpan; ++p)
        pack_col_panel(Ye.data(), ext, C, C, p * NR, kp.ye_c.data() + (t * n_cpan + p) * ext * NR);
    if (v) std::fill(Vt.begin(), Vt.end(), T(0));
    for (int64_t c = 0; c < cells; ++c) {
      const int64_t pos = g.position(t, c), i = t * ncol + c;
      if (pos < 0) continue;
      kp.pos[i] = pos;
      kp.mask[i] = 0;
      kp.b[i] = ak[pos];
      kp.n[i] = mk[pos];
      if (!v) continue;
      for (int64_t ch = 0; ch < Cv; ++ch) {
        if (small_cv) kp.vtt[ch * nt * ncol + i] = v[pos * Cv + ch];
        Vt[c * Cv + ch] = v[pos * Cv + ch];
      }
    }
    if (!v || small_cv) continue;
    for (int64_t p = 0; p < n_vpan; ++p)
      pack_col_panel(Vt.data(), ncol, Cv, Cv, p * NR, kp.vc.data() + (t * n_vpan + p) * ncol * NR);
    if (for_backward)
      for (int64_t p = 0; p < ncol / NR; ++p)
        pack_row_panel_t(Vt.data(), ncol, Cv, Cv, p * NR, kp.vt.data() + (t * (ncol / NR) + p) * Cv * NR);
  }
}

// Every image's key side (v null for the match), packed in parallel over the batch.
template <typename T>
static std::vector<PatchKeys<T>> pack_batch_keys(const T* xk, const T* v, const T* ak, const T* mk,
                                                 int64_t B, const PatchTiling& gk, int64_t C,
                                                 int64_t Cv, bool small_cv, bool for_backward,
                                                 int nthreads) {
  const int64_t Lk = gk.H * gk.W;
  std::vector<PatchKeys<T>> keys(B, PatchKeys<T>(gk));
#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    pack_patch_keys(xk + b * Lk * C, v ? v + b * Lk * Cv : nullptr, ak + b * Lk, mk + b * Lk, C, Cv,
                    small_cv, for_backward, keys[b]);
  return keys;
}

// Ge (rows_q x ldg) = Xe (rows_q x C, rows_q a multiple of MR) . Ye^T for key tile t.
template <typename T>
static void gram_block(const T* Xe, int64_t rows_q, const PatchKeys<T>& kp, int64_t t, T* Ge) {
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR;
  constexpr int64_t KC = Tiles<T>::KC;
  const int64_t C = kp.C;
  const T* ye = kp.ye_t.data() + t * kp.ext_pan * C * NR;
  for (int64_t d0 = 0; d0 < C; d0 += KC) {
    const int64_t kc = std::min(KC, C - d0);
    for (int64_t jp = 0; jp < kp.ext_pan; ++jp)
      for (int64_t it = 0; it < rows_q / MR; ++it)
        micro_kernel<T>(kc, Xe + it * MR * C + d0, C, ye + jp * C * NR + d0 * NR,
                        Ge + it * MR * kp.ldg + jp * NR, kp.ldg, d0 > 0);
  }
}

// S[u][kr twp + lc] = sum_{a, c < k} Ge[(i + a) ewq + j + c][(kr + a) ewk + c + lc],
// u = i tw + j: the k^2 diagonals of the Gram block summed, whole vectors of key columns.
// Columns from the tile's cells to ldS are zeroed (the softmax leaves -inf there, which the
// masked logit would turn into -inf * 0).
template <typename T>
static void shifted_sum(const T* Ge, int64_t ldg, const PatchTiling& q, const PatchTiling& kg,
                        int64_t k, T* Sb, int64_t ldS) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  for (int64_t i = 0; i < q.th; ++i)
    for (int64_t j = 0; j < q.tw; ++j) {
      T* s = Sb + (i * q.tw + j) * ldS;
      for (int64_t kr = 0; kr < kg.th; ++kr)
        for (int64_t lc = 0; lc < kg.twp; lc += S::W) {
          vec acc = S::splat(0);
          for (int64_t a = 0; a < k; ++a)
            for (int64_t c = 0; c < k; ++c)
              acc += S::load(Ge + ((i + a) * q.ew + j + c) * ldg + (kr + a) * kg.ew + c + lc);
          S::store(s + kr * kg.twp + lc, acc);
        }
      std::fill(s + kg.cells(), s + ldS, T(0));
    }
}

// The transpose of shifted_sum: dGe[(i + a) ewq + j + c][(kr + a) ewk + c + lc] += w[u][...].
// Masked cells of w are 0, so the whole-vector adds past a key row touch nothing.
template <typename T>
static void shifted_scatter(const T* Wb, int64_t ldS, const PatchTiling& q, const PatchTiling& kg,
                            int64_t k, T* dGe, int64_t ldg) {
  typedef Simd<T> S;
  for (int64_t i = 0; i < q.th; ++i)
    for (int64_t j = 0; j < q.tw; ++j) {
      const T* w = Wb + (i * q.tw + j) * ldS;
      for (int64_t a = 0; a < k; ++a)
        for (int64_t c = 0; c < k; ++c) {
          T* dst = dGe + ((i + a) * q.ew + j + c) * ldg + a * kg.ew + c;
          for (int64_t kr = 0; kr < kg.th; ++kr)
            for (int64_t lc = 0; lc < kg.twp; lc += S::W) {
              T* d = dst + kr * kg.ew + lc;
              S::store(d, S::load(d) + S::load(w + kr * kg.twp + lc));
            }
        }
    }
}

// One row of logits before alpha: s <- (s - D m_u n) (a_u b) + mask; with r != nullptr also
// R = s - D m_u n (the backward's a/b gradients). Not inlined, so that forward and backward
// round (and contract) the same expression identically: the backward rebuilds P from the
// forward's log-sum-exp.
template <typename T>
__attribute__((noinline)) static void patch_logit_row(T* s, T* r, int64_t ncol, T dm_u, T a_u,
                                                      const T* b, const T* n, const T* mask) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  for (int64_t j = 0; j < ncol; j += S::W) {
    const vec R = S::load(s + j) - dm_u * S::load(n + j);
    if (r) S::store(r + j, R);
    S::store(s + j, R * (a_u * S::load(b + j)) + S::load(mask + j));
  }
}

// Query-side state of one query tile: the extended rows and the rows' scalars.
template <typename T> struct PatchQueryTile {
  int64_t rows, mt, BMr, ext_r;   // cells, MR tiles, cells padded, extended rows padded
  std::vector<T> Xe, a, dm, m;
  std::vector<int64_t> pos;
};

template <typename T>
static void load_query_tile(const T* xq, const T* aq, const T* mq, const PatchTiling& g, int64_t t,
                            int64_t C, T D, PatchQueryTile<T>& qt) {
  constexpr int MR = Tiles<T>::MR;
  qt.rows = g.th * g.tw;
  qt.mt = ceil_div(qt.rows, MR);
  qt.BMr = qt.mt * MR;
  qt.ext_r = round_up(g.ext(), MR);
  qt.Xe.resize(qt.ext_r * C);
  gather_extended(xq, g, t, C, qt.ext_r, qt.Xe.data());
  qt.a.assign(qt.BMr, T(0));
  qt.dm.assign(qt.BMr, T(0));
  qt.m.assign(qt.BMr, T(0));
  qt.pos.assign(qt.BMr, -1);
  for (int64_t c = 0; c < qt.rows; ++c) {
    const int64_t pos = g.position(t, c);  // query tiles are unpadded: twp == tw
    qt.pos[c] = pos;
    if (pos < 0) continue;
    qt.a[c] = aq[pos];
    qt.m[c] = mq[pos];
    qt.dm[c] = D * mq[pos];
  }
}

// The logits of one (query tile, key tile) block into Sb (R into Rb when given).
template <typename T>
static void patch_logits_block(const PatchQueryTile<T>& qt, const PatchTiling& gq,
                               const PatchKeys<T>& kp, int64_t t, int64_t k, T* Ge, T* Sb, T* Rb) {
  gram_block(qt.Xe.data(), qt.ext_r, kp, t, Ge);
  shifted_sum(Ge, kp.ldg, gq, kp.g, k, Sb, kp.ncol);
  const int64_t off = t * kp.ncol;
  for (int64_t u = 0; u < qt.rows; ++u)
    patch_logit_row(Sb + u * kp.ncol, Rb ? Rb + u * kp.ncol : nullptr, kp.ncol, qt.dm[u], qt.a[u],
                    kp.b.data() + off, kp.n.data() + off, kp.mask.data() + off);
}

template <typename T>
void patch_attention_forward(const T* xq, const T* xk, const T* v, const T* aq, const T* mq,
                             const T* ak, const T* mk, T* out, double* lse, int64_t B, int64_t Hq,
                             int64_t Wq, int64_t Hk, int64_t Wk, int64_t C, int64_t Cv,
                             int64_t k, T alpha, int nthreads) {
  constexpr int NR = Tiles<T>::NR;
  const int64_t Lq = Hq * Wq;
  const T D = T(C * k * k);
  const PatchTiling gq = query_tiling<T>(Hq, Wq, k), gk = key_tiling<T>(Hk, Wk, k);
  const int64_t Cvp = round_up(Cv, NR), n_vpan = Cvp / NR, nqt = gq.tiles();
  const SmallCvRow<T> small_row = small_cv_row<T>(Cv);
  const std::vector<PatchKeys<T>> keys =
      pack_batch_keys(xk, v, ak, mk, B, gk, C, Cv, small_row != nullptr, false, nthreads);
  const PatchKeys<T> layout(gk);  // the packed sizes, the same for every image
  const int64_t ncol = layout.ncol, ldg = layout.ldg;

#pragma omp parallel num_threads(nthreads)
  {
    const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
    PatchQueryTile<T> qt;
    const int64_t BMr = round_up(gq.th * gq.tw, Tiles<T>::MR);
    std::vector<T> Ge(round_up(gq.ext(), Tiles<T>::MR) * ldg, T(0)), Sb(BMr * ncol, T(0));
    std::vector<T> Ob(BMr * Cvp), m(BMr), l(BMr);
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < B * nqt; ++w) {
      const int64_t b = w / nqt, tq = w % nqt;
      const PatchKeys<T>& kp = keys[b];
      load_query_tile(xq + b * Lq * C, aq + b * Lq, mq + b * Lq, gq, tq, C, D, qt);
      std::fill(Ob.begin(), Ob.end(), T(0));
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      for (int64_t t = 0; t < gk.tiles(); ++t) {
        patch_logits_block(qt, gq, kp, t, k, Ge.data(), Sb.data(), (T*)nullptr);
        online_softmax_block(Sb.data(), ncol, qt.rows, qt.mt, ncol, alpha, small_row,
                             small_row ? kp.vtt.data() + t * ncol : nullptr, gk.tiles() * ncol,
                             small_row ? nullptr : kp.vc.data() + t * n_vpan * ncol * NR, ncol * NR,
                             gk.cells(), n_vpan, Ob.data(), Cvp, m.data(), l.data());
      }
      for (int64_t r = 0; r < qt.rows; ++r) {
        const int64_t pos = qt.pos[r];
        if (pos < 0) continue;
        const T inv = T(1) / l[r];
        T* dst = out + (b * Lq + pos) * Cv;
        for (int64_t c = 0; c < Cv; ++c) dst[c] = Ob[r * Cvp + c] * inv;
        lse[b * Lq + pos] = double(m[r]) + std::log(double(l[r]));
      }
    }
  }
}

// Gradients: dxq, dxk (as the inputs), dv, and the scalars' daq, dmq (B, Lq), dak, dmk (B, Lk).
template <typename T>
void patch_attention_backward(const T* xq, const T* xk, const T* v, const T* aq, const T* mq,
                              const T* ak, const T* mk, const T* out, const double* lse,
                              const T* dlse, const T* dout, T* dxq, T* dxk, T* dv, T* daq, T* dmq,
                              T* dak, T* dmk, int64_t B, int64_t Hq, int64_t Wq, int64_t Hk,
                              int64_t Wk, int64_t C, int64_t Cv, int64_t k, T alpha, int nthreads) {
  typedef Simd<T> S;
  typedef typename S::vec vec;
  constexpr int MR = Tiles<T>::MR, NR = Tiles<T>::NR, W = S::W;
  const int64_t Lq = Hq * Wq, Lk = Hk * Wk;
  const T D = T(C * k * k);
  const PatchTiling gq = query_tiling<T>(Hq, Wq, k), gk = key_tiling<T>(Hk, Wk, k);
  const int64_t Cp = round_up(C, NR), Cvp = round_up(Cv, NR), nqt = gq.tiles(), nkt = gk.tiles();
  const SmallCvBackwardRow<T> small_row = small_cv_backward_row<T>(Cv);
  const std::vector<PatchKeys<T>> keys =
      pack_batch_keys(xk, v, ak, mk, B, gk, C, Cv, small_row != nullptr, true, nthreads);
  const PatchKeys<T> layout(gk);  // the packed sizes, the same for every image
  const int64_t ncol = layout.ncol, ldg = layout.ldg;
  const int64_t extk = gk.ext(), extk_r = round_up(extk, MR);
  const int64_t gq_cells = gq.grid_h() * gq.grid_w(), gk_cells = gk.grid_h() * gk.grid_w();
  // per-thread sums over query tiles, reduced in a fixed order: bitwise reproducible for a
  // given thread count
  // (+ MR rows: the P^T . dO tiles of the last key tile run up to MR - 1 rows past it, adding 0)
  const int64_t dv_size = small_row ? Cv * nkt * ncol : (nkt * ncol + MR) * Cvp;
  std::vector<std::vector<T>> dxq_acc(nthreads), dxk_acc(nthreads), dv_acc(nthreads),
      db_acc(nthreads), dn_acc(nthreads);

  for (int64_t b = 0; b < B; ++b) {
    const PatchKeys<T>& kp = keys[b];
    int used_threads = 1;
#pragma omp parallel num_threads(nthreads)
    {
      const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
      const int tid = omp_get_thread_num();
#pragma omp single
      used_threads = omp_get_num_threads();
      std::vector<T>& dxq_t = dxq_acc[tid];
      std::vector<T>& dxk_t = dxk_acc[tid];
      std::vector<T>& dv_t = dv_acc[tid];
      std::vector<T>& db_t = db_acc[tid];
      std::vector<T>& dn_t = dn_acc[tid];
      dxq_t.assign(gq_cells * C, T(0));
      dxk_t.assign(gk_cells * C, T(0));
      dv_t.assign(dv_size, T(0));
      db_t.assign(nkt * ncol, T(0));
      dn_t.assign(nkt * ncol, T(0));
      PatchQueryTile<T> qt;
      const int64_t BMq = round_up(gq.th * gq.tw, MR), extq_r = round_up(gq.ext(), MR);
      std::vector<T> Ge(extq_r * ldg, T(0)), dGe(extq_r * ldg, T(0)), dGt(extk_r * extq_r, T(0));
      std::vector<T> Sb(BMq * ncol, T(0)), Rb(BMq * ncol, T(0)), dPb(BMq * ncol, T(0));
      std::vector<T> Pt((ncol + MR) * BMq, T(0)), Xc(ceil_div(C, NR) * extq_r * NR);
      std::vector<T> dXe(extq_r * Cp), dYe(extk_r * Cp), dOb(BMq * Cv), dOd(Cvp * BMq);
      std::vector<T> lse_hi(BMq), lse_lo(BMq), dlse_b(BMq), delta_b(BMq), out_b(BMq * Cv);
      std::vector<T> da_b(BMq), dm_b(BMq);
      std::vector<T> outP(small_row ? 0 : Cv * NR), dOut(MR * NR);
#pragma omp for schedule(static)
      for (int64_t tq = 0; tq < nqt; ++tq) {
        load_query_tile(xq + b * Lq * C, aq + b * Lq, mq + b * Lq, gq, tq, C, D, qt);
        const int64_t rows = qt.rows, mt = qt.mt, BMr = qt.BMr;
        // the tile's rows of dO, out, lse, dlse; zero on cells outside the image, where
        // they make every gradient of the row 0
        for (int64_t r = 0; r < BMr; ++r) {
          const int64_t pos = qt.pos[r];
          const bool in = pos >= 0;
          for (int64_t c = 0; c < Cv; ++c) {
            dOb[r * Cv + c] = in ? dout[(b * Lq + pos) * Cv + c] : T(0);
            out_b[r * Cv + c] = in ? out[(b * Lq + pos) * Cv + c] : T(0);
          }
          const double L = in ? lse[b * Lq + pos] : 0.0;
          lse_hi[r] = T(L);
          lse_lo[r] = T(L - double(lse_hi[r]));
          dlse_b[r] = in ? dlse[b * Lq + pos] : T(0);
        }
        for (int64_t p = 0; p * NR < Cv; ++p) pack_col_panel(dOb.data(), BMr, Cv, Cv, p * NR, dOd.data() + p * BMr * NR);
        for (int64_t p = 0; p * NR < C; ++p) pack_col_panel(qt.Xe.data(), extq_r, C, C, p * NR, Xc.data() + p * extq_r * NR);
        if (!small_row)
          softmax_delta(dOb.data(), out_b.data(), dlse_b.data(), rows, mt, Cv, outP.data(),
                        dOut.data(), delta_b.data());
        std::fill(dXe.begin(), dXe.end(), T(0));
        std::fill(da_b.begin(), da_b.end(), T(0));
        std::fill(dm_b.begin(), dm_b.end(), T(0));
        for (int64_t t = 0; t < nkt; ++t) {
          const int64_t off = t * ncol;
          patch_logits_block(qt, gq, kp, t, k, Ge.data(), Sb.data(), Rb.data());
          if (!small_row)  // dP = dO . v^T
            for (int64_t jp = 0; jp < ncol / NR; ++jp)
              for (int64_t it = 0; it < mt; ++it)
                micro_kernel<T>(Cv, dOb.data() + it * MR * Cv, Cv,
                                kp.vt.data() + (t * (ncol / NR) + jp) * Cv * NR,
                                dPb.data() + it * MR * ncol + jp * NR, ncol, false);
          softmax_backward_block(Sb.data(), dPb.data(), ncol, rows, BMr, ncol, alpha,
                                 lse_hi.data(), lse_lo.data(), dlse_b.data(), delta_b.data(),
                                 small_row, dOb.data(), out_b.data(), Cv,
                                 small_row ? kp.vtt.data() + off : nullptr,
                                 small_row ? dv_t.data() + off : nullptr, nkt * ncol);
          // dPb holds dt, the gradient of the logits before alpha. The scalars' gradients,
          // and w = dt a_u b_v (the gradient of P) in place of dt.
          const T* bk = kp.b.data() + off;
          const T* nk = kp.n.data() + off;
          T* dbk = db_t.data() + off;
          T* dnk = dn_t.data() + off;
          for (int64_t u = 0; u < rows; ++u) {
            T* g = dPb.data() + u * ncol;
            const T* R = Rb.data() + u * ncol;
            const T au = qt.a[u], mu = qt.m[u];
            vec acc_a = S::splat(0), acc_m = S::splat(0);
            for (int64_t j = 0; j < ncol; j += W) {
              const vec gj = S::load(g + j), Rj = S::load(R + j), bj = S::load(bk + j);
              const vec wj = gj * (au * bj);
              acc_a += gj * bj * Rj;
              acc_m += wj * S::load(nk + j);
              S::store(dbk + j, S::load(dbk + j) + gj * au * Rj);
              S::store(dnk + j, S::load(dnk + j) + wj * mu);
              S::store(g + j, wj);
            }
            da_b[u] += S::hsum(acc_a);
            dm_b[u] += S::hsum(acc_m);
          }
          // dGe = the k^2 diagonals of w; dXe += dGe . Ye; dYe = dGe^T . Xe
          std::fill(dGe.begin(), dGe.end(), T(0));
          shifted_scatter(dPb.data(), ncol, gq, gk, k, dGe.data(), ldg);
          for (int64_t cp = 0; cp * NR < C; ++cp)
            for (int64_t it = 0; it < extq_r / MR; ++it)
              micro_kernel<T>(extk, dGe.data() + it * MR * ldg, ldg,
                              kp.ye_c.data() + (t * ceil_div(C, NR) + cp) * extk * NR,
                              dXe.data() + it * MR * Cp + cp * NR, Cp, true);
          for (int64_t e = 0; e < extk_r; ++e) {
            T* row = dGt.data() + e * extq_r;
            if (e < extk)
              for (int64_t i = 0; i < extq_r; ++i) row[i] = dGe[i * ldg + e];
            else
              std::fill(row, row + extq_r, T(0));
          }
          for (int64_t cp = 0; cp * NR < C; ++cp)
            for (int64_t it = 0; it < extk_r / MR; ++it)
              micro_kernel<T>(extq_r, dGt.data() + it * MR * extq_r, extq_r,
                              Xc.data() + cp * extq_r * NR, dYe.data() + it * MR * Cp + cp * NR,
                              Cp, false);
          for (int64_t e = 0; e < extk; ++e) {
            T* dst = dxk_t.data() + gk.grid_row(t, e) * C;
            const T* src = dYe.data() + e * Cp;
            for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
          }
          if (small_row) continue;
          // dv += P^T . dO (P in Sb, zero past the tile's rows)
          for (int64_t j = 0; j < ncol + MR; ++j) {
            T* p_row = Pt.data() + j * BMr;
            if (j < ncol)
              for (int64_t i = 0; i < BMr; ++i) p_row[i] = Sb[i * ncol + j];
            else
              std::fill(p_row, p_row + BMr, T(0));
          }
          for (int64_t cp = 0; cp * NR < Cv; ++cp)
            for (int64_t it = 0; it < ceil_div(ncol, MR); ++it)
              micro_kernel<T>(BMr, Pt.data() + it * MR * BMr, BMr, dOd.data() + cp * BMr * NR,
                              dv_t.data() + (off + it * MR) * Cvp + cp * NR, Cvp, true);
        }
        for (int64_t e = 0; e < gq.ext(); ++e) {
          T* dst = dxq_t.data() + gq.grid_row(tq, e) * C;
          const T* src = dXe.data() + e * Cp;
          for (int64_t c = 0; c < C; ++c) dst[c] += src[c];
        }
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t pos = qt.pos[r];
          if (pos < 0) continue;
          daq[b * Lq + pos] = da_b[r];
          dmq[b * Lq + pos] = -D * dm_b[r];
        }
      }
      // Reduce the per-thread partial sums (implicit barrier after omp for): crop the padded
      // grids, put tile-ordered keys back in place.
#pragma omp for schedule(static)
      for (int64_t y = 0; y < Hq; ++y)
        for (int64_t x = 0; x < Wq; ++x) {
          const int64_t gi = ((y + gq.p) * gq.grid_w() + x + gq.p) * C;
          T* dst = dxq + ((b * Hq + y) * Wq + x) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = dxq_acc[0][gi + c];
          for (int th = 1; th < used_threads; ++th)
            for (int64_t c = 0; c < C; ++c) dst[c] += dxq_acc[th][gi + c];
        }
#pragma omp for schedule(static)
      for (int64_t y = 0; y < Hk; ++y)
        for (int64_t x = 0; x < Wk; ++x) {
          const int64_t gi = ((y + gk.p) * gk.grid_w() + x + gk.p) * C;
          T* dst = dxk + ((b * Hk + y) * Wk + x) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] = dxk_acc[0][gi + c];
          for (int th = 1; th < used_threads; ++th)
            for (int64_t c = 0; c < C; ++c) dst[c] += dxk_acc[th][gi + c];
        }
#pragma omp for schedule(static)
      for (int64_t i = 0; i < nkt * ncol; ++i) {
        const int64_t pos = kp.pos[i];
        if (pos < 0) continue;
        T db = 0, dn = 0;
        for (int th = 0; th < used_threads; ++th) {
          db += db_acc[th][i];
          dn += dn_acc[th][i];
        }
        dak[b * Lk + pos] = db;
        dmk[b * Lk + pos] = -D * dn;
        T* dvr = dv + (b * Lk + pos) * Cv;
        for (int64_t c = 0; c < Cv; ++c) {
          // dv partials are (tile cells, Cvp) row-major, or (Cv, tiles x ncol) for small Cv
          const int64_t at = small_row ? c * nkt * ncol + i : i * Cvp + c;
          T s = 0;
          for (int th = 0; th < used_threads; ++th) s += dv_acc[th][at];
          dvr[c] = s;
        }
      }
    }
  }
}

// Best key per query: index = argmax_v t_uv (the first in image order on ties; NaN above
// every number), best = the max.
template <typename T>
void patch_match_forward(const T* xq, const T* xk, const T* aq, const T* mq, const T* ak,
                         const T* mk, int64_t* index, T* best, int64_t B, int64_t Hq, int64_t Wq,
                         int64_t Hk, int64_t Wk, int64_t C, int64_t k, int nthreads) {
  const int64_t Lq = Hq * Wq, Lk = Hk * Wk;
  const T D = T(C * k * k);
  const PatchTiling gq = query_tiling<T>(Hq, Wq, k), gk = key_tiling<T>(Hk, Wk, k);
  const int64_t nqt = gq.tiles();
  const std::vector<PatchKeys<T>> keys =
      pack_batch_keys<T>(xk, nullptr, ak, mk, B, gk, C, 0, false, false, nthreads);
  const PatchKeys<T> layout(gk);  // the packed sizes, the same for every image
  const int64_t ncol = layout.ncol, ldg = layout.ldg;
#pragma omp parallel num_threads(nthreads)
  {
    const SubnormalsFlushed flush_subnormals;  // per thread (simd.h)
    PatchQueryTile<T> qt;
    const int64_t BMr = round_up(gq.th * gq.tw, Tiles<T>::MR);
    std::vector<T> Ge(round_up(gq.ext(), Tiles<T>::MR) * ldg, T(0)), Sb(BMr * ncol, T(0)), mx(BMr);
    std::vector<int64_t> arg(BMr);
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < B * nqt; ++w) {
      const int64_t b = w / nqt, tq = w % nqt;
      const PatchKeys<T>& kp = keys[b];
      load_query_tile(xq + b * Lq * C, aq + b * Lq, mq + b * Lq, gq, tq, C, D, qt);
      std::fill(mx.begin(), mx.end(), -std::numeric_limits<T>::infinity());
      std::fill(arg.begin(), arg.end(), int64_t(Lk));
      for (int64_t t = 0; t < gk.tiles(); ++t) {
        patch_logits_block(qt, gq, kp, t, k, Ge.data(), Sb.data(), (T*)nullptr);
        for (int64_t r = 0; r < qt.rows; ++r) {
          const T* s = Sb.data() + r * ncol;
          for (int64_t c = 0; c < gk.cells(); ++c) {
            const int64_t pos = kp.pos[t * ncol + c];
            if (pos < 0) continue;
            const T x = s[c];
            const bool x_nan = x != x, m_nan = mx[r] != mx[r];
            const bool better = m_nan ? (x_nan && pos < arg[r])
                                      : (x_nan || x > mx[r] || (x == mx[r] && pos < arg[r]));
            if (better) { mx[r] = x; arg[r] = pos; }
          }
        }
      }
      for (int64_t r = 0; r < qt.rows; ++r) {
        const int64_t pos = qt.pos[r];
        if (pos < 0) continue;
        index[b * Lq + pos] = arg[r] == Lk ? 0 : arg[r];
        best[b * Lq + pos] = mx[r];
      }
    }
  }
}
