"""Strategy name -> Strategy. Adding a strategy: one module with a Strategy subclass, one instance below."""

from __future__ import annotations

from typing import Any

from router.strategies import Strategy
from router.strategies.image2d import Image2d
from router.strategies.propagate3d import Propagate
from router.strategies.triplanar import TriplanarVote

STRATEGIES: dict[str, Strategy[Any]] = {
    strategy.name: strategy for strategy in (Image2d(), Propagate(), TriplanarVote())
}
DEFAULT_2D = Image2d.name
DEFAULT_3D = Propagate.name


def get_strategy(name: str) -> Strategy[Any]:
    """Look up a strategy by name; raise KeyError listing the known names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})") from None
