"""Running a trained generator: outputs, warped exemplars and correspondence pictures.

What a model can show beside its output (a warped exemplar, a correspondence picture) is
declared by its registry entry (`ModelSpec.visuals`, `ModelSpec.run`); nothing here knows a
model by name.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .devices import resolve_device
from .imageio import tile_rows
from .registry import spec_of
from .visuals import coordinate_image

__all__ = ["resolve_device", "synthesize", "direction_options", "coordinate_image", "correspondence_picture", "needs_exemplar_label",
           "visuals_of"]


def needs_exemplar_label(model: nn.Module) -> bool:
    """Whether `model` needs the exemplar's label map to synthesize."""
    return bool(spec_of(model).needs_exemplar_label(model.cfg))


def visuals_of(model: nn.Module):
    """What `synthesize` can return beside "fake" for this model ("warped", "correspondence")."""
    return tuple(spec_of(model).visuals)


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


def direction_options(model: nn.Module, direction: Optional[str]) -> Dict[str, str]:
    """The keyword `run` takes for `direction` (none for None); ValueError when the model does
    not translate that way."""
    if direction is None:
        return {}
    spec = spec_of(model)
    if direction not in spec.directions:
        raise ValueError(f"direction {direction!r}: the {spec.name} model translates "
                         + (f"in the directions {list(spec.directions)}" if spec.directions else "one way only"))
    return {"direction": direction}


@torch.no_grad()
def synthesize(model: nn.Module, label: torch.Tensor, exemplar: torch.Tensor,
               exemplar_label: Optional[torch.Tensor] = None, *, correspondence: bool = False,
               warped: bool = True, direction: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """dict(fake[, warped][, correspondence]) at the label's size, images in [-1, 1].

    warped (for models whose spec lists it): the exemplar aligned to the label by the model's
    own correspondence, upsampled bilinearly to the label's size. correspondence: the
    exemplar's colour-coded coordinate image (see `coordinate_image`) warped the same way;
    asking for it from a model without one raises ValueError. direction: for a two-domain model,
    one of its spec's `directions` ("a2b", "b2a"; None: the first)."""
    spec = spec_of(model)
    extra = direction_options(model, direction)
    _check_inputs(model, label, exemplar, exemplar_label)
    if spec.needs_exemplar_label(model.cfg) and exemplar_label is None:
        raise ValueError("this model needs the exemplar's label map (exemplar_label)")
    wanted = tuple(v for v, on in (("warped", warped), ("correspondence", correspondence)) if on)
    if correspondence and "correspondence" not in spec.visuals:
        raise ValueError(f"the {spec.name} model has no correspondence picture (it shows {list(spec.visuals)})")
    model.eval()
    H, W = label.shape[-2:]
    out = spec.run(model, label, exemplar, exemplar_label, visuals=wanted, **extra)
    res = dict(fake=out["fake"])
    for key in wanted:
        if key in out:
            t = out[key]
            res[key] = t if t.shape[-2:] == (H, W) else F.interpolate(t, size=(H, W), mode="bilinear",
                                                                      align_corners=False)
    return res


def correspondence_picture(exemplar: torch.Tensor, warped: torch.Tensor, correspondence: torch.Tensor) -> torch.Tensor:
    """One row per sample: exemplar | its coordinate colours | warped exemplar | warped
    coordinates (where each output pixel looks in the exemplar). (3, B*H, 4*W)."""
    B, _, H, W = warped.shape
    ex = F.interpolate(exemplar, size=(H, W), mode="bilinear", align_corners=False)
    legend = coordinate_image(B, (H, W), warped.device, warped.dtype)
    return tile_rows([ex, legend, warped, correspondence])
