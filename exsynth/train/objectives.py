"""Per-model loss computation for one training step.

An objective turns a batch into the generator's weighted loss terms and, when a
discriminator is used, the discriminator's loss. Weights of 0 skip a term entirely.
Randomness (pseudo-exemplar distortion, crop positions) comes from the generator passed
in, which the trainer seeds from (seed, step): a resumed run draws the same numbers.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
from ..inference import msca_warp
from ..models import distort_exemplar, reconstruction_losses

__all__ = ["CoCosNetObjective", "MSCAObjective", "Terms"]

Terms = Dict[str, torch.Tensor]


def _weighted(terms: Terms, weights: Dict[str, float]) -> torch.Tensor:
    total = None
    for k, v in terms.items():
        t = weights[k] * v
        total = t if total is None else total + t
    return total


class _Objective:
    def __init__(self, model: nn.Module, weights: Dict[str, float], supervision: str, *,
                 discriminator: Optional[nn.Module] = None, vgg: Optional[nn.Module] = None, blind: bool = False):
        self.model, self.weights, self.supervision = model, weights, supervision
        self.discriminator, self.vgg, self.blind = discriminator, vgg, blind

    def on(self, name: str) -> bool:
        return self.weights.get(name, 0.0) != 0.0

    def inputs(self, batch, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label, image, exemplar, exemplar_label) for this step."""
        label, image = batch["label"], batch["image"]
        if self.supervision == "pseudo" or "exemplar" not in batch:
            # one affine draw for photo and label, so the exemplar's label stays aligned
            both = distort_exemplar(torch.cat([image, label], 1), gen)
            exemplar, exemplar_label = both[:, :image.shape[1]], both[:, image.shape[1]:]
        else:
            exemplar, exemplar_label = batch["exemplar"], batch["exemplar_label"]
        if self.blind:
            exemplar, exemplar_label = torch.zeros_like(exemplar), torch.zeros_like(exemplar_label)
        return label, image, exemplar, exemplar_label

    def _gan_terms(self, terms: Terms, label: torch.Tensor, fake: torch.Tensor, image: torch.Tensor) -> None:
        if self.discriminator is None or not (self.on("adv") or self.on("gan_feat")):
            return
        fake_pred = self.discriminator(label, fake)
        if self.on("adv"):
            terms["adv"] = L.hinge_g_loss(fake_pred)
        if self.on("gan_feat"):
            with torch.no_grad():
                real_pred = self.discriminator(label, image)
            terms["gan_feat"] = L.gan_feature_matching_loss(fake_pred, real_pred)

    def pretraining(self, step: int) -> bool:
        """True while only a pre-training loss is optimised (no GAN, no discriminator step)."""
        return False

    def discriminator_loss(self, label: torch.Tensor, image: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        d = self.discriminator
        return L.hinge_d_loss(d(label, image), d(label, fake.detach()))

    def _vgg_terms(self, terms: Terms, fake: torch.Tensor, image: torch.Tensor) -> None:
        if self.vgg is None:
            return
        if self.on("feat"):
            terms["feat"] = self.vgg.feature_matching(fake, image)
        if self.on("perc"):
            terms["perc"] = self.vgg.perceptual(fake, image)


class CoCosNetObjective(_Objective):
    """CoCosNet Eq. 8-14: VGG feature matching / perceptual / contextual, domain alignment,
    cycle L_reg, hinge GAN + GAN feature matching; plus an L1 on the output, the warp-self
    L1 (warped exemplar vs. the downsampled ground truth, the released code's
    `weight_warp_self`) and the mask warm-up (the exemplar's one-hot label warped with the
    same correspondence, cross-entropy against the input label)."""

    def __init__(self, *args, mask_warmup_steps: Optional[int] = None, **kw):
        super().__init__(*args, **kw)
        self.mask_warmup_steps = mask_warmup_steps

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        label, image, exemplar, exemplar_label = self.inputs(batch, gen)
        use_mask = self.on("mask") and (self.mask_warmup_steps is None or step < self.mask_warmup_steps)
        needs_ex_label = use_mask or self.model.cfg.exemplar_label_input
        out = self.model(label, exemplar, exemplar_label if needs_ex_label else None)
        fake = out["fake"]
        terms: Terms = {}
        if self.on("l1"):
            terms["l1"] = F.l1_loss(fake, image)
        self._vgg_terms(terms, fake, image)
        if self.vgg is not None and self.on("context"):
            terms["context"] = self.vgg.contextual(fake, exemplar)
        if self.on("domain"):
            xa, yb = self.model.align_features(label, image, label)
            terms["domain"] = F.l1_loss(xa, yb)
        if self.on("reg"):
            terms["reg"] = F.l1_loss(out["cycle"], out["exemplar_small"])
        size = out["warped"].shape[-2:]
        if self.on("warp"):
            terms["warp"] = F.l1_loss(out["warped"], F.adaptive_avg_pool2d(image, size))
        if use_mask:
            # in float32 even under autocast: a bf16 log of small probabilities is coarse
            target = F.adaptive_avg_pool2d(label.float(), size)
            terms["mask"] = -(target * torch.log(out["warped_label"].float().clamp_min(1e-6))).sum(1).mean()
        self._gan_terms(terms, label, fake, image)
        visuals = dict(label=label, exemplar=exemplar, warped=out["warped"], fake=fake, image=image)
        return _weighted(terms, self.weights), terms, visuals


class MSCAObjective(_Objective):
    """MSCA-Net: "pair" supervision is L1 (+ VGG) of G(c, x_exemplar, c_exemplar) against the
    ground truth; "self" is Sec. 3.4's patch cross-reconstruction + global self-reconstruction
    (Eq. 9-11, `exsynth.models.reconstruction_losses`); both add the GAN terms (Eq. 12)."""

    def __init__(self, *args, attn_pretrain_steps: int = 0, **kw):
        super().__init__(*args, **kw)
        self.attn_pretrain_steps = attn_pretrain_steps
        if (self.on("attn") or attn_pretrain_steps) and self.model.attention_decoder is None:
            raise ValueError("the attn loss (attention pre-training) needs the model option attention_decoder=true")

    def pretraining(self, step: int) -> bool:
        return step < self.attn_pretrain_steps

    def generator_terms(self, batch, step: int, gen: torch.Generator):
        terms: Terms = {}
        if self.pretraining(step):
            label, image, exemplar, exemplar_label = self.inputs(batch, gen)
            if self.supervision == "self":  # the image is its own exemplar
                exemplar, exemplar_label = image, label
            out = self.model(label, exemplar, exemplar_label, return_attention=True)
            terms["attn"] = self.model.attention_pretrain_loss(out, image)
            with torch.no_grad():
                warped = msca_warp(out["attention"][0], exemplar)
            visuals = dict(label=label, exemplar=exemplar, warped=warped, fake=out["fake"].detach(), image=image)
            return terms["attn"], terms, visuals
        if self.supervision == "self":
            label, image = batch["label"], batch["image"]
            vgg = self.vgg.feature_matching if (self.vgg is not None and self.on("feat")) else None
            r = reconstruction_losses(self.model, image, label, generator=gen, vgg_loss=vgg)
            terms["l1"] = r["patch_l1"] + r["global_l1"]
            if vgg is not None:
                terms["feat"] = r["patch_vgg"] + r["global_vgg"]
            fake, exemplar, warped = r["fake"], image, None
            if self.on("attn"):  # one more global pass: reconstruction_losses keeps its outputs
                terms["attn"] = self.model.attention_pretrain_loss(self.model(label, image, label), image)
        else:
            label, image, exemplar, exemplar_label = self.inputs(batch, gen)
            out = self.model(label, exemplar, exemplar_label, return_attention=True)
            fake = out["fake"]
            with torch.no_grad():  # for the image grid: the exemplar carried by the finest attention
                warped = msca_warp(out["attention"][0], exemplar)
            if self.on("l1"):
                terms["l1"] = F.l1_loss(fake, image)
            self._vgg_terms(terms, fake, image)
            if self.on("attn"):
                terms["attn"] = self.model.attention_pretrain_loss(out, image)
        self._gan_terms(terms, label, fake, image)
        visuals = dict(label=label, exemplar=exemplar, fake=fake, image=image)
        if warped is not None:
            visuals["warped"] = warped
        return _weighted(terms, self.weights), terms, visuals
