"""Scoring a generator on a data source's split: against exact ground truth (sources with
exemplar quadruples, such as the synthetic test split) or, for real layouts, against each
input's own photo with its listed reference as the exemplar, as the papers test."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .imageio import read_image, write_image
from .inference import synthesize, visuals_of
from .metrics import psnr, ssim

__all__ = ["class_mean_colours", "evaluate"]


def class_mean_colours(dataset, samples: int = 500) -> Optional[torch.Tensor]:
    """(K, 3) mean colour of each class over the first `samples` images of `dataset`:
    the best exemplar-blind per-class constant (it knows the label, never the exemplar).
    None for a dataset whose inputs are not class maps (no "label_index")."""
    if len(dataset) == 0 or "label_index" not in dataset[0]:
        return None
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


def _batches(dataset, batch_size: int, n: int):
    for start in range(0, n, batch_size):
        idx = range(start, min(start + batch_size, n))
        items = [dataset[i] for i in idx]
        yield list(idx), {k: torch.stack([s[k] for s in items]) for k in ("label", "label_index", "image", "exemplar",
                                                                         "exemplar_label") if k in items[0]}


def sample_name(dataset, i: int) -> str:
    """The file stem an output of sample i is saved under (its photo's, else the index)."""
    files = getattr(dataset, "image_files", None)
    return Path(files[i]).stem if files is not None else f"{i:06d}"


@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 16, device="cpu", blind: bool = False,
             class_means: Optional[torch.Tensor] = None, baseline: Optional[nn.Module] = None,
             lpips: Optional[nn.Module] = None, suite=None, save: Optional[str] = None, save_format: str = "png",
             limit: Optional[int] = None, progress: Optional[Callable[[int, int], None]] = None
             ) -> Dict[str, Dict[str, float]]:
    """PSNR / SSIM (means over the set) of:
      model          - the generator's output for (label, exemplar[, exemplar label]);
      warped         - the exemplar aligned by the model's correspondence alone (models whose
                       registry entry lists a "warped" visual);
      const_exemplar - the same generator fed a constant (zero, i.e. mid-grey) exemplar;
      class_mean     - per-class mean colours (`class_means`, from the training split);
      baseline       - a second generator trained exemplar-blind (fed zeros), if given.
    blind: the model itself was trained exemplar-blind (fed zeros as exemplar).
    lpips: an `exsynth.metrics.LPIPS` (built from local weight files) adds LPIPS distances.
    suite: an `exsynth.metrics.MetricSuite` fed the model's outputs (the papers' metrics).
    save: a folder the outputs are written to as NAME.<save_format> ("png" or "jpg"); the
      model's scores are then computed on the images read back from those files (the papers
      score saved files: JPEG's loss moves FID).
    limit: the first N samples only. progress(done, total): called after each batch."""
    scores: Dict[str, list] = {}   # Python floats: see MetricSuite (no small tensors kept across batches)

    def add(name, fake, real):
        scores.setdefault(name + "/psnr", []).extend(psnr(fake, real).tolist())
        scores.setdefault(name + "/ssim", []).extend(ssim(fake, real).tolist())
        if lpips is not None:
            scores.setdefault(name + "/lpips", []).extend(lpips(fake, real).float().cpu().tolist())

    if save_format not in ("png", "jpg"):
        raise ValueError(f"save_format must be 'png' or 'jpg', got {save_format!r}")
    model = model.to(device).eval()
    has_warped = "warped" in visuals_of(model)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    for idx, b in _batches(dataset, batch_size, total):
        b = {k: v.to(device) for k, v in b.items()}
        label, image, ex, exl = b["label"], b["image"], b["exemplar"], b["exemplar_label"]
        zeros = (torch.zeros_like(ex), torch.zeros_like(exl))
        out = synthesize(model, label, *(zeros if blind else (ex, exl)), warped=has_warped)
        fake = out["fake"]
        if save is not None:
            back = []
            for j, i in enumerate(idx):
                path = Path(save) / f"{sample_name(dataset, i)}.{save_format}"
                write_image(fake[j], path)
                back.append(read_image(path))
            fake = torch.stack(back).to(device)
        add("model", fake, image)
        if suite is not None:
            suite.add(fake=fake, real=image, exemplar=ex, label=label, exemplar_label=exl)
        if not blind:
            if has_warped:
                add("warped", out["warped"], image)
            add("const_exemplar", synthesize(model, label, *zeros, warped=False)["fake"], image)
        if class_means is not None and "label_index" in b:
            add("class_mean", class_means.to(device)[b["label_index"]].permute(0, 3, 1, 2), image)
        if baseline is not None:
            add("baseline", synthesize(baseline.to(device).eval(), label, *zeros, warped=False)["fake"], image)
        if progress is not None:
            progress(idx[-1] + 1, total)
    result: Dict[str, Dict[str, float]] = {}
    for key, vals in scores.items():
        name, metric = key.split("/")
        result.setdefault(name, {})[metric] = math.fsum(vals) / len(vals)
    return result
