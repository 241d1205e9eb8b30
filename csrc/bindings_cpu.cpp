// exsynth._C: pybind11 binding of the CPU kernels (csrc/cpu/kernels.h). Tensors cross as raw
// addresses (Tensor.data_ptr(); 0 for an optional tensor that is absent) plus sizes, the
// scalar type as "float32" | "float64"; Python allocates and checks. log-sum-exps are float64
// for every dtype. The GIL is released while a kernel runs.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/dispatch.h"

namespace py = pybind11;
using namespace exsynth::cpu;
using addr = std::uintptr_t;

namespace {

template <typename T> T* P(addr a) { return reinterpret_cast<T*>(a); }

// Calls run(T{}) with T the kernels' scalar type named by `dtype`, without the GIL.
template <typename F> void by_dtype(const std::string& dtype, F&& run) {
  const bool dbl = dtype == "float64";
  if (!dbl && dtype != "float32")
    throw std::invalid_argument("dtype must be 'float32' or 'float64', got '" + dtype + "'");
  py::gil_scoped_release nogil;
  if (dbl) run(double{});
  else run(float{});
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "exsynth CPU kernels (C++/OpenMP, SIMD builds chosen at run time)";
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", &set_isa, py::arg("name"));

  m.def("corr_attention_forward",
        [](addr q, addr k, addr v, addr out, addr lse, int64_t B, int64_t Lq, int64_t Lk,
           int64_t D, int64_t Cv, double alpha, const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            attention_forward<T>(P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<double>(lse), B, Lq, Lk,
                                 D, Cv, T(alpha), nthreads);
          });
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("B"),
        py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("Cv"), py::arg("alpha"),
        py::arg("dtype"), py::arg("nthreads"));

  m.def("corr_attention_backward",
        [](addr q, addr k, addr v, addr out, addr lse, addr dlse, addr dout, addr dq, addr dk,
           addr dv, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, double alpha,
           const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            attention_backward<T>(P<T>(q), P<T>(k), P<T>(v), P<T>(out), P<double>(lse),
                                  P<T>(dlse), P<T>(dout), P<T>(dq), P<T>(dk), P<T>(dv), B, Lq,
                                  Lk, D, Cv, T(alpha), nthreads);
          });
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("dlse"),
        py::arg("dout"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("B"),
        py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("Cv"), py::arg("alpha"),
        py::arg("dtype"), py::arg("nthreads"));

  m.def("corr_match_forward",
        [](addr q, addr k, addr index, addr best, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
           const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            match_forward<T>(P<T>(q), P<T>(k), P<int64_t>(index), P<T>(best), B, Lq, Lk, D,
                             nthreads);
          });
        },
        py::arg("q"), py::arg("k"), py::arg("index"), py::arg("best"), py::arg("B"),
        py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("dtype"), py::arg("nthreads"));

  // k x k patches through the pixel Gram matrix: x (B, H, W, C) channels last, per-position
  // scale a and mean m (B, H W).
  m.def("corr_patch_attention_forward",
        [](addr xq, addr xk, addr v, addr aq, addr mq, addr ak, addr mk, addr out, addr lse,
           int64_t B, int64_t Hq, int64_t Wq, int64_t Hk, int64_t Wk, int64_t C, int64_t Cv,
           int64_t k, double alpha, const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            patch_attention_forward<T>(P<T>(xq), P<T>(xk), P<T>(v), P<T>(aq), P<T>(mq), P<T>(ak),
                                       P<T>(mk), P<T>(out), P<double>(lse), B, Hq, Wq, Hk, Wk, C,
                                       Cv, k, T(alpha), nthreads);
          });
        },
        py::arg("xq"), py::arg("xk"), py::arg("v"), py::arg("aq"), py::arg("mq"), py::arg("ak"),
        py::arg("mk"), py::arg("out"), py::arg("lse"), py::arg("B"), py::arg("Hq"),
        py::arg("Wq"), py::arg("Hk"), py::arg("Wk"), py::arg("C"), py::arg("Cv"), py::arg("k"),
        py::arg("alpha"), py::arg("dtype"), py::arg("nthreads"));

  m.def("corr_patch_attention_backward",
        [](addr xq, addr xk, addr v, addr aq, addr mq, addr ak, addr mk, addr out, addr lse,
           addr dlse, addr dout, addr dxq, addr dxk, addr dv, addr daq, addr dmq, addr dak,
           addr dmk, int64_t B, int64_t Hq, int64_t Wq, int64_t Hk, int64_t Wk, int64_t C,
           int64_t Cv, int64_t k, double alpha, const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            patch_attention_backward<T>(P<T>(xq), P<T>(xk), P<T>(v), P<T>(aq), P<T>(mq),
                                        P<T>(ak), P<T>(mk), P<T>(out), P<double>(lse),
                                        P<T>(dlse), P<T>(dout), P<T>(dxq), P<T>(dxk), P<T>(dv),
                                        P<T>(daq), P<T>(dmq), P<T>(dak), P<T>(dmk), B, Hq, Wq,
                                        Hk, Wk, C, Cv, k, T(alpha), nthreads);
          });
        },
        py::arg("xq"), py::arg("xk"), py::arg("v"), py::arg("aq"), py::arg("mq"), py::arg("ak"),
        py::arg("mk"), py::arg("out"), py::arg("lse"), py::arg("dlse"), py::arg("dout"),
        py::arg("dxq"), py::arg("dxk"), py::arg("dv"), py::arg("daq"), py::arg("dmq"),
        py::arg("dak"), py::arg("dmk"), py::arg("B"), py::arg("Hq"), py::arg("Wq"),
        py::arg("Hk"), py::arg("Wk"), py::arg("C"), py::arg("Cv"), py::arg("k"),
        py::arg("alpha"), py::arg("dtype"), py::arg("nthreads"));

  m.def("corr_patch_match_forward",
        [](addr xq, addr xk, addr aq, addr mq, addr ak, addr mk, addr index, addr best,
           int64_t B, int64_t Hq, int64_t Wq, int64_t Hk, int64_t Wk, int64_t C, int64_t k,
           const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            patch_match_forward<T>(P<T>(xq), P<T>(xk), P<T>(aq), P<T>(mq), P<T>(ak), P<T>(mk),
                                   P<int64_t>(index), P<T>(best), B, Hq, Wq, Hk, Wk, C, k,
                                   nthreads);
          });
        },
        py::arg("xq"), py::arg("xk"), py::arg("aq"), py::arg("mq"), py::arg("ak"), py::arg("mk"),
        py::arg("index"), py::arg("best"), py::arg("B"), py::arg("Hq"), py::arg("Wq"),
        py::arg("Hk"), py::arg("Wk"), py::arg("C"), py::arg("k"), py::arg("dtype"),
        py::arg("nthreads"));

  m.def("pono_forward",
        [](addr x, addr gamma, addr beta, addr y, addr mean, addr std_, int64_t B, int64_t Bg,
           int64_t C, int64_t L, double eps, const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            pono_forward<T>(P<T>(x), P<T>(gamma), P<T>(beta), P<T>(y), P<T>(mean), P<T>(std_), B,
                            Bg, C, L, eps, nthreads);
          });
        },
        py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("y"), py::arg("mean"),
        py::arg("std"), py::arg("B"), py::arg("Bg"), py::arg("C"), py::arg("L"), py::arg("eps"),
        py::arg("dtype"), py::arg("nthreads"));

  m.def("pono_backward",
        [](addr x, addr mean, addr std_, addr dy, addr dmean, addr dstd, addr gamma, addr dx,
           addr dgamma, addr dbeta, int64_t B, int64_t Bg, int64_t C, int64_t L,
           const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            pono_backward<T>(P<T>(x), P<T>(mean), P<T>(std_), P<T>(dy), P<T>(dmean), P<T>(dstd),
                             P<T>(gamma), P<T>(dx), P<T>(dgamma), P<T>(dbeta), B, Bg, C, L,
                             nthreads);
          });
        },
        py::arg("x"), py::arg("mean"), py::arg("std"), py::arg("dy"), py::arg("dmean"),
        py::arg("dstd"), py::arg("gamma"), py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"),
        py::arg("B"), py::arg("Bg"), py::arg("C"), py::arg("L"), py::arg("dtype"),
        py::arg("nthreads"));

  m.def("msca_forward",
        [](addr F, addr S, addr G, addr gate, addr out, addr V, addr stats, int64_t B, int64_t N,
           int64_t K, int64_t L, const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            msca_forward<T>(P<T>(F), P<T>(S), P<T>(G), P<T>(gate), P<T>(out), P<T>(V),
                            P<T>(stats), B, N, K, L, nthreads);
          });
        },
        py::arg("F"), py::arg("S"), py::arg("G"), py::arg("gate"), py::arg("out"), py::arg("V"),
        py::arg("stats"), py::arg("B"), py::arg("N"), py::arg("K"), py::arg("L"),
        py::arg("dtype"), py::arg("nthreads"));

  m.def("msca_backward",
        [](addr F, addr S, addr G, addr gate, addr V, addr stats, addr dout, addr dF, addr dS,
           addr dG, addr dgate, int64_t B, int64_t N, int64_t K, int64_t L,
           const std::string& dtype, int nthreads) {
          by_dtype(dtype, [&](auto t) {
            using T = decltype(t);
            msca_backward<T>(P<T>(F), P<T>(S), P<T>(G), P<T>(gate), P<T>(V), P<T>(stats),
                             P<T>(dout), P<T>(dF), P<T>(dS), P<T>(dG), P<T>(dgate), B, N, K, L,
                             nthreads);
          });
        },
        py::arg("F"), py::arg("S"), py::arg("G"), py::arg("gate"), py::arg("V"), py::arg("stats"),
        py::arg("dout"), py::arg("dF"), py::arg("dS"), py::arg("dG"), py::arg("dgate"),
        py::arg("B"), py::arg("N"), py::arg("K"), py::arg("L"), py::arg("dtype"),
        py::arg("nthreads"));
}
