"""Ratio models Λ(x | θ) and density models used by the zfit PDFs."""

from .base import RatioModel
from .oracle import OracleRatio

__all__ = ["OracleRatio", "RatioModel"]
