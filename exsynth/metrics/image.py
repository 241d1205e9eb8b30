"""Image-quality metrics against exact ground truth (images in [-1, 1]).

PSNR and SSIM are computed on the [0, 1] range (peak 1): PSNR = 10 log10(1 / MSE), per image,
then averaged. SSIM is Wang et al. 2004: 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, valid positions only, averaged over channels and positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "mean_db", "LPIPS"]


def _check(fake: torch.Tensor, real: torch.Tensor, name: str) -> None:
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"{name}: fake and real must be (B, C, H, W) of one shape, got "
                         f"{tuple(fake.shape)} and {tuple(real.shape)}")


def psnr(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, (B,), for images in [-1, 1] (peak-to-peak 2, i.e. [0, 1] after mapping)."""
    _check(fake, real, "psnr")
    mse = ((fake.double() - real.double()) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-12))).float()


def _gaussian(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(fake: torch.Tensor, real: torch.Tensor, window: int = 11, sigma: float = 1.5,
         kind: str = "gaussian") -> torch.Tensor:
    """Per-image SSIM, (B,), for images in [-1, 1] (computed on [0, 1]).

    kind "gaussian": the window above (tf.image.ssim / Wang et al.); "uniform": scikit-image's
    default `structural_similarity` (a 7x7 uniform window, pass window=7; sample covariances,
    i.e. x N/(N-1); data_range 1; channels averaged)."""
    _check(fake, real, "ssim")
    if kind not in ("gaussian", "uniform"):
        raise ValueError(f"ssim: kind must be 'gaussian' or 'uniform', got {kind!r}")
    if min(fake.shape[-2:]) < window:
        raise ValueError(f"ssim: images must be at least {window}x{window}, got {tuple(fake.shape[-2:])}")
    x, y = (fake.double() + 1) / 2, (real.double() + 1) / 2
    C = x.shape[1]
    if kind == "gaussian":
        g = _gaussian(window, sigma, x.dtype, x.device)
    else:
        g = torch.full((window,), 1.0 / window, dtype=x.dtype, device=x.device)
    kh = g.view(1, 1, window, 1).expand(C, 1, window, 1)
    kw = g.view(1, 1, 1, window).expand(C, 1, 1, window)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=C), kw, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    if kind == "uniform":
        n = window * window
        sxx, syy, sxy = (t * (n / (n - 1.0)) for t in (sxx, syy, sxy))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()


def mean_db(values) -> float:
    v = [float(x) for x in values]
    return sum(v) / len(v) if v else math.nan


# ---- LPIPS (VGG16 variant), from local weight files only ----------------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_TAPS = (3, 8, 15, 22, 29)          # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in vgg16.features
_LPIPS_CHANNELS = (64, 128, 256, 512, 512)


class LPIPS(torch.nn.Module):
    """Zhang et al. 2018 LPIPS with the VGG16 backbone:
    d(x, y) = sum_l mean_hw( w_l . (n_l(x) - n_l(y))^2 ), n_l = unit-normalised relu features,
    inputs in [-1, 1] shifted/scaled as the original. Nothing is downloaded: build it with
    `LPIPS.from_files(backbone, lin)` where `backbone` is torchvision's vgg16 state dict
    (`features.N.*`) and `lin` the LPIPS linear-layer file (`lin{i}.model.1.weight`); a full
    LPIPS state dict (`net.sliceK.N.*` + `lin*`) can be given as `lin` alone."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(torch.nn.MaxPool2d(2, 2))
            else:
                layers += [torch.nn.Conv2d(cin, v, 3, padding=1), torch.nn.ReLU()]
                cin = v
        self.features = torch.nn.Sequential(*layers)
        self.lins = torch.nn.ModuleList(torch.nn.Conv2d(c, 1, 1, bias=False) for c in _LPIPS_CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, backbone=None, lin=None) -> "LPIPS":
        if lin is None:
            raise ValueError("LPIPS needs the linear-layer weights file (lin)")
        m = cls()
        feats, lins = {}, {}
        for path in [p for p in (backbone, lin) if p is not None]:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{path}: no such LPIPS weights file") from None
            except Exception as e:
                raise ValueError(f"{path}: not a readable weights file ({type(e).__name__})") from None
            if not isinstance(sd, dict):
                raise ValueError(f"{path}: expected a state dict")
            for k, v in sd.items():
                parts = k.split(".")
                if parts[0] == "features" and len(parts) == 3:
                    feats[f"{parts[1]}.{parts[2]}"] = v
                elif parts[0] == "net" and parts[1].startswith("slice") and len(parts) == 4:
                    feats[f"{parts[2]}.{parts[3]}"] = v
                elif parts[0].startswith("lin") and parts[-1] == "weight" and parts[0][3:].isdigit():
                    lins[f"{parts[0][3:]}.weight"] = v
        try:
            m.features.load_state_dict(feats, strict=True)
            m.lins.load_state_dict(lins, strict=True)
        except RuntimeError as e:
            raise ValueError(f"LPIPS weights do not fit VGG16-LPIPS: {str(e).splitlines()[0]}") from None
        return m

    def _taps(self, x):
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _LPIPS_TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
                if len(out) == len(_LPIPS_TAPS):
                    break
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """(B,) distances for images in [-1, 1]."""
        _check(fake, real, "lpips")
        d = 0
        for lin, a, b in zip(self.lins, self._taps(fake), self._taps(real)):
            d = d + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return d
