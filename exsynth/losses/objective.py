"""The training objective of a model: its loss terms, their paper weights, its discriminators.

Each model file defines an `Objective` subclass and names it in its `ModelSpec`. The trainer
knows nothing else about a model's training: it builds one Adam optimiser per entry of
`optimizer_groups()` (generator role: lr_g, discriminator role: lr_d, times the entry's optional
learning-rate scale), runs `generator_terms`
(discriminators frozen), steps the generator optimisers when `generator_step(step)` (by
default always; otherwise the terms run without autograd, for the logs and the
discriminator's fakes), then — when `discriminator_step(step)` (by default: unless
`pretraining(step)`) — `discriminator_terms` and the discriminator optimisers, at the rates
scaled by `lr_factor(step)`; `state_dict()` entries go into the checkpoint under their own keys.

Randomness (pseudo-exemplar distortion, crop positions) comes from the generator passed in,
which the trainer seeds from (seed, step[, rank]): a resumed run draws the same numbers.
Under multi-process training the trainer `bind`s DistributedDataParallel wrappers: call the
generator as `self.G(...)` and a discriminator as `self.D(name)(...)` so that gradients are
averaged across processes; `self.model` is the bare module for attributes and helper methods.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..data.augment import distort_exemplar
from ..nn.blocks import MultiscalePatchDiscriminator
from .gan import gan_feature_matching_loss, hinge_d_loss, hinge_g_loss

__all__ = ["Objective", "Terms", "weighted_sum"]

Terms = Dict[str, torch.Tensor]


def weighted_sum(terms: Terms, weights: Mapping[str, float]) -> torch.Tensor:
    total = None
    for k, v in terms.items():
        t = weights[k] * v
        total = t if total is None else total + t
    return total


class Objective:
    """Base class. Subclasses set `loss_names`, `default_weights` (the paper's; 0 = off) and
    implement `generator_terms`; the defaults below serve a model with one label-conditional
    multi-scale PatchGAN trained with the hinge loss (checkpoint key "discriminator")."""

    loss_names: ClassVar[Tuple[str, ...]] = ()
    default_weights: ClassVar[Dict[str, float]] = {}
    vgg_losses: ClassVar[Tuple[str, ...]] = ("feat", "perc", "context")  # terms that need VGG19
    gan_losses: ClassVar[Tuple[str, ...]] = ("adv", "gan_feat")          # terms that need the discriminator
    # Under torchrun: True when some step may leave generator parameters without a gradient
    # (DDP then searches the graph each step); False when every step uses them all.
    ddp_find_unused_parameters: ClassVar[bool] = True
    # GAN feature matching summed over a discriminator's layers (pix2pixHD's form) or averaged
    gan_feat_sum_layers: ClassVar[bool] = False

    def __init__(self, model: nn.Module, weights: Mapping[str, float], supervision: str, cfg: Any):
        """cfg: the TrainConfig (num_classes, disc_width/layers/scales, vgg, blind, schedules)."""
        self.model, self.weights, self.supervision, self.cfg = model, dict(weights), supervision, cfg
        self.blind = bool(getattr(cfg, "blind", False))
        self.G: Callable = model
        self.discriminators = nn.ModuleDict(self.build_discriminators())
        self._d_calls: Dict[str, Callable] = {}
        self._phase = "g"
        self.vgg = None
        vgg_terms = [k for k in self.vgg_losses if self.on(k)]
        if vgg_terms:
            from ..nn import load_vgg19
            from .perceptual import VGGLoss
            path = getattr(cfg, "vgg", None)
            if path is None and not getattr(cfg, "allow_random_vgg", False):
                off = " ".join(f"--loss {k}=0" for k in vgg_terms)
                raise ValueError(f"the {', '.join(vgg_terms)} loss(es) need ImageNet VGG19 weights: pass --vgg FILE "
                                 f"(a torchvision vgg19 state dict or a caffe-converted vgg19_conv.pth), switch them off ({off}), or "
                                 f"--allow-random-vgg (tests only: a random VGG's features mean nothing)")
            self.vgg = VGGLoss(load_vgg19(path), **self.vgg_options())

    # ---- what the trainer reads ----------------------------------------------------------------

    def on(self, name: str) -> bool:
        return self.weights.get(name, 0.0) != 0.0

    def vgg_options(self) -> Dict[str, Any]:
        """Keyword arguments of the VGGLoss (layers and weights of its terms); default: its own."""
        return {}

    def build_discriminators(self) -> Dict[str, nn.Module]:
        """Checkpoint key -> discriminator. Default: one multi-scale PatchGAN on (label, image)
        when a GAN term is on."""
        if not any(self.on(k) for k in self.gan_losses):
            return {}
        c = self.cfg
        return {"discriminator": MultiscalePatchDiscriminator(
            c.num_classes, 3, width=c.disc_width, n_layers=c.disc_layers, num_scales=c.disc_scales,
            **self.discriminator_options())}

    def discriminator_options(self) -> Dict[str, Any]:
        """Keyword arguments of the default discriminator (its padding, an attention block);
        default: MultiscalePatchDiscriminator's own."""
        return {}

    def optimizer_groups(self) -> Dict[str, tuple]:
        """Checkpoint key of each optimiser -> (its parameters, role "g" or "d"[, a scale of the
        role's learning rate, 1 if left out])."""
        groups = {"opt_g": ([p for p in self.model.parameters() if p.requires_grad], "g")}
        if len(self.discriminators):
            groups["opt_d"] = ([p for p in self.discriminators.parameters() if p.requires_grad], "d")
        return groups

    def to(self, device) -> "Objective":
        self.discriminators.to(device)
        if self.vgg is not None:
            self.vgg.to(device)
        return self

    def state_dict(self) -> Dict[str, Any]:
        return {name: d.state_dict() for name, d in self.discriminators.items()}

    def load_state_dict(self, payload: Mapping[str, Any]) -> None:
        for name, d in self.discriminators.items():
            if name not in payload:
                raise KeyError(f"the checkpoint holds no {name!r} state")
            d.load_state_dict(payload[name])

    def bind(self, generator: Callable, discriminators: Mapping[str, Callable]) -> None:
        """Route generator calls and discriminator-step calls through these callables (DDP)."""
        self.G, self._d_calls = generator, dict(discriminators)

    def set_phase(self, phase: str) -> None:
        """"g": discriminators are frozen critics (called bare); "d": they are being trained."""
        self._phase = phase

    def D(self, name: str = "discriminator") -> Callable:
        if self._phase == "d" and name in self._d_calls:
            return self._d_calls[name]
        return self.discriminators[name]

    def pretraining(self, step: int) -> bool:
        """True while only a pre-training loss is optimised (no GAN, no discriminator step)."""
        return False

    def generator_step(self, step: int) -> bool:
        """Whether the generator takes a step at this step (default: always; a model with
        several D steps per G step says so here)."""
        return True

    def discriminator_step(self, step: int) -> bool:
        """Whether the discriminators take a step after this generator step (default: unless
        pre-training; a model with several G steps per D step says so here)."""
        return not self.pretraining(step)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier of this step (default: the TrainConfig's schedule,
        constant then linear to 0; a model with its own schedule overrides it)."""
        return self.cfg.lr_factor(step)

    def generator_terms(self, batch: Mapping[str, torch.Tensor], step: int, gen: torch.Generator
                        ) -> Tuple[torch.Tensor, Terms, Dict[str, torch.Tensor]]:
        """(weighted total, unweighted terms, visuals). visuals hold at least label, fake and
        image (the discriminator step's inputs) and whatever the image grid should show
        (exemplar, warped)."""
        raise NotImplementedError

    def discriminator_terms(self, visuals: Mapping[str, torch.Tensor], step: int) -> Tuple[torch.Tensor, Terms]:
        d = self.D("discriminator")
        label, image, fake = visuals["label"], visuals["image"], visuals["fake"]
        loss = hinge_d_loss(d(label, image), d(label, fake.detach()))
        return loss, {"hinge": loss}

    # ---- helpers for subclasses ----------------------------------------------------------------

    def inputs(self, batch, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(label, image, exemplar, exemplar_label) for this step: the batch's exemplar, or a
        pseudo exemplar (one affine draw for photo and label, so they stay aligned)."""
        label, image = batch["label"], batch["image"]
        if self.supervision == "pseudo" or "exemplar" not in batch:
            both = distort_exemplar(torch.cat([image, label], 1), gen)
            exemplar, exemplar_label = both[:, :image.shape[1]], both[:, image.shape[1]:]
        else:
            exemplar, exemplar_label = batch["exemplar"], batch["exemplar_label"]
        if self.blind:
            exemplar, exemplar_label = torch.zeros_like(exemplar), torch.zeros_like(exemplar_label)
        return label, image, exemplar, exemplar_label

    def gan_terms(self, terms: Terms, label: torch.Tensor, fake: torch.Tensor, image: torch.Tensor) -> None:
        """Hinge generator loss and GAN feature matching against the frozen discriminator."""
        if "discriminator" not in self.discriminators or not (self.on("adv") or self.on("gan_feat")):
            return
        d = self.D("discriminator")
        fake_pred = d(label, fake)
        if self.on("adv"):
            terms["adv"] = hinge_g_loss(fake_pred)
        if self.on("gan_feat"):
            with torch.no_grad():
                real_pred = d(label, image)
            terms["gan_feat"] = gan_feature_matching_loss(fake_pred, real_pred, sum_layers=self.gan_feat_sum_layers)

    def vgg_terms(self, terms: Terms, fake: torch.Tensor, image: torch.Tensor) -> None:
        if self.vgg is None:
            return
        if self.on("feat"):
            terms["feat"] = self.vgg.feature_matching(fake, image)
        if self.on("perc"):
            terms["perc"] = self.vgg.perceptual(fake, image)

    def total(self, terms: Terms) -> torch.Tensor:
        return weighted_sum(terms, self.weights)
