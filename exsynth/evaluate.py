"""Scoring a generator against exact ground truth (a data source with exemplar quadruples,
such as the synthetic test split)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from .inference import synthesize, visuals_of
from .metrics import psnr, ssim

__all__ = ["class_mean_colours", "evaluate"]


def class_mean_colours(dataset, samples: int = 500) -> torch.Tensor:
    """(K, 3) mean colour of each class over the first `samples` images of `dataset`:
    the best exemplar-blind per-class constant (it knows the label, never the exemplar).
    None for a dataset whose inputs are not class maps (no "label_index")."""
    K = dataset.num_classes
    total, count = torch.zeros(K, 3, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
    for i in range(min(samples, len(dataset))):
        s = dataset[i]
        if "label_index" not in s:
            return None
        idx = s["label_index"].flatten()
        total.index_add_(0, idx, s["image"].flatten(1).T.double())
        count.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))
    return (total / count.clamp_min(1)[:, None]).float()


def _batches(dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield {k: torch.stack([s[k] for s in items]) for k in ("label", "label_index", "image", "exemplar",
                                                               "exemplar_label") if k in items[0]}


@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 16, device="cpu", blind: bool = False,
             class_means: Optional[torch.Tensor] = None, baseline: Optional[nn.Module] = None,
             lpips: Optional[nn.Module] = None) -> Dict[str, Dict[str, float]]:
    """PSNR / SSIM (means over the set) of:
      model          - the generator's output for (label, exemplar[, exemplar label]);
      warped         - the exemplar aligned by the model's correspondence alone (models whose
                       registry entry lists a "warped" visual);
      const_exemplar - the same generator fed a constant (zero, i.e. mid-grey) exemplar;
      class_mean     - per-class mean colours (`class_means`, from the training split);
      baseline       - a second generator trained exemplar-blind (fed zeros), if given.
    blind: the model itself was trained exemplar-blind (fed zeros as exemplar).
    lpips: an `exsynth.metrics.LPIPS` (built from local weight files) adds LPIPS distances."""
    scores: Dict[str, list] = {}

    def add(name, fake, real):
        scores.setdefault(name + "/psnr", []).append(psnr(fake, real))
        scores.setdefault(name + "/ssim", []).append(ssim(fake, real))
        if lpips is not None:
            scores.setdefault(name + "/lpips", []).append(lpips(fake, real).float().cpu())

    model = model.to(device).eval()
    has_warped = "warped" in visuals_of(model)
    for b in _batches(dataset, batch_size):
        b = {k: v.to(device) for k, v in b.items()}
        label, image, ex, exl = b["label"], b["image"], b["exemplar"], b["exemplar_label"]
        zeros = (torch.zeros_like(ex), torch.zeros_like(exl))
        out = synthesize(model, label, *(zeros if blind else (ex, exl)), warped=has_warped)
        add("model", out["fake"], image)
        if not blind:
            if has_warped:
                add("warped", out["warped"], image)
            add("const_exemplar", synthesize(model, label, *zeros, warped=False)["fake"], image)
        if class_means is not None:
            add("class_mean", class_means.to(device)[b["label_index"]].permute(0, 3, 1, 2), image)
        if baseline is not None:
            add("baseline", synthesize(baseline.to(device).eval(), label, *zeros, warped=False)["fake"], image)
    result: Dict[str, Dict[str, float]] = {}
    for key, vals in scores.items():
        name, metric = key.split("/")
        result.setdefault(name, {})[metric] = float(torch.cat(vals).mean())
    return result
