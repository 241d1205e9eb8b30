"""The two registries that keep exsynth's upper layers generic: models and data sources.

A model is one file in `exsynth/models/` that calls `register_model(ModelSpec(...))`; a data
source is one file in `exsynth/data/` that calls `register_data_source(DataSourceSpec(...))`.
Checkpoints, the trainer, inference, evaluation and the command line look a model or a source
up here by name and never branch on it. Every module of those two packages is imported on the
first lookup, so a new file needs no other edit; code outside the package (a plugin, a test)
registers by calling the same functions, or through the `exsynth.models` /
`exsynth.data_sources` entry-point groups of an installed distribution.

See docs/design.md for the checklists "adding a model" and "adding a data source".
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

__all__ = ["ModelSpec", "DataSourceSpec", "DrawIndex", "draw_rng", "register_model", "register_data_source", "unregister_model",
           "unregister_data_source", "model_spec",
           "data_source", "models", "data_sources", "spec_of", "default_model", "default_source", "RegistryError", "SUPERVISION_MODES"]

# How a generator sees an exemplar while training (a model lists the ones it supports):
#   pair   - the data source's exemplars (exact quadruples, or retrieved references)
#   pseudo - the exemplar is a random geometric distortion of the ground truth
#   self   - crops of one image reconstruct each other (and the image itself)
#   unpaired - two unaligned domains, no ground truth for an exemplar's rendering
SUPERVISION_MODES = ("pair", "pseudo", "self", "unpaired")


class RegistryError(ValueError):
    """An unknown model or data source name, or a conflicting registration."""


def _always(value):
    return lambda cfg: value


@dataclass(frozen=True)
class ModelSpec:
    """Everything the upper layers need to know about one model.

    name: what `--model`, checkpoints and presets call it.
    config: the model's options dataclass; its fields are the `--option KEY=VALUE` keys and
        `exsynth train` flags. `label_channels` is filled from the number of classes and a
        field `vgg_path` (if any) from `--vgg` unless given.
    generator: the generator class, built from a config instance; its instances keep the
        config as `.cfg` (checkpoints and inference find a model's spec by this class).
    objective: an `exsynth.losses.Objective` subclass: the model's losses, their names and paper
        weights, its discriminators (with their checkpoint keys and optimiser groups).
    supervision: the supervision modes it trains with (see SUPERVISION_MODES).
    unpaired_supervision: the mode "auto" picks when the data has no exemplar quadruples.
    needs_exemplar_label(cfg): whether synthesis needs the exemplar's label map.
    size_multiple(cfg): image sides must be multiples of this.
    visuals: what `run` can return beside "fake": "warped" (the exemplar aligned to the input
        by the model's own correspondence), "correspondence" (a coordinate image warped alike).
    run(model, label, exemplar, exemplar_label, visuals): generator outputs for inference, a dict
        with "fake" and each requested visual (any size; inference resizes to the label's).
    unstored_prefixes(cfg): state-dict prefixes a checkpoint need not store (a frozen backbone
        that loads from a file named in the config).
    image_input: the input is a photo of a source domain (two-domain translation), not a label
        or input map: `synthesize` reads it as an image.
    directions: the translation directions `run` takes as `direction=` (the first is the
        default; `synthesize --direction`); empty: one direction, no such argument.
    extra_metrics(model, payload, dataset, device, limit): the loaded generator's own measurements
        (payload: its checkpoint, e.g. for a discriminator's state) beside the image
        metrics for `exsynth eval` (name -> float; e.g. a discriminator's accuracy; a "_text"
        entry is printed instead of the name/value lines), or None.
    presets: named TrainConfig dicts (`exsynth train --preset NAME`); the paper-faithful one and
        small CPU recipes.
    default: the model `exsynth train` trains when none is named (one model at most).
    """

    name: str
    config: type
    generator: type
    objective: type
    supervision: Tuple[str, ...]
    unpaired_supervision: str
    run: Callable[..., Dict[str, Any]]
    needs_exemplar_label: Callable[[Any], bool] = _always(True)
    size_multiple: Callable[[Any], int] = _always(1)
    visuals: Tuple[str, ...] = ()
    unstored_prefixes: Callable[[Any], Tuple[str, ...]] = _always(())
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    image_input: bool = False
    directions: Tuple[str, ...] = ()
    extra_metrics: Optional[Callable[..., Dict[str, float]]] = None
    description: str = ""
    default: bool = False

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.config):
            raise RegistryError(f"model {self.name!r}: config must be a dataclass, got {self.config!r}")
        if "label_channels" not in {f.name for f in dataclasses.fields(self.config)}:
            raise RegistryError(f"model {self.name!r}: its config {self.config.__name__} needs a label_channels field")
        if not isinstance(self.generator, type):
            raise RegistryError(f"model {self.name!r}: generator must be a class, got {self.generator!r}")
        if "correspondence" in self.visuals and "warped" not in self.visuals:
            raise RegistryError(f"model {self.name!r}: a correspondence picture is drawn beside the warped "
                                f"exemplar; list 'warped' in visuals too")
        bad = [m for m in self.supervision if m not in SUPERVISION_MODES]
        if bad or not self.supervision:
            raise RegistryError(f"model {self.name!r}: supervision must be a non-empty subset of "
                                f"{SUPERVISION_MODES}, got {self.supervision}")
        if self.unpaired_supervision not in self.supervision or self.unpaired_supervision == "pair":
            raise RegistryError(f"model {self.name!r}: unpaired_supervision {self.unpaired_supervision!r} must be "
                                f"one of its non-pair modes {self.supervision}")
        for key, preset in self.presets.items():
            if preset.get("model") != self.name:
                raise RegistryError(f"model {self.name!r}: preset {key!r} must set model={self.name!r}")

    def build(self, config: Mapping[str, Any]):
        """The generator for a dict of config fields; unknown keys raise naming the known ones."""
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown {self.name} option(s) {unknown}; known: {sorted(known)}")
        return self.generator(self.config(**config))


@dataclass(frozen=True)
class DataSourceSpec:
    """One kind of training / evaluation data.

    build(root, *, size, num_classes, split, length, seed, options, rank, world_size) -> a torch
        Dataset. Map-style sources return samples by index (the trainer draws indices); iterable
        ones (`torch.utils.data.IterableDataset`) shard themselves by (rank, world_size).
        A sample is a dict with at least "label" (K, H, W) and "image" (3, H, W) in [-1, 1];
        sources with `pairs` add "exemplar", "exemplar_label" (the exact ground truth is
        "image"). "label" is one-hot with "label_index" (H, W) beside it when `label_kind` is
        "class", and the input map as it is (edges, distance channels, pose) when "dense".
    options: the source's own options dataclass (None: none); flags of `exsynth train`.
    pairs: samples carry exemplar quadruples with exact ground truth (`exsynth eval` needs them).
    exemplars: samples carry an exemplar and its label map ("exemplar", "exemplar_label") that
        "pair" supervision trains with, without being exact ground truth (retrieved references,
        with "self_ref" True where the exemplar is the image itself, differently cropped).
    num_classes: the label channels the layout has (None: any): its classes, or the channels of
        its dense input; a run uses this many (`--num-classes` defaults to it).
    label_kind: "class" (class-index maps, one-hot) or "dense" (multi-channel input maps).
    picture: (B, K, H, W) input maps -> (B, 3, H, W) RGB in [-1, 1] for image grids (None: the
        class palette, which suits one-hot maps).
    exemplars_with: options -> whether the samples carry exemplars under these options (for a
        source whose exemplars depend on them, e.g. `folder` with a pair list); None: `exemplars`.
    needs_root: `--data ROOT` must name an existing folder.

    Per-sample randomness (crops, flips, which reference) comes from `draw_rng(index, seed)`:
    the trainer's sampler passes a `DrawIndex` carrying the global sample count, so a resumed
    run draws the same numbers and every epoch draws new ones.

    Resume: for a map-style source it is step-exact (the g-th sample of a run is a pure function
    of (seed, g)); an iterable source is restarted by calling its `start(step, batch_size)`
    method when it has one, which promises no more than it documents (a video reader resumes at
    the same number of samples drawn, in a fresh order).
    """

    name: str
    build: Callable[..., Any]
    options: Optional[type] = None
    pairs: bool = False
    exemplars: bool = False
    num_classes: Optional[int] = None
    needs_root: bool = True
    description: str = ""
    label_kind: str = "class"
    picture: Optional[Callable[[Any], Any]] = None
    exemplars_with: Optional[Callable[[Mapping[str, Any]], bool]] = None

    def __post_init__(self):
        if self.label_kind not in ("class", "dense"):
            raise RegistryError(f"data source {self.name!r}: label_kind must be 'class' or 'dense', "
                                f"got {self.label_kind!r}")
        if self.label_kind == "dense" and self.num_classes is None:
            raise RegistryError(f"data source {self.name!r}: a dense input declares its channels (num_classes)")

    @property
    def has_exemplars(self) -> bool:
        return self.pairs or self.exemplars

    @property
    def channels_text(self) -> str:
        """What `num_classes` counts, for messages: "151 label classes", "15 input channels"."""
        return f"{self.num_classes} {'label classes' if self.label_kind == 'class' else 'input channels'}"

    def exemplars_for(self, options: Optional[Mapping[str, Any]] = None) -> bool:
        """Whether samples built with these data options carry exemplars."""
        if self.exemplars_with is not None and not self.pairs:
            return bool(self.exemplars_with(dict(options or {})))
        return self.has_exemplars

    def make(self, root, *, size: int, num_classes: int, split: str = "train", length: Optional[int] = None,
             seed: int = 0, options: Optional[Mapping[str, Any]] = None, rank: int = 0, world_size: int = 1):
        opts = None
        if self.options is not None:
            known = {f.name for f in dataclasses.fields(self.options)}
            unknown = sorted(set(options or {}) - known)
            if unknown:
                raise ValueError(f"unknown {self.name} data option(s) {unknown}; known: {sorted(known)}")
            opts = self.options(**(options or {}))
        elif options:
            raise ValueError(f"data source {self.name!r} takes no options, got {sorted(options)}")
        if self.needs_root and (root is None or not Path(root).exists()):
            raise ValueError(f"data {root!r}: no such folder (the {self.name} data source reads a root folder)")
        return self.build(root, size=size, num_classes=num_classes, split=split, length=length, seed=seed,
                          options=opts, rank=rank, world_size=world_size)


_MODELS: Dict[str, ModelSpec] = {}
_SOURCES: Dict[str, DataSourceSpec] = {}
_discovered = False


class DrawIndex(int):
    """A dataset index that also carries `draw`, the run's global sample count g (step * batch + i):
    per-sample random choices seeded by it differ between epochs yet retrace on resume."""

    def __new__(cls, index: int, draw: int):
        obj = super().__new__(cls, index)
        obj.draw = int(draw)
        return obj

    def __reduce__(self):  # DataLoader workers receive it pickled
        return (DrawIndex, (int(self), self.draw))


def draw_rng(index, seed: int = 0):
    """numpy Generator for one sample's random choices: from (seed, the draw count) when the
    index is a DrawIndex, else from (seed, index) (evaluation: fixed per sample)."""
    import numpy as np
    return np.random.default_rng([int(seed), int(getattr(index, "draw", int(index))), 0x5EED])


def _register(table: Dict[str, Any], spec, kind: str, replace: bool):
    old = table.get(spec.name)
    if old is not None and not replace and old != spec:
        raise RegistryError(f"a {kind} named {spec.name!r} is already registered ({old!r}); pass replace=True "
                            f"to override it")
    table[spec.name] = spec
    return spec


def register_model(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Make a model known by spec.name to every command and loader."""
    for key in spec.presets:
        owner = next((m.name for m in _MODELS.values() if key in m.presets and m.name != spec.name), None)
        if owner is not None:
            raise RegistryError(f"preset {key!r} of model {spec.name!r} is already defined by model {owner!r}")
    if spec.default:
        other = next((m.name for m in _MODELS.values() if m.default and m.name != spec.name), None)
        if other is not None:
            raise RegistryError(f"model {spec.name!r} claims to be the default model, but {other!r} already is")
    return _register(_MODELS, spec, "model", replace)


def register_data_source(spec: DataSourceSpec, *, replace: bool = False) -> DataSourceSpec:
    """Make a data source known by spec.name to `--dataset` and the trainer."""
    return _register(_SOURCES, spec, "data source", replace)


def unregister_model(name: str) -> None:
    """Forget a model (tests, plugins replacing one); unknown names are ignored."""
    _MODELS.pop(name, None)


def unregister_data_source(name: str) -> None:
    _SOURCES.pop(name, None)


def _discover() -> None:
    """Import every module of exsynth.models and exsynth.data (each registers itself), then
    installed plugins' entry points. Runs once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for pkg_name in ("exsynth.models", "exsynth.data"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    try:
        from importlib.metadata import entry_points
        eps = entry_points()
        groups = [eps.select(group=g) for g in ("exsynth.models", "exsynth.data_sources")] \
            if hasattr(eps, "select") else [eps.get(g, ()) for g in ("exsynth.models", "exsynth.data_sources")]
        for group in groups:
            for ep in group:
                ep.load()
    except Exception as e:  # a broken plugin must not take the built-in models down
        import warnings
        warnings.warn(f"exsynth: a plugin entry point failed to load ({type(e).__name__}: {e})", stacklevel=2)


def models() -> Dict[str, ModelSpec]:
    """Registered models by name."""
    _discover()
    return dict(sorted(_MODELS.items()))


def data_sources() -> Dict[str, DataSourceSpec]:
    """Registered data sources by name."""
    _discover()
    return dict(sorted(_SOURCES.items()))


def model_spec(name: str, *, what: str = "model") -> ModelSpec:
    """The spec registered as `name`; RegistryError listing the registered ones otherwise."""
    reg = models()
    if name not in reg:
        raise RegistryError(f"{what} {name!r} is not registered; registered models: {', '.join(reg)}")
    return reg[name]


def data_source(name: str, *, what: str = "data source") -> DataSourceSpec:
    reg = data_sources()
    if name not in reg:
        raise RegistryError(f"{what} {name!r} is not registered; registered data sources: {', '.join(reg)}")
    return reg[name]


def default_model() -> str:
    """The name of the model registered with default=True."""
    for spec in models().values():
        if spec.default:
            return spec.name
    raise RegistryError(f"no default model is registered; name one of: {', '.join(models())}")


def default_source(root) -> str:
    """The data source a bare `--data ROOT` means: "synthetic" for the word synthetic, else
    "folder" (ROOT/images + ROOT/labels)."""
    return "synthetic" if root == "synthetic" else "folder"


def spec_of(model) -> ModelSpec:
    """The spec whose generator built `model` (TypeError for a module no spec builds)."""
    # the exact class first, else the most derived registered base (a plugin may subclass one)
    matches = [spec for spec in models().values() if isinstance(model, spec.generator)]
    for spec in matches:
        if type(model) is spec.generator:
            return spec
    if matches:
        return max(matches, key=lambda sp: len(sp.generator.__mro__))
    raise TypeError(f"not the generator of a registered exsynth model: {type(model).__name__}")
