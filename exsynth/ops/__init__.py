"""exsynth.ops: fused ops, each a public function with a plain-PyTorch
reference (``exsynth.ops.reference``) and backends chosen by ``backend=``."""
from ._dispatch import BackendInfo, BackendUnavailableError, backends
from ._validate import set_finite_checks
from .correlation import correlation_match, correlation_warp, cycle_warp
from .msca import msca_attention
from .normalization import pn_modulate, positional_norm

__all__ = [
    "BackendInfo",
    "BackendUnavailableError",
    "backends",
    "set_finite_checks",
    "correlation_warp",
    "cycle_warp",
    "correlation_match",
    "positional_norm",
    "pn_modulate",
    "msca_attention",
]
