"""Training options: one dataclass, loadable from a TOML/JSON file; presets come from the
models' registry entries."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..registry import SUPERVISION_MODES, data_source, default_model, default_source, model_spec, models

__all__ = ["TrainConfig", "PRESETS", "default_losses", "load_config_file", "RESUMABLE_FIELDS", "field_docs"]


def default_losses(model: str) -> Dict[str, float]:
    """The paper weights of a registered model's loss terms (its objective's
    `default_weights`; a weight of 0 skips the term and its compute)."""
    return dict(model_spec(model).objective.default_weights)


def field_docs(cls) -> Dict[str, str]:
    """Help text of a dataclass's fields from its docstring's "name: text" paragraphs
    (continuation lines indented deeper; "a, b: text" documents both)."""
    docs: Dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    current, indent = None, 0
    for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w, ]*):\s+(.*)$", line)
        keys = [k.strip() for k in m.group(2).split(",")] if m else []
        if m and keys and all(k in names for k in keys):
            current, indent = keys, len(m.group(1))
            for k in keys:
                docs[k] = m.group(3).strip()
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            for k in current:
                docs[k] += " " + line.strip()
        else:
            current = None
    return docs


@dataclass
class TrainConfig:
    """What `exsynth train` runs. The defaults are CoCosNet's paper optimiser (Adam, TTUR:
    generator 1e-4, discriminator 4e-4, betas (0, 0.999)); each model's paper presets set its
    own (CoCosNet's code: betas (0, 0.9), generator eps 1e-3; MSCA-Net: 2e-4 for both);
    `losses` and `model_options` override entries of `default_losses(model)` and of the
    model's config dataclass.

    model: a registered model (exsynth.registry.models()); None: the registry's default model.
    data: the data source's root folder; "synthetic" needs none.
    dataset: the data source (exsynth.registry.data_sources()); None: "synthetic" when data is
        "synthetic", else "folder" (ROOT/images + ROOT/labels); e.g. "ade20k".
    data_options: the data source's own options (its options dataclass).
    out: run folder (config.json, checkpoints/, metrics.jsonl, samples/, tb/).
    size: image side in pixels (square).
    num_classes: label channels K: the classes of class-index maps (their one-hot channels), or
        the channels of a dense input (celebahq-edge 15, deepfashion 20); None: the data
        source's own count (6 for synthetic and folder).
    data_seed: seed of the synthetic data streams.
    train_length: samples in the synthetic training split.
    batch_size: the GLOBAL batch: under torchrun each of the N processes trains on
        batch_size / N samples of every step's batch (N must divide it), so a run means the
        same thing on any number of processes.
    steps: optimiser steps to train to.
    lr_g, lr_d: Adam learning rates of the generator and the discriminator(s).
    lr_decay_steps: the last this many steps of the run decay both rates linearly to 0 (the
        papers' code: niter epochs constant, niter_decay epochs linear); a number in (0, 1): that
        fraction of `steps` (a preset's schedule then follows --steps); None: constant.
    lr_decay_per: "step": the decay lowers the rates every step; "epoch": once per epoch, at
        its end (the papers' code: update_learning_rate after each epoch), so an epoch trains
        at one rate.
    steps_per_epoch: full batches per pass over the training set; set by the trainer from
        the data source (the unit of lr_decay_per "epoch").
    betas: Adam betas.
    eps_g, eps_d: Adam's eps of the generator's and the discriminators' optimisers (CoCosNet's
        code gives its generator 1e-3; PyTorch's default, 1e-8, elsewhere).
    amp: mixed precision (bf16 autocast on a CPU, fp16 + GradScaler on CUDA).
    device: "auto" (CUDA when available; under torchrun cuda:LOCAL_RANK), cpu, cuda, cuda:N.
    seed: seed of initialisation, data order and augmentation draws.
    supervision: how the generator sees an exemplar: "pair" (the data source's exemplars),
        "pseudo" (a random distortion of the ground truth), "self" (crops of one image
        reconstruct each other), "unpaired"; "auto": pair where the data source has
        exemplars, else the model's unpaired mode. A model supports a subset.
    blind: train an exemplar-blind baseline (exemplar and its label replaced by zeros).
    vgg: VGG19 weights file for the perceptual losses (and a model's VGG encoder).
    allow_random_vgg: train VGG-based loss terms with a random-init VGG19 when no vgg file is
        given (for tests; without it such a run is refused).
    max_minutes: stop (and checkpoint) once this much training time has passed in one call
        (a resumed run gets the limit afresh).
    mask_warmup_steps: steps of a warm-up (CoCosNet: the mask loss, or with its noise_for_mask
        the exemplar masks fed to the correspondence); a number in (0, 1): that fraction of
        `steps`; None: always.
    epochs: passes over the training set (the papers' niter + niter_decay): when set, the
        trainer sets `steps` to epochs x (training samples // batch_size) once the data source
        is built (the official loaders drop the last partial batch); an explicit --steps
        clears it.
    attn_pretrain_steps: steps of attention pre-training before the other losses join.
    disc_width, disc_layers, disc_scales: the PatchGAN discriminator's width, layers, scales.
    checkpoint_every: steps between checkpoints (and one at the end).
    log_every: steps between metric lines.
    image_every: steps between image grids.
    num_workers: DataLoader worker processes (per process under torchrun).
    model_options: the model's config fields (--option KEY=VALUE or the model's flags).
    losses: loss weights by name (--loss NAME=WEIGHT); 0 switches a term off.
    """

    model: Optional[str] = None
    data: str = "synthetic"
    dataset: Optional[str] = None
    data_options: Dict[str, Any] = field(default_factory=dict)
    out: str = "runs/exsynth"
    size: int = 64
    num_classes: Optional[int] = None
    data_seed: int = 0
    train_length: int = 2000
    batch_size: int = 8
    steps: int = 1000
    max_minutes: Optional[float] = None
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    lr_decay_steps: Optional[float] = None
    lr_decay_per: str = "step"
    steps_per_epoch: Optional[int] = field(default=None, metadata={"cli": False})
    betas: Tuple[float, float] = (0.0, 0.999)
    eps_g: float = 1e-8
    eps_d: float = 1e-8
    amp: bool = False
    device: str = "auto"
    seed: int = 0
    supervision: str = "auto"
    blind: bool = False
    vgg: Optional[str] = None
    allow_random_vgg: bool = False
    mask_warmup_steps: Optional[float] = None
    epochs: Optional[float] = None
    attn_pretrain_steps: int = 0
    disc_width: int = 64
    disc_layers: int = 3
    disc_scales: int = 2
    checkpoint_every: int = 500
    log_every: int = 10
    image_every: int = 250
    num_workers: int = field(default=0, metadata={"flags": ("--workers",)})
    model_options: Dict[str, Any] = field(default_factory=dict)
    losses: Dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers (Adam's beta1, beta2), got {list(self.betas)}")
        if self.model is None:
            self.model = default_model()
        spec = model_spec(self.model)          # lists the registered models when unknown
        source = data_source(self.source_name())  # lists the registered data sources when unknown
        if self.num_classes is None:
            self.num_classes = source.num_classes or 6
        if self.supervision not in ("auto",) + SUPERVISION_MODES:
            raise ValueError(f"supervision must be auto or one of {', '.join(SUPERVISION_MODES)}, "
                             f"got {self.supervision!r}")
        if self.supervision != "auto" and self.supervision not in spec.supervision:
            raise ValueError(f"supervision {self.supervision!r} is not defined for {self.model} "
                             f"(it trains with {', '.join(spec.supervision)})")
        names = spec.objective.loss_names
        bad = sorted(set(self.losses) - set(names))
        if bad:
            raise ValueError(f"unknown {self.model} loss(es) {bad}; known: {list(names)}")
        for name in ("size", "batch_size", "steps", "num_classes", "checkpoint_every", "log_every",
                     "image_every", "train_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("seed", "data_seed"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if int(self.attn_pretrain_steps) < 0:
            raise ValueError(f"attn_pretrain_steps must be >= 0, got {self.attn_pretrain_steps}")
        if int(self.num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        d = self.lr_decay_steps
        if d is not None and not (0 < d < 1 or (float(d).is_integer() and 1 <= d <= int(self.steps))):
            raise ValueError(f"lr_decay_steps must be None, a fraction in (0, 1) or a whole number of steps "
                             f"1..steps ({self.steps}), got {d}")
        w = self.mask_warmup_steps
        if w is not None and not (0 < w < 1 or (float(w).is_integer() and w >= 0)):
            raise ValueError(f"mask_warmup_steps must be None, a fraction in (0, 1) or a whole number of steps "
                             f">= 0, got {w}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be None or > 0, got {self.epochs}")
        if self.lr_decay_per not in ("step", "epoch"):
            raise ValueError(f"lr_decay_per must be 'step' or 'epoch', got {self.lr_decay_per!r}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ValueError(f"steps_per_epoch must be None or >= 1, got {self.steps_per_epoch}")
        for name in ("eps_g", "eps_d"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0 (Adam's eps), got {getattr(self, name)}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")

    def decay_steps(self) -> int:
        """The steps of the final linear decay (0: none)."""
        d = self.lr_decay_steps
        if not d:
            return 0
        return max(1, round(d * self.steps)) if d < 1 else int(d)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at `step` (0-based, before the step is taken)."""
        n = self.decay_steps()
        if not n:
            return 1.0
        start = self.steps - n
        if self.lr_decay_per == "epoch" and self.steps_per_epoch:
            step = step // self.steps_per_epoch * self.steps_per_epoch   # the rate of the epoch's start
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / float(n))

    def mask_warmup_end(self) -> Optional[int]:
        """The step the mask warm-up ends at (None: it never does)."""
        w = self.mask_warmup_steps
        if w is None:
            return None
        return round(w * self.steps) if 0 < w < 1 else int(w)

    def epoch_length_needed_by(self) -> Optional[str]:
        """What needs the training set's length in batches ("epochs N" or "lr_decay_per
        'epoch'"); None: nothing does."""
        if self.epochs is not None:
            return f"epochs {self.epochs}"
        return "lr_decay_per 'epoch'" if self.lr_decay_per == "epoch" else None

    def resolve_epochs(self, train_samples: int) -> "TrainConfig":
        """This config with `epochs` turned into `steps` for a training set of this many
        samples (epochs x full batches per epoch) and `steps_per_epoch` set; itself when
        nothing needs the epoch's length (`epoch_length_needed_by`)."""
        what = self.epoch_length_needed_by()
        if what is None:
            return self
        per_epoch = int(train_samples) // self.batch_size
        if per_epoch < 1:
            raise ValueError(f"{what}: the training set has {train_samples} samples, fewer than "
                             f"one batch of {self.batch_size}; lower --batch-size or give --steps")
        if self.epochs is None:
            return dataclasses.replace(self, steps_per_epoch=per_epoch)
        return dataclasses.replace(self, steps=max(1, round(self.epochs * per_epoch)), epochs=None,
                                   steps_per_epoch=per_epoch)

    def source_name(self) -> str:
        if self.dataset is not None:
            return self.dataset
        return default_source(self.data)

    def loss_weights(self) -> Dict[str, float]:
        w = default_losses(self.model)
        w.update({k: float(v) for k, v in self.losses.items()})
        return w

    def resolved_supervision(self) -> str:
        if self.supervision != "auto":
            return self.supervision
        if data_source(self.source_name()).exemplars_for(self.data_options) and "pair" in model_spec(self.model).supervision:
            return "pair"
        return model_spec(self.model).unpaired_supervision

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

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        """Field -> default, for comparing with a checkpoint written before a field existed."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out


# Fields a resumed run may change (everything else must match the checkpoint's run).
RESUMABLE_FIELDS = ("steps", "max_minutes", "checkpoint_every", "log_every", "image_every", "num_workers", "allow_random_vgg",
                    "device", "out")


class _Presets(Mapping):
    """Every registered model's presets by name (`ModelSpec.presets`), read from the registry
    on each access so a model registered later is included."""

    def _all(self) -> Dict[str, Mapping[str, Any]]:
        out: Dict[str, Mapping[str, Any]] = {}
        for spec in models().values():
            out.update(spec.presets)
        return out

    def __getitem__(self, key: str) -> Dict[str, Any]:
        return copy.deepcopy(dict(self._all()[key]))

    def __iter__(self):
        return iter(sorted(self._all()))

    def __len__(self) -> int:
        return len(self._all())


PRESETS: Mapping[str, Dict[str, Any]] = _Presets()


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
