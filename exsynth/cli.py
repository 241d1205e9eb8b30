"""`exsynth` command line: `exsynth doctor` reports what this machine can run."""
from __future__ import annotations

import argparse
import platform
import sys


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="exsynth", description="exemplar-guided image synthesis")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="which backends are usable here, and why the others are not")
    p.set_defaults(func=doctor)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
