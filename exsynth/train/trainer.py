"""The training loop behind `exsynth train`.

A run lives in one folder: config.json (the resolved TrainConfig), checkpoints/latest.pt
(atomic, every `checkpoint_every` steps and at the end), metrics.jsonl (one line per
logged step), samples/step_XXXXXX.png (image grids: input | exemplar | warped | output |
ground truth) and, when the tensorboard package is installed, tb/ with the same scalars
and grids. Everything random is a function of (seed, step), so `resume` continues the
same run: same batches, same distortions, same crops.

The trainer knows models and data only through `exsynth.registry`: the model's spec builds
the generator and its `Objective` (losses, discriminators, optimiser groups, checkpoint keys);
the data source's spec builds the dataset. Under torchrun (WORLD_SIZE > 1) every process
builds the same model, wraps the generator and the discriminators in
DistributedDataParallel, and draws its share of each step's global batch from the same
step-indexed order; rank 0 alone writes the run folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..checkpoint import build_model, load_checkpoint, load_weights, save_checkpoint, size_multiple
from ..devices import resolve_device
from ..imageio import colorize_label, tile_rows, write_image
from ..registry import DrawIndex, data_source, model_spec
from . import distributed as D
from .config import RESUMABLE_FIELDS, TrainConfig

__all__ = ["Trainer", "make_dataset", "image_grid"]


def make_dataset(cfg: TrainConfig, split: str = "train", length: Optional[int] = None,
                 ctx: D.DistContext = D.DistContext()) -> Dataset:
    """The dataset the config's data source builds (`exsynth.registry.data_sources()`)."""
    return data_source(cfg.source_name()).make(cfg.data, size=cfg.size, num_classes=cfg.num_classes, split=split,
                    length=length or cfg.train_length, seed=cfg.data_seed, options=cfg.data_options,
                    rank=ctx.rank, world_size=ctx.world_size)


class _StepSampler(Sampler):
    """Indices of batches start_step.. in order: the g-th sample drawn (g = step * B + i, B the
    global batch) is position g mod N of epoch g // N's shuffle, seeded by (seed, epoch). A pure
    function of the step, so a resumed run sees the batches the uninterrupted run would have.
    Process `rank` of `world_size` draws positions i in [rank * b, (rank + 1) * b), b = B / world_size,
    of every step: together the processes see exactly the one-process run's batches."""

    def __init__(self, n: int, batch_size: int, start_step: int, steps: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.n, self.b, self.start, self.steps, self.seed = n, batch_size, start_step, steps, seed
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self._epoch, self._perm = -1, None

    def _order(self, epoch: int):
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start, self.steps):
            for i in range(self.offset, self.offset + self.local):
                g = s * self.b + i
                yield DrawIndex(self._order(g // self.n)[g % self.n], g)

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.local


def _collate(samples):
    out = {}
    for k in samples[0]:
        v = [s[k] for s in samples]
        out[k] = torch.stack(v) if isinstance(v[0], torch.Tensor) else v
    return out


def image_grid(visuals: Dict[str, torch.Tensor], rows: int = 4, picture=None) -> torch.Tensor:
    """(3, rows*H, cols*W) in [-1, 1]: one row per sample, columns input | exemplar | warped |
    output | ground truth (the ones present), each resized to the label's size. picture: how
    the input is drawn (the data source's; None: the class palette)."""
    label = visuals["label"][:rows].detach().float().cpu()
    H, W = label.shape[-2:]
    cols = [(picture or colorize_label)(label)]
    for key in ("exemplar", "warped", "fake", "image"):
        if key in visuals:
            x = visuals[key][:rows].detach().float().cpu()
            if x.shape[-2:] != (H, W):
                x = F.interpolate(x, size=(H, W), mode="nearest")
            cols.append(x)
    return tile_rows(cols)


class _Progress:
    """One status line on a terminal (rewritten in place), a plain line per log otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, step: int, loss: float, its: float, elapsed: float) -> None:
        eta = (self.total - step) / its if its > 0 else math.inf
        eta_s = f"{int(eta // 60)}:{int(eta % 60):02d}" if math.isfinite(eta) else "?"
        line = (f"step {step}/{self.total} | loss {loss:.4f} | {its:.2f} it/s | "
                f"{int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed, eta {eta_s}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _training_state(payload: Dict[str, Any], path) -> Dict[str, Any]:
    if "train_config" not in payload or "step" not in payload:
        raise ValueError(f"{path}: holds weights only (no training state); cannot resume from it")
    return payload


class Trainer:
    """Build everything a TrainConfig names; `run()` trains and returns a summary dict.

    Under torchrun the constructor joins the process group (nccl on GPUs, gloo on CPUs);
    every process must construct its Trainer and call `run()`."""

    def __init__(self, cfg: TrainConfig, *, resume_from: Optional[str] = None, quiet: bool = False,
                 overwrite: bool = False, _payload: Optional[Dict[str, Any]] = None):
        self.cfg = cfg
        self.ctx = D.context_from_env()
        self.quiet = quiet or not self.ctx.is_main
        if cfg.batch_size % self.ctx.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is the global batch and must be divisible by the "
                             f"number of processes ({self.ctx.world_size}); use a multiple of {self.ctx.world_size}")
        self.device = self._device()
        self.out = Path(cfg.out)
        if resume_from is None and not overwrite and self.checkpoint_path().exists():
            raise ValueError(f"{self.out} already holds a run ({self.checkpoint_path()}): resume it or "
                             f"choose another output folder")
        self.spec = model_spec(cfg.model)
        # cheap checks first: building a dataset may read every file's header
        self.supervision = sup = cfg.resolved_supervision()
        source = data_source(cfg.source_name())
        if sup == "pair" and not source.exemplars_for(cfg.data_options):
            raise ValueError(f"supervision 'pair' needs exemplars, which the {source.name} data source "
                             f"does not provide with these options (use one with exemplars, e.g. synthetic, "
                             f"or give it a pair list)")
        if source.num_classes is not None and cfg.num_classes != source.num_classes:
            raise ValueError(f"num_classes {cfg.num_classes}: the {source.name} layout has {source.channels_text}; "
                             f"pass --num-classes {source.num_classes} (or leave it out)")
        if cfg.blind and sup not in ("pair", "pseudo"):
            raise ValueError(f"blind: {sup} supervision reconstructs from the image itself; an exemplar-blind "
                             f"baseline needs supervision 'pair' or 'pseudo'")
        torch.manual_seed(cfg.seed)
        self.dataset = make_dataset(cfg, ctx=self.ctx)
        what = cfg.epoch_length_needed_by()
        if what is not None:  # passes over this training set
            if isinstance(self.dataset, IterableDataset):
                raise ValueError(f"{what}: the {cfg.source_name()} data source streams samples and "
                                 f"has no length to count epochs by; give --steps (and lr_decay_per 'step') instead")
            self.cfg = cfg = cfg.resolve_epochs(len(self.dataset))
        try:
            self.model = build_model(cfg.model, self._model_config()).to(self.device)
        except TypeError as e:  # a model option of the wrong type
            raise ValueError(f"{cfg.model} options {self.cfg.model_options}: {e}") from None
        mult = size_multiple(self.model)
        if cfg.size % mult:
            raise ValueError(f"size {cfg.size}: this {cfg.model} configuration needs a multiple of {mult}")
        self.weights = cfg.loss_weights()
        self.objective = self.spec.objective(self.model, self.weights, sup, cfg).to(self.device)
        self.discriminators = self.objective.discriminators
        if self.ctx.enabled:
            self._wrap_distributed()
        self.optimizers: Dict[str, torch.optim.Optimizer] = {}
        self.roles: Dict[str, str] = {}
        self.lr_scales: Dict[str, float] = {}
        for key, (params, role, *scale) in self.objective.optimizer_groups().items():
            lr, eps = (cfg.lr_g, cfg.eps_g) if role == "g" else (cfg.lr_d, cfg.eps_d)
            self.lr_scales[key] = float(scale[0]) if scale else 1.0
            self.optimizers[key] = torch.optim.Adam(params, lr=lr * self.lr_scales[key], betas=cfg.betas, eps=eps)
            self.roles[key] = role
        self.amp_dtype = None
        if cfg.amp:
            self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")
        self.step = 0
        self.train_seconds = 0.0
        if resume_from is not None:
            self._load(resume_from, _payload)

    @property
    def opt_g(self) -> Optional[torch.optim.Optimizer]:
        """The generator's optimiser under the default key (None when the objective names it otherwise)."""
        return self.optimizers.get("opt_g")

    @property
    def discriminator(self) -> Optional[nn.Module]:
        """The single discriminator of a model that has one (None otherwise)."""
        return self.discriminators["discriminator"] if "discriminator" in self.discriminators else None

    def _device(self) -> torch.device:
        dev = resolve_device(self.cfg.device)
        if self.ctx.enabled and dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", self.ctx.local_rank)  # one GPU per process
        if dev.type == "cuda" and dev.index is None:
            # torch.cuda.set_device refuses an index-less "cuda" (seen with torch 2.11 on an H200)
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        D.init_process_group(self.ctx, dev)
        return dev

    def _wrap_distributed(self) -> None:
        """DDP around the generator and each discriminator (SyncBatchNorm first on GPUs, where
        a model uses batch norm). The generator's find_unused_parameters comes from the
        objective (`ddp_find_unused_parameters`: a step that leaves part of the network out, such
        as a pre-training phase, needs it; several generator calls per step work either way);
        a discriminator step uses every discriminator parameter."""
        from torch.nn.parallel import DistributedDataParallel as DDP
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                     for net in [self.model, *self.discriminators.values()] for m in net.modules())
        if has_bn and self.device.type != "cuda" and self.ctx.is_main:
            import warnings  # torch's SyncBatchNorm runs on GPUs only
            warnings.warn("batch norm under multi-process CPU training: each process normalises over its own "
                          "share of the batch (SyncBatchNorm needs GPUs)", stacklevel=2)
        if self.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            for name in list(self.discriminators):
                self.discriminators[name] = nn.SyncBatchNorm.convert_sync_batchnorm(self.discriminators[name])
            self.objective.model = self.model
        ids = [self.device.index] if self.device.type == "cuda" else None
        g = DDP(self.model, device_ids=ids, find_unused_parameters=self.objective.ddp_find_unused_parameters)
        ds = {name: DDP(d, device_ids=ids) for name, d in self.discriminators.items()
              if any(p.requires_grad for p in d.parameters())}
        self.objective.bind(g, ds)

    @classmethod
    def resume(cls, path, overrides: Optional[Dict[str, Any]] = None, **kw) -> "Trainer":
        """Continue the run saved at `path` with its own configuration; `overrides` may change
        only RESUMABLE_FIELDS (others raise). Without an `out` override the run folder is the
        one the checkpoint sits in (RUN/checkpoints/latest.pt)."""
        path = Path(path)
        payload = _training_state(load_checkpoint(path), path)
        d = {**payload["train_config"], **(overrides or {})}
        if "out" not in (overrides or {}) and path.parent.name == "checkpoints":
            d["out"] = str(path.parent.parent)
        return cls(TrainConfig.from_dict(d), resume_from=path, _payload=payload, **kw)

    def _model_config(self) -> Dict[str, Any]:
        c = dict(self.cfg.model_options)
        fields = {f.name for f in dataclasses.fields(self.spec.config)}
        if "label_channels" in fields:
            c.setdefault("label_channels", self.cfg.num_classes)
        if "vgg_path" in fields and self.cfg.vgg is not None:
            c.setdefault("vgg_path", self.cfg.vgg)
        return c

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "latest.pt"

    def save(self, path: Optional[Path] = None) -> Path:
        """Rank 0 writes; every process waits for it (a collective under torchrun)."""
        path = path or self.checkpoint_path()
        if self.ctx.is_main:
            extra = dict(step=self.step, train_seconds=self.train_seconds, train_config=self.cfg.to_dict(),
                         scaler=self.scaler.state_dict())
            extra.update({key: opt.state_dict() for key, opt in self.optimizers.items()})
            extra.update(self.objective.state_dict())
            save_checkpoint(path, self.model, **extra)
        if self.ctx.enabled:
            torch.distributed.barrier()
        return path

    def _load(self, path, payload: Optional[Dict[str, Any]] = None) -> None:
        if payload is None:
            payload = _training_state(load_checkpoint(path, expect_model=self.cfg.model), path)
        saved = {**TrainConfig.defaults(), **payload["train_config"]}  # fields added since keep their defaults
        now = self.cfg.to_dict()
        diff = sorted(k for k in now if k not in RESUMABLE_FIELDS and now[k] != saved.get(k))
        if diff:
            raise ValueError(f"{path}: the run was made with other settings ({', '.join(diff)}); "
                             f"on resume only {', '.join(RESUMABLE_FIELDS)} may change")
        load_weights(self.model, payload["generator"], path)
        for key, opt in self.optimizers.items():
            if key not in payload:
                raise ValueError(f"{path}: holds no {key!r} optimiser state")
            opt.load_state_dict(payload[key])
        try:
            self.objective.load_state_dict(payload)
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"{path}: {e}") from None
        if payload.get("scaler"):  # empty when the run had no fp16 scaling (CPU, or no AMP)
            self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload["step"])
        self.train_seconds = float(payload.get("train_seconds", 0.0))

    # ---- one step ----------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _generator(self) -> torch.Generator:
        """This step's random numbers: a function of (seed, step), and of the rank under torchrun
        (each process distorts / crops its own share of the batch independently)."""
        seed = self.cfg.seed * 1_000_003 + self.step
        if self.ctx.enabled:
            seed = seed * 65_537 + self.ctx.rank
        return torch.Generator().manual_seed(seed)

    def _step_optimizers(self, role: str) -> None:
        for key, opt in self.optimizers.items():
            # an optimiser whose parameters this step left out (a model part a training stage
            # does not use) is skipped: GradScaler.step refuses one with no gradients
            if self.roles[key] == role and any(p.grad is not None for g in opt.param_groups for p in g["params"]):
                self.scaler.step(opt)

    def _zero_grad(self, role: str) -> None:
        for key, opt in self.optimizers.items():
            if self.roles[key] == role:
                opt.zero_grad(set_to_none=True)

    def _set_learning_rates(self) -> None:
        """This step's learning rates: constant, then (lr_decay_steps set) linear to 0 over the
        last lr_decay_steps of the run, as the papers' code decays over niter_decay epochs. A
        function of the step alone, so a resumed run continues the same schedule."""
        f = self.objective.lr_factor(self.step)
        for key, opt in self.optimizers.items():
            base = self.cfg.lr_g if self.roles[key] == "g" else self.cfg.lr_d
            for group in opt.param_groups:
                group["lr"] = base * self.lr_scales[key] * f

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in batch.items()}
        self._set_learning_rates()
        gen = self._generator()
        self.model.train()
        logs: Dict[str, float] = {}
        self.discriminators.requires_grad_(False)   # G step: the discriminators are fixed critics
        self.objective.set_phase("g")
        # a step without a generator update still runs the terms (logs, the discriminator's fakes)
        update_generator = self.objective.generator_step(self.step)
        with self._autocast(), torch.set_grad_enabled(update_generator):
            total, terms, visuals = self.objective.generator_terms(batch, self.step, gen)
        if not D.all_true(bool(torch.isfinite(total)), self.device):  # every process stops together
            where = ""
            if self.ctx.enabled:  # name the first process whose loss is not finite
                losses = [float(x) for x in D.gather_strings(repr(float(total)))]
                bad = next(r for r, x in enumerate(losses) if not math.isfinite(x))
                where = f" on process {bad} of {self.ctx.world_size}"
                total_value = losses[bad]
            else:
                total_value = total.item()
            raise FloatingPointError(f"step {self.step}: generator loss is {total_value}{where}"
                                     + ("" if where else f" (terms: { {k: float(v) for k, v in terms.items()} })"))
        if update_generator:
            self._zero_grad("g")
            self.scaler.scale(total).backward()
            self._step_optimizers("g")
        logs.update({f"G/{k}": v.item() for k, v in terms.items()})
        logs["G/total"] = total.item()
        if len(self.discriminators) and self.objective.discriminator_step(self.step):
            self.discriminators.requires_grad_(True)
            self.objective.set_phase("d")
            with self._autocast():
                d_loss, d_terms = self.objective.discriminator_terms(visuals, self.step)
            self._zero_grad("d")
            self.scaler.scale(d_loss).backward()
            self._step_optimizers("d")
            logs.update({f"D/{k}": v.item() for k, v in d_terms.items()})
            self.objective.set_phase("g")
        self.scaler.update()
        self._visuals = visuals
        return logs

    # ---- dry run ------------------------------------------------------------------------------

    def dry_run(self) -> Dict[str, Any]:
        """What a run would be, without training or writing anything: the resolved config, the
        trainable parameters of the generator and each discriminator, and the activation memory
        one sample costs: the bytes autograd saves for the backward of one sample's generator
        step, or of its discriminator step where that saves more (the two backward passes do
        not overlap), at the run's size (distinct storages, counted once each; weights
        excluded), the larger of the first and the last step (a schedule may switch terms or
        stages on). Measured against the peak of a real step in tests/test_dry_run_memory.py."""
        count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
        parameters = dict(generator=count(self.model), **{name: count(d) for name, d in self.discriminators.items()})
        if isinstance(self.dataset, IterableDataset):
            sample = next(iter(self.dataset))
        else:
            sample = self.dataset[DrawIndex(0, 0)]
        batch = {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in _collate([sample]).items()}
        self.model.train()
        saved = []
        try:
            for step in sorted({0, self.cfg.steps - 1}):
                self.discriminators.requires_grad_(False)
                self.objective.set_phase("g")
                g_bytes, (total, _, visuals) = self._saved_bytes(
                    lambda: self.objective.generator_terms(batch, step, self._generator()))
                del total
                d_bytes = 0
                if len(self.discriminators) and self.objective.discriminator_step(step):
                    self.discriminators.requires_grad_(True)
                    self.objective.set_phase("d")
                    d_bytes, _ = self._saved_bytes(lambda: self.objective.discriminator_terms(visuals, step))
                saved.append(max(g_bytes, d_bytes))
        finally:
            self.discriminators.requires_grad_(True)
            self.objective.set_phase("g")
        return dict(config=self.cfg.to_dict(), supervision=self.supervision, parameters=parameters,
                    activation_bytes_per_sample=int(max(saved)))

    def _saved_bytes(self, fn):
        """(bytes of the distinct storages autograd saves for backward while `fn` runs, weights
        and buffers of the networks excluded; fn's result)."""
        modules = [self.model, self.discriminators] + ([self.objective.vgg] if self.objective.vgg is not None else [])
        weights = {t.untyped_storage().data_ptr() for m in modules for t in [*m.parameters(), *m.buffers()]}
        seen: Dict[Any, int] = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in weights:
                seen[(st.data_ptr(), str(st.device))] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self._autocast():
            result = fn()
        return sum(seen.values()), result

    # ---- the loop ----------------------------------------------------------------------------

    def _writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            if not self.quiet:
                print("tensorboard is not installed: scalars go to metrics.jsonl and grids to samples/ only "
                      "(pip install tensorboard for TensorBoard logs)", file=sys.stderr)
            return None
        return SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)

    def _open_logs(self):
        """Run-folder files are created once the first step has succeeded: a run that fails
        on its first batch (bad data, a size the model cannot take) leaves nothing behind."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        path = self.out / "metrics.jsonl"
        if path.exists():  # resumed: drop lines logged after the checkpoint we continue from
            keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= self.step - 1]
            path.write_text("".join(l + "\n" for l in keep))
        return open(path, "a"), self._writer()

    def _loader(self) -> DataLoader:
        cfg, ctx = self.cfg, self.ctx
        local = cfg.batch_size // ctx.world_size
        if isinstance(self.dataset, IterableDataset):
            # the source shards itself by rank; `start` (when it has one) tells it where the run is
            if hasattr(self.dataset, "start"):
                self.dataset.start(self.step, local)
            return DataLoader(self.dataset, batch_size=local, num_workers=cfg.num_workers, collate_fn=_collate,
                              drop_last=True)
        sampler = _StepSampler(len(self.dataset), cfg.batch_size, self.step, cfg.steps, cfg.seed,
                               ctx.rank, ctx.world_size)
        return DataLoader(self.dataset, batch_size=local, sampler=sampler, num_workers=cfg.num_workers,
                          collate_fn=_collate, drop_last=True, persistent_workers=False)

    def run(self) -> Dict[str, Any]:
        """Train from the current step to cfg.steps, or until cfg.max_minutes of training
        time have passed in this call; checkpoint at the end."""
        cfg = self.cfg
        if self.step >= cfg.steps:
            return self._summary(stopped="done")
        loader = self._loader()
        progress = _Progress(cfg.steps, sys.stderr)
        main = self.ctx.is_main
        metrics = writer = None
        stopped, window_t, window_n, saved_at = "steps", time.perf_counter(), 0, None
        last_loss, session_seconds = math.nan, 0.0
        batches = iter(loader)
        try:
            t_prev = time.perf_counter()
            while self.step < cfg.steps:  # an iterable source does not end by itself
                batch = next(batches, None)
                # every process trains this step or none does (an iterable source's shards may
                # run out at different steps; a lone process would wait in a collective forever)
                if not D.all_true(batch is not None, self.device):
                    stopped = "data"  # the source ran out before cfg.steps
                    break
                logs = self.train_step(batch)
                self.step += 1
                now = time.perf_counter()
                self.train_seconds += now - t_prev
                session_seconds += now - t_prev
                if metrics is None and main:
                    metrics, writer = self._open_logs()
                window_n += 1
                # one process out of time stops them all, at the same step
                out_of_time = cfg.max_minutes is not None and session_seconds >= cfg.max_minutes * 60
                out_of_time = not D.all_true(not out_of_time, self.device)
                log_now = self.step % cfg.log_every == 0 or self.step == cfg.steps or out_of_time
                if log_now and self.ctx.enabled:  # the global batch's losses: mean over processes
                    logs = D.mean_over_processes(logs, self.device)
                last_loss = logs["G/total"]
                if main and log_now:
                    its = window_n / max(now - window_t, 1e-9)
                    window_t, window_n = now, 0
                    metrics.write(json.dumps(dict(step=self.step, seconds=round(self.train_seconds, 3),
                                                  it_per_s=round(its, 3), **logs)) + "\n")
                    metrics.flush()
                    if writer is not None:
                        for k, v in logs.items():
                            writer.add_scalar(k, v, self.step)
                        writer.add_scalar("speed/it_per_s", its, self.step)
                    if not self.quiet:
                        progress.update(self.step, last_loss, its, self.train_seconds)
                if main and (self.step % cfg.image_every == 0 or self.step == cfg.steps or out_of_time):
                    grid = image_grid(self._visuals, picture=data_source(self.cfg.source_name()).picture)
                    write_image(grid, self.out / "samples" / f"step_{self.step:06d}.png")
                    if writer is not None:
                        writer.add_image("grid/input|exemplar|warped|output|truth", (grid + 1) / 2, self.step)
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
                    saved_at = self.step
                if out_of_time:
                    stopped = "time"
                    break
                t_prev = time.perf_counter()  # checkpoint/log I/O is not training time
        finally:
            if metrics is not None:
                metrics.close()
            if writer is not None:
                writer.close()
            if not self.quiet:
                progress.close()
        if saved_at != self.step:
            self.save()
        summary = self._summary(stopped=stopped, loss=last_loss)
        if self.ctx.enabled:
            digest = D.parameter_digest(list(self.model.state_dict().values())
                                        + [t for d in self.discriminators.values() for t in d.state_dict().values()])
            digests = D.gather_strings(digest)
            summary["world_size"] = self.ctx.world_size
            summary["ranks_identical"] = len(set(digests)) == 1
        return summary

    def _summary(self, **kw) -> Dict[str, Any]:
        return dict(step=self.step, train_seconds=round(self.train_seconds, 1),
                    checkpoint=str(self.checkpoint_path()), **kw)
