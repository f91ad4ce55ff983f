"""Strategy name -> Strategy. Adding a strategy: one module that defines STRATEGY, one entry below."""

from __future__ import annotations

from router.strategies import Strategy, image2d, propagate3d, triplanar

STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy for strategy in (image2d.STRATEGY, propagate3d.STRATEGY, triplanar.STRATEGY)
}
DEFAULT_2D = image2d.STRATEGY.name
DEFAULT_3D = propagate3d.STRATEGY.name


def get_strategy(name: str) -> Strategy:
    """Look up a strategy by name; raise KeyError listing the known names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy '{name}' (known: {', '.join(STRATEGIES)})") from None
