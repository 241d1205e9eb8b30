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
          else
            attention_forward<float>(P<float>(q), P<float>(k), P<float>(v), P<float>(out),
                                     P<float>(lse), B, Lq, Lk, D, Cv, float(alpha), nthreads);
        });

  m.def("corr_attention_backward",
        [](std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t lse,
           std::uintptr_t delta, std::uintptr_t dout, std::uintptr_t dq, std::uintptr_t dk,
           std::uintptr_t dv, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv,
           double alpha, const std::string& dtype, int nthreads) {
          const bool dbl = is_double(dtype);
          py::gil_scoped_release nogil;
          if (dbl)
            attention_backward<double>(P<double>(q), P<double>(k), P<double>(v), P<double>(lse),
                                       P<double>(delta), P<double>(dout), P<double>(dq),
                                       P<double>(dk), P<double>(dv), B, Lq, Lk, D, Cv, alpha,
                                       nthreads);
          else
            attention_backward<float>(P<float>(q), P<float>(k), P<float>(v), P<float>(lse),
                                      P<float>(delta), P<float>(dout), P<float>(dq), P<float>(dk),
                                      P<float>(dv), B, Lq, Lk, D, Cv, float(alpha), nthreads);
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
}
