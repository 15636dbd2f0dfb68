"""Signal region (SR) and sidebands (SB) in mjj."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, RegionError
from .events import Events

__all__ = ["DEFAULT_SR", "SignalRegion"]


@dataclass(frozen=True)
class SignalRegion:
    """An mjj window ``[low, high)`` in GeV; everything else in the mjj support is sideband.

    Parameters
    ----------
    low, high : float
        SR edges in GeV (default 3300, 3700 as in the LHCO R&D analyses).
    """

    low: float = 3300.0
    high: float = 3700.0

    def __post_init__(self):
        try:  # frozen dataclass: store the bounds as floats
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))
        except (TypeError, ValueError):
            raise RegionError(
                f"signal region bounds must be numbers in GeV, got low={self.low!r}, high={self.high!r}"
            ) from None
        if not (np.isfinite(self.low) and np.isfinite(self.high) and 0 <= self.low < self.high):
            raise RegionError(f"invalid signal region [{self.low}, {self.high}): need 0 ≤ low < high (GeV)")

    def contains(self, mjj: np.ndarray) -> np.ndarray:
        """Boolean mask of events inside the SR."""
        mjj = np.asarray(mjj)
        return (mjj >= self.low) & (mjj < self.high)

    def signal_region(self, events: Events, *, require_events: bool = True) -> Events:
        """The events in the SR; raises :class:`RegionError` if there are none."""
        return self._pick(events, False, "signal region", require_events)

    def sidebands(self, events: Events, *, require_events: bool = True) -> Events:
        """The events outside the SR."""
        return self._pick(events, True, "sidebands", require_events)

    def _pick(self, events: Events, outside: bool, what: str, require: bool) -> Events:
        if not isinstance(events, Events):
            raise InputError(f"expected gbi_zfit Events, got {type(events).__name__}")
        mask = self.contains(events.mjj) ^ outside
        if require and not mask.any():
            raise RegionError(
                f"the {what} mjj ∈ {self!s} holds no events (of {len(events)}); check the region bounds "
                "and that mjj is in GeV"
            )
        return events.select(mask)

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}) GeV"


DEFAULT_SR = SignalRegion()
