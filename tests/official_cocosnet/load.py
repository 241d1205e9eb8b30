"""Import the released CoCosNet networks kept here (see README.md) as modules
(`correspondence`, `generator`), with what they import but never use stubbed."""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
_TOP = ("models", "util")


def load_networks() -> types.SimpleNamespace:
    stubs = {name: types.ModuleType(name) for name in ("torchvision",) if name not in sys.modules}
    sys.modules.update(stubs)
    sys.path.insert(0, str(HERE))
    try:
        correspondence = importlib.import_module("models.networks.correspondence")
        generator = importlib.import_module("models.networks.generator")
    finally:
        sys.path.remove(str(HERE))
        for name in list(sys.modules):
            if name in stubs or name.split(".")[0] in _TOP:
                del sys.modules[name]
    return types.SimpleNamespace(correspondence=correspondence, generator=generator)
