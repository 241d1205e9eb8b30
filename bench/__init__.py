"""exsynth benchmark suite: `python -m bench <op> [options]` from the repo root."""
