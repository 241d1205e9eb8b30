"""`exsynth` command line.

    exsynth doctor                      which backends are usable here, and why not
    exsynth train ...                   train a registered model (see `exsynth train -h`)
    exsynth synthesize ...              label map(s) + exemplar(s) -> photo(s)
    exsynth eval ...                    PSNR / SSIM against exact ground truth + baselines
    exsynth demo                        the shipped checkpoint on held-out synthetic data

Errors the user can fix (missing files, wrong modes or sizes, a checkpoint of another
model) print one line `exsynth <command>: error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .imageio import DEFAULT_MAX_PIXELS
from .options import given_values

__all__ = ["main"]


class UsageError(Exception):
    """Bad input to a command: reported as one line, exit status 2. Under torchrun an error
    every process meets alike (a bad option, before training) is printed by rank 0 alone."""

    def __init__(self, message: str, *, same_on_every_process: bool = True):
        super().__init__(message)
        self.same_on_every_process = same_on_every_process


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


# ---- doctor --------------------------------------------------------------------------------------

def doctor(args) -> int:
    import torch

    import exsynth
    from exsynth import ops

    print(f"exsynth {exsynth.__version__}  python {platform.python_version()}  torch {torch.__version__}"
          f"  ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU build'})")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"threads: {torch.get_num_threads()}")
    print()
    print(f"{'backend':<10} {'usable':<7} why")
    for name, info in ops.backends().items():
        print(f"{name:<10} {'yes' if info.available else 'no':<7} {info.reason}")
    return 0


# ---- train ---------------------------------------------------------------------------------------

def _device(name: str):
    from exsynth.inference import resolve_device
    try:
        return resolve_device(name)
    except ValueError as e:
        raise UsageError(f"--{e}") from None


def _parse_kv(items, what):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"{what} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v  # a bare string
    return out


def _train_config(args):
    """TrainConfig from --preset < --config file < flags; returns (config, the TrainConfig fields
    given as flags)."""
    from exsynth.train import PRESETS, TrainConfig, load_config_file
    d = {}
    if args.preset:
        if args.preset not in PRESETS:
            raise UsageError(f"--preset {args.preset!r}: known presets are {sorted(PRESETS)}")
        d.update(PRESETS[args.preset])
    if args.config:
        try:
            file_cfg = load_config_file(args.config)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(str(e)) from None
        for key in ("model_options", "losses", "data_options"):
            if key in file_cfg:
                d.setdefault(key, {}).update(file_cfg.pop(key))
        d.update(file_cfg)
    given = given_values(args, args.train_dests)
    if "steps" in given and "epochs" not in given:
        d["epochs"] = None   # an explicit --steps overrides a preset's epochs
    d.update(given)
    d.setdefault("model_options", {}).update(given_values(args, args.model_dests))
    d["model_options"].update(_parse_kv(args.option, "--option"))
    d.setdefault("data_options", {}).update(given_values(args, args.data_dests))
    d["data_options"].update(_parse_kv(args.data_option, "--data-option"))
    d.setdefault("losses", {}).update(_parse_kv(args.loss, "--loss"))
    try:
        return TrainConfig.from_dict(d), given
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def _worker_message(e: BaseException) -> str:
    """The error itself, not the traceback a DataLoader worker wraps around it: torch re-raises
    a worker's exception as the same type whose message holds the worker's whole traceback."""
    msg = str(e)
    if "Original Traceback" not in msg:
        return msg
    lines = [line for line in msg.splitlines() if line.strip()]
    # the traceback ends with "module.ExceptionType: message", the message possibly multi-line
    for i in range(len(lines) - 1, -1, -1):
        head, sep, rest = lines[i].partition(": ")
        if sep and not lines[i].startswith(" ") and head.replace(".", "").replace("_", "").isalnum():
            return " ".join([rest.strip(), *(line.strip() for line in lines[i + 1:])])
    return lines[-1].strip()


def train(args) -> int:
    import torch

    from exsynth.checkpoint import CheckpointError
    from exsynth.imageio import ImageError
    from exsynth.train import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume is not None:
        fixed = [f for f, v in (("--preset", args.preset), ("--config", args.config), ("--option", args.option),
                                ("--loss", args.loss), ("--data-option", args.data_option)) if v]
        fixed += ["--" + dest.replace("_", "-") for dest in [*args.model_dests, *args.data_dests]
                  if hasattr(args, dest)]
        if fixed:
            raise UsageError(f"--resume continues a run with its checkpoint's configuration; drop {', '.join(fixed)}")
    cfg, given = _train_config(args)
    try:
        if args.resume is None:
            trainer = Trainer(cfg, quiet=args.quiet, overwrite=args.overwrite or args.dry_run)
        else:  # the checkpoint's configuration; flags may change only RESUMABLE_FIELDS
            path = Path(args.resume) if args.resume != "latest" else Path(cfg.out) / "checkpoints" / "latest.pt"
            trainer = Trainer.resume(path, given, quiet=args.quiet)
    except (ValueError, TypeError, OSError, ImageError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    cfg = trainer.cfg
    if args.dry_run:
        try:
            plan = trainer.dry_run()
        except (ImageError, ValueError, OSError) as e:
            raise UsageError(str(e)) from None
        mib = plan["activation_bytes_per_sample"] / 2 ** 20
        print(json.dumps(plan["config"], indent=2))
        print(f"{cfg.model}, {plan['supervision']} supervision: "
              + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in plan["parameters"].items()) + " trainable parameters",
              file=sys.stderr)
        print(f"activations saved for one training step (the larger of its generator and discriminator "
              f"passes): {mib:.1f} MiB per sample "
              f"(x {cfg.batch_size // trainer.ctx.world_size} per process at this batch)", file=sys.stderr)
        return 0
    n = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if not trainer.quiet:
        procs = f", {trainer.ctx.world_size} processes" if trainer.ctx.enabled else ""
        print(f"training {cfg.model} ({n / 1e6:.2f} M parameters) on {cfg.source_name()} {cfg.data} {cfg.size}px, "
              f"global batch {cfg.batch_size}{procs}, {trainer.device}, from step {trainer.step} -> {cfg.out}",
              file=sys.stderr)
    try:
        summary = trainer.run()
    except (ImageError, ValueError, OSError) as e:  # bad data met while training
        raise UsageError(f"stopped at step {trainer.step}: {_worker_message(e)}", same_on_every_process=False) from None
    except FloatingPointError as e:
        ck = trainer.checkpoint_path()
        last = f"last checkpoint: {ck}" if ck.exists() else "no checkpoint was written yet"
        raise UsageError(f"training diverged: {e} ({last})") from None
    if trainer.ctx.is_main:
        print(json.dumps(summary))
    from exsynth.train.distributed import shutdown
    shutdown()
    return 0


# ---- synthesize ----------------------------------------------------------------------------------

def _load_generator(path, device, expect=None):
    from exsynth.checkpoint import CheckpointError, load_generator
    try:
        return load_generator(path, expect_model=expect, device=device)
    except CheckpointError as e:
        raise UsageError(str(e)) from None


def _pairs(args):
    """[(stem, label_path, exemplar_path, exemplar_label_path or None)] from files or folders."""
    from exsynth.imageio import IMAGE_SUFFIXES, list_images
    inp, ex, exl = Path(args.input), Path(args.exemplar), Path(args.exemplar_label) if args.exemplar_label else None
    if not inp.exists():
        raise UsageError(f"--input {inp}: no such file or folder")
    if not ex.exists():
        raise UsageError(f"--exemplar {ex}: no such file or folder")
    if exl is not None and not exl.exists():
        raise UsageError(f"--exemplar-label {exl}: no such file or folder")
    if inp.is_file():
        if ex.is_dir() or (exl is not None and exl.is_dir()):
            raise UsageError("--input is a file: --exemplar and --exemplar-label must be files too")
        return [(inp.stem, inp, ex, exl)]
    labels = list_images(inp, (".png", ".npy"))
    if not labels:
        raise UsageError(f"--input {inp}: no .png label maps (or .npy input maps) in the folder")

    def match(folder, stem, what, suffixes=IMAGE_SUFFIXES):
        if folder is None or folder.is_file():
            return folder
        hits = [p for p in list_images(folder, suffixes) if p.stem == stem]
        if not hits:
            raise UsageError(f"{what} {folder}: no file named {stem}.* for input {stem}.png")
        return hits[0]

    return [(p.stem, p, match(ex, p.stem, "--exemplar"), match(exl, p.stem, "--exemplar-label", (".png", ".npy"))) for p in labels]


def _check_channels(src, k: int) -> None:
    """The checkpoint's label channels must be the data source's count (where it fixes one)."""
    if src.num_classes is not None and k != src.num_classes:
        raise UsageError(f"the checkpoint's model has {k} label channels; the {src.name} layout has "
                         f"{src.channels_text}")


def _load_lpips(args, device):
    """LPIPS from --lpips-lin / --lpips-vgg16, or None when neither is given."""
    if not (args.lpips_lin or args.lpips_vgg16):
        return None
    from exsynth.metrics import LPIPS
    try:
        return LPIPS.from_files(args.lpips_vgg16, args.lpips_lin).to(device)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None


def _data_source(name):
    """The registered data source `name`; one error line listing the registered ones otherwise."""
    from exsynth.registry import RegistryError, data_source
    try:
        return data_source(name, what="--dataset")
    except RegistryError as e:
        raise UsageError(str(e)) from None


def _synthesize_dataset(args) -> int:
    """Every sample of a data source's split through the model, written as OUT/NAME.png: a
    layout's validation images with their listed (easy) references, as the papers test."""
    import torch

    from exsynth.checkpoint import size_multiple
    from exsynth.evaluate import sample_name
    from exsynth.imageio import ImageError, write_image
    from exsynth.inference import synthesize, visuals_of

    device = _device(args.device)
    model, payload = _load_generator(args.checkpoint, device)
    src = _data_source(args.dataset)
    opts = _parse_kv(args.data_option, "--data-option")
    if not src.exemplars_for(opts):
        raise UsageError(f"--dataset {src.name}: its samples carry no exemplars to synthesize from"
                         + (" (give it a pair list: --data-option pairs=FILE)" if src.exemplars_with else ""))
    if args.warped and "warped" not in visuals_of(model):
        raise UsageError(f"--warped: the {payload['model']} model has no warped picture")
    K = model.cfg.label_channels
    _check_channels(src, K)
    size = args.size or (payload.get("train_config") or {}).get("size") or 64
    if size % size_multiple(model):
        raise UsageError(f"--size {size}: this model needs a multiple of {size_multiple(model)}")
    try:
        ds = src.make(args.data, size=size, num_classes=K, split=args.split, length=args.limit, options=opts)
    except (ImageError, ValueError, OSError) as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    if out.suffix or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: give a folder with --dataset")
    n = len(ds) if args.limit is None else min(len(ds), args.limit)
    names = [sample_name(ds, i) for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, args.batch_size):
        try:
            items = [ds[i] for i in range(start, min(n, start + args.batch_size))]
        except ImageError as e:
            raise UsageError(str(e)) from None
        b = {k: torch.stack([it[k] for it in items]).to(device) for k in ("label", "exemplar", "exemplar_label")}
        res = synthesize(model, b["label"], b["exemplar"], b["exemplar_label"], warped=args.warped)
        for j, name in enumerate(names[start:start + len(items)]):
            write_image(res["fake"][j], out / f"{name}.png")
            if args.warped:
                write_image(res["warped"][j], out / f"{name}_warped.png")
    print(f"{out}: {n} {src.name} {args.split} samples at {size}px ({time.perf_counter() - t0:.1f} s)")
    return 0


def synthesize_cmd(args) -> int:
    import torch

    from exsynth.checkpoint import size_multiple
    import torch.nn.functional as F

    from exsynth.imageio import ImageError, image_format, read_image, read_input_map, resize_image, write_image
    from exsynth.inference import correspondence_picture, needs_exemplar_label, synthesize, visuals_of

    if args.dataset is not None:
        if args.input or args.exemplar or args.exemplar_label:
            raise UsageError("--dataset synthesizes a data source's split: drop --input, --exemplar, --exemplar-label")
        return _synthesize_dataset(args)
    if not args.input or not args.exemplar:
        raise UsageError("give --input and --exemplar (files or folders), or --dataset NAME --data ROOT")
    device = _device(args.device)
    model, payload = _load_generator(args.checkpoint, device)
    K = model.cfg.label_channels
    needs_exl = needs_exemplar_label(model)
    for flag, visual in (("--warped", "warped"), ("--correspondence", "correspondence")):
        if getattr(args, visual) and visual not in visuals_of(model):
            raise UsageError(f"{flag}: the {payload['model']} model has no {visual} picture")
    from exsynth.inference import direction_options
    from exsynth.registry import spec_of
    spec = spec_of(model)
    try:   # before any file is read
        direction_options(model, args.direction)
    except ValueError as e:
        raise UsageError(f"--{e}" + ("" if spec.directions else " (drop --direction)")) from None
    jobs = _pairs(args)
    if needs_exl and any(j[3] is None for j in jobs):
        raise UsageError(f"this {payload['model']} checkpoint needs the exemplar's label map: pass --exemplar-label")
    out = Path(args.out)
    many = len(jobs) > 1 or Path(args.input).is_dir()
    if many and out.suffix:
        raise UsageError(f"--out {out}: give a folder when --input is a folder")
    if not many and out.is_dir():
        out = out / f"{jobs[0][0]}.png"
    if not many and image_format(out) is None:
        raise UsageError(f"--out {out}: unknown image format {out.suffix!r} (use .png or .jpg)")
    if many and out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    mult = size_multiple(model)
    # read and check everything before writing anything
    loaded = []
    try:
        for stem, lp, ep, elp in jobs:
            # a two-domain model's input is a photo of the source domain, not a label map
            lab = read_image(lp, max_pixels=args.max_pixels) if spec.image_input else \
                read_input_map(lp, K, max_pixels=args.max_pixels)
            H, W = lab.shape[1:]
            if H % mult or W % mult:
                raise UsageError(f"{lp}: label map is {H}x{W}; this model needs sides divisible by {mult}")
            ex_raw = read_image(ep, max_pixels=args.max_pixels)  # decoded once; sizes checked before resizing
            exl = None
            if elp is not None:
                raw = read_input_map(elp, K, max_pixels=args.max_pixels)
                if tuple(raw.shape[1:]) != tuple(ex_raw.shape[1:]):
                    raise UsageError(f"{elp}: exemplar label map is {raw.shape[1]}x{raw.shape[2]} but the exemplar "
                                     f"{ep} is {ex_raw.shape[1]}x{ex_raw.shape[2]}")
                # nearest: no invented classes (or edges) between regions
                exl = raw if raw.shape[1:] == (H, W) else F.interpolate(raw[None], size=(H, W), mode="nearest")[0]
            loaded.append((stem, lab, resize_image(ex_raw, (H, W)), exl))
    except ImageError as e:
        raise UsageError(str(e)) from None
    results = []
    for stem, lab, ex, exl in loaded:
        res = synthesize(model, lab[None].to(device), ex[None].to(device),
                         None if exl is None else exl[None].to(device), correspondence=args.correspondence,
                         warped=args.warped or args.correspondence, direction=args.direction)
        results.append((stem, ex, res))
    for stem, ex, res in results:
        target = out / f"{stem}.png" if many else out
        write_image(res["fake"][0], target)
        base = target.with_suffix("")
        if args.warped:
            write_image(res["warped"][0], base.with_name(base.name + "_warped.png"))
        if args.correspondence:
            pic = correspondence_picture(ex[None].to(device), res["warped"], res["correspondence"])
            write_image(pic, base.with_name(base.name + "_correspondence.png"))
        print(target)
    return 0


# ---- eval ----------------------------------------------------------------------------------------

def _eval_source(payload, args):
    """(data source spec, root, options, split): --dataset / --data, else the checkpoint's
    training data where it has exact ground truth, else synthetic."""
    from exsynth.registry import data_sources, default_source
    tc = payload.get("train_config") or {}
    sources = data_sources()
    opts = _parse_kv(args.data_option, "--data-option")
    if args.dataset is None and args.data is None:
        root = tc.get("data", "synthetic")
        name = tc.get("dataset") or default_source(root)
        if name not in sources or not sources[name].pairs:
            root, name = "synthetic", "synthetic"
        else:
            opts = {**(tc.get("data_options") or {}), **opts}
    else:
        root = args.data if args.data is not None else "synthetic"
        name = args.dataset or default_source(root)
    src = _data_source(name)
    if not src.exemplars_for(opts):
        given = "--dataset" if args.dataset else f"--data {root} (read as --dataset {name})"
        raise UsageError(f"{given}: the {name} data source gives no exemplars to synthesize from"
                         + (" (give it a pair list: --data-option pairs=FILE)" if src.exemplars_with else ""))
    split = args.split or ("test" if src.pairs else "val")
    return src, root, opts, split


def _file_digest(path) -> Optional[str]:
    import hashlib
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress_printer(what: str, quiet: bool):
    """progress(done, total) on stderr: rewritten in place on a terminal, else a line per 10 %."""
    tty = sys.stderr.isatty()
    state = {"last": -1, "t0": time.perf_counter()}

    def show(done: int, total: int) -> None:
        if quiet or total <= 0:
            return
        tenth = 10 * done // total
        if tty or tenth > state["last"] or done == total:
            state["last"] = tenth
            rate = done / max(time.perf_counter() - state["t0"], 1e-9)
            end = "\n" if (done == total or not tty) else ""
            print(f"\r{what}: {done}/{total} images ({rate:.1f}/s)", end=end, file=sys.stderr, flush=True)
    return show


def _metric_suite(args, device, dense: bool, seed: int, lpips=None):
    """MetricSuite from --inception / --vgg (each optional: missing weights skip their metrics)
    and the given LPIPS."""
    from exsynth.metrics import MetricSuite
    from exsynth.nn import load_fid_inception, load_vgg19
    inception = vgg = None
    try:
        if args.inception:
            inception = load_fid_inception(args.inception)
        if args.vgg:
            vgg = load_vgg19(args.vgg)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        flag = "--inception" if inception is None and args.inception else "--vgg"
        raise UsageError(f"{flag}: {e}") from None
    return MetricSuite(inception=inception, vgg=vgg, lpips=lpips, kid=args.kid, swd=not args.no_swd, dense=dense,
                       seed=seed, device=device)


_PAPER_METRICS = (("fid", "FID", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("swd", "SWD (x1e3, mean of levels)", "{:.2f}"),
                  ("semantic_consistency", "semantic consistency", "{:.4f}"),
                  ("style_color", "style relevance: colour", "{:.4f}"),
                  ("style_texture", "style relevance: texture", "{:.4f}"), ("lpips", "LPIPS", "{:.4f}"),
                  ("psnr", "PSNR dB", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"))


def _print_paper_metrics(suite, scores) -> None:
    for key, name, fmt in _PAPER_METRICS:
        if key in scores:
            extra = f" +- {scores['kid_std']:.4f}" if key == "kid" else ""
            print(f"  {name:<28}{fmt.format(scores[key])}{extra}")
    levels = [k for k in scores if k.startswith("swd/")]
    if levels:
        print("  SWD per level               " + ", ".join(f"{k[4:]} {scores[k]:.2f}" for k in levels))
    for line in suite.skipped.values():
        print(f"  skipped: {line}")


def _eval_record(args, **fields) -> Dict[str, Any]:
    import numpy as np
    import torch

    import exsynth
    weights = {flag: dict(path=str(p), sha256=_file_digest(p)) for flag, p in
               (("checkpoint", getattr(args, "checkpoint", None)), ("inception", args.inception), ("vgg", args.vgg),
                ("lpips_lin", args.lpips_lin), ("lpips_vgg16", args.lpips_vgg16)) if p}
    versions = dict(exsynth=exsynth.__version__, torch=torch.__version__, numpy=np.__version__,
                    python=sys.version.split()[0])
    return dict(command=["exsynth"] + sys.argv[1:], weights=weights, versions=versions, **fields)


def _write_json(args, record) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


def _eval_folders(args) -> int:
    """--real DIR --fake DIR: the distribution metrics of two folders, and the paired ones for
    files of the same name and size."""
    import torch

    from exsynth.imageio import ImageError, list_images, read_image
    real_files, fake_files = (list_images(Path(d)) for d in (args.real, args.fake))
    for flag, files, d in (("--real", real_files, args.real), ("--fake", fake_files, args.fake)):
        if not files:
            raise UsageError(f"{flag} {d}: no images in the folder")
    device = _device(args.device)
    suite = _metric_suite(args, device, dense=True, seed=args.data_seed or 0, lpips=_load_lpips(args, device))
    size = (args.size, args.size) if args.size else None
    real_by_stem = {p.stem: p for p in real_files}
    paired = [(f, real_by_stem[f.stem]) for f in fake_files if f.stem in real_by_stem]
    paired_fake, paired_real = {f for f, _ in paired}, {r for _, r in paired}
    t0 = time.perf_counter()

    def read(p):
        try:
            return read_image(p, size, resize=size is not None)
        except ImageError as e:
            raise UsageError(str(e)) from None

    jobs = [("pair", paired)] + [("fake", [(f, None) for f in fake_files if f not in paired_fake])] + \
        [("real", [(None, r) for r in real_files if r not in paired_real])]
    total, done = len(fake_files) + len(real_files) - len(paired), 0
    show = _progress_printer("scoring", args.quiet)
    for kind, items in jobs:
        for start in range(0, len(items), args.batch_size):
            chunk = items[start:start + args.batch_size]
            fakes = [read(f) for f, _ in chunk if f is not None]
            reals = [read(r) for _, r in chunk if r is not None]
            try:
                if kind == "pair" and all(a.shape == b.shape for a, b in zip(fakes, reals)):
                    suite.add(fake=torch.stack(fakes), real=torch.stack(reals))
                else:
                    if fakes:
                        suite.add(fake=torch.stack(fakes))
                    if reals:
                        suite.add(real=torch.stack(reals))
            except (RuntimeError, ValueError) as e:
                raise UsageError(f"--real/--fake: {e} (give --size to resize every image to one square)") from None
            done += len(chunk)
            show(done, total)
    scores = suite.compute()
    print(f"{args.fake} ({len(fake_files)} images) vs {args.real} ({len(real_files)}), {len(paired)} pairs by name, "
          f"{time.perf_counter() - t0:.1f} s")
    _print_paper_metrics(suite, scores)
    _write_json(args, _eval_record(args, real=str(args.real), fake=str(args.fake), counts=suite.counts,
                                   scores=scores, skipped=suite.skipped))
    return 0


def eval_cmd(args) -> int:
    from exsynth.evaluate import class_mean_colours, evaluate
    from exsynth.checkpoint import size_multiple
    from exsynth.imageio import ImageError

    for name in ("length", "batch_size", "class_mean_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.real or args.fake:
        if not (args.real and args.fake):
            raise UsageError("--real and --fake go together (two folders of images)")
        if args.checkpoint:
            raise UsageError("--real/--fake score two folders: drop --checkpoint")
        return _eval_folders(args)
    if not args.checkpoint:
        raise UsageError("give --checkpoint (or --real DIR --fake DIR to score two folders)")
    device = _device(args.device)
    lpips = _load_lpips(args, device)
    model, payload = _load_generator(args.checkpoint, device)
    baseline = None
    if args.baseline_checkpoint:
        baseline, bp = _load_generator(args.baseline_checkpoint, device)
        if bp["model_config"]["label_channels"] != payload["model_config"]["label_channels"]:
            raise UsageError("--baseline-checkpoint: its model has another number of classes")
    src, root, opts, split = _eval_source(payload, args)
    mult = size_multiple(model)
    tc = payload.get("train_config") or {}
    size = args.size or tc.get("size") or 64
    if size < 16 or size % mult:
        raise UsageError(f"--size {size}: this model needs a multiple of {mult} (and at least 16)")
    k = payload["model_config"]["label_channels"]
    _check_channels(src, k)
    seed = args.data_seed if args.data_seed is not None else tc.get("data_seed", 0)
    length = args.length if args.length is not None else (200 if src.pairs else None)
    try:
        test = src.make(root, size=size, num_classes=k, split=split, length=length, seed=seed, options=opts)
        # the per-class mean colours, where samples carry class maps (also behind a dense input)
        train = src.make(root, size=size, num_classes=k, split="train", length=max(args.class_mean_samples, 1),
                         seed=seed, options=opts)
        means = class_mean_colours(train, args.class_mean_samples)
    except (ValueError, OSError, ImageError) as e:
        raise UsageError(str(e)) from None
    suite = _metric_suite(args, device, dense=src.label_kind == "dense", seed=seed)
    if lpips is not None:   # scored per row by evaluate() itself, not a second time by the suite
        suite.skipped.pop("lpips", None)
    blind = bool(tc.get("blind", False))
    n = len(test) if length is None else min(len(test), length)
    t0 = time.perf_counter()
    try:
        res = evaluate(model, test, batch_size=args.batch_size, device=device, blind=blind, baseline=baseline,
                       class_means=means, lpips=lpips, suite=suite, save=args.save, save_format=args.format,
                       limit=n, progress=_progress_printer("evaluating", args.quiet))
    except ImageError as e:
        raise UsageError(str(e)) from None
    scores = suite.compute()
    truth = "exact ground truth" if src.pairs else "each input's own photo as ground truth, listed references as exemplars"
    print(f"{payload['model']} checkpoint {args.checkpoint} on the {src.name} {split} split "
          f"({n} samples, {size}px, seed {seed}; {truth}), {time.perf_counter() - t0:.1f} s"
          + (f"; outputs in {args.save} as {args.format}, scored as saved" if args.save else ""))
    print(f"{'':<20}{'PSNR dB':>9}{'SSIM':>8}" + (f"{'LPIPS':>8}" if lpips is not None else ""))
    labels = dict(model="output", warped="warped exemplar", const_exemplar="constant exemplar",
                  class_mean="class means (blind)", baseline="blind baseline")
    for name, m in res.items():
        print(f"{labels.get(name, name):<20}{m['psnr']:>9.2f}{m['ssim']:>8.3f}"
              + (f"{m['lpips']:>8.3f}" if "lpips" in m else ""))
    blind_names = [n for n in ("class_mean", "baseline", "const_exemplar") if n in res]
    if blind_names:
        best = max(blind_names, key=lambda n: res[n]["psnr"])
        print(f"output - best exemplar-blind ({labels[best]}): {res['model']['psnr'] - res[best]['psnr']:+.2f} dB")
    print("the papers' metrics (output vs the split's photos):")
    _print_paper_metrics(suite, {k: v for k, v in scores.items() if k not in ("psnr", "ssim", "lpips")})
    from exsynth.registry import model_spec
    own = model_spec(payload["model"]).extra_metrics
    extra = dict(own(model, payload, test, device, limit=n) if own is not None else {})
    text = extra.pop("_text", None)   # a protocol's own table, printed as it is
    if text:
        print(text)
    elif extra:
        print(f"{payload['model']}'s own measurements:")
        for key, value in extra.items():
            print(f"  {key:<28}{value:>10.4f}")
    _write_json(args, _eval_record(args, dataset=src.name, split=split, samples=n, size=size, seed=seed,
                                   exact_ground_truth=bool(src.pairs), saved=args.save, format=args.format,
                                   results=res, scores=scores, skipped=suite.skipped, counts=suite.counts,
                                   model_metrics=extra))
    return 0


# ---- pairs ---------------------------------------------------------------------------------------

def pairs_cmd(args) -> int:
    import torch

    from exsynth.imageio import ImageError
    from exsynth.nn import load_vgg19
    from exsynth.retrieval import image_features, top_k_neighbours, write_pair_list

    for name in ("top_k", "size", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    device = _device(args.device)
    src = _data_source(args.dataset)
    k = src.num_classes or 256  # labels are not read here

    def files(split):
        try:
            ds = src.make(args.data, size=args.size, num_classes=k, split=split)
        except (ImageError, ValueError, OSError) as e:
            raise UsageError(str(e)) from None
        if not hasattr(ds, "image_files"):
            raise UsageError(f"--dataset {args.dataset}: its samples are not image files to retrieve from")
        return ds

    keys_ds = files("train")
    query_ds = keys_ds if args.split == "train" else files(args.split)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out}: exists (--overwrite replaces it)")
    try:
        vgg = load_vgg19(args.vgg)
    except (OSError, ValueError, RuntimeError) as e:
        raise UsageError(f"--vgg {args.vgg}: {e}") from None
    cache = Path(args.cache) if args.cache else None
    t0 = time.perf_counter()
    kf, kept_k = image_features(keys_ds.image_files, vgg, size=args.size, batch_size=args.batch_size, device=device,
                                cache=cache, progress=not args.quiet)
    if query_ds is keys_ds:
        qf, kept_q = kf, kept_k
    else:
        qf, kept_q = image_features(query_ds.image_files, vgg, size=args.size, batch_size=args.batch_size,
                                    device=device, cache=cache, progress=not args.quiet)
    if len(kept_k) < 2 or not kept_q:
        raise UsageError(f"--data {args.data}: too few readable images to pair ({len(kept_k)} keys)")
    idx, _ = top_k_neighbours(qf, kf, args.top_k, exclude_self=query_ds is keys_ds, device=device)
    key_names = [keys_ds.pair_key(keys_ds.image_files[i]) for i in kept_k]
    names = [query_ds.pair_key(query_ds.image_files[i]) for i in kept_q]
    write_pair_list(out, names, [[key_names[j] for j in row] for row in idx.tolist()])
    print(f"{out}: {len(names)} images x {idx.shape[1]} references ({time.perf_counter() - t0:.1f} s)")
    return 0


# ---- demo ----------------------------------------------------------------------------------------

def demo_cmd(args) -> int:
    import torch

    from exsynth.checkpoint import CheckpointError, load_checkpoint
    from exsynth.demo import DEMO_CHECKPOINT, demo_set, grid_picture
    from exsynth.imageio import colorize_label, write_image
    from exsynth.inference import correspondence_picture, synthesize
    from exsynth.metrics import psnr

    out = Path(args.out)
    ckpt = Path(args.checkpoint) if args.checkpoint else DEMO_CHECKPOINT
    if args.inputs < 1 or args.exemplars < 1:
        raise UsageError(f"--inputs and --exemplars must be >= 1, got {args.inputs} and {args.exemplars}")
    try:
        shipped = load_checkpoint(DEMO_CHECKPOINT)  # the demo's model and its training recipe
    except CheckpointError as e:
        raise UsageError(f"the shipped demo checkpoint is unusable: {e}") from None
    if args.train:
        from exsynth.train import TrainConfig, Trainer
        d = dict(shipped["train_config"])
        d.update(out=str(out / "train"), max_minutes=args.minutes)
        if args.steps is not None:
            d["steps"] = args.steps
        print(f"training {shipped['model']} from scratch with the shipped checkpoint's recipe "
              f"({args.minutes} min at most) -> {out / 'train'}")
        Trainer(TrainConfig.from_dict(d), overwrite=True).run()
        ckpt = out / "train" / "checkpoints" / "latest.pt"
    t0 = time.perf_counter()
    model, payload = _load_generator(ckpt, "cpu", expect=shipped["model"])
    from exsynth.inference import visuals_of
    if not {"warped", "correspondence"} <= set(visuals_of(model)):
        raise UsageError(f"{ckpt}: the demo draws the warped exemplar and the correspondence, which the "
                         f"{payload['model']} model does not show")
    tc = payload.get("train_config") or {}
    size, K = int(tc.get("size", 64)), model.cfg.label_channels
    n, m = args.inputs, args.exemplars
    data = demo_set(n, m, size, K)
    lab = data["label"].repeat_interleave(m, 0)
    ex, exl = data["exemplar"].repeat(n, 1, 1, 1), data["exemplar_label"].repeat(n, 1, 1, 1)
    res = synthesize(model, lab, ex, exl, correspondence=True)
    truth = data["truth"].flatten(0, 1)
    fake = res["fake"].view(n, m, 3, size, size)
    write_image(grid_picture(colorize_label(data["label"]), data["exemplar"], fake), out / "grid.png")
    write_image(grid_picture(colorize_label(data["label"]), data["exemplar"], data["truth"]), out / "truth.png")
    pick = torch.arange(min(n, m)) * m + torch.arange(min(n, m))  # the diagonal pairs
    write_image(correspondence_picture(ex[pick], res["warped"][pick], res["correspondence"][pick]),
                out / "correspondence.png")
    p_out, p_warp = psnr(res["fake"], truth).mean().item(), psnr(res["warped"], truth).mean().item()
    print(f"checkpoint {ckpt} ({payload['model']}, {size}px, {K} classes)")
    print(f"{n} held-out inputs x {m} exemplars: PSNR vs exact ground truth: output {p_out:.2f} dB, "
          f"warped exemplar {p_warp:.2f} dB ({time.perf_counter() - t0:.1f} s)")
    print(f"wrote {out / 'grid.png'} (top row: exemplars, left column: inputs), {out / 'truth.png'} "
          f"(the exact answers), {out / 'correspondence.png'}")
    return 0


# ---- convert -------------------------------------------------------------------------------------

def convert_cmd(args) -> int:
    from exsynth.convert import ConversionError, converters
    table = converters()
    if args.source not in table:
        raise UsageError(f"--from {args.source!r}: expected one of {', '.join(table)} (the code whose checkpoint it is)")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UsageError(f"--out {out}: exists (pass --overwrite to replace it)")
    try:
        table[args.source].convert(args.ckpt_dir, args.preset, out, epoch=args.epoch,
                                   ignore_unexpected=args.ignore_unexpected_keys)
    except ConversionError as e:
        raise UsageError(str(e)) from None
    print(f"{out}: --preset {args.preset} with the weights of {args.source}'s {args.epoch} files in {args.ckpt_dir}")
    return 0


# ---- parser --------------------------------------------------------------------------------------

def _train_context(argv):
    """(model name, data source name) a `train` command line is about, read before the full
    parser is built so that the flags of that model's and source's options can be offered.
    Unknown names give (None, ...): the full parse reports them with the registered ones."""
    from exsynth.registry import data_sources, default_model, default_source, models
    from exsynth.train import PRESETS, load_config_file
    pre = argparse.ArgumentParser(prog="exsynth train", add_help=False, allow_abbrev=False)
    for flag in ("--model", "--preset", "--config", "--dataset", "--data", "--resume"):
        pre.add_argument(flag, nargs="?", const="latest" if flag == "--resume" else None)
    try:
        ns, _ = pre.parse_known_args(argv)
    except SystemExit:  # the full parser reports the problem
        return default_model(), None, None
    base = {}
    if ns.preset in PRESETS:
        base.update(PRESETS[ns.preset])
    if ns.config:
        try:
            base.update(load_config_file(ns.config))
        except (FileNotFoundError, ValueError):
            pass  # reported by the full parse
    model = ns.model or base.get("model") or default_model()
    data = ns.data or base.get("data") or "synthetic"
    source = ns.dataset or base.get("dataset") or default_source(data)
    unknown = None
    if ns.model and ns.model not in models():
        unknown = f"--model {ns.model!r} is not registered; registered models: {', '.join(models())}"
    elif ns.dataset and ns.dataset not in data_sources():
        unknown = f"--dataset {ns.dataset!r} is not registered; registered data sources: {', '.join(data_sources())}"
    if ns.resume is not None:  # the checkpoint's own model: offer no model's option flags
        model = None
    return (model if model in models() else None), (source if source in data_sources() else None), unknown


def _add_train_parser(sub, model_name, source_name):
    from exsynth.options import add_dataclass_flags
    from exsynth.registry import data_source, data_sources, model_spec, models
    from exsynth.train import PRESETS, TrainConfig, field_docs

    epilog = ("registered models:\n" + "".join(f"  {n:<12} {m.description}\n" for n, m in models().items())
              + "registered data sources (--dataset):\n"
              + "".join(f"  {n:<12} {d.description}\n" for n, d in data_sources().items()))
    p = sub.add_parser("train", help="train a registered model (" + ", ".join(models()) + ")",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
                       description="Options: --preset < --config file < flags. Loss weights: --loss NAME=WEIGHT;\n"
                                   "model and data-source options: their flags (shown for the --model and\n"
                                   "--dataset given) or --option KEY=VALUE / --data-option KEY=VALUE.\n"
                                   "--batch-size is the global batch: under torchrun each process trains on\n"
                                   "batch-size / nproc samples of it.")
    p.add_argument("--preset", help="a named configuration (" + ", ".join(PRESETS) + ")")
    p.add_argument("--config", help="TOML or JSON file of training options")
    taken = {"--preset", "--config", "--threads", "--option", "--loss", "--data-option", "--resume", "--overwrite",
             "--dry-run", "--quiet", "-h", "--help"}
    g = p.add_argument_group("training options (exsynth.train.TrainConfig)")
    train_dests = add_dataclass_flags(g, TrainConfig, field_docs(TrainConfig), taken=taken)
    model_dests, data_dests = {}, {}
    if model_name is not None:
        spec = model_spec(model_name)
        g = p.add_argument_group(f"{model_name} options ({spec.config.__name__}; or --option KEY=VALUE)")
        model_dests = add_dataclass_flags(g, spec.config, field_docs(spec.config), skip=("label_channels",),
                                          taken=taken, prefix="model-")
    if source_name is not None and data_source(source_name).options is not None:
        opts = data_source(source_name).options
        g = p.add_argument_group(f"{source_name} data options ({opts.__name__}; or --data-option KEY=VALUE)")
        data_dests = add_dataclass_flags(g, opts, field_docs(opts), taken=taken, prefix="data-")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="model option (repeatable)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE", help="data-source option (repeatable)")
    p.add_argument("--loss", action="append", metavar="NAME=WEIGHT", help="loss weight (repeatable)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue a run (default: OUT/checkpoints/latest.pt)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an OUT that holds a run")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved options, parameter counts and the activation memory of one sample's "
                        "training step (its generator or discriminator pass, whichever saves more); train and "
                        "write nothing")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=train, train_dests=train_dests, model_dests=model_dests, data_dests=data_dests)


def _parser(model_name=None, source_name=None, train_flags: bool = True) -> argparse.ArgumentParser:
    """The command line; train_flags=False (another command was asked for) leaves out the train
    command's generated flags, so that e.g. `exsynth doctor` imports no model."""
    parser = argparse.ArgumentParser(prog="exsynth", description="exemplar-guided image synthesis")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="which backends are usable here, and why the others are not")
    p.set_defaults(func=doctor)

    if train_flags:
        _add_train_parser(sub, model_name, source_name)
    else:
        sub.add_parser("train", help="train a registered model (exsynth train -h lists them and every option)")

    p = sub.add_parser("synthesize", help="label map(s) + exemplar(s) -> photo(s)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--input", help="class-index label PNG or .npy input map (C, H, W), or a folder of them")
    p.add_argument("--exemplar", help="exemplar photo, or a folder matched by file name")
    p.add_argument("--exemplar-label", help="the exemplar's label PNG (or folder), for models that use it")
    p.add_argument("--direction", choices=["a2b", "b2a"],
                   help="two-domain models: translate A->B (default; --input from A, --exemplar from B) or B->A")
    p.add_argument("--out", required=True, help="output file, or folder when --input is a folder")
    p.add_argument("--warped", action="store_true", help="also write NAME_warped.png (models that have one)")
    p.add_argument("--correspondence", action="store_true",
                   help="also write NAME_correspondence.png (models that have one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", help="instead of --input/--exemplar: every sample of this data source's split, "
                                     "with its exemplar (e.g. ade20k's validation images and listed references)")
    p.add_argument("--data", help="the data source's root (with --dataset)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"], help="with --dataset (default val)")
    p.add_argument("--size", type=int, help="with --dataset: image side (default: the checkpoint's training size)")
    p.add_argument("--limit", type=int, help="with --dataset: the first N samples only")
    p.add_argument("--batch-size", type=int, default=8, help="with --dataset")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE",
                   help="with --dataset: a data-source option (repeatable), e.g. pairs=FILE for folder")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images above this many pixels, checked from the file header before decoding "
                        f"(default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    p.set_defaults(func=synthesize_cmd)

    p = sub.add_parser("eval", help="the papers' metrics (PSNR, SSIM, LPIPS, FID, KID, SWD, semantic consistency, "
                                    "style relevance) of a checkpoint, or of two folders")
    p.add_argument("--checkpoint", help="the generator to score (or --real/--fake)")
    p.add_argument("--dataset", help="data source (default: the checkpoint's training source where it has exact ground "
                                     "truth, else synthetic); a real layout is scored on its validation split with "
                                     "its listed references")
    p.add_argument("--data", help="its root ('synthetic' needs none)")
    p.add_argument("--data-option", action="append", metavar="KEY=VALUE", help="data-source option (repeatable)")
    p.add_argument("--split", choices=["train", "val", "test"], help="default: test (synthetic), val (real layouts)")
    p.add_argument("--length", type=int, help="samples (default: 200 for synthetic, the whole split otherwise)")
    p.add_argument("--size", type=int, help="default: the size the checkpoint was trained at (--real/--fake: resize "
                                            "every image to this square)")
    p.add_argument("--data-seed", type=int, help="data seed (and SWD's / KID's random draws)")
    p.add_argument("--baseline-checkpoint", help="a generator trained with --blind, scored fed zeros")
    p.add_argument("--class-mean-samples", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--inception", help="FID / KID: the pt_inception-2015-12-05 weights file (pytorch-fid's)")
    p.add_argument("--kid", action="store_true", help="also KID (keeps the Inception features: 8 KiB per image)")
    p.add_argument("--no-swd", action="store_true", help="skip SWD")
    p.add_argument("--vgg", help="semantic consistency and style relevance: VGG19 ImageNet weights file")
    p.add_argument("--lpips-lin", help="LPIPS linear-layer weights (or a full LPIPS VGG state dict)")
    p.add_argument("--lpips-vgg16", help="torchvision vgg16 weights, the LPIPS backbone")
    p.add_argument("--save", help="write the outputs here (NAME.png) and score them as saved")
    p.add_argument("--format", default="png", choices=["png", "jpg"],
                   help="with --save: png (default) or jpg (the papers' JPEG protocol: JPEG's loss moves FID)")
    p.add_argument("--real", help="a folder of real images: with --fake, score two folders without a model")
    p.add_argument("--fake", help="a folder of generated images (paired metrics for files named as in --real)")
    p.add_argument("--json", help="also write every number here, with the command, weights' sha256 and versions")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=eval_cmd)

    p = sub.add_parser("pairs", help="exemplar pair list (name,ref1,...,refk lines) by VGG feature retrieval")
    p.add_argument("--dataset", required=True, help="a registered data source with image files (ade20k, folder, ...)")
    p.add_argument("--data", required=True, help="its root folder")
    p.add_argument("--out", required=True, help="the pair list to write (name,ref1,...,refk per line)")
    p.add_argument("--split", default="train", choices=["train", "val"],
                   help="whose images get references (always from the training split)")
    p.add_argument("--top-k", type=int, default=10, help="references per image")
    p.add_argument("--vgg", help="VGG19 weights file (without one: a random-init VGG19, with a warning)")
    p.add_argument("--size", type=int, default=128, help="images are resized to this square for the features")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--cache", help="folder of per-image feature files: a rerun reuses them")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=pairs_cmd)

    p = sub.add_parser("convert", help="a published code's checkpoint -> an exsynth checkpoint (synthesize runs it)")
    p.add_argument("--from", dest="source", required=True,
                   help="the code that wrote the checkpoint (a registered converter, e.g. the model's own name)")
    p.add_argument("ckpt_dir", help="the folder holding the released files")
    p.add_argument("--preset", required=True, help="the preset of the options the checkpoint was trained with")
    p.add_argument("--epoch", default="latest", help="which files: the code's {epoch} file name prefix "
                                                     "(its --which_epoch; default latest)")
    p.add_argument("--out", required=True, help="the exsynth checkpoint to write")
    p.add_argument("--ignore-unexpected-keys", action="store_true",
                   help="drop (with a warning) keys the network has no place for, as the code's loader does when "
                        "its strict load fails; missing keys and wrong shapes are still refused")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=convert_cmd)

    p = sub.add_parser("demo", help="the shipped checkpoint on held-out synthetic inputs x exemplars")
    p.add_argument("--out", default="demo")
    p.add_argument("--train", action="store_true", help="retrain the checkpoint from scratch first (its recipe)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time limit with --train")
    p.add_argument("--steps", type=int, help="training steps with --train (default: the recipe's)")
    p.add_argument("--checkpoint", help="use this checkpoint instead of the shipped one")
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--exemplars", type=int, default=4)
    p.set_defaults(func=demo_cmd)

    from exsynth.video.cli import add_video_parser  # `exsynth video transcode|synth` (imports no PyAV/DALI)
    add_video_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    model_name = source_name = None
    if argv and argv[0] == "train":
        model_name, source_name, unknown = _train_context(argv[1:])
        if unknown and "-h" not in argv and "--help" not in argv:  # before its flags go unrecognised
            if _rank() == 0:
                print(f"exsynth train: error: {unknown}", file=sys.stderr)
            return 2
    parser = _parser(model_name, source_name, train_flags=bool(argv) and argv[0] == "train")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        if _rank() == 0 or not e.same_on_every_process:
            print(f"exsynth {args.command}: error: {e}", file=sys.stderr)
        else:  # torchrun stops every process when one exits: let rank 0 say it first
            time.sleep(2.0)
        return 2
    except KeyboardInterrupt:
        print(f"exsynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
