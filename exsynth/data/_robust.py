"""Bad files never stop a long run: what every file-backed data source shares.

`readable` drops, up front and with one warning each, the items whose files fail a cheap
header check; `load_skipping_bad` replaces a sample whose data turns out corrupt when drawn by
the next good one (deterministically, so a resumed run retraces the same samples). A label id
beyond the classes asked for (`LabelRangeError`) is a configuration error and is raised.
"""
from __future__ import annotations

import sys
import time
import warnings
from typing import Callable, Iterable, List, Set, TypeVar

from ..imageio import ImageError, LabelRangeError

__all__ = ["readable", "load_skipping_bad"]

T = TypeVar("T")
S = TypeVar("S")


def readable(items: Iterable[T], check: Callable[[T], object], *, progress: bool = True) -> List[T]:
    """The items `check` accepts (it raises ImageError for the others, which are warned about);
    a progress line on stderr for large sets that take a while."""
    items = list(items)
    good, t0, shown = [], time.perf_counter(), False
    for i, item in enumerate(items):
        try:
            check(item)
            good.append(item)
        except ImageError as e:
            warnings.warn(f"skipped: {e}", stacklevel=3)
        if progress and len(items) > 1000 and (i + 1) % 1000 == 0 and time.perf_counter() - t0 > 2:
            print(f"\rchecking image headers: {i + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
            shown = True
    if shown:
        print(file=sys.stderr)
    return good


def load_skipping_bad(index: int, n: int, load: Callable[[int], S], bad: Set[int], root) -> S:
    """load(i) for the first i of index, index + 1, ... (mod n) whose files decode; each one that
    does not is warned about once (`bad` remembers them)."""
    for step in range(n):
        i = (int(index) + step) % n
        try:
            return load(i)
        except LabelRangeError:  # the wrong number of classes: not a bad file
            raise
        except ImageError as e:
            if i not in bad:
                bad.add(i)
                warnings.warn(f"skipped: {e}", stacklevel=3)
    raise ImageError(f"{root}: no readable image/label pair left")
