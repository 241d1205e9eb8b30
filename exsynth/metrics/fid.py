"""FID and KID from Inception pool3 features (`exsynth.nn.inception`, the pt_inception weights).

FID (Heusel et al. 2017) as pytorch-fid computes it: the Fréchet distance between Gaussians
fitted to the two feature sets, with the unbiased covariance (N - 1). The statistics stream:
`GaussianStats` keeps the count, the sum and the sum of outer products in float64, so memory
stays at two D x D matrices (D = 2048: 32 MiB each) whatever the number of images.

The matrix square root: tr(sqrt(S1 S2)) is computed as the sum of square roots of the
eigenvalues of sqrt(S1) S2 sqrt(S1), a symmetric PSD matrix with the same spectrum as S1 S2,
in float64. This is what scipy.linalg.sqrtm(S1 @ S2).real's trace is in exact arithmetic,
without its complex intermediate (pytorch-fid discards the imaginary part, and adds eps to
the diagonals when the product is singular; here negative round-off eigenvalues are clipped
to 0 instead).

KID (Binkowski et al. 2018) as torch-fidelity computes it: the unbiased MMD^2 with the cubic
polynomial kernel k(x, y) = (x.y / D + 1)^3 over `subsets` random subsets of `subset_size`
features of each set; mean and standard deviation. It needs the features themselves
(`FeatureBank`, float32: 8 KiB per image at D = 2048).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

__all__ = ["GaussianStats", "FeatureBank", "frechet_distance", "kernel_inception_distance"]


class GaussianStats:
    """Streaming mean and covariance of feature vectors (float64)."""

    def __init__(self, dim: Optional[int] = None):
        self.n = 0
        self.dim = dim
        self._sum: Optional[np.ndarray] = None
        self._outer: Optional[np.ndarray] = None

    def add(self, features) -> None:
        f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else \
            np.asarray(features, np.float64)
        if f.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {f.shape}")
        if self.dim is None:
            self.dim = f.shape[1]
        if f.shape[1] != self.dim:
            raise ValueError(f"features have {f.shape[1]} dimensions, earlier ones {self.dim}")
        if self._sum is None:
            self._sum, self._outer = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        self._sum += f.sum(0)
        self._outer += f.T @ f
        self.n += f.shape[0]

    def mean_cov(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {self.n}")
        mu = self._sum / self.n
        cov = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, (cov + cov.T) / 2


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), in float64."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: means {mu1.shape}/{mu2.shape} and covariances {s1.shape}/{s2.shape} "
                         f"must be (D,) and (D, D)")
    r = _psd_sqrt(s1)
    m = r @ s2 @ r
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


class FeatureBank:
    """Features kept as float32 rows (for KID)."""

    def __init__(self):
        self.parts = []

    def add(self, features) -> None:
        self.parts.append(features.detach().cpu().float() if isinstance(features, torch.Tensor)
                          else torch.as_tensor(np.asarray(features, np.float32)))

    def all(self) -> torch.Tensor:
        return torch.cat(self.parts) if self.parts else torch.zeros(0, 0)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> Tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD^2 over random subsets; the subset size
    is capped by the smaller set (at least 2)."""
    x, y = real.double(), fake.double()
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(x)} and {len(y)}")
    d = x.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=g)[:m]]
        b = y[torch.randperm(len(y), generator=g)[:m]]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        mmd = ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
               + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())
        vals.append(float(mmd))
    v = np.asarray(vals)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0
