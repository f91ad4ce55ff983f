"""Modality -> Route, from one TOML routing table (router/routes.toml, or a file given with --config)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.registry import FALLBACK_MODEL, MODELS
from router.modality import MODALITY_ALIASES, UNKNOWN_PREFIX
from router.strategies import StrategyParams
from router.strategies.registry import DEFAULT_2D, DEFAULT_3D, STRATEGIES

DEFAULT_ROUTES = Path(__file__).resolve().parent / "routes.toml"
# case dimensionality -> the table key that picks its strategy, and the strategy when none is picked
STRATEGY_KEYS = {2: "strategy_2d", 3: "strategy_3d"}
DEFAULTS = {2: DEFAULT_2D, 3: DEFAULT_3D}


@dataclass(frozen=True)
class Route:
    """What runs one case: model name, strategy name (router.strategies.registry), the strategy's
    parameters (its StrategyParams), a note when the route differs from the table (fallback, unknown), and
    the table's model when it was not built and LiteMedSAM runs instead."""

    model: str
    strategy: str
    params: StrategyParams
    note: str = ""
    fallback_from: str = ""

    def describe(self) -> str:
        text = f"{self.model}/{self.strategy}"
        return f"{text} ({self.note})" if self.note else text


def merge_entries(default: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """A [modality.X] section over [default]: its keys replace default's, except its strategy parameter
    tables ([modality.X.<strategy>]), which replace only the parameters they name; the others stay
    [default.<strategy>]'s."""
    merged = {**default, **entry}
    for name in STRATEGIES:
        if name in default and name in entry:
            merged[name] = {**default[name], **entry[name]}
    return merged


class RoutingTable:
    """The parsed routing table; `route(dim, modality, available)` picks a Route. A modality's section is
    merged over [default] (merge_entries): its strategy parameter tables override only the keys they name."""

    def __init__(self, table: dict[str, Any], source: str = "routes") -> None:
        self.source = source
        self.default = table.get("default", {})
        self.modalities = table.get("modality", {})
        # Every mistake is caught here, at start-up: a misspelt section or key would otherwise be
        # silently ignored, or fail every case of a modality one by one.
        unknown = set(table) - {"default", "modality"}
        if unknown:
            raise ValueError(f"{source}: unknown top-level table(s) {sorted(unknown)} (known: default, modality)")
        misnamed = set(self.modalities) - set(MODALITY_ALIASES)
        if misnamed:
            known = ", ".join(MODALITY_ALIASES)
            raise ValueError(f"{source}: unknown modality table(s) {sorted(misnamed)} (known: {known})")
        for name, entry in [("default", self.default), *(("modality." + k, v) for k, v in self.modalities.items())]:
            self._check_entry(name, entry)

    def _check_entry(self, name: str, entry: dict[str, Any]) -> None:
        where = f"{self.source}: [{name}]"
        if not isinstance(entry, dict) or not all(isinstance(entry.get(s, {}), dict) for s in STRATEGIES):
            raise ValueError(f"{where} must be a table (model = ..., strategy_2d/3d = ..., [{name}.<strategy>])")
        known_keys = ("model", *STRATEGY_KEYS.values(), *STRATEGIES)
        unknown_keys = sorted(set(entry) - set(known_keys))
        if unknown_keys:
            raise ValueError(f"{where} has unknown key(s) {unknown_keys} (known: {', '.join(known_keys)})")
        model = entry.get("model", FALLBACK_MODEL)
        if model not in MODELS:
            raise ValueError(f"{where} names unknown model '{model}' (known: {', '.join(MODELS)})")
        for dim, key in STRATEGY_KEYS.items():
            strategy_name = entry.get(key, DEFAULTS[dim])
            names = [n for n, strategy in STRATEGIES.items() if strategy.dim == dim]
            if strategy_name not in names:
                raise ValueError(f"{where} names unknown {dim}D strategy '{strategy_name}' (known: {', '.join(names)})")
        for strategy_name, strategy in STRATEGIES.items():
            params = entry.get(strategy_name, {})
            known = [field.name for field in fields(strategy.params)]
            extra = set(params) - set(known)
            if extra:
                raise ValueError(f"{where}.{strategy_name} has unknown parameter(s) {sorted(extra)} "
                                 f"(known: {', '.join(known) or 'none'})")
        # the values as a case of this section runs them ([default] is checked first, on its own)
        merged = merge_entries(self.default, entry)
        for strategy_name, strategy in STRATEGIES.items():
            try:
                strategy.params(**merged.get(strategy_name, {}))
            except (TypeError, ValueError) as error:
                raise ValueError(f"{where}.{strategy_name}: {error}") from error

    @classmethod
    def load(cls, path: Path | None = None) -> RoutingTable:
        path = Path(path or DEFAULT_ROUTES)
        with path.open("rb") as handle:
            return cls(tomllib.load(handle), source=str(path))

    def _merged(self, modality: str) -> dict[str, Any]:
        """The modality's section merged over [default] ([default] alone for a modality without one)."""
        return merge_entries(self.default, self.modalities.get(modality, self.default))

    def route(self, dim: int, modality: str, available: set[str] | None = None) -> Route:
        """Route for a case. `available`: models whose IR exists; others fall back to LiteMedSAM."""
        notes = []
        if modality not in self.modalities and modality.startswith(UNKNOWN_PREFIX):
            notes.append(f"unknown modality '{modality[len(UNKNOWN_PREFIX):]}', default route")
        merged = self._merged(modality)
        model = fallback_from = merged.get("model", FALLBACK_MODEL)
        if available is not None and model not in available:
            notes.append(f"{model} not built, fell back to {FALLBACK_MODEL}")
            model = FALLBACK_MODEL
        else:
            fallback_from = ""
        strategy = merged.get(STRATEGY_KEYS[dim], DEFAULTS[dim])
        params = STRATEGIES[strategy].params(**merged.get(strategy, {}))  # names and values checked on load
        return Route(model, strategy, params, "; ".join(notes), fallback_from)

    def strategy_params(self, modality: str, strategy: str) -> StrategyParams:
        """The parameters `strategy` runs with for `modality`, whichever strategy the modality routes to: the
        interactive server's one-box rule is propagate's, also for a modality whose 3D route votes (PET)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{strategy}' (known: {', '.join(STRATEGIES)})")
        return STRATEGIES[strategy].params(**self._merged(modality).get(strategy, {}))
