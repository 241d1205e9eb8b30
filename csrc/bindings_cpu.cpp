// exsynth._C: pybind11 binding of the CPU kernels. Tensors cross as raw
// addresses (Tensor.data_ptr()) plus sizes; Python allocates and checks.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/dispatch.h"

namespace py = pybind11;
using namespace exsynth::cpu;

template <typename T> static T* P(std::uintptr_t a) { return reinterpret_cast<T*>(a); }

static bool is_double(const std::string& dtype) {
  if (dtype == "float32") return false;
  if (dtype == "float64") return true;
  throw std::invalid_argument("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "exsynth CPU kernels (C++/OpenMP, SIMD builds chosen at run time)";
  m.def("best_isa", [] { return std::string(isa_name(best_isa())); });
  m.def("active_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", &set_isa, py::arg("name"));

  m.def("corr_attention_forward",
        [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t out,
           std::uintptr_t lse, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv,
           double alpha, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            attention_forward<double>(P<double>(q), P<double>(k), P<double>(v), P<double>(out),
                                      P<double>(lse), B, Lq, Lk, D, Cv, alpha, nthreads);
          else  // lse is float64 for every dtype
            attention_forward<float>(P<float>(q), P<float>(k), P<float>(v), P<float>(out),
                                     P<double>(lse), B, Lq, Lk, D, Cv, float(alpha), nthreads);
        });

  m.def("corr_attention_backward",
        [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t out,
           std::uintptr_t lse, std::uintptr_t dlse, std::uintptr_t dout, std::uintptr_t dq,
           std::uintptr_t dk, std::uintptr_t dv, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
           int64_t Cv, double alpha, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            attention_backward<double>(P<double>(q), P<double>(k), P<double>(v), P<double>(out),
                                       P<double>(lse), P<double>(dlse), P<double>(dout),
                                       P<double>(dq), P<double>(dk), P<double>(dv), B, Lq, Lk, D,
                                       Cv, alpha, nthreads);
          else
            attention_backward<float>(P<float>(q), P<float>(k), P<float>(v), P<float>(out),
                                      P<double>(lse), P<float>(dlse), P<float>(dout), P<float>(dq),
                                      P<float>(dk), P<float>(dv), B, Lq, Lk, D, Cv, float(alpha),
                                      nthreads);
        });

  m.def("corr_match_forward",
        [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t index, std::uintptr_t best,
           int64_t B, int64_t Lq, int64_t Lk, int64_t D, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            match_forward<double>(P<double>(q), P<double>(k), P<int64_t>(index), P<double>(best),
                                  B, Lq, Lk, D, nthreads);
          else
            match_forward<float>(P<float>(q), P<float>(k), P<int64_t>(index), P<float>(best), B,
                                 Lq, Lk, D, nthreads);
        });

  // Pointers may be 0 for optional tensors (gamma/beta, dy, dmean, dstd, gate).
  m.def("pono_forward",
        [](std::uintptr_t x, std::uintptr_t gamma, std::uintptr_t beta, std::uintptr_t y,
           std::uintptr_t mean, std::uintptr_t std_, int64_t B, int64_t Bg, int64_t C, int64_t L,
           double eps, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            pono_forward<double>(P<double>(x), P<double>(gamma), P<double>(beta), P<double>(y),
                                 P<double>(mean), P<double>(std_), B, Bg, C, L, eps, nthreads);
          else
            pono_forward<float>(P<float>(x), P<float>(gamma), P<float>(beta), P<float>(y),
                                P<float>(mean), P<float>(std_), B, Bg, C, L, eps, nthreads);
        });

  m.def("pono_backward",
        [](std::uintptr_t x, std::uintptr_t mean, std::uintptr_t std_, std::uintptr_t dy,
           std::uintptr_t dmean, std::uintptr_t dstd, std::uintptr_t gamma, std::uintptr_t dx,
           std::uintptr_t dgamma, std::uintptr_t dbeta, int64_t B, int64_t Bg, int64_t C,
           int64_t L, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            pono_backward<double>(P<double>(x), P<double>(mean), P<double>(std_), P<double>(dy),
                                  P<double>(dmean), P<double>(dstd), P<double>(gamma),
                                  P<double>(dx), P<double>(dgamma), P<double>(dbeta), B, Bg, C, L,
                                  nthreads);
          else
            pono_backward<float>(P<float>(x), P<float>(mean), P<float>(std_), P<float>(dy),
                                 P<float>(dmean), P<float>(dstd), P<float>(gamma), P<float>(dx),
                                 P<float>(dgamma), P<float>(dbeta), B, Bg, C, L, nthreads);
        });

  m.def("msca_forward",
        [](std::uintptr_t F, std::uintptr_t S, std::uintptr_t G, std::uintptr_t gate,
           std::uintptr_t out, std::uintptr_t V, std::uintptr_t stats, int64_t B, int64_t N,
           int64_t K, int64_t L, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            msca_forward<double>(P<double>(F), P<double>(S), P<double>(G), P<double>(gate),
                                 P<double>(out), P<double>(V), P<double>(stats), B, N, K, L,
                                 nthreads);
          else
            msca_forward<float>(P<float>(F), P<float>(S), P<float>(G), P<float>(gate),
                                P<float>(out), P<float>(V), P<float>(stats), B, N, K, L, nthreads);
        });

  m.def("msca_backward",
        [](std::uintptr_t F, std::uintptr_t S, std::uintptr_t G, std::uintptr_t gate,
           std::uintptr_t V, std::uintptr_t stats, std::uintptr_t dout, std::uintptr_t dF,
           std::uintptr_t dS, std::uintptr_t dG, std::uintptr_t dgate, int64_t B, int64_t N,
           int64_t K, int64_t L, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            msca_backward<double>(P<double>(F), P<double>(S), P<double>(G), P<double>(gate),
                                  P<double>(V), P<double>(stats), P<double>(dout), P<double>(dF),
                                  P<double>(dS), P<double>(dG), P<double>(dgate), B, N, K, L,
                                  nthreads);
          else
            msca_backward<float>(P<float>(F), P<float>(S), P<float>(G), P<float>(gate),
                                 P<float>(V), P<float>(stats), P<float>(dout), P<float>(dF),
                                 P<float>(dS), P<float>(dG), P<float>(dgate), B, N, K, L,
                                 nthreads);
        });
}
