"""One entry point for every metric the papers report: feed batches, read one dict.

    suite = MetricSuite(inception=load_fid_inception(path), vgg=load_vgg19(path), lpips=None)
    for batch in ...:
        suite.add(fake=out, real=photo, exemplar=ex, label=lab, exemplar_label=exl)
    scores = suite.compute()      # {"psnr": .., "ssim": .., "swd": .., "fid": .., ...}
    suite.skipped                 # {"fid": "no --inception FILE: ...", ...}

What is computed from what:
- fake and real of one shape (the output and the input's own photo): PSNR, SSIM, LPIPS (with
  its weights), semantic consistency (with VGG19 weights);
- fake, real (any count, either alone): FID and KID (with the Inception weights), SWD;
- fake with exemplar (and the label maps): style relevance (with VGG19 weights).
A metric whose weights were not given is skipped with one line naming the missing file; it is
never computed on random weights.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch

from .correspondence import semantic_consistency, style_relevance
from .fid import FeatureBank, GaussianStats, frechet_distance, kernel_inception_distance
from .image import LPIPS, psnr, ssim
from .swd import SlicedWasserstein

__all__ = ["MetricSuite", "MISSING_WEIGHTS"]

MISSING_WEIGHTS = {
    "fid": "no --inception FILE (the pt_inception-2015-12-05 weights pytorch-fid / torch-fidelity use): FID and "
           "KID skipped",
    "vgg": "no --vgg FILE (ImageNet VGG19 weights): semantic consistency and style relevance skipped",
    "lpips": "no --lpips-lin FILE (LPIPS linear weights; --lpips-vgg16 for the backbone): LPIPS skipped",
}


class MetricSuite:
    """See the module docstring. inception: an `exsynth.nn.inception.FIDInceptionV3` (None: FID
    skipped); vgg: `exsynth.nn.load_vgg19(path)` (None: the VGG metrics skipped); lpips: an
    `exsynth.metrics.LPIPS` (None: skipped); kid: also KID (keeps the Inception features);
    swd: compute SWD; dense: inputs are not class maps (style relevance on whole images);
    seed: SWD's random patches and directions, KID's subsets."""

    def __init__(self, *, inception=None, vgg=None, lpips: Optional[LPIPS] = None, kid: bool = False,
                 swd: bool = True, dense: bool = False, seed: int = 0, device="cpu"):
        self.device = torch.device(device)
        self.inception = None if inception is None else inception.to(self.device).eval()
        self.vgg = None if vgg is None else vgg.to(self.device).eval()
        self.lpips = None if lpips is None else lpips.to(self.device).eval()
        self.kid, self.dense, self.seed = bool(kid), bool(dense), int(seed)
        self.skipped: Dict[str, str] = {}
        if inception is None:
            self.skipped["fid"] = MISSING_WEIGHTS["fid"]
        if vgg is None:
            self.skipped["vgg"] = MISSING_WEIGHTS["vgg"]
        if lpips is None:
            self.skipped["lpips"] = MISSING_WEIGHTS["lpips"]
        self._stats = {"real": GaussianStats(), "fake": GaussianStats()}
        self._bank = {"real": FeatureBank(), "fake": FeatureBank()}
        self._swd = SlicedWasserstein(seed) if swd else None
        # per-image scores as Python floats: small tensors kept alive across batches pin glibc's
        # heap under the large per-batch temporaries (RSS grew ~40 MiB per 1,000 images)
        self._per_image: Dict[str, List[float]] = {}
        self.counts = {"real": 0, "fake": 0, "pairs": 0, "style": 0, "style_no_shared_class": 0}

    def _keep(self, name: str, values: torch.Tensor) -> None:
        self._per_image.setdefault(name, []).extend(values.detach().double().cpu().tolist())

    def _distribution(self, which: str, images: torch.Tensor) -> None:
        self.counts[which] += images.shape[0]
        if self._swd is not None:
            (self._swd.add_real if which == "real" else self._swd.add_fake)(images)
        if self.inception is not None:
            f = self.inception(images)
            self._stats[which].add(f)
            if self.kid:
                self._bank[which].add(f)

    @torch.no_grad()
    def add(self, fake: Optional[torch.Tensor] = None, real: Optional[torch.Tensor] = None, *,
            exemplar: Optional[torch.Tensor] = None, label: Optional[torch.Tensor] = None,
            exemplar_label: Optional[torch.Tensor] = None) -> None:
        """One batch (images in [-1, 1], (B, 3, H, W)); see the module docstring for what each
        combination adds to."""
        for name, t in (("fake", fake), ("real", real), ("exemplar", exemplar)):
            if t is not None and (t.dim() != 4 or t.shape[1] != 3):
                raise ValueError(f"MetricSuite.add: {name} must be (B, 3, H, W) images, got {tuple(t.shape)}")
        fake = None if fake is None else fake.to(self.device).float()
        real = None if real is None else real.to(self.device).float()
        if fake is not None:
            self._distribution("fake", fake)
        if real is not None:
            self._distribution("real", real)
        if fake is not None and real is not None and fake.shape == real.shape:
            self.counts["pairs"] += fake.shape[0]
            self._keep("psnr", psnr(fake, real))
            self._keep("ssim", ssim(fake, real))
            if self.lpips is not None:
                self._keep("lpips", self.lpips(fake, real))
            if self.vgg is not None:
                self._keep("semantic_consistency", semantic_consistency(self.vgg, fake, real))
        if fake is not None and exemplar is not None and self.vgg is not None:
            ex = exemplar.to(self.device).float()
            s = style_relevance(self.vgg, fake, ex, None if label is None else label.to(self.device),
                                None if exemplar_label is None else exemplar_label.to(self.device), dense=self.dense)
            ok = ~torch.isnan(s["color"])
            self.counts["style"] += int(ok.sum())
            self.counts["style_no_shared_class"] += int((~ok).sum())
            for k, v in s.items():
                self._keep(f"style_{k}", v[ok])

    def compute(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for name, values in self._per_image.items():
            if values:
                out[name] = math.fsum(values) / len(values)
        if self._swd is not None and self.counts["real"] and self.counts["fake"]:
            out.update(self._swd.compute())
        if self.inception is not None and self.counts["real"] >= 2 and self.counts["fake"] >= 2:
            mr, sr = self._stats["real"].mean_cov()
            mf, sf = self._stats["fake"].mean_cov()
            out["fid"] = frechet_distance(mf, sf, mr, sr)
            if self.kid:
                m, s = kernel_inception_distance(self._bank["real"].all(), self._bank["fake"].all(), seed=self.seed)
                out["kid"], out["kid_std"] = m, s
        return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}
