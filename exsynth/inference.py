"""Running a trained generator: outputs, warped exemplars and correspondence pictures."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .imageio import tile_rows

__all__ = ["resolve_device", "synthesize", "msca_warp", "coordinate_image", "correspondence_picture"]


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when available) or a cpu / cuda device name; ValueError if unusable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: not a device (cpu, cuda, cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name}: only cpu and cuda are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    return dev


def _check_inputs(model: nn.Module, label: torch.Tensor, exemplar: torch.Tensor,
                  exemplar_label: Optional[torch.Tensor]) -> None:
    k = model.cfg.label_channels
    if label.dim() != 4 or label.shape[1] != k:
        raise ValueError(f"label must be (B, {k}, H, W) (the model was trained with {k} classes), "
                         f"got {tuple(label.shape)}")
    if exemplar.dim() != 4 or exemplar.shape[1] != 3 or exemplar.shape[0] != label.shape[0]:
        raise ValueError(f"exemplar must be (B={label.shape[0]}, 3, H, W), got {tuple(exemplar.shape)}")
    if exemplar_label is not None and (exemplar_label.shape[1] != k or exemplar_label.shape[2:] != exemplar.shape[2:]):
        raise ValueError(f"exemplar_label must be (B, {k}, {exemplar.shape[2]}, {exemplar.shape[3]}), "
                         f"got {tuple(exemplar_label.shape)}")


def _needs_exemplar_label(model: nn.Module) -> bool:
    return getattr(model.cfg, "exemplar_label_input", True)  # MSCA-Net always uses c_2


@torch.no_grad()
def synthesize(model: nn.Module, label: torch.Tensor, exemplar: torch.Tensor,
               exemplar_label: Optional[torch.Tensor] = None, *, correspondence: bool = False) -> Dict[str, torch.Tensor]:
    """dict(fake, warped[, correspondence]) at the label's size, images in [-1, 1].

    warped: the exemplar aligned to the label by the model's own correspondence (CoCosNet:
    its correlation warp; MSCA-Net: the finest-scale attention applied to exemplar pixels),
    upsampled bilinearly to the label's size. correspondence: the exemplar's colour-coded
    coordinate image (see `coordinate_image`) warped the same way."""
    from .models import CoCosNet, MSCANet
    _check_inputs(model, label, exemplar, exemplar_label)
    if _needs_exemplar_label(model) and exemplar_label is None:
        raise ValueError("this model needs the exemplar's label map (exemplar_label)")
    model.eval()
    H, W = label.shape[-2:]
    up = lambda t: F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
    if isinstance(model, CoCosNet):
        out = model(label, exemplar, exemplar_label)
        res = dict(fake=out["fake"], warped=up(out["warped"]))
        if correspondence:
            fs = out["features_y"].shape[-2:]
            coords = coordinate_image(exemplar.shape[0], fs, exemplar.device, exemplar.dtype)
            res["correspondence"] = up(ops.correlation_warp(
                out["features_x"], out["features_y"], coords, alpha=model.cfg.alpha,
                patch_size=model.cfg.patch_size, backend=model.cfg.backend))
        return res
    if isinstance(model, MSCANet):
        out = model(label, exemplar, exemplar_label, return_attention=True)
        att = out["attention"][0]              # finest scale: alpha, beta (B, K, h, w) each
        res = dict(fake=out["fake"], warped=up(msca_warp(att, exemplar)))
        if correspondence:
            h, w = att[0].shape[-2:]
            res["correspondence"] = up(msca_warp(att, coordinate_image(exemplar.shape[0], (h, w), exemplar.device,
                                                                       exemplar.dtype)))
        return res
    raise TypeError(f"not an exsynth generator: {type(model).__name__}")


def msca_warp(attention, image: torch.Tensor) -> torch.Tensor:
    """An image carried to the target by one MSCA scale's attention (alpha, beta), each
    (B, K, h, w): out(p) = sum_k beta_k(p) sum_q alpha_k(q) image(q), image resized to (h, w).
    The feature-masking gate is left out: this shows where colours come from, not how much
    of each map the network keeps."""
    alpha, beta = attention
    B, K, h, w = alpha.shape
    img = F.interpolate(image.to(alpha.dtype), size=(h, w), mode="bilinear", align_corners=False)
    v = torch.einsum("bkq,bcq->bck", alpha.flatten(2), img.flatten(2))
    return torch.einsum("bck,bkp->bcp", v, beta.flatten(2)).reshape(B, -1, h, w)


def coordinate_image(batch: int, size, device=None, dtype=torch.float32) -> torch.Tensor:
    """(B, 3, h, w) in [-1, 1]: red grows left→right, green top→bottom, blue = 1 - mean of both,
    so every exemplar position has its own colour and a warp of it shows where each target
    pixel takes its colour from."""
    h, w = int(size[0]), int(size[1])
    x = torch.linspace(0, 1, w, device=device, dtype=dtype).view(1, w).expand(h, w)
    y = torch.linspace(0, 1, h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    img = torch.stack([x, y, 1 - (x + y) / 2]) * 2 - 1
    return img[None].expand(batch, 3, h, w).contiguous()


def correspondence_picture(exemplar: torch.Tensor, warped: torch.Tensor, correspondence: torch.Tensor) -> torch.Tensor:
    """One row per sample: exemplar | its coordinate colours | warped exemplar | warped
    coordinates (where each output pixel looks in the exemplar). (3, B*H, 4*W)."""
    B, _, H, W = warped.shape
    ex = F.interpolate(exemplar, size=(H, W), mode="bilinear", align_corners=False)
    legend = coordinate_image(B, (H, W), warped.device, warped.dtype)
    return tile_rows([ex, legend, warped, correspondence])
