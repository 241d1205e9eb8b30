"""`exsynth video ...`: write synthetic clip sets and transcode clips for DALI's CPU decoder."""
from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["add_video_parser"]


def _usage(message: str):
    from exsynth.cli import UsageError
    return UsageError(message)


def transcode_cmd(args) -> int:
    from .writer import transcode
    try:
        written = transcode(args.src, args.dst, args.codec, keyframe_interval=args.keyframe_interval,
                            overwrite=args.overwrite,
                            progress=None if args.quiet else
                            (lambda src, dst, n: print(f"{src} -> {dst} ({n} frames)", file=sys.stderr)))
    except (ValueError, ImportError) as e:
        raise _usage(str(e)) from None
    print(f"{len(written)} clip(s) written to {Path(args.dst)}")
    return 0


def synth_cmd(args) -> int:
    from .writer import write_synthetic_videos
    if args.classes < 2 or args.classes > 256:
        raise _usage(f"--classes must lie in 2..256 (8-bit label PNGs), got {args.classes}")
    if args.size < 16 or args.size % 2:
        raise _usage(f"--size must be an even number >= 16, got {args.size}")
    if args.clips < 1 or args.frames < 1:
        raise _usage(f"--clips and --frames must be >= 1, got {args.clips} and {args.frames}")
    root = Path(args.root)
    if (root / "videos").exists() and any((root / "videos").iterdir()) and not args.overwrite:
        raise _usage(f"ROOT {root}: videos/ holds clips already (--overwrite writes over them)")
    try:
        written = write_synthetic_videos(root, clips=args.clips, frames=args.frames, size=args.size,
                                         num_classes=args.classes, seed=args.seed, split=args.split,
                                         codec=args.codec, fps=args.fps)
    except (ValueError, ImportError) as e:
        raise _usage(str(e)) from None
    print(f"{len(written)} clip(s) of {args.frames} frames at {args.size}px, {args.classes} classes -> "
          f"{root / 'videos'} (labels in {root / 'labels'}); train with --dataset video --data {root} "
          f"--num-classes {args.classes}")
    return 0


def add_video_parser(sub) -> None:
    """The `video` command group on the top-level subparsers."""
    p = sub.add_parser("video", help="video data: write synthetic clips, transcode clips for DALI's CPU decoder")
    vsub = p.add_subparsers(dest="video_command", required=True)

    t = vsub.add_parser("transcode", help="re-encode every clip of SRC (e.g. H.264 .mp4) to VP9 or MJPEG in DST; "
                                          "a dataset root's videos/ goes to DST/videos with labels/ copied")
    t.add_argument("src")
    t.add_argument("dst")
    t.add_argument("--codec", default="vp9", choices=["vp9", "vp8", "mjpeg"])
    t.add_argument("--keyframe-interval", type=int, default=15, help="a keyframe at least every N frames (<= 15)")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=transcode_cmd)

    s = vsub.add_parser("synth", help="write synthetic clips (moving layouts, one style per clip) with exact labels: "
                                      "ROOT/videos/clip_NNNN.<ext>, ROOT/labels/clip_NNNN/<frame:06d>.png")
    s.add_argument("root")
    s.add_argument("--clips", type=int, default=8)
    s.add_argument("--frames", type=int, default=30)
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--classes", type=int, default=6)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--split", default="train", choices=["train", "val", "test"])
    s.add_argument("--codec", default="vp9", choices=["vp9", "vp8", "mjpeg", "h264"])
    s.add_argument("--fps", type=int, default=10)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=synth_cmd)
