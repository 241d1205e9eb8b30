"""CoCosNet's semantic consistency (Table 2) and style relevance (Table 3), from VGG19 features
(`exsynth.nn.load_vgg19`, ImageNet weights from a local file).

The paper (Sec. 4) gives the layers and leaves the pooling open; the definitions used here:

semantic consistency: for each of relu3_2, relu4_2, relu5_2, the cosine similarity of the
    flattened (C*H*W) feature maps of the output and the ground-truth photo of the input;
    the mean over the three layers, then over the images. An image with itself scores 1.

style relevance (colour: relu1_2, texture: relu2_2): the label maps of the input (which the
    output follows) and of the exemplar are resized (nearest) to the layer's resolution; for
    every class present in both, the channel-wise mean feature of the output over the
    input's region of that class and of the exemplar over the exemplar's region of that class;
    the cosine similarity of the two means, averaged over the shared classes (unweighted),
    then over the images. Images whose maps share no class are left out (and counted). Dense
    inputs (edges, pose: no classes) use the whole image as one region.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["SEMANTIC_LAYERS", "STYLE_LAYERS", "semantic_consistency", "style_relevance"]

SEMANTIC_LAYERS = ("relu3_2", "relu4_2", "relu5_2")
STYLE_LAYERS = {"color": "relu1_2", "texture": "relu2_2"}


@torch.no_grad()
def semantic_consistency(vgg, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B,) per-image scores (see the module docstring); images in [-1, 1]."""
    if fake.shape != real.shape or fake.dim() != 4:
        raise ValueError(f"semantic_consistency: fake and real must be (B, 3, H, W) of one shape, got "
                         f"{tuple(fake.shape)} and {tuple(real.shape)}")
    ff, fr = vgg(fake, SEMANTIC_LAYERS), vgg(real, SEMANTIC_LAYERS)
    sims = [F.cosine_similarity(ff[n].flatten(1).double(), fr[n].flatten(1).double(), dim=1, eps=1e-12)
            for n in SEMANTIC_LAYERS]
    return torch.stack(sims).mean(0).float()


@torch.no_grad()
def style_relevance(vgg, fake: torch.Tensor, exemplar: torch.Tensor, label: Optional[torch.Tensor] = None,
                    exemplar_label: Optional[torch.Tensor] = None, *, dense: bool = False) -> Dict[str, torch.Tensor]:
    """{"color": (B,), "texture": (B,)} per-image scores, NaN where the two label maps share no
    class; labels (B, K, H, W) one-hot (None or dense=True: one region, the whole image)."""
    if fake.dim() != 4 or exemplar.dim() != 4 or fake.shape[:2] != exemplar.shape[:2]:
        raise ValueError(f"style_relevance: fake and exemplar must be (B, 3, H, W), got {tuple(fake.shape)} and "
                         f"{tuple(exemplar.shape)}")
    B = fake.shape[0]
    one_region = dense or label is None or exemplar_label is None
    if one_region:
        li = torch.zeros(B, *fake.shape[2:], dtype=torch.long, device=fake.device)
        le = torch.zeros(B, *exemplar.shape[2:], dtype=torch.long, device=exemplar.device)
        K = 1
    else:
        li, le, K = label.argmax(1), exemplar_label.argmax(1), label.shape[1]
    layers = tuple(STYLE_LAYERS.values())
    ff, fe = vgg(fake, layers), vgg(exemplar, layers)
    out = {}
    for name, layer in STYLE_LAYERS.items():
        a, b = ff[layer].double(), fe[layer].double()
        ma = F.interpolate(li[:, None].float(), size=a.shape[-2:], mode="nearest")[:, 0].long()
        mb = F.interpolate(le[:, None].float(), size=b.shape[-2:], mode="nearest")[:, 0].long()
        oa = F.one_hot(ma, K).flatten(1, 2).double()           # (B, h*w, K)
        ob = F.one_hot(mb, K).flatten(1, 2).double()
        na, nb = oa.sum(1), ob.sum(1)                           # (B, K) pixels per class
        mean_a = torch.einsum("bcp,bpk->bkc", a.flatten(2), oa) / na.clamp_min(1)[..., None]
        mean_b = torch.einsum("bcp,bpk->bkc", b.flatten(2), ob) / nb.clamp_min(1)[..., None]
        shared = (na > 0) & (nb > 0)
        cos = F.cosine_similarity(mean_a, mean_b, dim=2, eps=1e-12)
        score = (cos * shared).sum(1) / shared.sum(1).clamp_min(1)
        score[shared.sum(1) == 0] = float("nan")
        out[name] = score.float()
    return out
