"""The training loop behind `exsynth train`.

A run lives in one folder: config.json (the resolved TrainConfig), checkpoints/latest.pt
(atomic, every `checkpoint_every` steps and at the end), metrics.jsonl (one line per
logged step), samples/step_XXXXXX.png (image grids: input | exemplar | warped | output |
ground truth) and, when the tensorboard package is installed, tb/ with the same scalars
and grids. Everything random is a function of (seed, step), so `resume` continues the
same run: same batches, same distortions, same crops.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..checkpoint import build_model, load_checkpoint, load_weights, save_checkpoint, size_multiple
from ..imageio import colorize_label, tile_rows, write_image
from ..inference import resolve_device
from .config import RESUMABLE_FIELDS, TrainConfig
from .objectives import CoCosNetObjective, MSCAObjective

__all__ = ["Trainer", "make_dataset", "image_grid"]


def make_dataset(cfg: TrainConfig, split: str = "train", length: Optional[int] = None) -> Dataset:
    if cfg.data == "synthetic":
        from ..data import SyntheticExemplarDataset
        return SyntheticExemplarDataset(cfg.size, num_classes=cfg.num_classes,
                                        length=length or cfg.train_length, split=split, seed=cfg.data_seed,
                                        cache=split == "train")
    from ..data.folder import PairedFolderDataset
    return PairedFolderDataset(cfg.data, (cfg.size, cfg.size), cfg.num_classes)


class _StepSampler(Sampler):
    """Indices of batches start_step.. in order: the g-th sample drawn (g = step * B + i) is
    position g mod N of epoch g // N's shuffle, seeded by (seed, epoch). A pure function of
    the step, so a resumed run sees the batches the uninterrupted run would have."""

    def __init__(self, n: int, batch_size: int, start_step: int, steps: int, seed: int):
        self.n, self.b, self.start, self.steps, self.seed = n, batch_size, start_step, steps, seed
        self._epoch, self._perm = -1, None

    def _order(self, epoch: int):
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm

    def __iter__(self) -> Iterator[int]:
        for s in range(self.start, self.steps):
            for i in range(self.b):
                g = s * self.b + i
                yield self._order(g // self.n)[g % self.n]

    def __len__(self) -> int:
        return max(0, self.steps - self.start) * self.b


def _collate(samples):
    out = {}
    for k in samples[0]:
        v = [s[k] for s in samples]
        out[k] = torch.stack(v) if isinstance(v[0], torch.Tensor) else v
    return out


def image_grid(visuals: Dict[str, torch.Tensor], rows: int = 4) -> torch.Tensor:
    """(3, rows*H, cols*W) in [-1, 1]: one row per sample, columns input | exemplar | warped |
    output | ground truth (the ones present), each resized to the label's size."""
    label = visuals["label"][:rows].detach().float().cpu()
    H, W = label.shape[-2:]
    cols = [colorize_label(label)]
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
    if "train_config" not in payload or "opt_g" not in payload:
        raise ValueError(f"{path}: holds weights only (no training state); cannot resume from it")
    return payload


class Trainer:
    """Build everything a TrainConfig names; `run()` trains and returns a summary dict."""

    def __init__(self, cfg: TrainConfig, *, resume_from: Optional[str] = None, quiet: bool = False,
                 overwrite: bool = False, _payload: Optional[Dict[str, Any]] = None):
        self.cfg, self.quiet = cfg, quiet
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out)
        if resume_from is None and not overwrite and self.checkpoint_path().exists():
            raise ValueError(f"{self.out} already holds a run ({self.checkpoint_path()}): resume it or "
                             f"choose another output folder")
        torch.manual_seed(cfg.seed)
        self.dataset = make_dataset(cfg)
        try:
            self.model = build_model(cfg.model, self._model_config()).to(self.device)
        except TypeError as e:  # a model option of the wrong type
            raise ValueError(f"{cfg.model} options {self.cfg.model_options}: {e}") from None
        mult = size_multiple(self.model)
        if cfg.size % mult:
            raise ValueError(f"size {cfg.size}: this {cfg.model} configuration needs a multiple of {mult}")
        weights = cfg.loss_weights()
        self.weights = weights
        sup = cfg.resolved_supervision()
        if sup == "pair" and cfg.data != "synthetic":
            raise ValueError("supervision 'pair' needs exemplar/ground-truth triples: use data='synthetic'")
        if (cfg.model, sup) in (("cocosnet", "self"), ("msca", "pseudo")):
            raise ValueError(f"supervision {sup!r} is not defined for {cfg.model}")
        if cfg.blind and sup == "self":
            raise ValueError("blind: self-supervision reconstructs from the image itself; an exemplar-blind "
                             "baseline needs supervision 'pair'")
        self.discriminator = None
        if weights.get("adv", 0) or weights.get("gan_feat", 0):
            from ..models import MultiscalePatchDiscriminator
            self.discriminator = MultiscalePatchDiscriminator(
                cfg.num_classes, 3, width=cfg.disc_width, n_layers=cfg.disc_layers,
                num_scales=cfg.disc_scales).to(self.device)
        vgg = None
        if any(weights.get(k, 0) for k in ("feat", "perc", "context")):
            from ..losses import VGGLoss
            from ..nn import load_vgg19
            vgg = VGGLoss(load_vgg19(cfg.vgg)).to(self.device)
        kw = dict(discriminator=self.discriminator, vgg=vgg, blind=cfg.blind)
        if cfg.model == "cocosnet":
            self.objective = CoCosNetObjective(self.model, weights, sup, mask_warmup_steps=cfg.mask_warmup_steps, **kw)
        else:
            self.objective = MSCAObjective(self.model, weights, sup, attn_pretrain_steps=cfg.attn_pretrain_steps, **kw)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(params, lr=cfg.lr_g, betas=cfg.betas)
        self.opt_d = (torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
                      if self.discriminator is not None else None)
        self.amp_dtype = None
        if cfg.amp:
            self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and self.device.type == "cuda")
        self.step = 0
        self.train_seconds = 0.0
        if resume_from is not None:
            self._load(resume_from, _payload)

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
        c.setdefault("label_channels", self.cfg.num_classes)
        if self.cfg.model == "msca" and self.cfg.vgg is not None:
            c.setdefault("vgg_path", self.cfg.vgg)
        return c

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "latest.pt"

    def save(self, path: Optional[Path] = None) -> Path:
        path = path or self.checkpoint_path()
        extra = dict(step=self.step, train_seconds=self.train_seconds, train_config=self.cfg.to_dict(),
                     opt_g=self.opt_g.state_dict(), scaler=self.scaler.state_dict())
        if self.discriminator is not None:
            extra["discriminator"] = self.discriminator.state_dict()
            extra["opt_d"] = self.opt_d.state_dict()
        save_checkpoint(path, self.model, **extra)
        return path

    def _load(self, path, payload: Optional[Dict[str, Any]] = None) -> None:
        if payload is None:
            payload = _training_state(load_checkpoint(path, expect_model=self.cfg.model), path)
        saved = dict(payload["train_config"])
        now = self.cfg.to_dict()
        diff = sorted(k for k in now if k not in RESUMABLE_FIELDS and now[k] != saved.get(k))
        if diff:
            raise ValueError(f"{path}: the run was made with other settings ({', '.join(diff)}); "
                             f"on resume only {', '.join(RESUMABLE_FIELDS)} may change")
        load_weights(self.model, payload["generator"], path)
        self.opt_g.load_state_dict(payload["opt_g"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(payload["discriminator"])
            self.opt_d.load_state_dict(payload["opt_d"])
        if payload.get("scaler"):  # empty when the run had no fp16 scaling (CPU, or no AMP)
            self.scaler.load_state_dict(payload["scaler"])
        self.step = int(payload["step"])
        self.train_seconds = float(payload.get("train_seconds", 0.0))

    # ---- one step ----------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        batch = {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in batch.items()}
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        self.model.train()
        logs: Dict[str, float] = {}
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)   # G step: D is a fixed critic
        with self._autocast():
            total, terms, visuals = self.objective.generator_terms(batch, self.step, gen)
        if not torch.isfinite(total):
            raise FloatingPointError(f"step {self.step}: generator loss is {total.item()} "
                                     f"(terms: { {k: float(v) for k, v in terms.items()} })")
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.opt_g)
        logs.update({f"G/{k}": v.item() for k, v in terms.items()})
        logs["G/total"] = total.item()
        if self.discriminator is not None and not self.objective.pretraining(self.step):
            self.discriminator.requires_grad_(True)
            with self._autocast():
                d_loss = self.objective.discriminator_loss(visuals["label"], visuals["image"], visuals["fake"])
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(d_loss).backward()
            self.scaler.step(self.opt_d)
            logs["D/hinge"] = d_loss.item()
        self.scaler.update()
        self._visuals = visuals
        return logs

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

    def run(self) -> Dict[str, Any]:
        """Train from the current step to cfg.steps, or until cfg.max_minutes of training
        time have passed in this call; checkpoint at the end."""
        cfg = self.cfg
        if self.step >= cfg.steps:
            return self._summary(stopped="done")
        loader = DataLoader(self.dataset, batch_size=cfg.batch_size,
                            sampler=_StepSampler(len(self.dataset), cfg.batch_size, self.step, cfg.steps, cfg.seed),
                            num_workers=cfg.num_workers, collate_fn=_collate, drop_last=True,
                            persistent_workers=False)
        progress = _Progress(cfg.steps, sys.stderr)
        metrics = writer = None
        stopped, window_t, window_n = "steps", time.perf_counter(), 0
        last_loss, session_seconds = math.nan, 0.0
        try:
            t_prev = time.perf_counter()
            for batch in loader:
                logs = self.train_step(batch)
                self.step += 1
                now = time.perf_counter()
                self.train_seconds += now - t_prev
                session_seconds += now - t_prev
                if metrics is None:
                    metrics, writer = self._open_logs()
                window_n += 1
                last_loss = logs["G/total"]
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
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
                out_of_time = cfg.max_minutes is not None and session_seconds >= cfg.max_minutes * 60
                if self.step % cfg.image_every == 0 or self.step == cfg.steps or out_of_time:
                    grid = image_grid(self._visuals)
                    write_image(grid, self.out / "samples" / f"step_{self.step:06d}.png")
                    if writer is not None:
                        writer.add_image("grid/input|exemplar|warped|output|truth", (grid + 1) / 2, self.step)
                if self.step % cfg.checkpoint_every == 0:
                    self.save()
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
        self.save()
        return self._summary(stopped=stopped, loss=last_loss)

    def _summary(self, **kw) -> Dict[str, Any]:
        return dict(step=self.step, train_seconds=round(self.train_seconds, 1),
                    checkpoint=str(self.checkpoint_path()), **kw)
