"""zfit PDFs backed by (learned or exact) density-ratio models."""

from .penalty import low_mass_penalty
from .ratio import RatioPDF

__all__ = ["RatioPDF", "low_mass_penalty"]
