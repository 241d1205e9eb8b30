"""exsynth: exemplar-guided image synthesis on fused correspondence kernels."""

__version__ = "0.1.0"

from . import ops  # noqa: E402,F401
