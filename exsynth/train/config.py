"""Training options: one dataclass, loadable from a TOML/JSON file, with named presets."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

__all__ = ["TrainConfig", "LOSS_NAMES", "PRESETS", "default_losses", "load_config_file", "RESUMABLE_FIELDS"]

# Every loss term the objectives know; a weight of 0 skips the term (and its compute).
LOSS_NAMES = {
    "cocosnet": ("l1", "feat", "perc", "context", "domain", "reg", "warp", "mask", "adv", "gan_feat"),
    "msca": ("l1", "feat", "perc", "adv", "gan_feat", "attn"),
}


def default_losses(model: str) -> Dict[str, float]:
    """Paper-like weights. CoCosNet (Eq. 8-14): feature matching 10, perceptual 0.001,
    contextual 1, domain 10, cycle L_reg 1, hinge GAN 1 + GAN feature matching 10, the
    warp-self L1 of the released code (the warped exemplar vs. the downsampled ground
    truth) 0 by default, mask warm-up 0. MSCA-Net (Eq. 9-12): L1 reconstruction 1,
    feature matching 1, GAN 1; attention pre-training (Sec. 4, weight `attn`, needs the model
    option attention_decoder=True) off."""
    if model == "cocosnet":
        return dict(l1=0.0, feat=10.0, perc=0.001, context=1.0, domain=10.0, reg=1.0, warp=0.0, mask=0.0,
                    adv=1.0, gan_feat=10.0)
    if model == "msca":
        return dict(l1=1.0, feat=1.0, perc=0.0, adv=1.0, gan_feat=10.0, attn=0.0)
    raise ValueError(f"model must be one of {sorted(LOSS_NAMES)}, got {model!r}")


@dataclass
class TrainConfig:
    """What `exsynth train` runs. Defaults follow the papers' optimisers (Adam, TTUR:
    generator 1e-4, discriminator 4e-4, betas (0, 0.999)); `losses` and `model_options`
    override entries of `default_losses(model)` and of the model's config dataclass.

    data: "synthetic" (exsynth.data.SyntheticExemplarDataset, exact ground truth) or a
        folder with images/ and labels/ (see exsynth.data.PairedFolderDataset).
    supervision: how the generator sees an exemplar. "pair": the dataset's
        (label, exemplar, ground truth) triples (synthetic data); "pseudo": CoCosNet's
        pseudo pairs, the exemplar a random distortion of the ground truth; "self":
        MSCA-Net's cross-reconstruction of two crops of one image plus global
        self-reconstruction (Sec. 3.4). "auto": pair on synthetic data, else pseudo / self.
    blind: train an exemplar-blind baseline (exemplar and its label replaced by zeros).
    max_minutes: stop (and checkpoint) once this much training time has passed in one call
        (a resumed run gets the limit afresh).
    mask_warmup_steps: the mask loss is applied for this many steps only (None: always).
    attn_pretrain_steps: MSCA-Net's attention pre-training (Sec. 4): for this many first steps
        the only loss is `attn` (the attention decoders' feature reconstruction) and the
        discriminator rests; afterwards `attn` joins the other terms with its weight.
    """

    model: str = "cocosnet"
    data: str = "synthetic"
    out: str = "runs/exsynth"
    size: int = 64
    num_classes: int = 6
    data_seed: int = 0
    train_length: int = 2000
    batch_size: int = 8
    steps: int = 1000
    max_minutes: Optional[float] = None
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: Tuple[float, float] = (0.0, 0.999)
    amp: bool = False
    device: str = "auto"
    seed: int = 0
    supervision: str = "auto"
    blind: bool = False
    vgg: Optional[str] = None
    mask_warmup_steps: Optional[int] = None
    attn_pretrain_steps: int = 0
    disc_width: int = 64
    disc_layers: int = 3
    disc_scales: int = 2
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 250
    num_workers: int = 0
    model_options: Dict[str, Any] = field(default_factory=dict)
    losses: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.model not in LOSS_NAMES:
            raise ValueError(f"model must be one of {sorted(LOSS_NAMES)}, got {self.model!r}")
        if self.supervision not in ("auto", "pair", "pseudo", "self"):
            raise ValueError(f"supervision must be auto, pair, pseudo or self, got {self.supervision!r}")
        bad = sorted(set(self.losses) - set(LOSS_NAMES[self.model]))
        if bad:
            raise ValueError(f"unknown {self.model} loss(es) {bad}; known: {list(LOSS_NAMES[self.model])}")
        for name in ("size", "batch_size", "steps", "num_classes", "checkpoint_every", "log_every",
                     "image_every", "train_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.attn_pretrain_steps) < 0:
            raise ValueError(f"attn_pretrain_steps must be >= 0, got {self.attn_pretrain_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")

    def loss_weights(self) -> Dict[str, float]:
        w = default_losses(self.model)
        w.update({k: float(v) for k, v in self.losses.items()})
        return w

    def resolved_supervision(self) -> str:
        if self.supervision != "auto":
            return self.supervision
        if self.data == "synthetic":
            return "pair"
        return "pseudo" if self.model == "cocosnet" else "self"

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return cls(**d)


# Fields a resumed run may change (everything else must match the checkpoint's run).
RESUMABLE_FIELDS = ("steps", "max_minutes", "checkpoint_every", "log_every", "image_every", "num_workers",
                    "device", "out")

# Small configurations that train on a CPU in minutes at 64 px (synthetic data).
# cocosnet-cpu64 is the recipe of the checkpoint shipped for `exsynth demo`.
PRESETS: Dict[str, Dict[str, Any]] = {
    "cocosnet-cpu64": dict(
        model="cocosnet", size=64, batch_size=8, lr_g=4e-4, lr_d=4e-4, betas=(0.5, 0.999),
        steps=700,
        model_options=dict(width=8, adaptor_downsample=1, num_up=3, max_mult=8, spade_hidden=32,
                           exemplar_label_input=True),
        losses=dict(l1=10.0, feat=0.0, perc=0.0, context=0.0, domain=1.0, reg=1.0, warp=10.0, mask=1.0,
                    adv=0.0, gan_feat=0.0),
        checkpoint_every=200, image_every=100,
    ),
    "msca-cpu64": dict(
        model="msca", size=64, batch_size=8, lr_g=4e-4, lr_d=4e-4, betas=(0.5, 0.999),
        steps=1500,
        model_options=dict(width=16, use_vgg=False, spade_hidden=32, attention_logit_scale=100.0,
                           attention_matched_init=True),
        losses=dict(l1=10.0, feat=0.0, perc=0.0, adv=0.0, gan_feat=0.0),
        checkpoint_every=200, image_every=100,
    ),
}


def load_config_file(path) -> Dict[str, Any]:
    """A TOML (.toml) or JSON file of TrainConfig fields."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such config file")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            import tomllib
            d = tomllib.loads(text)
        else:
            d = json.loads(text)
    except Exception as e:
        raise ValueError(f"{p}: cannot parse config ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: a config file holds a table/object of TrainConfig fields, got {type(d).__name__}")
    return d
