// exsynth._C_cuda: pybind11 binding of the CUDA kernels (csrc/cuda/launchers.h).
//
// Compiled by the host compiler: no torch and no CUDA device headers, only the CUDA
// runtime API. Tensors cross as raw device addresses (Tensor.data_ptr(); 0 for an
// optional tensor that is absent), the stream as an address
// (torch.cuda.current_stream().cuda_stream), the dtype as "float32" | "float16" |
// "bfloat16". Python allocates outputs and workspaces, checks shapes/devices/dtypes
// and selects the current device. The GIL is released while kernels are enqueued.
// Errors: bad arguments raise ValueError; launch failures raise RuntimeError with
// the CUDA error string.
#include <pybind11/pybind11.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/launchers.h"

namespace py = pybind11;
namespace xc = exsynth::cuda;

namespace {

using addr = std::uintptr_t;

template <typename T> T* P(addr a) { return reinterpret_cast<T*>(a); }
const void* C(addr a) { return reinterpret_cast<const void*>(a); }
void* M(addr a) { return reinterpret_cast<void*>(a); }
cudaStream_t S(addr a) { return reinterpret_cast<cudaStream_t>(a); }

xc::DType parse_dtype(const std::string& name) {
  if (name == "float32") return xc::DType::kFloat32;
  if (name == "float16") return xc::DType::kFloat16;
  if (name == "bfloat16") return xc::DType::kBFloat16;
  throw std::invalid_argument("dtype must be 'float32', 'float16' or 'bfloat16', got '" + name +
                              "'");
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Runs `launch` (which enqueues kernels and returns the launcher's status) without
// the GIL, then also reads cudaGetLastError() and raises on any failure.
template <typename F> void run(const char* op, F&& launch) {
  cudaError_t err;
  {
    py::gil_scoped_release nogil;
    err = launch();
    const cudaError_t last = cudaGetLastError();
    if (err == cudaSuccess) err = last;
  }
  if (err == cudaErrorInvalidValue)
    throw std::runtime_error(std::string("exsynth._C_cuda.") + op +
                             ": invalid argument (sizes out of range for these kernels, or more "
                             "shared memory than this GPU allows per block): " +
                             cudaGetErrorString(err));
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("exsynth._C_cuda.") + op + ": CUDA error " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "exsynth CUDA kernels (raw device pointers; see csrc/cuda/launchers.h)";
  m.attr("MAX_VALUE_CHANNELS") = py::int_(xc::kMaxValueChannels);

  m.def("runtime_version", [] {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });

  m.def(
      "corr_attention_forward",
      [](addr q, addr k, addr v, addr out, addr lse, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
         int64_t Cv, double alpha, const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(B >= 0 && Lq >= 0 && Lk >= 1 && D >= 1, "corr_attention_forward: bad sizes");
        require(Cv >= 1 && Cv <= xc::kMaxValueChannels,
                "corr_attention_forward: value channels Cv must be in [1, " +
                    std::to_string(xc::kMaxValueChannels) + "], got " + std::to_string(Cv));
        run("corr_attention_forward", [&] {
          return xc::corr_attention_forward(dt, C(q), C(k), C(v), M(out), P<double>(lse), B, Lq,
                                            Lk, D, Cv, static_cast<float>(alpha), S(stream));
        });
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("B"),
      py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("Cv"), py::arg("alpha"),
      py::arg("dtype"), py::arg("stream"));

  m.def(
      "corr_attention_backward_workspace",
      [](int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, const std::string& dtype) {
        return xc::corr_attention_backward_workspace(parse_dtype(dtype), B, Lq, Lk, D, Cv);
      },
      py::arg("B"), py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("Cv"), py::arg("dtype"));

  m.def(
      "corr_attention_backward",
      [](addr q, addr k, addr v, addr lse, addr delta, addr dout, addr dq, addr dk, addr dv,
         addr workspace, int64_t B, int64_t Lq, int64_t Lk, int64_t D, int64_t Cv, double alpha,
         const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(B >= 0 && Lq >= 0 && Lk >= 0 && D >= 1 && Cv >= 1,
                "corr_attention_backward: bad sizes");
        run("corr_attention_backward", [&] {
          return xc::corr_attention_backward(dt, C(q), C(k), C(v), P<const double>(lse),
                                             P<const float>(delta), C(dout), M(dq), M(dk), M(dv),
                                             M(workspace), B, Lq, Lk, D, Cv,
                                             static_cast<float>(alpha), S(stream));
        });
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("lse"), py::arg("delta"), py::arg("dout"),
      py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("workspace"), py::arg("B"),
      py::arg("Lq"), py::arg("Lk"), py::arg("D"), py::arg("Cv"), py::arg("alpha"),
      py::arg("dtype"), py::arg("stream"));

  m.def(
      "corr_match_forward",
      [](addr q, addr k, addr index, addr best, int64_t B, int64_t Lq, int64_t Lk, int64_t D,
         const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(B >= 0 && Lq >= 0 && Lk >= 1 && D >= 1, "corr_match_forward: bad sizes");
        run("corr_match_forward", [&] {
          return xc::corr_match_forward(dt, C(q), C(k), P<int64_t>(index), P<float>(best), B, Lq,
                                        Lk, D, S(stream));
        });
      },
      py::arg("q"), py::arg("k"), py::arg("index"), py::arg("best"), py::arg("B"), py::arg("Lq"),
      py::arg("Lk"), py::arg("D"), py::arg("dtype"), py::arg("stream"));

  m.def(
      "pono_forward",
      [](addr x, addr gamma, addr beta, addr y, addr mean, addr std_, int64_t B, int64_t Bg,
         int64_t C_, int64_t L, double eps, const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(C_ >= 2, "pono_forward: needs at least 2 channels");
        require((gamma == 0) == (beta == 0), "pono_forward: gamma and beta go together");
        run("pono_forward", [&] {
          return xc::pono_forward(dt, C(x), C(gamma), C(beta), M(y), P<float>(mean),
                                  P<float>(std_), B, Bg, C_, L, static_cast<float>(eps),
                                  S(stream));
        });
      },
      py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("y"), py::arg("mean"),
      py::arg("std"), py::arg("B"), py::arg("Bg"), py::arg("C"), py::arg("L"), py::arg("eps"),
      py::arg("dtype"), py::arg("stream"));

  m.def(
      "pono_backward",
      [](addr x, addr mean, addr std_, addr dy, addr dmean, addr dstd, addr gamma, addr dx,
         addr dgamma, addr dbeta, bool grad_gamma_fp32, int64_t B, int64_t Bg, int64_t C_,
         int64_t L, const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(C_ >= 2, "pono_backward: needs at least 2 channels");
        require(gamma == 0 || (dy != 0 && dgamma != 0 && dbeta != 0),
                "pono_backward: PN-modulate needs dout, dgamma and dbeta");
        run("pono_backward", [&] {
          return xc::pono_backward(dt, C(x), P<const float>(mean), P<const float>(std_), C(dy),
                                   P<const float>(dmean), P<const float>(dstd), C(gamma), M(dx),
                                   M(dgamma), M(dbeta), grad_gamma_fp32, B, Bg, C_, L, S(stream));
        });
      },
      py::arg("x"), py::arg("mean"), py::arg("std"), py::arg("dy"), py::arg("dmean"),
      py::arg("dstd"), py::arg("gamma"), py::arg("dx"), py::arg("dgamma"), py::arg("dbeta"),
      py::arg("grad_gamma_fp32"), py::arg("B"), py::arg("Bg"), py::arg("C"), py::arg("L"),
      py::arg("dtype"), py::arg("stream"));

  m.def(
      "msca_workspace",
      [](int64_t B, int64_t N, int64_t K, int64_t L, bool backward) {
        return xc::msca_workspace(B, N, K, L, backward);
      },
      py::arg("B"), py::arg("N"), py::arg("K"), py::arg("L"), py::arg("backward"));

  m.def(
      "msca_forward",
      [](addr F, addr S_, addr G, addr gate, addr out, addr V, addr stats, addr workspace,
         int64_t B, int64_t N, int64_t K, int64_t L, const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(B >= 1 && N >= 1 && K >= 1 && L >= 1, "msca_forward: bad sizes");
        run("msca_forward", [&] {
          return xc::msca_forward(dt, C(F), C(S_), C(G), C(gate), M(out), P<float>(V),
                                  P<float>(stats), M(workspace), B, N, K, L, S(stream));
        });
      },
      py::arg("F"), py::arg("S"), py::arg("G"), py::arg("gate"), py::arg("out"), py::arg("V"),
      py::arg("stats"), py::arg("workspace"), py::arg("B"), py::arg("N"), py::arg("K"),
      py::arg("L"), py::arg("dtype"), py::arg("stream"));

  m.def(
      "msca_backward",
      [](addr F, addr S_, addr G, addr gate, addr V, addr stats, addr dout, addr dF, addr dS,
         addr dG, addr dgate, addr workspace, int64_t B, int64_t N, int64_t K, int64_t L,
         const std::string& dtype, addr stream) {
        const xc::DType dt = parse_dtype(dtype);
        require(B >= 1 && N >= 1 && K >= 1 && L >= 1, "msca_backward: bad sizes");
        require(gate != 0 || dgate == 0, "msca_backward: dgate given without gate");
        run("msca_backward", [&] {
          return xc::msca_backward(dt, C(F), C(S_), C(G), C(gate), P<const float>(V),
                                   P<const float>(stats), C(dout), M(dF), M(dS), M(dG), M(dgate),
                                   M(workspace), B, N, K, L, S(stream));
        });
      },
      py::arg("F"), py::arg("S"), py::arg("G"), py::arg("gate"), py::arg("V"), py::arg("stats"),
      py::arg("dout"), py::arg("dF"), py::arg("dS"), py::arg("dG"), py::arg("dgate"),
      py::arg("workspace"), py::arg("B"), py::arg("N"), py::arg("K"), py::arg("L"),
      py::arg("dtype"), py::arg("stream"));
}
