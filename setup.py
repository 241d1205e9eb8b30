"""Build of exsynth's compiled parts.

- exsynth._C: C++17/OpenMP CPU kernels, always built. Each SIMD level
  (baseline, AVX2+FMA, AVX-512) is its own translation unit chosen at run
  time, so the default build needs no -march=native.
- exsynth._C_cuda: CUDA C++ kernels, built only where nvcc and a CUDA-enabled
  torch are found. EXSYNTH_CUDA=1 forces it on, EXSYNTH_CUDA=0 off.

Neither includes torch headers: kernels take raw pointers, Python wires
tensors, streams and autograd.
"""
import os
import shutil
import subprocess
import sys

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

ParallelCompile("EXSYNTH_BUILD_JOBS", default=0).install()

HERE = os.path.dirname(os.path.abspath(__file__))


# EXSYNTH_SANITIZE=1: AddressSanitizer + UBSan build of the CPU extension (CI runs the op tests
# against one; load it with libasan and libstdc++ preloaded). Any report aborts the process.
SANITIZE = os.environ.get("EXSYNTH_SANITIZE", "").lower() not in ("", "0", "off", "false", "no")
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-wrapv",
                  "-fno-sanitize-recover=undefined", "-g"]


def _cpu_extension():
    sources = ["csrc/bindings_cpu.cpp", "csrc/cpu/dispatch.cpp"] + [
        f"csrc/cpu/isa_{isa}.cpp" for isa in ("base", "avx2", "avx512")
    ]
    san = SANITIZE_FLAGS if SANITIZE else []
    return Pybind11Extension(
        "exsynth._C",
        sources,
        include_dirs=["csrc", "csrc/cpu"],
        cxx_std=17,
        # fp-contract lets the micro-kernel's a*b+c become FMAs in ISO C++ mode.
        extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=fast", *san],
        extra_link_args=["-fopenmp", *san],
    )


def _torch_cuda_version():
    """CUDA version of the torch that will import exsynth, or None.

    Under pip's build isolation torch is not importable here; ask the
    interpreter with the isolation variables removed instead.
    """
    try:
        import torch  # noqa: F401

        return torch.version.cuda
    except ImportError:
        pass
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.version.cuda)"],
            env=env, capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else "None"
    return None if value == "None" else value


def _is_cuda_home(path):
    return bool(path) and os.path.exists(os.path.join(path, "include", "cuda_runtime_api.h"))


def _cuda_home():
    """CUDA_HOME / CUDA_PATH, else the toolkit around nvcc, else /usr/local/cuda.

    nvcc on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc), so a
    candidate counts only where it has the runtime headers.
    """
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_home(os.environ.get(env)):
            return os.environ[env]
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_cuda_home(home):
            return home
    return "/usr/local/cuda" if _is_cuda_home("/usr/local/cuda") else None


def _nvcc():
    home = _cuda_home()
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _want_cuda():
    flag = os.environ.get("EXSYNTH_CUDA", "auto").lower()
    if flag in ("0", "off", "false", "no"):
        return False
    nvcc = _nvcc()
    if flag in ("1", "on", "true", "yes"):
        if nvcc is None:
            raise RuntimeError("EXSYNTH_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        return True
    return nvcc is not None and _torch_cuda_version() is not None


CUDA_SOURCES_DIR = os.path.join("csrc", "cuda")
CUDA_ARCHS = os.environ.get("EXSYNTH_CUDA_ARCHS", "80;90").split(";")


def _cuda_extension():
    return Pybind11Extension(
        "exsynth._C_cuda",
        ["csrc/bindings_cuda.cpp"],
        include_dirs=["csrc"],
        cxx_std=17,
        extra_compile_args=["-O3"],
    )


class BuildExt(build_ext):
    """Compiles .cu files with nvcc and links them into exsynth._C_cuda."""

    def build_extension(self, ext):
        if ext.name == "exsynth._C_cuda":
            nvcc = _nvcc()
            cuda_home = _cuda_home()
            if cuda_home is None:
                raise RuntimeError("CUDA runtime headers not found; set CUDA_HOME")
            objects = []
            build_dir = os.path.join(self.build_temp, "cuda")
            os.makedirs(build_dir, exist_ok=True)
            gencode = []
            for arch in CUDA_ARCHS:
                gencode += [f"-gencode=arch=compute_{arch},code=sm_{arch}"]
            for name in sorted(os.listdir(CUDA_SOURCES_DIR)):
                if not name.endswith(".cu"):
                    continue
                src = os.path.join(CUDA_SOURCES_DIR, name)
                obj = os.path.join(build_dir, name + ".o")
                # No --use_fast_math: its approximate division/sqrt and flushed
                # denormals would change PONO's statistics; kernels use fast
                # intrinsics explicitly where they are safe.
                cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Xcompiler", "-fPIC",
                       "-Icsrc", *gencode]
                print(" ".join(cmd))
                subprocess.check_call(cmd)
                objects.append(obj)
            ext.extra_objects = objects
            ext.library_dirs = [os.path.join(cuda_home, d) for d in ("lib64", "lib")]
            ext.include_dirs = ext.include_dirs + [os.path.join(cuda_home, "include")]
            ext.libraries = ["cudart"]
            ext.runtime_library_dirs = ext.library_dirs
        super().build_extension(ext)


ext_modules = [_cpu_extension()]
if os.path.isdir(CUDA_SOURCES_DIR) and any(f.endswith(".cu") for f in os.listdir(CUDA_SOURCES_DIR)):
    if _want_cuda():
        ext_modules.append(_cuda_extension())

setup(
    packages=find_packages(include=["exsynth", "exsynth.*"]) + ["exsynth.kernels"],
    package_dir={"exsynth.kernels": "kernels"},
    package_data={"exsynth": ["assets/*.pt"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
    zip_safe=False,
)
