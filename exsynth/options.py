"""Options declared once: command-line flags made from dataclass fields.

A field `batch_size: int` becomes `--batch-size N` with the help text of its "batch_size: ..."
paragraph in the class docstring (`exsynth.train.field_docs`); `bool` fields become
`--flag / --no-flag`, `Optional[X]` accepts "none", tuples take several values, dict fields
are skipped (they have KEY=VALUE flags of their own). Every flag defaults to None, so the
caller knows which ones were given.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

__all__ = ["add_dataclass_flags", "given_values", "flag_name"]


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _optional(conv: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(v: str):
        return None if v.strip().lower() in ("none", "null") else conv(v)
    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def _bool(v: str) -> bool:
    t = v.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


_SCALARS = {int: int, float: float, str: str, bool: _bool}


def _argparse_kind(tp) -> Optional[Tuple[str, Callable[[str], Any]]]:
    """("bool" | "scalar" | "tuple", converter) for a field type; None for types without a flag."""
    optional = False
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return None
        tp, optional = rest[0], True
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool and not optional:
        return "bool", _bool
    if tp in _SCALARS:
        conv = _SCALARS[tp]
        return "scalar", (_optional(conv) if optional else conv)
    if origin in (tuple, list) and args:
        elem = args[0]
        variadic = origin is list or (len(args) == 2 and args[-1] is Ellipsis)
        if elem in _SCALARS and (variadic or len(set(args)) == 1):
            return ("tuple+" if variadic else f"tuple{len(args)}"), _SCALARS[elem]
    return None


def add_dataclass_flags(parser: argparse._ActionsContainer, cls, docs: Dict[str, str], *,
                        skip: Iterable[str] = (), taken: Optional[set] = None, prefix: str = "") -> Dict[str, str]:
    """Add a flag per field of `cls` to `parser`; returns {argparse dest: field name}.

    A flag whose name is in `taken` gets `prefix` (e.g. "model-") to stay unique; `taken` is
    updated with the flags added."""
    taken = set() if taken is None else taken
    hints = typing.get_type_hints(cls)
    dests: Dict[str, str] = {}
    skip = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True):   # cli=False: derived, not given
            continue
        kind = _argparse_kind(hints.get(f.name))
        if kind is None:
            continue
        flags = [flag_name(f.name)]
        if flags[0] in taken:
            flags = [flag_name(prefix + f.name)]
        flags += [a for a in f.metadata.get("flags", ()) if a not in taken]
        if any(fl in taken for fl in flags):
            continue
        dest = (prefix + f.name).replace("-", "_")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        text = docs.get(f.name, "")
        if default is not None and not isinstance(default, dict):
            text = f"{text} (default: {list(default) if isinstance(default, tuple) else default})".strip()
        if "optional" in str(hints.get(f.name)).lower():
            text += ' ("none" for None)'
        text = text.replace("%", "%%")
        what, conv = kind
        # SUPPRESS: an absent flag leaves no attribute, so a given "none" (None) still counts as given
        common = dict(dest=dest, default=argparse.SUPPRESS, help=text)
        if what == "bool":
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif what.startswith("tuple"):
            nargs = "+" if what == "tuple+" else int(what[len("tuple"):])
            parser.add_argument(*flags, type=conv, nargs=nargs, metavar=f.name.upper(), **common)
        else:
            parser.add_argument(*flags, type=conv, metavar=f.name.upper(), **common)
        taken.update(flags)
        dests[dest] = f.name
    return dests


def given_values(args: argparse.Namespace, dests: Dict[str, str]) -> Dict[str, Any]:
    """{field name: value} of the flags that were given (None for a given "none")."""
    return {name: getattr(args, dest) for dest, name in dests.items() if hasattr(args, dest)}
