"""Progress bars that cost nothing where nobody sees them: tqdm is imported only for a terminal.

Importing tqdm takes about a twentieth of a second (its version lookup goes through importlib.metadata), a
noticeable part of a one-case container's start-up (docs/results.md, "Start-up and image size"), and the
challenge's harness never gives the container a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any


class NoBar:
    """What predict.py uses of a tqdm bar, doing nothing: iteration, `with`, `update`."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable if iterable is not None else ()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable)

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float = 1) -> None:
        """Nothing to draw."""

    def reset(self, total: float | None = None) -> None:
        """Nothing to count."""


def tqdm(iterable: Iterable[Any] | None = None, disable: bool | None = False, **options: Any) -> Any:
    """tqdm.tqdm(iterable, disable=disable, **options), or a NoBar where that bar would not be drawn:
    disable True, or None (tqdm's "terminals only") on a stderr that is no terminal."""
    if disable or (disable is None and not sys.stderr.isatty()):
        return NoBar(iterable)
    from tqdm import tqdm as bar

    return bar(iterable, disable=disable, **options)
