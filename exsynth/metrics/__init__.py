"""exsynth.metrics: the papers' metrics, one file per family.

- `image`: PSNR, SSIM, LPIPS (pairs of images against exact ground truth);
- `fid`: FID and KID from Inception features (`exsynth.nn.inception`, local weights);
- `swd`: PGGAN's sliced Wasserstein distance (CoCosNet's SWD), no weights;
- `correspondence`: CoCosNet's semantic consistency and style relevance (VGG19 weights);
- `suite`: `MetricSuite`, the one entry point `exsynth eval` feeds.
"""
from .correspondence import semantic_consistency, style_relevance
from .fid import GaussianStats, frechet_distance, kernel_inception_distance
from .image import LPIPS, mean_db, psnr, ssim
from .suite import MISSING_WEIGHTS, MetricSuite
from .swd import SlicedWasserstein, laplacian_pyramid

__all__ = ["psnr", "ssim", "mean_db", "LPIPS", "GaussianStats", "frechet_distance", "kernel_inception_distance",
           "SlicedWasserstein", "laplacian_pyramid", "semantic_consistency", "style_relevance", "MetricSuite",
           "MISSING_WEIGHTS"]
