"""`python -m exsynth ...` (and `torchrun ... -m exsynth train ...`) = the `exsynth` command."""
import sys

from .cli import main

sys.exit(main())
